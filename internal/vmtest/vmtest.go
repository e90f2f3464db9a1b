// Package vmtest is the shared harness of the end-to-end tests that boot
// the ramdisk in qemu (agent/e2e, controller/e2e): where the repository
// and the built ramdisk are, free loopback ports, and a buffer that qemu
// and a controller can write their logs into while the test reads them.
package vmtest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// Ramdisk returns the paths of build/vmlinuz and build/ironlite-agent.cpio.gz
// under root, building them first with initramfs/build.sh when build is
// set, and fails the test when they are missing.
func Ramdisk(t testing.TB, root string, build bool) (kernel, initrd string) {
	t.Helper()
	kernel = filepath.Join(root, "build/vmlinuz")
	initrd = filepath.Join(root, "build/ironlite-agent.cpio.gz")
	if build {
		cmd := exec.Command("bash", filepath.Join(root, "initramfs/build.sh"))
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("initramfs build failed: %v\n%s", err, out)
		}
		t.Logf("ramdisk built:\n%s", Tail(string(out), 10))
	}
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: run make initramfs first: %v", f, err)
		}
	}
	return kernel, initrd
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Buffer is a bytes.Buffer safe for one writer goroutine (a process's
// output) and concurrent readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
