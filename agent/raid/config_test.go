package raid

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/protocol"
)

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return m
}

func TestParseConfigValid(t *testing.T) {
	cfg, err := ParseConfig(decode(t, `{"logical_disks": [
		{"size_gb": 100, "raid_level": "1", "controller": "software", "volume_name": "root", "is_root_volume": true,
		 "physical_disks": [{"name": "/dev/sda"}, {"name": "/dev/sdb"}]},
		{"size_gb": 10, "raid_level": "5", "controller": "software", "physical_disks": ["/dev/sda", "/dev/sdb", "/dev/sdc"]},
		{"size_gb": 10, "raid_level": "6", "controller": "software", "number_of_physical_disks": 4},
		{"size_gb": "MAX", "raid_level": "1+0", "controller": "software", "disk_type": "ssd", "share_physical_disks": true,
		 "filesystem": "xfs", "label": "scratch"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.LogicalDisks) != 4 {
		t.Fatalf("got %d logical disks", len(cfg.LogicalDisks))
	}
	l0, l3 := cfg.LogicalDisks[0], cfg.LogicalDisks[3]
	if !l0.IsRootVolume || l0.SizeGB != 100 || l0.Level != "1" || l0.VolumeName != "root" || len(l0.PhysicalDisks) != 2 {
		t.Errorf("logical disk 0: %+v", l0)
	}
	if !l3.Max || l3.SizeGB != 0 || l3.MDLevel() != "10" || l3.Filesystem != "xfs" || l3.Label != "scratch" {
		t.Errorf("logical disk 3: %+v", l3)
	}
	if cfg.LogicalDisks[2].NumberOfPhysicalDisks != 4 {
		t.Errorf("number_of_physical_disks: %+v", cfg.LogicalDisks[2])
	}
}

func TestParseConfigInvalid(t *testing.T) {
	for _, tc := range []struct{ name, cfg, want string }{
		{"nil", `null`, "no target_raid_config"},
		{"no list", `{}`, "logical_disks is required"},
		{"empty", `{"logical_disks": []}`, "logical_disks is empty"},
		{"top-level key", `{"logical_disks": [], "foo": 1}`, `unknown property "foo"`},
		{"unknown key", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "colour": "red"}]}`, "unknown properties colour"},
		{"unknown level", `{"logical_disks": [{"size_gb": 1, "raid_level": "7", "controller": "software"}]}`, `unknown raid_level "7"`},
		{"ironic level", `{"logical_disks": [{"size_gb": 1, "raid_level": "5+0", "controller": "software"}]}`, `raid_level "5+0" is not supported by software RAID`},
		{"level number", `{"logical_disks": [{"size_gb": 1, "raid_level": 1, "controller": "software"}]}`, "raid_level is required and must be a string"},
		{"hardware", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "RAID.Integrated.1-1"}]}`, `controller is "RAID.Integrated.1-1": this agent builds software RAID only`},
		{"no controller", `{"logical_disks": [{"size_gb": 1, "raid_level": "1"}]}`, `controller is missing`},
		{"no size", `{"logical_disks": [{"raid_level": "1", "controller": "software"}]}`, "size_gb is required"},
		{"bad size", `{"logical_disks": [{"size_gb": "max", "raid_level": "1", "controller": "software"}]}`, `size_gb is "max"`},
		{"zero size", `{"logical_disks": [{"size_gb": 0, "raid_level": "1", "controller": "software"}]}`, `size_gb is 0`},
		{"fraction", `{"logical_disks": [{"size_gb": 1.5, "raid_level": "1", "controller": "software"}]}`, `size_gb is 1.5`},
		{"MAX not last", `{"logical_disks": [
			{"size_gb": "MAX", "raid_level": "1", "controller": "software"},
			{"size_gb": 1, "raid_level": "0", "controller": "software"}]}`, `logical_disks[0] has size_gb "MAX" but is not the last`},
		{"raid1 one disk", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": ["/dev/sda"]}]}`, "RAID-1 needs at least 2 member disks, got 1"},
		{"raid5 two disks", `{"logical_disks": [{"size_gb": 1, "raid_level": "5", "controller": "software", "physical_disks": ["/dev/sda", "/dev/sdb"]}]}`, "RAID-5 needs at least 3 member disks, got 2"},
		{"raid6 three disks", `{"logical_disks": [{"size_gb": 1, "raid_level": "6", "controller": "software", "number_of_physical_disks": 3}]}`, "RAID-6 needs at least 4 member disks, got 3"},
		{"raid10 five disks", `{"logical_disks": [{"size_gb": 1, "raid_level": "1+0", "controller": "software", "number_of_physical_disks": 5}]}`, "RAID-1+0 needs an even number of member disks, got 5"},
		{"raid10 two disks", `{"logical_disks": [{"size_gb": 1, "raid_level": "1+0", "controller": "software", "physical_disks": ["a", "b"]}]}`, "RAID-1+0 needs at least 4 member disks, got 2"},
		{"root raid5", `{"logical_disks": [{"size_gb": 1, "raid_level": "5", "controller": "software", "is_root_volume": true}]}`, "the root volume must be RAID-1"},
		{"two roots", `{"logical_disks": [
			{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true},
			{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true}]}`, "both is_root_volume"},
		{"duplicate names", `{"logical_disks": [
			{"size_gb": 1, "raid_level": "1", "controller": "software", "volume_name": "a"},
			{"size_gb": 1, "raid_level": "1", "controller": "software", "volume_name": "a"}]}`, `the same volume_name "a"`},
		{"bad name", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "volume_name": "../x"}]}`, `volume_name "../x" is not usable`},
		{"bad hint", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": [{"colour": "x"}, {"name": "/dev/sdb"}]}]}`, "physical_disks[0]"},
		{"bad disk entry", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": [1, 2]}]}`, "physical_disks[0] is 1"},
		{"count mismatch", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "number_of_physical_disks": 3, "physical_disks": ["a", "b"]}]}`, "number_of_physical_disks is 3 but physical_disks lists 2"},
		{"unknown filesystem", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": "btrfs"}]}`, `filesystem "btrfs" is not supported (ext4, xfs, vfat)`},
		{"filesystem type", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": 4}]}`, `filesystem 4 is not supported`},
		{"swap is not a volume filesystem", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": "swap"}]}`, `filesystem "swap" is not supported`},
		{"filesystem on root", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true, "filesystem": "ext4"}]}`, "filesystem is for data volumes: the root volume receives the instance image"},
		{"label without filesystem", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "label": "x"}]}`, "label needs filesystem (ext4, xfs, vfat)"},
		{"label too long", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": "vfat", "label": "TWELVECHARSX"}]}`, "label: invalid filesystem label"},
		{"label characters", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": "ext4", "label": "a b"}]}`, "label: invalid filesystem label"},
		{"label type", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "filesystem": "ext4", "label": 7}]}`, "label must be a non-empty string, not 7"},
		{"root flag type", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": "yes"}]}`, "is_root_volume is \"yes\", not a Boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw map[string]any
			if tc.cfg != "null" {
				raw = decode(t, tc.cfg)
			}
			_, err := ParseConfig(raw)
			if err == nil {
				t.Fatalf("accepted %s", tc.cfg)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func sp(s string) *string { return &s }

func TestLayout(t *testing.T) {
	disks := []protocol.BlockDevice{
		{Name: "/dev/sda", Size: 100 * gib, Serial: sp("A")},
		{Name: "/dev/sdb", Size: 100 * gib, Serial: sp("B")},
		{Name: "/dev/sdc", Size: 50 * gib, Serial: sp("C")},
		{Name: "/dev/sdd", Size: 200 * gib, Serial: sp("D")},
	}
	cfg, err := ParseConfig(decode(t, `{"logical_disks": [
		{"size_gb": 10, "raid_level": "1", "controller": "software", "is_root_volume": true,
		 "physical_disks": [{"serial": "B"}, "/dev/sda"]},
		{"size_gb": 20, "raid_level": "5", "controller": "software", "volume_name": "data", "number_of_physical_disks": 3},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software", "physical_disks": ["/dev/sdc", "/dev/sdd"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout(cfg, disks, Options{NamePrefix: "x-"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.names, ","); got != "x-root,x-data,x-data2" {
		t.Errorf("names %s", got)
	}
	type want struct {
		disk       string
		number     int
		start, end int64
	}
	check := func(i int, ws []want) {
		t.Helper()
		if len(p.members[i]) != len(ws) {
			t.Fatalf("logical disk %d: %d members, want %d", i, len(p.members[i]), len(ws))
		}
		for j, w := range ws {
			m := p.members[i][j]
			if m.disk.Name != w.disk || m.number != w.number || m.start != w.start || m.end != w.end {
				t.Errorf("logical disk %d member %d: %s #%d [%d, %d), want %+v", i, j, m.disk.Name, m.number, m.start, m.end, w)
			}
		}
	}
	// The root volume shares sda and sdb with "data": partitions, with
	// the boot reserve at the start of those two disks only.
	r := DefaultBootReserve
	check(0, []want{{"/dev/sdb", 1, r, r + 10*gib}, {"/dev/sda", 1, r, r + 10*gib}})
	check(1, []want{{"/dev/sda", 2, r + 10*gib, r + 30*gib}, {"/dev/sdb", 2, r + 10*gib, r + 30*gib}, {"/dev/sdc", 1, mib, mib + 20*gib}})
	check(2, []want{{"/dev/sdc", 2, mib + 20*gib, 50*gib - mib}, {"/dev/sdd", 1, mib, 200*gib - mib}})
	for _, d := range disks {
		if !p.partitioned[d.Name] {
			t.Errorf("%s is not partitioned", d.Name)
		}
	}

	// Without a root volume, partitions start at 1 MiB.
	cfg, _ = ParseConfig(decode(t, `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software"}]}`))
	if p, err = layout(cfg, disks[:2], Options{}); err != nil {
		t.Fatal(err)
	}
	if m := p.members[0][0]; m.start != mib || m.end != mib+gib || p.names[0] != "data0" {
		t.Errorf("no root: %+v %s", m, p.names[0])
	}
}

func TestLayoutErrors(t *testing.T) {
	disks := []protocol.BlockDevice{
		{Name: "/dev/sda", Size: 10 * gib},
		{Name: "/dev/sdb", Size: 10 * gib},
		{Name: "/dev/sdc", Size: gib + 10*mib},
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"too big", `{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software"}]}`, "/dev/sda (10.0 GiB) has no room for a 10 GiB partition"},
		{"full", `{"logical_disks": [{"size_gb": 1, "raid_level": "5", "controller": "software"}, {"size_gb": "MAX", "raid_level": "0", "controller": "software", "physical_disks": ["/dev/sdc", "/dev/sda"]}]}`, "/dev/sdc (1.0 GiB) has no room for its MAX partition"},
		{"not enough disks", `{"logical_disks": [{"size_gb": 1, "raid_level": "6", "controller": "software"}]}`, "RAID-6 needs at least 4 member disks, got 3"},
		{"unknown disk", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": ["/dev/sda", "/dev/sdz"]}]}`, "no disk /dev/sdz among /dev/sda, /dev/sdb, /dev/sdc"},
		{"twice", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": ["/dev/sda", "/dev/sda"]}]}`, "/dev/sda is listed twice"},
		{"hint", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "physical_disks": [{"size": ">= 5"}, {"size": ">= 5"}, {"size": ">= 5"}]}]}`, "physical_disks[2]: no disk left matches"},
		{"count", `{"logical_disks": [{"size_gb": 1, "raid_level": "1", "controller": "software", "number_of_physical_disks": 4}]}`, "number_of_physical_disks is 4 but the machine has 3 disks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig(decode(t, tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			_, err = layout(cfg, disks, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestLayoutWholeDiskRoot: a root volume with disks of its own is a
// mirror of whole disks; the other disks are partitioned from 1 MiB.
func TestLayoutWholeDiskRoot(t *testing.T) {
	disks := []protocol.BlockDevice{
		{Name: "/dev/sda", Size: 100 * gib},
		{Name: "/dev/sdb", Size: 100 * gib},
		{Name: "/dev/sdc", Size: 50 * gib},
		{Name: "/dev/sdd", Size: 50 * gib},
	}
	cfg, err := ParseConfig(decode(t, `{"logical_disks": [
		{"size_gb": 10, "raid_level": "1", "controller": "software", "volume_name": "data", "physical_disks": ["/dev/sdc", "/dev/sdd"]},
		{"size_gb": 40, "raid_level": "1", "controller": "software", "is_root_volume": true, "physical_disks": ["/dev/sda", "/dev/sdb"]},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software", "physical_disks": ["/dev/sdc", "/dev/sdd"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout(cfg, disks, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.wholeDisk(1) || p.wholeDisk(0) || p.wholeDisk(2) {
		t.Errorf("whole-disk logical disks: %v %v %v", p.wholeDisk(0), p.wholeDisk(1), p.wholeDisk(2))
	}
	for _, m := range p.members[1] {
		if m.number != 0 || m.start != 0 || m.end != 100*gib {
			t.Errorf("root member %+v", m)
		}
	}
	if p.partitioned["/dev/sda"] || p.partitioned["/dev/sdb"] || !p.partitioned["/dev/sdc"] || !p.partitioned["/dev/sdd"] {
		t.Errorf("partitioned %v", p.partitioned)
	}
	if m := p.members[0][0]; m.start != mib || m.end != mib+10*gib || m.number != 1 {
		t.Errorf("data member %+v", m)
	}
	if m := p.members[2][1]; m.start != mib+10*gib || m.end != 50*gib-mib || m.number != 2 {
		t.Errorf("MAX member %+v", m)
	}

	// Alone on all disks, "MAX" or sized.
	for _, c := range []string{
		`{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "is_root_volume": true}]}`,
		`{"logical_disks": [{"size_gb": 49, "raid_level": "1", "controller": "software", "is_root_volume": true}]}`,
	} {
		cfg, _ := ParseConfig(decode(t, c))
		p, err := layout(cfg, disks, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !p.wholeDisk(0) || len(p.members[0]) != 4 || len(p.partitioned) != 0 {
			t.Errorf("%s: %+v", c, p)
		}
	}
	// Too big for the smallest whole disk.
	cfg, _ = ParseConfig(decode(t, `{"logical_disks": [{"size_gb": 50, "raid_level": "1", "controller": "software", "is_root_volume": true, "physical_disks": ["/dev/sda", "/dev/sdc"]}]}`))
	if _, err := layout(cfg, disks, Options{}); err == nil || !strings.Contains(err.Error(), "/dev/sdc (50.0 GiB) has no room for a 50 GiB mirror and its md superblock") {
		t.Errorf("too big: %v", err)
	}
	// Shared with a data volume on one of its disks only: partitions.
	cfg, _ = ParseConfig(decode(t, `{"logical_disks": [
		{"size_gb": 10, "raid_level": "1", "controller": "software", "is_root_volume": true, "physical_disks": ["/dev/sda", "/dev/sdb"]},
		{"size_gb": 10, "raid_level": "1", "controller": "software", "physical_disks": ["/dev/sdb", "/dev/sdc"]}]}`))
	if p, err = layout(cfg, disks, Options{BootReserve: 8 * mib}); err != nil {
		t.Fatal(err)
	}
	if p.wholeDisk(0) || p.members[0][0].start != 8*mib || p.members[1][1].start != mib {
		t.Errorf("shared root: %+v", p.members)
	}
}
