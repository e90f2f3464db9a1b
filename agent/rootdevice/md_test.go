package rootdevice

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/protocol"
)

// withMD makes ForNode see arrays as the running md arrays.
func withMD(t *testing.T, arrays []MDArray) {
	old := scanMD
	scanMD = func() []MDArray { return arrays }
	t.Cleanup(func() { scanMD = old })
}

// fakeMember makes a member device under root: sysfs entries (a partition
// of parent when parent is not "") and a /dev file of sectors 512-byte
// sectors with a v1.x md superblock named name at the place version puts it.
func fakeMember(t *testing.T, root, parent, dev string, sectors int64, version, name string) {
	t.Helper()
	dir := filepath.Join(root, "sys/devices/virtual", dev)
	if parent != "" {
		dir = filepath.Join(root, "sys/devices/virtual", parent, dev)
		mustWrite(t, filepath.Join(dir, "partition"), "1\n")
	}
	mustWrite(t, filepath.Join(dir, "size"), strconv.FormatInt(sectors, 10)+"\n")
	if err := os.MkdirAll(filepath.Join(root, "sys/class/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(root, "sys/class/block", dev)); err != nil {
		t.Fatal(err)
	}
	var off int64
	switch version {
	case "1.0":
		off = (sectors - 16) &^ 7 * 512
	case "1.2":
		off = 4096
	}
	sb := make([]byte, 256)
	binary.LittleEndian.PutUint32(sb[0:], 0xa92b4efc)
	binary.LittleEndian.PutUint32(sb[4:], 1)
	copy(sb[32:64], name)
	p := filepath.Join(root, "dev", dev)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(sectors * 512); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sb, off); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeArray(t *testing.T, root, md, version string, members ...string) {
	t.Helper()
	mustWrite(t, filepath.Join(root, "sys/block", md, "md/metadata_version"), version+"\n")
	for _, m := range members {
		if err := os.MkdirAll(filepath.Join(root, "sys/block", md, "slaves", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMDArrays(t *testing.T) {
	root := t.TempDir()
	// md127: the root mirror over partitions, metadata 1.0.
	fakeMember(t, root, "sda", "sda2", 204800, "1.0", "any:root")
	fakeMember(t, root, "sdb", "sdb2", 204800, "1.0", "any:root")
	fakeArray(t, root, "md127", "1.0", "sda2", "sdb2")
	// md126: whole disks, metadata 1.2, another homehost.
	fakeMember(t, root, "", "sdc", 409600, "1.2", "web1:data")
	fakeMember(t, root, "", "sdd", 409600, "1.2", "web1:data")
	fakeArray(t, root, "md126", "1.2", "sdc", "sdd")
	// md125: 0.90 metadata carries no name; md124 is stopped (no slaves).
	fakeMember(t, root, "", "sde", 409600, "0.90", "")
	fakeArray(t, root, "md125", "0.90", "sde")
	fakeArray(t, root, "md124", "1.2")
	got := MDArrays(root)
	want := []MDArray{
		{Device: "/dev/md125", Disks: []string{"/dev/sde"}},
		{Device: "/dev/md126", Name: "data", Disks: []string{"/dev/sdc", "/dev/sdd"}},
		{Device: "/dev/md127", Name: "root", Disks: []string{"/dev/sda", "/dev/sdb"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MDArrays:\n got %+v\nwant %+v", got, want)
	}
	if got[2].Link() != "/dev/md/root" || got[0].Link() != "" {
		t.Errorf("links %q %q", got[2].Link(), got[0].Link())
	}
}

func TestRAIDRootVolume(t *testing.T) {
	for _, tc := range []struct {
		node, want string
		ok         bool
	}{
		{`{}`, "", false},
		{`{"target_raid_config": {}}`, "", false},
		{`{"target_raid_config": {"logical_disks": [{"raid_level": "1", "controller": "software", "size_gb": 10}]}}`, "", false},
		{`{"target_raid_config": {"logical_disks": [{"raid_level": "1", "controller": "software", "size_gb": 10, "is_root_volume": true}]}}`, "root", true},
		{`{"target_raid_config": {"logical_disks": [{"raid_level": "0", "controller": "software", "size_gb": 10},
			{"raid_level": "1", "controller": "software", "size_gb": 10, "is_root_volume": true, "volume_name": "os"}]}}`, "os", true},
		{`{"target_raid_config": {"logical_disks": [{"raid_level": "1", "controller": "RAID.Integrated.1-1", "size_gb": 10, "is_root_volume": true}]}}`, "", false},
		// What was built (raid_config) wins over what is wanted.
		{`{"raid_config": {"logical_disks": [{"raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "built"}]},
		   "target_raid_config": {"logical_disks": [{"raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "wanted"}]}}`, "built", true},
	} {
		var n map[string]any
		if err := json.Unmarshal([]byte(tc.node), &n); err != nil {
			t.Fatal(err)
		}
		if got, ok := RAIDRootVolume(n); got != tc.want || ok != tc.ok {
			t.Errorf("%s: %q %v, want %q %v", tc.node, got, ok, tc.want, tc.ok)
		}
	}
	// The agent's own result shape (not through JSON).
	n := map[string]any{"raid_config": map[string]any{"logical_disks": []map[string]any{{"controller": "software", "is_root_volume": true, "volume_name": "x"}}}}
	if got, ok := RAIDRootVolume(n); got != "x" || !ok {
		t.Errorf("[]map: %q %v", got, ok)
	}
}

func TestForNodeSoftwareRAID(t *testing.T) {
	devs := []protocol.BlockDevice{
		{Name: "/dev/md126", Size: 10 << 30},
		{Name: "/dev/md127", Size: 20 << 30},
		{Name: "/dev/sda", Size: 20 << 30, Serial: sp("A")},
		{Name: "/dev/sdb", Size: 20 << 30, Serial: sp("B")},
		{Name: "/dev/sdc", Size: 10 << 30},
		{Name: "/dev/sdd", Size: 10 << 30},
		{Name: "/dev/sde", Size: 8 << 30},
	}
	withMD(t, []MDArray{
		{Device: "/dev/md126", Name: "data", Disks: []string{"/dev/sdc", "/dev/sdd"}},
		{Device: "/dev/md127", Name: "root", Disks: []string{"/dev/sda", "/dev/sdb"}},
	})
	target := `"target_raid_config": {"logical_disks": [{"size_gb": 20, "raid_level": "1", "controller": "software", "is_root_volume": true}]}`
	for _, tc := range []struct {
		name, node, want, err string
	}{
		{"root volume", `{` + target + `}`, "/dev/md127", ""},
		{"root volume named", `{"target_raid_config": {"logical_disks": [{"size_gb": 20, "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "data"}]}}`, "/dev/md126", ""},
		{"hints win", `{` + target + `, "properties": {"root_device": {"name": "/dev/sde"}}}`, "/dev/sde", ""},
		{"name hint by link", `{"properties": {"root_device": {"name": "/dev/md/root"}}}`, "/dev/md127", ""},
		{"name hint short", `{"properties": {"root_device": {"name": "md/data"}}}`, "/dev/md126", ""},
		{"name hint by device", `{"properties": {"root_device": {"name": "/dev/md126"}}}`, "/dev/md126", ""},
		{"size hint skips members", `{"properties": {"root_device": {"size": 20}}}`, "/dev/md127", ""},
		{"no config: size rule without members", `{}`, "/dev/sde", ""},
		{"member named", `{"properties": {"root_device": {"serial": "A"}}}`, "", "Excluded as members of running md arrays: /dev/sda, /dev/sdb, /dev/sdc, /dev/sdd."},
		{"skipped volume", `{"properties": {"root_device": {"name": "/dev/md/data"}, "skip_block_devices": [{"volume_name": "data"}]}}`, "", "Excluded by properties.skip_block_devices: /dev/md126."},
		{"root volume missing", `{"target_raid_config": {"logical_disks": [{"size_gb": 20, "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "os"}]}}`, "",
			`software RAID root volume "os", but no running md array is named "os" (running: /dev/md126 (data), /dev/md127 (root))`},
		{"root volume skipped", `{` + target + `, "properties": {"skip_block_devices": [{"volume_name": "root"}]}}`, "", `no running md array is named "root"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n map[string]any
			if err := json.Unmarshal([]byte(tc.node), &n); err != nil {
				t.Fatal(err)
			}
			got, err := ForNode(devs, n)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrNotFound) {
					t.Fatalf("ForNode = %s, %v; want error containing %q", got.Name, err, tc.err)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("ForNode = %s, %v; want %s", got.Name, err, tc.want)
			}
		})
	}

	// No array running: the root volume is not built or not assembled.
	withMD(t, nil)
	var n map[string]any
	_ = json.Unmarshal([]byte(`{`+target+`}`), &n)
	_, err := ForNode(devs[2:], n)
	if err == nil || !strings.Contains(err.Error(), "no md array is running: build it with the raid.create_configuration clean step") {
		t.Errorf("nothing running: %v", err)
	}
	// Not-found messages show the arrays' links.
	withMD(t, []MDArray{{Device: "/dev/md127", Name: "root", Disks: []string{"/dev/sda", "/dev/sdb"}}})
	_ = json.Unmarshal([]byte(`{"properties": {"root_device": {"name": "/dev/md/nope"}}}`), &n)
	if _, err := ForNode(devs, n); err == nil || !strings.Contains(err.Error(), "/dev/md127 (/dev/md/root, 20 GiB") {
		t.Errorf("not found: %v", err)
	}
}
