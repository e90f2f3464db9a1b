package filesystem_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/filesystem"
)

// fsck is the read-only check for each type: the tool and its arguments
// before the device.
var fsck = map[string][]string{
	filesystem.Ext4: {"e2fsck", "-f", "-n"},
	filesystem.XFS:  {"xfs_repair", "-n", "-f"},
	filesystem.VFAT: {"fsck.fat", "-n"},
}

// tool names the mkfs tool to look for before a test of fstype.
var tool = map[string]string{
	filesystem.Ext4: "mke2fs",
	filesystem.XFS:  "mkfs.xfs",
	filesystem.VFAT: "mkfs.fat",
	filesystem.Swap: "mkswap",
}

func need(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := lookPath(n); err != nil {
			t.Skipf("%s not installed on this host", n)
		}
	}
}

func lookPath(n string) (string, error) {
	if p, err := exec.LookPath(n); err == nil {
		return p, nil
	}
	for _, d := range []string{"/sbin", "/usr/sbin"} {
		if _, err := os.Stat(filepath.Join(d, n)); err == nil {
			return filepath.Join(d, n), nil
		}
	}
	return "", exec.ErrNotFound
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	p, err := lookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// blkid reads TYPE, UUID and LABEL of a file with blkid itself, bypassing
// its cache.
func blkid(t *testing.T, path string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, tag := range []string{"TYPE", "UUID", "LABEL"} {
		p, _ := lookPath("blkid")
		out, _ := exec.Command(p, "-c", "/dev/null", "-p", "-o", "value", "-s", tag, path).Output()
		got[tag] = strings.TrimSpace(string(out))
	}
	return got
}

func image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

var rfc4122 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestMake(t *testing.T) {
	need(t, "blkid")
	for _, tc := range []struct {
		fstype, label string
		size          int64
		uuid          *regexp.Regexp
	}{
		{filesystem.Ext4, "ephemeral0", 64 << 20, rfc4122},
		{filesystem.Ext4, "", 16 << 20, rfc4122},
		{filesystem.Ext4, "sixteen-chars-16", 16 << 20, rfc4122},
		{filesystem.XFS, "ephemeral0", 320 << 20, rfc4122}, // mkfs.xfs 6.x wants 300 MiB
		{filesystem.VFAT, "ephemeral0", 64 << 20, regexp.MustCompile(`^[0-9A-F]{4}-[0-9A-F]{4}$`)},
		{filesystem.VFAT, "DATA", 600 << 20, regexp.MustCompile(`^[0-9A-F]{4}-[0-9A-F]{4}$`)}, // FAT32
		{filesystem.Swap, "swap1", 16 << 20, rfc4122},
	} {
		t.Run(tc.fstype+"/"+tc.label, func(t *testing.T) {
			need(t, tool[tc.fstype])
			dev := image(t, tc.size)
			id, err := filesystem.Make(context.Background(), dev, tc.fstype, tc.label)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.uuid.MatchString(id) {
				t.Errorf("uuid %q does not look like %s", id, tc.uuid)
			}
			got := blkid(t, dev)
			want := map[string]string{"TYPE": tc.fstype, "UUID": id, "LABEL": tc.label}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("blkid %s = %q, want %q", k, got[k], v)
				}
			}
			if info, err := filesystem.IdentifyDevice(dev); err != nil || info != (filesystem.Info{Type: tc.fstype, UUID: id, Label: tc.label}) {
				t.Errorf("IdentifyDevice = %+v, %v", info, err)
			}
			if c, ok := fsck[tc.fstype]; ok {
				need(t, c[0])
				run(t, c[0], append(c[1:], dev)...)
			}
		})
	}
}

// TestMakeTwice formats over an existing filesystem of another type: the
// old signature must not survive for blkid to report both.
func TestMakeTwice(t *testing.T) {
	need(t, "blkid", "mke2fs", "mkswap")
	dev := image(t, 64<<20)
	if _, err := filesystem.Make(context.Background(), dev, filesystem.Ext4, "old"); err != nil {
		t.Fatal(err)
	}
	id, err := filesystem.Make(context.Background(), dev, filesystem.Swap, "swap1")
	if err != nil {
		t.Fatal(err)
	}
	if got := blkid(t, dev); got["TYPE"] != "swap" || got["UUID"] != id {
		t.Errorf("blkid after reformatting: %v", got)
	}
}

func TestMakeRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, dev, fstype, label string
		is                       error
		msg                      string
	}{
		{"unknown type", "x", "btrfs", "", filesystem.ErrUnsupported, `"btrfs" (supported: ext4, xfs, vfat, swap)`},
		{"empty type", "x", "", "", filesystem.ErrUnsupported, "unsupported filesystem type"},
		{"label too long for vfat", "x", filesystem.VFAT, "twelve-chars", filesystem.ErrBadLabel, "longer than the 11"},
		{"label too long for xfs", "x", filesystem.XFS, "thirteen-char", filesystem.ErrBadLabel, "longer than the 12"},
		{"label too long for ext4", "x", filesystem.Ext4, "seventeen-chars-x", filesystem.ErrBadLabel, "longer than the 16"},
		{"label with a space", "x", filesystem.Ext4, "my data", filesystem.ErrBadLabel, "' '"},
		{"label with a slash", "x", filesystem.Swap, "a/b", filesystem.ErrBadLabel, "'/'"},
		{"label with a quote", "x", filesystem.Ext4, `a"b`, filesystem.ErrBadLabel, `'"'`},
		{"missing device", filepath.Join(dir, "nope"), filesystem.Ext4, "", nil, "no such file"},
		{"directory", dir, filesystem.Ext4, "", nil, "not a block device or a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.is == nil {
				need(t, tool[tc.fstype])
			}
			_, err := filesystem.Make(context.Background(), tc.dev, tc.fstype, tc.label)
			if err == nil {
				t.Fatal("Make succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

// TestMakeToolMissing runs Make with an empty PATH and no sbin directories
// to fall back on, as in a ramdisk built without the tool.
func TestMakeToolMissing(t *testing.T) {
	restore := filesystem.SetSbinDirs(nil)
	t.Cleanup(restore)
	t.Setenv("PATH", t.TempDir())
	dev := image(t, 1<<20)
	for _, tc := range []struct{ fstype, msg string }{
		{filesystem.XFS, "mkfs.xfs not found in the ramdisk"},
		{filesystem.Ext4, "mkfs.ext4 or mke2fs not found in the ramdisk"},
		{filesystem.VFAT, "mkfs.fat or mkfs.vfat not found in the ramdisk"},
		{filesystem.Swap, "mkswap not found in the ramdisk"},
	} {
		_, err := filesystem.Make(context.Background(), dev, tc.fstype, "")
		if !errors.Is(err, filesystem.ErrToolMissing) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want ErrToolMissing saying %q", tc.fstype, err, tc.msg)
		}
	}
}

func TestSupported(t *testing.T) {
	got := filesystem.Supported()
	for _, fs := range got {
		if err := filesystem.ValidateLabel(fs, "ok"); err != nil {
			t.Errorf("%s: %v", fs, err)
		}
	}
	if len(got) != 4 {
		t.Errorf("Supported() = %v", got)
	}
}

func TestIdentifyUnknown(t *testing.T) {
	dev := image(t, 1<<20)
	if info, err := filesystem.IdentifyDevice(dev); err != nil || info != (filesystem.Info{}) {
		t.Errorf("IdentifyDevice(zeroes) = %+v, %v", info, err)
	}
}
