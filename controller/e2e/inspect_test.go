//go:build e2e

// Package e2e runs the controller and the ramdisk together: a real
// `ironlite serve` and a qemu (TCG) machine booting build/vmlinuz +
// build/ironlite-agent.cpio.gz. Run with `make e2e` (builds the ramdisk)
// or `go test -tags e2e ./controller/e2e/` after `make initramfs`.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/internal/vmtest"
)

const (
	vmMAC    = "52:54:00:e2:e0:01"
	vmCPUs   = 2
	vmMemMB  = 512
	diskSize = 6 << 30 // local_gb = 6 - 1 (Ironic keeps 1 GiB for partitioning)
)

// serve starts bin/ironlite serve on a free loopback port and returns its
// base URL.
func serve(t *testing.T, root string, extra ...string) (string, *vmtest.Buffer) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ironlite")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "controller/cmd/ironlite")).CombinedOutput(); err != nil {
		t.Fatalf("build ironlite: %v\n%s", err, out)
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "debug"}, extra...)
	cmd := exec.Command(bin, args...)
	logs := &vmtest.Buffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
		if t.Failed() {
			t.Logf("controller log:\n%s", vmtest.Tail(logs.String(), 60))
		}
	})
	urlc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if m := re.FindStringSubmatch(line); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case u := <-urlc:
		return u, logs
	case <-time.After(30 * time.Second):
		t.Fatalf("controller did not start:\n%s", logs.String())
	}
	return "", nil
}

func api(t *testing.T, method, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("X-OpenStack-Ironic-API-Version", "1.82")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var m map[string]any
	json.Unmarshal(data, &m)
	return res.StatusCode, m
}

// TestInspectionWithRealController: a fake-hardware node (no BMC: the
// machine is booted by hand, as an operator would with the ramdisk on a
// USB stick) with the VM's MAC as its port is inspected by our agent; it
// ends manageable with the VM's real CPUs, RAM and disk, and then keeps
// heartbeating (fast-track).
func TestInspectionWithRealController(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps)", tool)
		}
	}
	root := vmtest.RepoRoot(t)
	kernel, initrd := vmtest.Ramdisk(t, root, false)
	base, logs := serve(t, root, "--fast-track")
	ctlPort := strings.TrimPrefix(base, "http://127.0.0.1:")

	st, node := api(t, "POST", base+"/v1/nodes", map[string]any{"driver": "fake-hardware", "name": "vm1", "inspect_interface": "agent"})
	if st != 201 {
		t.Fatalf("create node: %d %v", st, node)
	}
	uuid := node["uuid"].(string)
	if st, p := api(t, "POST", base+"/v1/ports", map[string]any{"node_uuid": uuid, "address": vmMAC}); st != 201 {
		t.Fatalf("create port: %d %v", st, p)
	}
	waitState := func(want string, timeout time.Duration) map[string]any {
		deadline := time.Now().Add(timeout)
		for {
			_, n := api(t, "GET", base+"/v1/nodes/vm1", nil)
			if n["provision_state"] == want && n["reservation"] == nil {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("node: want %q, have %v (last_error %v)", want, n["provision_state"], n["last_error"])
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	api(t, "PUT", base+"/v1/nodes/vm1/states/provision", map[string]any{"target": "manage"})
	waitState("manageable", 30*time.Second)
	if st, m := api(t, "PUT", base+"/v1/nodes/vm1/states/provision", map[string]any{"target": "inspect"}); st != 202 {
		t.Fatalf("inspect: %d %v", st, m)
	}
	waitState("inspect wait", 30*time.Second)

	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(diskSize)
	f.Close()
	agentPort := vmtest.FreePort(t)
	// slirp with restrict=on: the guest reaches nothing but the controller,
	// forwarded from 10.0.2.100:80 to the controller's loopback port.
	cmdline := "console=ttyS0 ipa-api-url=http://10.0.2.100 ipa-inspection-callback-url=http://10.0.2.100/v1/continue_inspection " +
		"BOOTIF=01-" + strings.ReplaceAll(vmMAC, ":", "-") + " ipa-lookup-interval=0.5"
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(vmMemMB), "-smp", fmt.Sprint(vmCPUs), "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:9999,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:%s", agentPort, ctlPort),
		"-device", "virtio-net-pci,netdev=n0,mac=" + vmMAC,
		"-device", "virtio-rng-pci",
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw",
		"-device", "virtio-blk-pci,drive=d0,serial=E2E-INSPECT",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	serial := &vmtest.Buffer{}
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	qemu.Stdout, qemu.Stderr = serial, serial
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		qemu.Process.Kill()
		qemu.Wait()
		if t.Failed() {
			t.Logf("serial log:\n%s", vmtest.Tail(serial.String(), 80))
		}
	}()

	n := waitState("manageable", 3*time.Minute)
	t.Logf("inspection finished %.1fs after qemu started", time.Since(start).Seconds())
	props := n["properties"].(map[string]any)
	if props["cpus"] != float64(vmCPUs) || props["cpu_arch"] != "x86_64" {
		t.Errorf("cpus/cpu_arch: %v %v", props["cpus"], props["cpu_arch"])
	}
	if mem, _ := props["memory_mb"].(float64); mem != vmMemMB {
		t.Errorf("memory_mb = %v, want %d", props["memory_mb"], vmMemMB)
	}
	if props["local_gb"] != float64(diskSize>>30-1) {
		t.Errorf("local_gb = %v, want %d", props["local_gb"], diskSize>>30-1)
	}
	_, ports := api(t, "GET", base+"/v1/nodes/vm1/ports/detail", nil)
	pl := ports["ports"].([]any)
	if len(pl) != 1 || pl[0].(map[string]any)["address"] != vmMAC || pl[0].(map[string]any)["pxe_enabled"] != true {
		t.Errorf("ports: %v", pl)
	}
	st, inv := api(t, "GET", base+"/v1/nodes/vm1/inventory", nil)
	if st != 200 {
		t.Fatalf("inventory: %d", st)
	}
	disks := inv["inventory"].(map[string]any)["disks"].([]any)
	if len(disks) != 1 || disks[0].(map[string]any)["serial"] != "E2E-INSPECT" {
		t.Errorf("inventory disks: %v", disks)
	}
	// Fast-track: the agent looks up again and heartbeats.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, n := api(t, "GET", base+"/v1/nodes/vm1", nil)
		dii := n["driver_internal_info"].(map[string]any)
		if dii["agent_last_heartbeat"] != nil {
			t.Logf("first heartbeat %.1fs after qemu started, agent_url %v", time.Since(start).Seconds(), dii["agent_url"])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat recorded: %v", dii)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "password") {
		t.Errorf("controller log mentions a password")
	}
	if !strings.Contains(serial.String(), "Linux version") {
		t.Errorf("serial log shows no kernel boot")
	}
}
