//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlite/ironlite/internal/vmtest"
)

// lab drives scripts/lab: a network namespace with a bridge, virtual
// bare-metal nodes (qemu + ipmi_sim with a chassis program) and, inside
// the namespace, the controller under test with its DHCP, TFTP and HTTP.
type lab struct {
	t      *testing.T
	root   string // repository
	name   string
	vars   map[string]string
	hostIP string
}

func labScript(root string) string { return filepath.Join(root, "scripts/lab") }

func newLab(t *testing.T, root string) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root (network namespaces, tap devices); CI runs as root")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ipmi_sim", "socat", "ip", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps)", tool)
		}
	}
	l := &lab{t: t, root: root, name: fmt.Sprintf("e2e%d", os.Getpid()%100000)}
	// A previous crashed run may have left this lab behind.
	exec.Command(labScript(root), "down", "--lab", l.name).Run()
	l.vars = l.run("up", "--lab", l.name)
	l.hostIP = l.vars["LAB_HOST_IP"]
	if l.hostIP == "" {
		t.Fatalf("scripts/lab up printed no LAB_HOST_IP: %v", l.vars)
	}
	t.Cleanup(func() {
		if os.Getenv("IRONLITE_E2E_KEEP_LAB") != "" {
			t.Logf("keeping lab %s (scripts/lab down --lab %s)", l.name, l.name)
			return
		}
		if out, err := exec.Command(labScript(root), "down", "--lab", l.name).CombinedOutput(); err != nil {
			t.Logf("lab down: %v\n%s", err, out)
		}
	})
	return l
}

// run runs scripts/lab with args and parses its KEY=VALUE lines.
func (l *lab) run(args ...string) map[string]string {
	l.t.Helper()
	cmd := exec.Command(labScript(l.root), args...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		l.t.Fatalf("scripts/lab %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && k != "" && !strings.ContainsAny(k, " \t") {
			vars[k] = strings.Trim(v, `"'`)
		}
	}
	return vars
}

// labNode is one virtual machine of the lab.
type labNode struct {
	name, mac, bmcPort, bmcUser, bmcPassword, serialLog string
	disks                                               []string
}

func (l *lab) addNode(name string, args ...string) *labNode {
	l.t.Helper()
	v := l.run(append([]string{"node", "add", name, "--lab", l.name}, args...)...)
	n := &labNode{name: name, mac: v["NODE_MAC"], bmcPort: v["NODE_BMC_PORT"], bmcUser: v["NODE_BMC_USER"],
		bmcPassword: v["NODE_BMC_PASSWORD"], serialLog: v["NODE_SERIAL_LOG"], disks: strings.Fields(v["NODE_DISKS"])}
	if n.mac == "" || n.bmcPort == "" || n.serialLog == "" || len(n.disks) == 0 {
		l.t.Fatalf("scripts/lab node add printed %v", v)
	}
	l.t.Cleanup(func() {
		if l.t.Failed() {
			data, _ := os.ReadFile(n.serialLog)
			l.t.Logf("serial log of %s (tail):\n%s", name, vmtest.Tail(string(data), 60))
		}
	})
	return n
}

func (n *labNode) serial() string {
	data, _ := os.ReadFile(n.serialLog)
	return string(data)
}

// waitSerial waits until the node's serial log has all of the strings,
// counting only output after offset.
func (n *labNode) waitSerial(t *testing.T, offset int, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := n.serial()
		if len(s) >= offset {
			s = s[offset:]
		}
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial log of %s: no %q after %s:\n%s", n.name, missing, timeout, vmtest.Tail(s, 40))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// controller is `ironlite serve` running inside the lab's namespace; its
// API is forwarded to 127.0.0.1:<port> in the test's namespace.
type controller struct {
	l       *lab
	bin     string
	dataDir string
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	logs    *vmtest.Buffer
	base    string
}

func (l *lab) startController(bin string, extra ...string) *controller {
	l.t.Helper()
	c := &controller{l: l, bin: bin, dataDir: l.t.TempDir(), logs: &vmtest.Buffer{}}
	c.args = append([]string{"serve", "--listen", "0.0.0.0:6385", "--boot-url", "http://" + l.hostIP + ":6385",
		"--data-dir", c.dataDir, "--log-level", "debug",
		"--tftp-listen", l.hostIP + ":69",
		"--dhcp", "full", "--dhcp-interface", "br0",
		"--dhcp-range", l.hostIP[:strings.LastIndex(l.hostIP, ".")] + ".100-" + l.hostIP[:strings.LastIndex(l.hostIP, ".")] + ".199",
		"--sync-power-state-interval", "0",
	}, extra...)
	c.start(l.t)
	port := vmtest.FreePort(l.t)
	l.run("forward", "--lab", l.name, fmt.Sprint(port), "6385")
	c.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	c.waitUp(l.t)
	l.t.Cleanup(func() {
		c.stop(syscall.SIGTERM)
		if l.t.Failed() {
			l.t.Logf("controller log (tail):\n%s", vmtest.Tail(c.logs.String(), 120))
		}
	})
	return c
}

func (c *controller) start(t *testing.T) {
	t.Helper()
	c.cmd = exec.Command("ip", append([]string{"netns", "exec", "ilab-" + c.l.name, c.bin}, c.args...)...)
	pr, pw := io.Pipe()
	c.cmd.Stderr = pw
	c.cmd.Stdout = pw
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.logs.Write([]byte(sc.Text() + "\n"))
		}
	}()
	cmd, exited := c.cmd, make(chan struct{})
	c.exited = exited
	go func() {
		cmd.Wait()
		pw.Close()
		close(exited)
	}()
}

// stop ends the controller with sig (SIGKILL to simulate a crash).
func (c *controller) stop(sig syscall.Signal) {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// restart starts the controller again on the same data directory.
func (c *controller) restart(t *testing.T) {
	t.Helper()
	c.start(t)
	c.waitUp(t)
}

// waitUp waits until the controller's API answers through the forward.
func (c *controller) waitUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !probe(c.base + "/") {
		if time.Now().After(deadline) {
			t.Fatalf("controller not reachable through the forward:\n%s", vmtest.Tail(c.logs.String(), 40))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// probe says whether url answers 200 (without failing the test: the
// controller may be starting).
func probe(url string) bool {
	res, err := http.Get(url)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == 200
}
