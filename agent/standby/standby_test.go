package standby_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/imagewrite"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/standby"
	"github.com/ironlite/ironlite/images/configdrive"
)

const imgSize = 32 << 20

// fixture is a qcow2 whole-disk image with a GPT, served over HTTP.
type fixture struct {
	dir, raw, qcow2 string
	sum             string
	srv             *httptest.Server
	// truncate, when set, makes the server cut image responses short.
	truncate bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	for _, tool := range []string{"qemu-img", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	f := &fixture{dir: t.TempDir()}
	f.raw = filepath.Join(f.dir, "disk.raw")
	b := make([]byte, imgSize)
	rand.Read(b[4<<20 : 12<<20])
	copy(b[20<<20:], bytes.Repeat([]byte("ironlite "), 100000))
	if err := os.WriteFile(f.raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", f.raw)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=20480, type=linux\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	f.qcow2 = filepath.Join(f.dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-c", "-O", "qcow2", f.raw, f.qcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	q, _ := os.ReadFile(f.qcow2)
	s := sha256.Sum256(q)
	f.sum = hex.EncodeToString(s[:])
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.truncate && r.URL.Path == "/disk.qcow2" {
			// Announce the whole file, send a third, hang up.
			w.Header().Set("Content-Length", strconv.Itoa(len(q)))
			w.Header().Set("Accept-Ranges", "bytes")
			if r.Method == http.MethodHead {
				return
			}
			w.WriteHeader(200)
			_, _ = w.Write(q[:len(q)/3])
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
			}
			return
		}
		http.FileServer(http.Dir(f.dir)).ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) url() string { return f.srv.URL + "/disk.qcow2" }

func loopDisk(t *testing.T, size int64) string {
	t.Helper()
	fill := bytes.Repeat([]byte{0x5a}, 1<<20)
	return blockdevtest.LoopFile(t, size, fill)
}

// commands registers the standby commands with one disk, the given loop
// device, as the machine's only disk.
func commands(t *testing.T, dev string, size int64, node map[string]any) *api.Server {
	t.Helper()
	reg := api.NewRegistry()
	standby.Register(reg, standby.Options{
		Node: func() map[string]any { return node },
		ListDevices: func(context.Context) ([]protocol.BlockDevice, error) {
			return []protocol.BlockDevice{{Name: dev, Size: size}}, nil
		},
	})
	return api.New(context.Background(), reg, nil)
}

func run(t *testing.T, s *api.Server, name string, params map[string]any) protocol.CommandResult {
	t.Helper()
	res, err := s.Run(name, params, true)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func TestPrepareImageWithConfigDrive(t *testing.T) {
	f := newFixture(t)
	const disk = 5 << 30 // over IPA's 4 GiB minimum for a root disk
	dev := loopDisk(t, disk)
	s := commands(t, dev, disk, map[string]any{"properties": map[string]any{}})
	iso, err := configdrive.Build(map[string]any{"meta_data": map[string]any{"hostname": "bm01"}}, configdrive.NodeInfo{UUID: "u-1", Name: "bm01"})
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, s, "standby.prepare_image", map[string]any{
		"image_info": map[string]any{
			"id": "disk.qcow2", "urls": []any{f.url()}, "disk_format": "qcow2",
			"os_hash_algo": "sha256", "os_hash_value": f.sum,
		},
		"configdrive": iso,
	})
	if res.CommandStatus != protocol.StatusSucceeded {
		t.Fatalf("prepare_image: %s %+v", res.CommandStatus, res.CommandError)
	}
	msg := res.CommandResult.(map[string]any)["result"].(string)
	if !strings.HasPrefix(msg, "prepare_image: image (disk.qcow2) written to device "+dev+" root_uuid=0x") {
		t.Errorf("result %q", msg)
	}
	// The image is on the disk, byte for byte.
	want, _ := os.ReadFile(f.raw)
	got := make([]byte, imgSize)
	fd, _ := os.Open(dev)
	defer fd.Close()
	if _, err := fd.ReadAt(got[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := fd.ReadAt(got[1<<20:], 1<<20); err != nil {
		t.Fatal(err)
	}
	// The primary GPT changed (backup moved, config-2 added): compare after it.
	if !bytes.Equal(got[1<<20:], want[1<<20:]) {
		t.Fatal("disk content after the GPT differs from the image")
	}
	out, err := exec.Command("sfdisk", "-J", dev).CombinedOutput()
	if err != nil || strings.Count(string(out), `"node"`) != 2 {
		t.Fatalf("partitions after prepare_image: %v %s", err, out)
	}
	res = run(t, s, "standby.get_partition_uuids", map[string]any{})
	r := res.CommandResult.(map[string]any)
	ext, _ := r["ironlite"].(map[string]any)
	parts, _ := ext["partitions"].([]imagewrite.Partition)
	if r["root uuid"] == nil || ext["config_drive_partuuid"] == "" || len(parts) != 2 {
		t.Fatalf("get_partition_uuids: %+v", r)
	}
	cd := parts[1]
	if cd.Start < disk-65<<20 || cd.Start+cd.Size > disk { // 64 MiB, start aligned down to 1 MiB as sgdisk does
		t.Errorf("config drive partition %+v is not in the last 64 MiB (+ alignment)", cd)
	}
	if out, err := exec.Command("blkid", "-p", "-O", strconv.FormatInt(cd.Start, 10), dev).CombinedOutput(); err != nil || !strings.Contains(string(out), `LABEL="config-2"`) {
		t.Errorf("config drive at offset %d: %v %s", cd.Start, err, out)
	}
}

func TestPrepareImageFailures(t *testing.T) {
	f := newFixture(t)
	const disk = 5 << 30
	cases := []struct {
		name     string
		info     map[string]any
		truncate bool
		errType  string
		want     []string
	}{
		{"wrong checksum", map[string]any{"os_hash_algo": "sha256", "os_hash_value": strings.Repeat("ab", 32)}, false,
			"ImageChecksumError", []string{"checksum mismatch", "disk.qcow2", strings.Repeat("ab", 32)}},
		{"truncated download", map[string]any{"os_hash_algo": "sha256", "os_hash_value": "FILL"}, true,
			"ImageWriteError", []string{"disk.qcow2"}},
		{"not found", map[string]any{"os_hash_algo": "sha256", "os_hash_value": "FILL", "urls": []any{"MISSING"}}, false,
			"ImageDownloadError", []string{"404", "missing.qcow2"}},
		{"md5 refused", map[string]any{"checksum": strings.Repeat("a", 32)}, false,
			"ImageChecksumError", []string{"md5"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.truncate = tc.truncate
			defer func() { f.truncate = false }()
			dev := loopDisk(t, disk)
			s := commands(t, dev, disk, nil)
			info := map[string]any{"id": "disk.qcow2", "urls": []any{f.url()}}
			for k, v := range tc.info {
				info[k] = v
			}
			if info["os_hash_value"] == "FILL" {
				info["os_hash_value"] = f.sum
			}
			if u, _ := info["urls"].([]any); len(u) == 1 && u[0] == "MISSING" {
				info["urls"] = []any{f.srv.URL + "/missing.qcow2"}
			}
			res := run(t, s, "standby.prepare_image", map[string]any{"image_info": info})
			if res.CommandStatus != protocol.StatusFailed || res.CommandError == nil {
				t.Fatalf("status %s, error %+v", res.CommandStatus, res.CommandError)
			}
			e := res.CommandError
			if e.Type != tc.errType {
				t.Errorf("error type %s, want %s (%s)", e.Type, tc.errType, e.Details)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Details, w) {
					t.Errorf("error %q lacks %q", e.Details, w)
				}
			}
			// Nothing bootable is left behind: no partition table.
			if out, err := exec.Command("sfdisk", "-d", dev).CombinedOutput(); err == nil {
				t.Errorf("a partition table is on the disk after a failed write:\n%s", out)
			}
		})
	}
}

func TestPrepareImageValidation(t *testing.T) {
	s := commands(t, "/nonexistent", 5<<30, nil)
	for _, params := range []map[string]any{
		{},
		{"image_info": map[string]any{"urls": []any{"http://x/y"}, "checksum": "sha256:00"}},
		{"image_info": map[string]any{"id": "y", "urls": []any{}, "checksum": "sha256:00"}},
		{"image_info": map[string]any{"id": "y", "urls": []any{"http://x/y"}}},
	} {
		_, err := s.Run("standby.prepare_image", params, true)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != 400 {
			t.Errorf("params %v: error %v, want a 400", params, err)
		}
	}
}
