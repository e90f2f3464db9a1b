//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/internal/vmtest"
)

// imageConductor is a stand-in controller for the image test: lookup with
// progress reporting switched on, heartbeats recorded, and the image
// served with Range support under /images/.
type imageConductor struct {
	dir string

	mu         sync.Mutex
	heartbeats []protocol.HeartbeatRequest
	ranges     int
	hb         chan struct{}
}

func (c *imageConductor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/images/"):
		c.mu.Lock()
		if r.Header.Get("Range") != "" {
			c.ranges++
		}
		c.mu.Unlock()
		http.StripPrefix("/images/", http.FileServer(http.Dir(c.dir))).ServeHTTP(w, r)
	case r.Method == "GET" && r.URL.Path == "/":
		_, _ = io.WriteString(w, `{"name":"OpenStack Ironic API","default_version":{"id":"v1","version":"1.82","min_version":"1.1"}}`)
	case r.Method == "POST" && r.URL.Path == "/v1/continue_inspection":
		_, _ = io.WriteString(w, `{"uuid":"`+nodeUUID+`"}`)
	case r.Method == "GET" && r.URL.Path == "/v1/lookup":
		_ = json.NewEncoder(w).Encode(protocol.LookupResponse{
			Node:   protocol.LookupNode{UUID: nodeUUID, Properties: map[string]any{}, InstanceInfo: map[string]any{}, DriverInternalInfo: map[string]any{}},
			Config: protocol.LookupConfig{HeartbeatTimeout: 20, AgentToken: token, AgentTokenRequired: true, ReportProgress: true},
		})
	case r.Method == "POST" && r.URL.Path == "/v1/heartbeat/"+nodeUUID:
		var hb protocol.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		c.mu.Lock()
		c.heartbeats = append(c.heartbeats, hb)
		c.mu.Unlock()
		select {
		case c.hb <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		http.Error(w, "no route", 404)
	}
}

// TestQEMUWriteImageBiggerThanRAM: a 512 MiB guest writes a qcow2 whose
// virtual size (4 GiB) is eight times its RAM, streamed over HTTP from the
// stand-in controller through standby.prepare_image, onto a disk full of
// stale data. The disk must then equal the image (qemu-img compare).
func TestQEMUWriteImageBiggerThanRAM(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", "socat", "qemu-img", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	kernel, initrd := ensureRamdisk(t)
	dir := t.TempDir()
	const virtual = 4 << 30

	// The image: a GPT disk with 200 MiB of /usr at the start, random data
	// in the middle and near the end, zeroes elsewhere; zlib-compressed.
	raw := filepath.Join(dir, "disk.raw")
	if err := os.Truncate(createFile(t, raw), virtual); err != nil {
		t.Fatal(err)
	}
	sh(t, "tar -cf - /usr/bin /usr/lib 2>/dev/null | head -c 200M | dd of="+raw+" bs=4M seek=1M oflag=seek_bytes conv=notrunc iflag=fullblock status=none")
	for _, off := range []int64{2 << 30, virtual - 64<<20} {
		writeRandom(t, raw, off, 16<<20)
	}
	sh(t, "printf 'label: gpt\\nstart=2048, size=409600, type=linux\\nstart=411648, type=linux\\n' | sfdisk --no-reread --no-tell-kernel -q "+raw)
	imgDir := filepath.Join(dir, "images")
	if err := os.Mkdir(imgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(imgDir, "big.qcow2")
	sh(t, "qemu-img convert -c -f raw -O qcow2 "+raw+" "+img)
	if err := os.Remove(raw); err != nil {
		t.Fatal(err)
	}
	sum := fileSHA256(t, img)

	// The target disk: as big as the image, stale data where the image has
	// zeroes (first MiB, 1 GiB, 3 GiB).
	target := filepath.Join(dir, "target.raw")
	if err := os.Truncate(createFile(t, target), virtual); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1 << 30, 3 << 30} {
		writeRandom(t, target, off, 8<<20)
	}

	c := &imageConductor{dir: imgDir, hb: make(chan struct{}, 64)}
	ts := httptest.NewServer(c)
	defer ts.Close()
	ctlPort := ts.Listener.Addr().(*net.TCPAddr).Port
	agentPort := vmtest.FreePort(t)
	cmdline := "console=ttyS0 ipa-api-url=http://10.0.2.100 BOOTIF=01-" + strings.ReplaceAll(vmMAC, ":", "-") + " ipa-lookup-interval=0.5"
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(memMB), "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:9999,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:%d", agentPort, ctlPort),
		"-device", "virtio-net-pci,netdev=n0,mac=" + vmMAC,
		"-device", "virtio-rng-pci",
		"-drive", "file=" + target + ",if=none,id=d0,format=raw,cache=unsafe,discard=unmap,detect-zeroes=unmap",
		"-device", "virtio-blk-pci,drive=d0,serial=SN-TARGET",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	serial := &vmtest.Buffer{}
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	qemu.Stdout, qemu.Stderr = serial, serial
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	defer func() {
		if qemu.ProcessState == nil {
			_ = qemu.Process.Kill()
		}
		if t.Failed() {
			t.Logf("serial log (tail):\n%s", vmtest.Tail(serial.String(), 60))
		}
	}()
	select {
	case <-c.hb:
	case err := <-exited:
		t.Fatalf("qemu exited before the first heartbeat: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("no heartbeat within 3 minutes")
	}

	agent := fmt.Sprintf("http://127.0.0.1:%d/v1/commands/", agentPort)
	start := time.Now()
	code, body := post(t, agent+"?wait=false&agent_token="+token, protocol.CommandRequest{Name: "standby.prepare_image", Params: map[string]any{
		"image_info": map[string]any{
			"id": "big.qcow2", "urls": []any{"http://10.0.2.100/images/big.qcow2"}, "disk_format": "qcow2",
			"os_hash_algo": "sha256", "os_hash_value": sum,
		},
	}})
	if code != http.StatusOK || !strings.Contains(body, `"RUNNING"`) {
		t.Fatalf("prepare_image: %d %s", code, body)
	}
	// Poll like the conductor, recording the progress the agent reports.
	var last protocol.CommandResult
	var seen []string
	for {
		if time.Since(start) > 15*time.Minute {
			t.Fatalf("prepare_image still running after 15 minutes: %s", mustJSON(last))
		}
		time.Sleep(2 * time.Second)
		resp, err := http.Get(agent + "?agent_token=" + token)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Commands []protocol.CommandResult `json:"commands"`
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || len(list.Commands) == 0 {
			t.Fatalf("GET commands: %v %d", err, len(list.Commands))
		}
		last = list.Commands[len(list.Commands)-1]
		if p := last.Progress; p != nil && last.CommandStatus == protocol.StatusRunning {
			seen = append(seen, fmt.Sprintf("%s %.0f%% %.1f MB/s", p.Phase, p.Percent, p.BytesPerSecond/1e6))
		}
		if last.CommandStatus != protocol.StatusRunning {
			break
		}
	}
	elapsed := time.Since(start)
	if last.CommandStatus != protocol.StatusSucceeded {
		t.Fatalf("prepare_image %s: %s", last.CommandStatus, mustJSON(last.CommandError))
	}
	t.Logf("BENCH write_4GiB_qcow2_in_512MiB_guest=%.1fs progress samples: %s", elapsed.Seconds(), strings.Join(seen, " | "))
	if len(seen) == 0 {
		t.Error("no progress reported while the image was written")
	}
	c.mu.Lock()
	var hbProgress int
	for _, hb := range c.heartbeats {
		if hb.Progress != nil {
			hbProgress++
		}
	}
	ranges := c.ranges
	c.mu.Unlock()
	if ranges == 0 {
		t.Error("the image was not read with Range requests")
	}
	t.Logf("range requests: %d, heartbeats with progress: %d", ranges, hbProgress)

	code, body = post(t, agent+"?wait=true&agent_token="+token, protocol.CommandRequest{Name: "standby.get_partition_uuids", Params: map[string]any{}})
	if code != http.StatusOK || !strings.Contains(body, `"root uuid"`) {
		t.Errorf("get_partition_uuids: %d %s", code, body)
	}
	code, body = post(t, agent+"?wait=false&agent_token="+token, protocol.CommandRequest{Name: "standby.power_off", Params: map[string]any{}})
	if code != http.StatusOK {
		t.Errorf("power_off: %d %s", code, body)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("VM still running 60 s after standby.power_off")
	}
	out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, target).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
	t.Logf("qemu-img compare: %s", strings.TrimSpace(string(out)))
	if log := serial.String(); strings.Contains(log, "Out of memory") || strings.Contains(log, "oom-kill") {
		t.Error("the guest ran out of memory")
	}
}

func sh(t *testing.T, script string) {
	t.Helper()
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
		// head closes the pipe early: tar's SIGPIPE is expected.
		if !strings.Contains(script, "head -c") {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
}

func writeRandom(t *testing.T, p string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
