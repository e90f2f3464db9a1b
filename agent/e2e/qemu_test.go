//go:build e2e

// Package e2e boots the real ramdisk (build/vmlinuz + build/ironlite-agent.cpio.gz)
// in qemu (TCG: KVM hangs on the project machines) against a stand-in
// controller, and checks the agent end to end: coldplug, DHCP, inventory,
// inspection callback, lookup, heartbeat, the command API with its token,
// and a real power off.
//
//	go test -tags e2e -v -timeout 20m ./agent/e2e/
//
// Environment: IRONLITE_E2E_SKIP_BUILD=1 reuses an existing build/;
// IRONLITE_E2E_KEEP=dir keeps the serial log there.
//
// Network: slirp with restrict=on (the guest reaches nothing but what we
// forward): the controller is at http://10.0.2.100 through guestfwd+socat,
// and the agent's :9999 is forwarded to a host port.
package e2e

import (
	"bytes"
	"context"
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

const (
	nodeUUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	vmMAC    = "52:54:00:12:34:56"
	vmMAC2   = "52:54:00:12:34:57" // e1000 on a second, separate slirp network
	sataSize = 4 << 30
	token    = "c_nFexNfsqgEhmH4qdIdMRmS3g9Wfzodody7YJKVesg"
	diskSize = 2 << 30
	memMB    = 512
)

// ensureRamdisk builds the ramdisk unless IRONLITE_E2E_SKIP_BUILD says to
// reuse build/.
func ensureRamdisk(t *testing.T) (kernel, initrd string) {
	return vmtest.Ramdisk(t, vmtest.RepoRoot(t), os.Getenv("IRONLITE_E2E_SKIP_BUILD") == "")
}

// conductor is the stand-in controller: version discovery, inspection
// callback, lookup by the VM's MAC, heartbeats.
type conductor struct {
	mu         sync.Mutex
	inspection *protocol.InspectionData
	lookups    []string
	heartbeats []protocol.HeartbeatRequest
	firstHB    time.Time
	hb         chan struct{}
}

func (c *conductor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fail := func(code int, msg string) {
		inner, _ := json.Marshal(protocol.Fault{FaultCode: "Client", FaultString: msg})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(protocol.IronicError{ErrorMessage: string(inner)})
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/":
		_, _ = io.WriteString(w, `{"name":"OpenStack Ironic API","default_version":{"id":"v1","version":"1.82","min_version":"1.1"}}`)
	case r.Method == "POST" && r.URL.Path == "/v1/continue_inspection":
		var d protocol.InspectionData
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			fail(400, err.Error())
			return
		}
		c.inspection = &d
		_, _ = io.WriteString(w, `{"uuid":"`+nodeUUID+`"}`)
	case r.Method == "GET" && r.URL.Path == "/v1/lookup":
		c.lookups = append(c.lookups, r.URL.RawQuery)
		if !strings.Contains(r.URL.Query().Get("addresses"), vmMAC) {
			fail(404, "Resource could not be found.")
			return
		}
		// The first lookup is refused, as for a node not yet in wait call-back.
		if len(c.lookups) == 1 {
			fail(404, "Resource could not be found.")
			return
		}
		_ = json.NewEncoder(w).Encode(protocol.LookupResponse{
			Node:   protocol.LookupNode{UUID: nodeUUID, Properties: map[string]any{}, InstanceInfo: map[string]any{}, DriverInternalInfo: map[string]any{}},
			Config: protocol.LookupConfig{HeartbeatTimeout: 300, AgentToken: token, AgentTokenRequired: true},
		})
	case r.Method == "POST" && r.URL.Path == "/v1/heartbeat/"+nodeUUID:
		var hb protocol.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			fail(400, err.Error())
			return
		}
		if hb.AgentToken != token {
			fail(400, "Invalid or missing agent token received.")
			return
		}
		c.heartbeats = append(c.heartbeats, hb)
		if c.firstHB.IsZero() {
			c.firstHB = time.Now()
		}
		select {
		case c.hb <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		fail(404, "no route "+r.Method+" "+r.URL.Path)
	}
}

func TestQEMUBootLookupHeartbeat(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-system-x86 socat)", tool)
		}
	}
	kernel, initrd := ensureRamdisk(t)

	c := &conductor{hb: make(chan struct{}, 16)}
	ts := httptest.NewServer(c)
	defer ts.Close()
	ctlPort := ts.Listener.Addr().(*net.TCPAddr).Port
	agentPort := vmtest.FreePort(t)

	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.Truncate(createFile(t, disk), diskSize); err != nil {
		t.Fatal(err)
	}
	disk2 := filepath.Join(dir, "sata.img")
	if err := os.Truncate(createFile(t, disk2), sataSize); err != nil {
		t.Fatal(err)
	}
	cmdline := "console=ttyS0 ipa-api-url=http://10.0.2.100 ipa-inspection-callback-url=http://10.0.2.100/v1/continue_inspection " +
		"BOOTIF=01-" + strings.ReplaceAll(vmMAC, ":", "-") + " ipa-lookup-interval=0.5 ipa-global-request-id=req-e2e"
	args := []string{
		"-accel", "tcg", "-m", fmt.Sprint(memMB), "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:9999,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:%d", agentPort, ctlPort),
		"-device", "virtio-net-pci,netdev=n0,mac=" + vmMAC,
		"-device", "virtio-rng-pci",
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw",
		"-device", "virtio-blk-pci,drive=d0,serial=SN-E2E-0001",
		// A second NIC (driver e1000, found by coldplug) and an AHCI disk
		// (ahci + libata + sd_mod) exercise the sysfs fallbacks for real.
		"-netdev", "user,id=n1,restrict=on,net=10.0.3.0/24",
		"-device", "e1000,netdev=n1,mac=" + vmMAC2,
		"-device", "ahci,id=ahci0",
		"-drive", "file=" + disk2 + ",if=none,id=d1,format=raw",
		"-device", "ide-hd,drive=d1,bus=ahci0.0,serial=SN-SATA-0002,model=IRONLITE-SATA",
		// An in-band BMC (KCS): ipmi_si is coldplugged from its ACPI id and the
		// agent queries /dev/ipmi0. qemu's simulated BMC has no LAN
		// configuration, so the inventory keeps IPA's "no BMC" defaults.
		"-device", "ipmi-bmc-sim,id=bmc0",
		"-device", "isa-ipmi-kcs,bmc=bmc0",
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
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	defer func() {
		if qemu.ProcessState == nil {
			_ = qemu.Process.Kill()
		}
		if keep := os.Getenv("IRONLITE_E2E_KEEP"); keep != "" {
			_ = os.WriteFile(filepath.Join(keep, "serial.log"), []byte(serial.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("serial log (tail):\n%s", vmtest.Tail(serial.String(), 80))
		}
	}()

	select {
	case <-c.hb:
	case err := <-exited:
		t.Fatalf("qemu exited before the first heartbeat: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("no heartbeat within 3 minutes")
	}
	c.mu.Lock()
	bootToHB := c.firstHB.Sub(start)
	hb := c.heartbeats[0]
	inspection := c.inspection
	lookups := append([]string(nil), c.lookups...)
	c.mu.Unlock()
	t.Logf("BENCH boot_to_first_heartbeat=%.1fs", bootToHB.Seconds())
	if fi, err := os.Stat(initrd); err == nil {
		t.Logf("BENCH initramfs_gz_bytes=%d", fi.Size())
	}

	// Heartbeat: token from lookup, callback at the VM's DHCP address.
	if hb.CallbackURL != "http://10.0.2.15:9999" || hb.AgentVersion != protocol.AgentVersion {
		t.Errorf("heartbeat = %+v", hb)
	}
	// Lookup: retried after the first 404, with the node UUID from inspection.
	if len(lookups) < 2 || !strings.Contains(lookups[len(lookups)-1], "addresses=") ||
		!strings.Contains(lookups[len(lookups)-1], vmMAC) || !strings.Contains(lookups[len(lookups)-1], vmMAC2) ||
		!strings.Contains(lookups[len(lookups)-1], "node_uuid="+nodeUUID) {
		t.Errorf("lookups = %q", lookups)
	}

	// Inventory: the VM's real hardware.
	if inspection == nil {
		t.Fatal("no inspection data received")
	}
	inv := inspection.Inventory
	if inv.CPU.Count != 1 || inv.CPU.Architecture != "x86_64" || inv.CPU.ModelName == "" {
		t.Errorf("cpu = %+v", inv.CPU)
	}
	if inv.Memory.PhysicalMB != memMB || inv.Memory.Total <= 0 || inv.Memory.Total > memMB<<20 {
		t.Errorf("memory = %+v", inv.Memory)
	}
	var vda *protocol.BlockDevice
	for i := range inv.Disks {
		if inv.Disks[i].Name == "/dev/vda" {
			vda = &inv.Disks[i]
		}
	}
	if vda == nil || vda.Size != diskSize || vda.Serial == nil || *vda.Serial != "SN-E2E-0001" ||
		vda.ByPath == nil || !strings.HasPrefix(*vda.ByPath, "/dev/disk/by-path/pci-0000:00:") {
		t.Errorf("disks = %s", mustJSON(inv.Disks))
	}
	var sda *protocol.BlockDevice
	for i := range inv.Disks {
		if inv.Disks[i].Name == "/dev/sda" {
			sda = &inv.Disks[i]
		}
	}
	if sda == nil || sda.Size != sataSize || sda.Serial == nil || *sda.Serial != "SN-SATA-0002" || sda.Model != "IRONLITE-SATA" ||
		sda.HCTL == nil || sda.ByPath == nil || !strings.Contains(*sda.ByPath, "-ata-1") || sda.Tran == nil || *sda.Tran != "sata" {
		t.Errorf("sata disk = %s", mustJSON(sda))
	}
	if len(inv.Interfaces) != 2 {
		t.Fatalf("interfaces = %s", mustJSON(inv.Interfaces))
	}
	// Names depend on probe order (coldplug loads drivers in parallel); match by MAC.
	eth0, eth1 := inv.Interfaces[0], inv.Interfaces[1]
	if eth0.MACAddress != vmMAC {
		eth0, eth1 = eth1, eth0
	}
	if eth0.MACAddress != vmMAC || !eth0.HasCarrier || eth0.Driver != "virtio_net" || eth0.IPv4Address == nil || *eth0.IPv4Address != "10.0.2.15" {
		t.Errorf("virtio NIC = %s", mustJSON(eth0))
	}
	if eth1.MACAddress != vmMAC2 || eth1.Driver != "e1000" || eth1.IPv4Address == nil || *eth1.IPv4Address != "10.0.3.15" ||
		eth1.SpeedMbps == nil || *eth1.SpeedMbps != 1000 {
		t.Errorf("e1000 NIC = %s", mustJSON(eth1))
	}
	if inv.Boot.CurrentBootMode != "bios" || inv.Boot.PXEInterface != "01-52-54-00-12-34-56" || inspection.BootInterface != "01-52-54-00-12-34-56" {
		t.Errorf("boot = %+v", inv.Boot)
	}
	if inv.BMCAddress != protocol.NoBMCAddress || inv.BMCMAC != protocol.NoBMCMAC {
		t.Errorf("bmc = %s / %s", inv.BMCAddress, inv.BMCMAC)
	}
	if inv.SystemVendor.Manufacturer != "QEMU" {
		t.Errorf("system_vendor = %+v", inv.SystemVendor)
	}
	// IPA's guess: the smallest disk of at least 4 GiB (the 2 GiB one is too small).
	if inspection.RootDisk == nil || inspection.RootDisk.Name != "/dev/sda" {
		t.Errorf("root disk guess = %s", mustJSON(inspection.RootDisk))
	}

	// The command API, through the forwarded port.
	agent := fmt.Sprintf("http://127.0.0.1:%d", agentPort)
	code, body := post(t, agent+"/v1/commands/?wait=true", protocol.CommandRequest{Name: "deploy.get_deploy_steps", Params: map[string]any{}})
	if code != http.StatusUnauthorized {
		t.Errorf("command without token: %d %s", code, body)
	}
	code, body = post(t, agent+"/v1/commands/?wait=true&agent_token="+token, protocol.CommandRequest{Name: "deploy.get_deploy_steps", Params: map[string]any{}})
	if code != http.StatusOK || !strings.Contains(body, `"write_image"`) || !strings.Contains(body, `"SUCCEEDED"`) {
		t.Errorf("get_deploy_steps: %d %s", code, body)
	}
	code, body = post(t, agent+"/v1/commands/?wait=true&agent_token="+token, protocol.CommandRequest{Name: "log.collect_system_logs", Params: map[string]any{}})
	if code != http.StatusOK || !strings.Contains(body, `"system_logs"`) {
		t.Errorf("collect_system_logs: %d %.300s", code, body)
	}

	// standby.power_off really powers the VM off (qemu exits).
	code, body = post(t, agent+"/v1/commands/?wait=false&agent_token="+token, protocol.CommandRequest{Name: "standby.power_off", Params: map[string]any{}})
	if code != http.StatusOK || !strings.Contains(body, `"RUNNING"`) {
		t.Errorf("power_off: %d %s", code, body)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Error("VM still running 60 s after standby.power_off")
	}

	log := serial.String()
	for _, want := range []string{"ironlite-agent starting", "kernel modules loaded", "ipmi_si", "e1000", "ahci", "no in-band BMC", "mdadm - v4.2", "network: interface configured",
		"lookup failed, will retry", "Resource could not be found.", "lookup succeeded", "heartbeat sent", "reboot: Power down"} {
		if !strings.Contains(log, want) {
			t.Errorf("serial log lacks %q", want)
		}
	}
}

func createFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func post(t *testing.T, url string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Errorf("POST %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
