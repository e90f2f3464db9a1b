// Package blockdevtest gives tests real block devices: loop devices over
// files in the test's temporary directory, detached when the test ends.
package blockdevtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Loop attaches file to a free loop device (with partition scanning when
// partscan is set, so /dev/loopNpM nodes appear) and returns its path. The
// test is skipped, saying why, when loop devices cannot be used here (not
// root, no losetup, no /dev/loop-control).
func Loop(t testing.TB, file string, partscan bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed (util-linux)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control: loop devices unavailable")
	}
	args := []string{"--find", "--show"}
	if partscan {
		args = append(args, "--partscan")
	}
	out, err := exec.Command("losetup", append(args, file)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// File creates a file of size bytes in the test's temporary directory,
// filled with fill (nil: sparse zeroes), and returns its path.
func File(t testing.TB, name string, size int64, fill []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fill == nil {
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for off := int64(0); off < size; off += int64(len(fill)) {
		n := min(int64(len(fill)), size-off)
		if _, err := f.WriteAt(fill[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// LoopFile is File + Loop: a loop device over a new file.
func LoopFile(t testing.TB, size int64, fill []byte) string {
	t.Helper()
	return Loop(t, File(t, "disk.img", size, fill), false)
}

// ReadAt returns n bytes of the file or device p at off.
func ReadAt(t testing.TB, p string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
