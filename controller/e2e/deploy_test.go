//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlite/ironlite/images/streamtest"
	"github.com/ironlite/ironlite/internal/vmtest"
)

// Markers the test instance image prints on its serial console
// (scripts/lab.d/build-test-image).
const (
	markerBooted   = "IRONLITE-TEST-INSTANCE-BOOTED"
	markerHostname = "IRONLITE-TEST-HOSTNAME="
)

// phases records how long each step of the test took, printed at the end.
type phases struct {
	t     *testing.T
	start time.Time
	lines []string
}

func (p *phases) mark(what string, since time.Time) {
	p.lines = append(p.lines, fmt.Sprintf("%-44s %6.1fs", what, time.Since(since).Seconds()))
}

func (p *phases) print() {
	p.t.Logf("timings (total %.1fs):\n  %s", time.Since(p.start).Seconds(), strings.Join(p.lines, "\n  "))
}

// deployEnv is one lab, one controller in it, one enrolled node.
type deployEnv struct {
	t                *testing.T
	root             string
	lab              *lab
	ctl              *controller
	node             *labNode
	image, imageSHA  string // the bootable test image (qcow2) and its sha256
	imageRaw         string
	nodeName         string
	timings          *phases
	apiBase, nodeURL string
}

// newDeployEnv builds the test image and the controller, creates the lab
// and adds the node (scripts/lab node add --firmware firmware nodeArgs...);
// serveArgs are added to `ironlite serve`.
func newDeployEnv(t *testing.T, firmware string, nodeArgs []string, serveArgs ...string) *deployEnv {
	root := vmtest.RepoRoot(t)
	kernel, initrd := vmtest.Ramdisk(t, root, false)
	e := &deployEnv{t: t, root: root, nodeName: "bm-" + firmware, timings: &phases{t: t, start: time.Now()}}
	t.Cleanup(e.timings.print)

	// The instance image: built by the lab's script, written by the agent.
	start := time.Now()
	imgDir := t.TempDir()
	if out, err := exec.Command(filepath.Join(root, "scripts/lab.d/build-test-image"), imgDir).CombinedOutput(); err != nil {
		t.Fatalf("build-test-image: %v\n%s", err, out)
	}
	e.image, e.imageRaw = filepath.Join(imgDir, "test-image.qcow2"), filepath.Join(imgDir, "test-image.raw")
	sums, err := os.ReadFile(filepath.Join(imgDir, "test-image.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(sums), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.TrimPrefix(f[1], "*") == "test-image.qcow2" {
			e.imageSHA = f[0]
		}
	}
	if e.imageSHA == "" {
		t.Fatalf("no sha256 of test-image.qcow2 in:\n%s", sums)
	}
	e.timings.mark("build test image", start)

	start = time.Now()
	bin := filepath.Join(t.TempDir(), "ironlite")
	build := exec.Command("go", "build", "-o", bin, "./controller/cmd/ironlite")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build ironlite: %v\n%s", err, out)
	}
	e.lab = newLab(t, root)
	e.node = e.lab.addNode(e.nodeName, append([]string{"--firmware", firmware, "--disk-size", "5G", "--mem", "512"}, nodeArgs...)...)
	args := append([]string{"--deploy-kernel", kernel, "--deploy-ramdisk", initrd,
		"--kernel-append-params", "console=ttyS0,115200n8 ipa-debug=1",
		"--check-provision-state-interval", "2s", "--post-deploy-power-off-interval", "1s"}, serveArgs...)
	e.ctl = e.lab.startController(bin, args...)
	e.apiBase = e.ctl.base
	e.nodeURL = e.apiBase + "/v1/nodes/" + e.nodeName
	e.timings.mark("lab up, controller started", start)
	return e
}

func (e *deployEnv) api(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	return api(e.t, method, e.apiBase+path, body)
}

// provision sends a provision target and checks the 202.
func (e *deployEnv) provision(body map[string]any) {
	e.t.Helper()
	if st, m := e.api("PUT", "/v1/nodes/"+e.nodeName+"/states/provision", body); st != 202 {
		e.t.Fatalf("provision %v: %d %v", body, st, m)
	}
}

// waitState polls the node until it is in want (and unlocked); a failed
// state other than want ends the test with last_error. want may itself be
// a failed state.
func (e *deployEnv) waitState(want string, timeout time.Duration) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		_, n := e.api("GET", "/v1/nodes/"+e.nodeName, nil)
		st, _ := n["provision_state"].(string)
		if st != last {
			e.t.Logf("node %s: %s", e.nodeName, st)
			last = st
		}
		if st == want && n["reservation"] == nil {
			return n
		}
		// A failed state is final for the test (clean failed keeps its
		// target "available", as in Ironic, so the target tells nothing).
		if st != want && (strings.HasSuffix(st, "failed") || st == "error") {
			e.t.Fatalf("node ended in %q (want %q): %v", st, want, n["last_error"])
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("node: want %q after %s, have %q (last_error %v)", want, timeout, st, n["last_error"])
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (e *deployEnv) enroll() {
	e.t.Helper()
	start := time.Now()
	st, n := e.api("POST", "/v1/nodes", map[string]any{
		"name": e.nodeName, "driver": "ipmi",
		"driver_info": map[string]any{"ipmi_address": "127.0.0.1", "ipmi_port": e.node.bmcPort,
			"ipmi_username": e.node.bmcUser, "ipmi_password": e.node.bmcPassword},
	})
	if st != 201 {
		e.t.Fatalf("create node: %d %v", st, n)
	}
	if st, p := e.api("POST", "/v1/ports", map[string]any{"node_uuid": n["uuid"], "address": e.node.mac}); st != 201 {
		e.t.Fatalf("create port: %d %v", st, p)
	}
	e.provision(map[string]any{"target": "manage"})
	e.waitState("manageable", time.Minute)
	e.timings.mark("enroll + manage (BMC verified)", start)
}

// setImage points instance_info at the test image, served by the
// controller from a file:// path (the controller computes its sha256), or
// with an explicit checksum.
func (e *deployEnv) setImage(extra map[string]any) {
	e.t.Helper()
	ops := []map[string]any{
		{"op": "add", "path": "/instance_info/image_source", "value": "file://" + e.image},
		{"op": "add", "path": "/instance_info/image_disk_format", "value": "qcow2"},
	}
	for k, v := range extra {
		ops = append(ops, map[string]any{"op": "add", "path": "/instance_info/" + k, "value": v})
	}
	if st, m := e.api("PATCH", "/v1/nodes/"+e.nodeName, ops); st != 200 {
		e.t.Fatalf("set instance_info: %d %v", st, m)
	}
}

func (e *deployEnv) removeInstanceKeys(keys ...string) {
	e.t.Helper()
	var ops []map[string]any
	for _, k := range keys {
		ops = append(ops, map[string]any{"op": "remove", "path": "/instance_info/" + k})
	}
	if st, m := e.api("PATCH", "/v1/nodes/"+e.nodeName, ops); st != 200 {
		e.t.Fatalf("remove instance_info %v: %d %v", keys, st, m)
	}
}

// checkDiskMatchesImage compares the node's disk with the image: every
// byte after the MBR (qemu-img compare over raw windows) and the MBR's
// boot code and first partition entry (the agent adds the config drive's
// entry after them).
func (e *deployEnv) checkDiskMatchesImage() {
	e.t.Helper()
	st, err := os.Stat(e.imageRaw)
	if err != nil {
		e.t.Fatal(err)
	}
	size := st.Size()
	window := func(file string) string {
		return fmt.Sprintf(`json:{"driver":"raw","offset":512,"size":%d,"file":{"driver":"file","filename":%q}}`, size-512, file)
	}
	disk := e.node.disks[0]
	fmtArgs := []string{}
	if strings.HasSuffix(disk, ".qcow2") {
		e.t.Fatalf("the lab disk %s is qcow2; this check reads raw disks", disk)
	}
	out, err := exec.Command("qemu-img", append(append([]string{"compare"}, fmtArgs...), window(e.imageRaw), window(disk))...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("qemu-img compare image vs disk (after the MBR): %v\n%s", err, out)
	}
	img, _ := os.ReadFile(e.imageRaw)
	f, err := os.Open(disk)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(mbr[:446+16], img[:446+16]) || mbr[510] != 0x55 || mbr[511] != 0xaa {
		e.t.Fatalf("the disk's MBR boot code / first partition differ from the image's")
	}
	e.t.Logf("disk matches the image (%d bytes; qemu-img: %s)", size, strings.TrimSpace(string(out)))
}

// TestDeployBIOS is the mission's proof: a node enrolled over IPMI is
// PXE-booted into our ramdisk through the controller's DHCP and iPXE
// script, cleaned, gets an image written and boots it; then the failure
// paths.
func TestDeployBIOS(t *testing.T) {
	e := newDeployEnv(t, "bios", nil, "--deploy-callback-timeout", "90s", "--clean-callback-timeout", "240s")
	e.enroll()

	start := time.Now()
	e.provision(map[string]any{"target": "provide"})
	e.waitState("available", 4*time.Minute)
	e.timings.mark("provide: cleaning in the ramdisk", start)

	e.setImage(nil)
	serialAt := len(e.node.serial())
	start = time.Now()
	e.provision(map[string]any{"target": "active", "configdrive": map[string]any{
		"meta_data": map[string]any{"hostname": "e2e-instance"}}})
	n := e.waitState("active", 4*time.Minute)
	e.timings.mark("deploy: available -> active", start)
	dii := n["driver_internal_info"].(map[string]any)
	t.Logf("deploy phases recorded on the node: %v", dii["ironlite_deploy"])
	if _, ok := dii["agent_secret_token"]; ok {
		t.Errorf("the agent token is still in driver_internal_info after the deploy")
	}
	if n["power_state"] != "power on" {
		t.Errorf("power_state = %v after deploy", n["power_state"])
	}

	start = time.Now()
	e.node.waitSerial(t, serialAt, 3*time.Minute, markerBooted, markerHostname+"e2e-instance")
	e.timings.mark("instance boot from disk (serial marker)", start)
	e.checkDiskMatchesImage()

	start = time.Now()
	e.provision(map[string]any{"target": "deleted"})
	e.waitState("available", 4*time.Minute)
	e.timings.mark("undeploy: active -> cleaning -> available", start)
	mbr := make([]byte, 512)
	if f, err := os.Open(e.node.disks[0]); err == nil {
		f.ReadAt(mbr, 0)
		f.Close()
	}
	if mbr[510] == 0x55 && mbr[511] == 0xaa {
		t.Errorf("cleaning left the partition table on the disk")
	}

	t.Run("WrongChecksum", func(t *testing.T) {
		e.t = t
		e.setImage(map[string]any{"image_os_hash_algo": "sha256", "image_os_hash_value": strings.Repeat("0", 64)})
		start := time.Now()
		e.provision(map[string]any{"target": "active"})
		n := e.waitState("deploy failed", 3*time.Minute)
		e.timings.mark("wrong checksum -> deploy failed", start)
		msg, _ := n["last_error"].(string)
		if !strings.Contains(msg, strings.Repeat("0", 64)) || !strings.Contains(strings.ToLower(msg), "checksum") {
			t.Errorf("last_error does not name the checksum: %q", msg)
		}
		if n["power_state"] != "power off" {
			t.Errorf("power_state = %v after a failed deploy, want power off", n["power_state"])
		}
		e.removeInstanceKeys("image_os_hash_algo", "image_os_hash_value")
		e.provision(map[string]any{"target": "deleted"})
		e.waitState("available", 4*time.Minute)
	})

	t.Run("AbortInWaitCallBack", func(t *testing.T) {
		e.t = t
		e.setImage(nil)
		e.provision(map[string]any{"target": "active"})
		e.waitState("wait call-back", time.Minute)
		start := time.Now()
		e.provision(map[string]any{"target": "abort"})
		n := e.waitState("deploy failed", time.Minute)
		e.timings.mark("abort in wait call-back", start)
		if msg, _ := n["last_error"].(string); !strings.Contains(msg, "aborted") {
			t.Errorf("last_error after abort: %q", msg)
		}
		if n["power_state"] != "power off" {
			t.Errorf("power_state = %v after abort, want power off", n["power_state"])
		}
	})

	t.Run("ControllerRestartInWaitCallBack", func(t *testing.T) {
		e.t = t
		// From deploy failed (the abort above) a deploy may start again.
		e.provision(map[string]any{"target": "active"})
		deadline := time.Now().Add(3 * time.Minute)
		for {
			_, n := e.api("GET", "/v1/nodes/"+e.nodeName, nil)
			if step, _ := n["deploy_step"].(map[string]any); step["step"] == "write_image" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the deploy never reached write_image: %v %v", n["provision_state"], n["last_error"])
			}
			time.Sleep(200 * time.Millisecond)
		}
		start := time.Now()
		e.ctl.stop(syscall.SIGKILL)
		t.Log("controller killed while the agent writes the image")
		time.Sleep(3 * time.Second)
		e.ctl.restart(t)
		_, n := e.api("GET", "/v1/nodes/"+e.nodeName, nil)
		t.Logf("after restart: %v (last_error %v)", n["provision_state"], n["last_error"])
		e.waitState("active", 4*time.Minute)
		e.timings.mark("controller killed in wait call-back -> active", start)
		e.provision(map[string]any{"target": "deleted"})
		e.waitState("available", 4*time.Minute)
	})

	t.Run("AgentNeverCallsBack", func(t *testing.T) {
		e.t = t
		// A ramdisk that is not one: the kernel panics, no agent ever
		// heartbeats, the callback timeout (90 s here) fails the deploy.
		bogus := filepath.Join(t.TempDir(), "not-a-ramdisk")
		os.WriteFile(bogus, bytes.Repeat([]byte("x"), 4096), 0o644)
		if st, m := e.api("PATCH", "/v1/nodes/"+e.nodeName, []map[string]any{{"op": "add", "path": "/driver_info/deploy_ramdisk", "value": bogus}}); st != 200 {
			t.Fatalf("set deploy_ramdisk: %d %v", st, m)
		}
		e.setImage(nil) // undeploy cleared instance_info
		start := time.Now()
		e.provision(map[string]any{"target": "active"})
		n := e.waitState("deploy failed", 4*time.Minute)
		e.timings.mark("agent never calls back -> deploy failed", start)
		if msg, _ := n["last_error"].(string); !strings.Contains(msg, "Timeout reached while waiting for callback") {
			t.Errorf("last_error after the timeout: %q", msg)
		}
	})
}

// TestDeployUEFI deploys onto a UEFI machine whose firmware network-boots
// by itself (OVMF's PXE, no iPXE ROM): the controller's DHCP hands it an
// iPXE EFI binary over the controller's TFTP, iPXE comes back for the
// boot script, the agent writes the image and GRUB boots it from disk.
func TestDeployUEFI(t *testing.T) {
	if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
		t.Fatalf("OVMF not installed (make deps): %v", err)
	}
	e := newDeployEnv(t, "uefi", []string{"--uefi-native-pxe"}, "--deploy-callback-timeout", "180s")
	e.enroll()
	if st, m := e.api("PATCH", "/v1/nodes/"+e.nodeName, []map[string]any{{"op": "add", "path": "/automated_clean", "value": false}}); st != 200 {
		t.Fatalf("automated_clean: %d %v", st, m)
	}
	e.provision(map[string]any{"target": "provide"})
	e.waitState("available", time.Minute)

	// The one-command path: the image comes from a simplestreams source
	// (served inside the lab's netns, where the controller runs) by its
	// alias; the CLI imports it into the controller's cache with a
	// progress bar, then deploys it, and the agent fetches it from the
	// controller.
	src := e.serveStreams(streamtest.Image{Alias: "ironlite/test", Data: mustRead(t, e.image)})
	serialAt := len(e.node.serial())
	start := time.Now()
	e.cli("image", "source", "add", "lab", src)
	out := e.cli("node", "deploy", e.nodeName, "--image", "lab:ironlite/test",
		"--config-drive", `{"meta_data": {"hostname": "e2e-uefi"}}`, "--wait", "300")
	if !strings.Contains(out, "imported lab:ironlite/test") || !strings.Contains(out, e.nodeName+": active") {
		t.Errorf("ironlite node deploy --image output:\n%s", out)
	}
	n := e.waitState("active", 5*time.Minute)
	e.timings.mark("deploy by catalogue alias (UEFI, firmware PXE -> TFTP iPXE): available -> active", start)
	if urls := e.ctl.logs.String(); !strings.Contains(urls, "/images/"+e.imageSHA+"/") {
		t.Errorf("the agent was not sent the controller's cached image URL")
	}
	t.Logf("deploy phases recorded on the node: %v", n["driver_internal_info"].(map[string]any)["ironlite_deploy"])
	if !strings.Contains(e.ctl.logs.String(), "snponly.efi") && !strings.Contains(e.ctl.logs.String(), "ipxe.efi") {
		t.Errorf("the controller's log shows no iPXE EFI binary handed out over DHCP/TFTP")
	}
	start = time.Now()
	e.node.waitSerial(t, serialAt, 3*time.Minute, markerBooted, markerHostname+"e2e-uefi")
	e.timings.mark("instance boot from disk (UEFI, GRUB)", start)
	e.checkDiskMatchesImage()
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveStreams writes a simplestreams tree and serves it with python's
// http.server inside the lab's netns; it returns the tree's URL there.
func (e *deployEnv) serveStreams(imgs ...streamtest.Image) string {
	e.t.Helper()
	dir := e.t.TempDir()
	streamtest.Write(e.t, dir, imgs...)
	port := vmtest.FreePort(e.t)
	cmd := exec.Command("ip", "netns", "exec", "ilab-"+e.lab.name, "python3", "-m", "http.server",
		"--bind", "127.0.0.1", "--directory", dir, fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("serve the simplestreams tree: %v", err)
	}
	e.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for i := 0; ; i++ {
		if out, err := exec.Command("ip", "netns", "exec", "ilab-"+e.lab.name, "curl", "-sf", "-o", "/dev/null", u+"streams/v1/index.json").CombinedOutput(); err == nil {
			break
		} else if i == 50 {
			e.t.Fatalf("the simplestreams tree does not answer: %v %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return u
}

// cli runs the ironlite client against the controller and returns its
// combined output.
func (e *deployEnv) cli(args ...string) string {
	e.t.Helper()
	out, err := exec.Command(e.ctl.bin, append([]string{"--url", e.apiBase}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ironlite %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
