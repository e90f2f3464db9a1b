package configdrive

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// fullContents exercises every file, with a multi-line user_data.
func fullContents(t *testing.T) (Contents, map[string][]byte) {
	t.Helper()
	c, err := FromJSON(map[string]any{
		"meta_data":    map[string]any{"hostname": "web-1", "public_keys": map[string]any{"k": "ssh-ed25519 AAAA x@y"}},
		"user_data":    "#cloud-config\nhostname: web-1\n",
		"network_data": map[string]any{"links": []any{map[string]any{"id": "eth0", "type": "phy"}}},
		"vendor_data":  map[string]any{"static": map[string]any{"k": "v"}},
	}, node)
	if err != nil {
		t.Fatal(err)
	}
	files, err := c.Files()
	if err != nil {
		t.Fatal(err)
	}
	return c, files
}

func buildFile(t *testing.T, c Contents) (string, []byte) {
	t.Helper()
	iso, err := BuildISO(c)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "configdrive.iso")
	if err := os.WriteFile(p, iso, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, iso
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

func TestBuildISOReadBack(t *testing.T) {
	c, files := fullContents(t)
	p, iso := buildFile(t, c)
	if len(iso)%isoBlock != 0 {
		t.Errorf("image is %d bytes, not whole 2 KiB blocks", len(iso))
	}
	if got := string(iso[32768+40 : 32768+48]); got != Label {
		t.Errorf("volume identifier %q, want %q", got, Label)
	}

	b, err := file.OpenFromPath(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fs, err := iso9660.Read(b, int64(len(iso)), 0, isoBlock)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := fs.ReadFile(name)
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestBuildISOTools checks the image the way an operator would, and the way
// cloud-init finds it (blkid by label, then the Rock Ridge names).
func TestBuildISOTools(t *testing.T) {
	needTool(t, "isoinfo", "genisoimage")
	c, files := fullContents(t)
	p, _ := buildFile(t, c)

	d := run(t, "isoinfo", "-d", "-i", p)
	for _, want := range []string{"Volume id: config-2\n", "Logical block size is: 2048", "Rock Ridge signatures version 1 found", "Joliet with UCS level 3 found"} {
		if !strings.Contains(d, want) {
			t.Errorf("isoinfo -d lacks %q:\n%s", want, d)
		}
	}
	for _, ext := range []string{"-R", "-J"} {
		listing := run(t, "isoinfo", ext, "-f", "-i", p)
		for name := range files {
			if !strings.Contains(listing, "/"+name+"\n") {
				t.Errorf("isoinfo %s -f lacks /%s:\n%s", ext, name, listing)
			}
		}
		for name, want := range files {
			if got := run(t, "isoinfo", ext, "-x", "/"+name, "-i", p); got != string(want) {
				t.Errorf("isoinfo %s -x /%s = %q, want %q", ext, name, got, want)
			}
		}
	}
	// Rock Ridge modes: world-readable, like genisoimage -r.
	if l := run(t, "isoinfo", "-R", "-l", "-i", p); !strings.Contains(l, "-r--r--r--") && !strings.Contains(l, "-rw-r--r--") {
		t.Errorf("files not world-readable:\n%s", l)
	}

	if _, err := exec.LookPath("isovfy"); err == nil {
		if out := run(t, "isovfy", p); !strings.Contains(out, "No errors found") {
			t.Errorf("isovfy:\n%s", out)
		}
	}
}

// TestBuildISOBlockSizedFiles covers files whose size is a whole number of
// 2 KiB blocks, after which go-diskfs writes a stray zero block (see
// memImage): the last file (user_data when there is no vendor_data) is
// followed by the Joliet directories.
func TestBuildISOBlockSizedFiles(t *testing.T) {
	needTool(t, "isoinfo", "genisoimage")
	for _, size := range []int{2048, 4096, 6144} {
		c := Contents{
			MetaData:    map[string]any{"uuid": node.UUID},
			NetworkData: map[string]any{"pad": strings.Repeat("n", 2048-10)}, // {"pad":"…"} is 2048 bytes
			UserData:    bytes.Repeat([]byte("u"), size),
		}
		files := mustFiles(t, c)
		if n := len(files["openstack/latest/network_data.json"]); n != 2048 {
			t.Fatalf("network_data.json is %d bytes, want 2048", n)
		}
		p, _ := buildFile(t, c)
		for _, ext := range []string{"-R", "-J"} {
			for name, want := range files {
				if got := run(t, "isoinfo", ext, "-x", "/"+name, "-i", p); got != string(want) {
					t.Errorf("user_data %d bytes: isoinfo %s -x /%s: got %d bytes, want %d", size, ext, name, len(got), len(want))
				}
			}
		}
	}
}

func TestBuildISOBlkid(t *testing.T) {
	needTool(t, "blkid", "util-linux")
	c, _ := fullContents(t)
	p, _ := buildFile(t, c)
	out := run(t, "blkid", "-p", "-o", "export", p)
	for _, want := range []string{"TYPE=iso9660\n", "LABEL=config-2\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("blkid lacks %q:\n%s", want, out)
		}
	}
}

func TestBuildISOUserDataObject(t *testing.T) {
	c, err := FromJSON(map[string]any{"user_data": map[string]any{"ignition": map[string]any{"version": "3.4.0"}}}, node)
	if err != nil {
		t.Fatal(err)
	}
	files := mustFiles(t, c)
	if got, want := string(files["openstack/latest/user_data"]), `{"ignition":{"version":"3.4.0"}}`; got != want {
		t.Errorf("user_data = %q, want %q", got, want)
	}
	if _, err := BuildISO(c); err != nil {
		t.Fatal(err)
	}
}

func mustFiles(t *testing.T, c Contents) map[string][]byte {
	t.Helper()
	files, err := c.Files()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestBuildISOSizeLimit(t *testing.T) {
	// Every file is written twice (2012-08-10 and latest): 33 MiB of user
	// data makes a 66 MiB image, refused before anything is built.
	big := Contents{UserData: bytes.Repeat([]byte("x"), 33<<20)}
	_, err := BuildISO(big)
	if err == nil || !strings.Contains(err.Error(), "64 MiB limit") {
		t.Fatalf("BuildISO(66 MiB) = %v, want the 64 MiB limit", err)
	}

	if testing.Short() {
		t.Skip("near-limit build skipped in -short mode")
	}
	// 31 MiB twice fits.
	ok := Contents{UserData: bytes.Repeat([]byte("y"), 31<<20)}
	iso, err := BuildISO(ok)
	if err != nil {
		t.Fatalf("BuildISO(62 MiB): %v", err)
	}
	if len(iso) > MaxSize || len(iso) < 62<<20 {
		t.Errorf("image is %d bytes", len(iso))
	}
}

func TestEncode(t *testing.T) {
	c, _ := fullContents(t)
	iso, err := BuildISO(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Encode(iso)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(s, "\r\n ") {
		t.Error("encoded config drive has whitespace")
	}
	if got := decode(t, s); !bytes.Equal(got, iso) {
		t.Error("gunzip(base64) does not give the image back")
	}
	if len(s) > len(iso)/2 {
		t.Errorf("encoded %d bytes for a %d-byte image: not compressed?", len(s), len(iso))
	}
}

func TestBuild(t *testing.T) {
	s, err := Build(map[string]any{"meta_data": map[string]any{"hostname": "h"}}, node)
	if err != nil {
		t.Fatal(err)
	}
	iso := decode(t, s)
	if string(iso[32768+1:32768+6]) != "CD001" {
		t.Fatal("not an ISO9660 image")
	}
	if _, err := Build(map[string]any{"bogus": 1}, node); err == nil {
		t.Error("Build accepted an unknown key")
	}
}

func decode(t *testing.T, s string) []byte {
	t.Helper()
	gz, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
