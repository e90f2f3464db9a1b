package disk

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// quiet is the logger tests pass where a *slog.Logger is needed.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
}

// run runs a command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// probe runs blkid -p (low-level superblock and partition table probing,
// no cache) on length bytes of dev at offset (0, 0: the whole device) and
// returns what it found, "" for nothing.
func probe(t *testing.T, dev string, offset, length int64) string {
	t.Helper()
	args := []string{"-p", "-o", "export"}
	if length > 0 {
		args = append(args, "-O", strconv.FormatInt(offset, 10), "-S", strconv.FormatInt(length, 10))
	}
	out, err := exec.Command("blkid", append(args, dev)...).CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 2 {
			return "" // nothing found
		}
		t.Fatalf("blkid %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// Keep the interesting lines only.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "TYPE=") || strings.HasPrefix(l, "PTTYPE=") || strings.HasPrefix(l, "USAGE=") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, " ")
}

// partitionTable returns sfdisk -d's dump, "" when there is no table.
func partitionTable(t *testing.T, dev string) string {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", dev).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

// waitFor waits until path exists (devtmpfs creates partition nodes
// asynchronously after a partition scan).
func waitFor(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}

// randomFile creates a file of size bytes of random data.
func randomFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertZero reads path in full and fails unless every byte is zero.
func assertZero(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	var off int64
	for {
		n, err := f.Read(buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			i := off
			for _, b := range buf[:n] {
				if b != 0 {
					break
				}
				i++
			}
			t.Fatalf("%s: non-zero byte at offset %d", path, i)
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if off == 0 {
		t.Fatalf("%s is empty", path)
	}
}
