package raid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/steps"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// prefix names the arrays of this test process, apart from any other's.
var prefix = fmt.Sprintf("ilt%d-", os.Getpid()%100000)

// requireMD skips the test unless md arrays can be built here: root,
// mdadm, and a kernel with the md driver (loaded if it is a module).
func requireMD(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("md arrays on loop devices need root")
	}
	if _, err := exec.LookPath("mdadm"); err != nil {
		t.Skip("mdadm not installed (Debian package mdadm)")
	}
	if _, err := os.Stat("/proc/mdstat"); err != nil {
		for _, m := range []string{"md_mod", "raid0", "raid1", "raid10", "raid456"} {
			_ = exec.Command("modprobe", m).Run()
		}
	}
	if _, err := os.Stat("/proc/mdstat"); err != nil {
		t.Skip("this kernel has no md driver (no /proc/mdstat; CONFIG_MD unset and no md_mod module)")
	}
}

// loops attaches n loop devices (partition scanning on) over sparse files
// of size bytes. Cleanup stops every array built on them before the loop
// devices are detached (cleanups run last-registered first).
func loops(t *testing.T, n int, size int64) []protocol.BlockDevice {
	t.Helper()
	var devs []protocol.BlockDevice
	for i := 0; i < n; i++ {
		dev := blockdevtest.Loop(t, blockdevtest.File(t, fmt.Sprintf("disk%d.img", i), size, nil), true)
		d, err := describe("/", dev)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	t.Cleanup(func() { stopArraysOn(t, devs) })
	return devs
}

func stopArraysOn(t *testing.T, devs []protocol.BlockDevice) {
	mine := map[string]bool{}
	for _, d := range devs {
		mine[sysName(d.Name)] = true
	}
	arrays, err := disk.MDArrays("/")
	if err != nil {
		return
	}
	var stop []disk.MDArray
	for _, a := range arrays {
		for _, d := range a.Disks {
			if mine[sysName(d)] {
				stop = append(stop, a)
				break
			}
		}
	}
	if err := disk.StopMDArrays(context.Background(), stop, quiet); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func devNames(devs []protocol.BlockDevice) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Name)
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func parse(t *testing.T, s string) Config {
	t.Helper()
	cfg, err := ParseConfig(decode(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// detail returns mdadm --detail's "Key : value" lines as a map.
func detail(t *testing.T, dev string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(run(t, "mdadm", "--detail", dev), "\n") {
		k, v, ok := strings.Cut(l, " : ")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

func syncAction(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "md/sync_action"))
	if err != nil {
		return "" // RAID-0 has none
	}
	return strings.TrimSpace(string(b))
}

// mdstatLine returns the lines of /proc/mdstat about dev.
func mdstat(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mdstat")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(dev)
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			in = true
		} else if l == "" || !strings.HasPrefix(l, " ") {
			in = false
		}
		if in {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCreateDeleteLevels(t *testing.T) {
	requireMD(t)
	for _, tc := range []struct {
		level, mdLevel string
		members        int
	}{
		{"0", "raid0", 4},
		{"1", "raid1", 4},
		{"5", "raid5", 4},
		{"6", "raid6", 4},
		{"1+0", "raid10", 4},
	} {
		t.Run("raid"+tc.level, func(t *testing.T) {
			devs := loops(t, tc.members, 96<<20)
			cfg := parse(t, fmt.Sprintf(`{"logical_disks": [{"size_gb": "MAX", "raid_level": %q, "controller": "software", "volume_name": "lvl"}]}`, tc.level))
			res, err := Create(context.Background(), cfg, devs, Options{AssumeClean: true, NamePrefix: prefix, Log: quiet})
			if err != nil {
				t.Fatal(err)
			}
			ld := res.LogicalDisks[0]
			md := ld["name"].(string)
			d := detail(t, md)
			if d["Raid Level"] != tc.mdLevel || d["Raid Devices"] != fmt.Sprint(tc.members) || d["Version"] != "1.2" {
				t.Errorf("mdadm --detail %s: level %q devices %q version %q", md, d["Raid Level"], d["Raid Devices"], d["Version"])
			}
			if ld["raid_level"] != tc.level || len(ld["members"].([]string)) != tc.members || ld["volume_name"] != prefix+"lvl" {
				t.Errorf("result %v", ld)
			}
			if a := syncAction(t, md); a != "" && a != "idle" {
				t.Errorf("--assume-clean: sync_action is %q", a)
			}
			if s := mdstat(t, md); strings.Contains(s, "resync") || strings.Contains(s, "recovery") {
				t.Errorf("--assume-clean, yet /proc/mdstat shows a sync:\n%s", s)
			}
			checkFilesystem(t, md)

			del, err := Delete(context.Background(), Options{Devices: devNames(devs), Log: quiet})
			if err != nil {
				t.Fatal(err)
			}
			if len(del.Stopped) != 1 || len(del.Wiped) != tc.members {
				t.Errorf("delete result %+v", del)
			}
			checkNoRAID(t, devs, ld["members"].([]string))
		})
	}
}

// checkFilesystem makes an ext4 on dev and checks it with fsck and blkid.
func checkFilesystem(t *testing.T, dev string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Log("mkfs.ext4 not installed: no filesystem check")
		return
	}
	run(t, "mkfs.ext4", "-q", "-F", "-L", "raidtest", dev)
	run(t, "fsck.ext4", "-n", "-f", dev)
	if out := run(t, "blkid", "-p", "-o", "value", "-s", "TYPE", dev); strings.TrimSpace(out) != "ext4" {
		t.Errorf("blkid -p %s: %q, want ext4", dev, out)
	}
}

// checkNoRAID checks that no array is left on devs, that the former
// members have no md superblock and the disks no partition table.
func checkNoRAID(t *testing.T, devs []protocol.BlockDevice, members []string) {
	t.Helper()
	arrays, err := disk.MDArrays("/")
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]bool{}
	for _, d := range devs {
		mine[sysName(d.Name)] = true
	}
	for _, a := range arrays {
		for _, d := range a.Disks {
			if mine[sysName(d)] {
				t.Errorf("array %s still on %s", a.Device, d)
			}
		}
	}
	for _, m := range members {
		if _, err := os.Stat(m); err == nil {
			if out, err := exec.Command("mdadm", "--examine", m).CombinedOutput(); err == nil && strings.Contains(string(out), "Raid Level") {
				t.Errorf("mdadm --examine %s still finds a superblock:\n%s", m, out)
			}
		}
	}
	for _, d := range devs {
		if out, err := exec.Command("mdadm", "--examine", d.Name).CombinedOutput(); err == nil && strings.Contains(string(out), "Raid Level") {
			t.Errorf("mdadm --examine %s finds a superblock:\n%s", d.Name, out)
		}
		if out, err := exec.Command("blkid", "-p", d.Name).CombinedOutput(); err == nil {
			t.Errorf("blkid -p %s still finds something: %s", d.Name, out)
		}
	}
}

// TestRootMirror: a RAID-1 root with metadata 1.0 and boot room on every
// member, and a data RAID-0 on the rest of the same disks. The root's data
// starts at offset 0 of each member partition, so a member alone shows the
// filesystem.
func TestRootMirror(t *testing.T) {
	requireMD(t)
	devs := loops(t, 2, gib+200*mib)
	cfg := parse(t, `{"logical_disks": [
		{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software", "volume_name": "scratch"}]}`)
	res, err := Create(context.Background(), cfg, devs, Options{AssumeClean: true, NamePrefix: prefix, BootReserve: 8 * mib, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	root, data := res.LogicalDisks[0], res.LogicalDisks[1]
	rootMD := root["name"].(string)
	if d := detail(t, rootMD); d["Version"] != "1.0" || d["Raid Level"] != "raid1" || d["Raid Devices"] != "2" {
		t.Errorf("root: %v", d)
	}
	if d := detail(t, data["name"].(string)); d["Version"] != "1.2" || d["Raid Level"] != "raid0" {
		t.Errorf("data: %v", d)
	}
	if root["size_gb"] != int64(1) || root["metadata"] != "1.0" || root["volume_name"] != prefix+"root" {
		t.Errorf("root result %v", root)
	}
	if s, ok := data["size_bytes"].(int64); !ok || s < 300*mib {
		t.Errorf("data size %v", data["size_bytes"])
	}
	// Boot room: the first partition starts at 8 MiB on every member.
	for _, m := range root["members"].([]string) {
		b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(m), "start"))
		if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(8*mib/512) {
			t.Errorf("%s starts at sector %s (%v), want %d", m, b, err, 8*mib/512)
		}
	}
	// Data written to the array is at offset 0 of each member.
	marker := []byte("ironlite root mirror marker")
	f, err := os.OpenFile(rootMD, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(marker, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, m := range root["members"].([]string) {
		got := make([]byte, len(marker))
		mf, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = mf.ReadAt(got, 0)
		mf.Close()
		if err != nil || !bytes.Equal(got, marker) {
			t.Errorf("member %s at offset 0: %q (%v), want the marker", m, got, err)
		}
	}
	checkFilesystem(t, rootMD)
	// The member alone is a plain ext4 to anyone reading it (firmware,
	// boot loader): metadata 1.0 leaves the start alone.
	for _, m := range root["members"].([]string) {
		out := run(t, "blkid", "-p", "-o", "value", "-s", "TYPE", m)
		if !strings.Contains(out, "ext4") && !strings.Contains(out, "linux_raid_member") {
			t.Errorf("blkid -p %s: %q", m, out)
		}
	}
	// Without --assume-clean a mirror resyncs (checked on a fresh pair).
	if _, err := Delete(context.Background(), Options{Devices: devNames(devs), Log: quiet}); err != nil {
		t.Fatal(err)
	}
	checkNoRAID(t, devs, append(root["members"].([]string), data["members"].([]string)...))
}

// TestResyncWithoutAssumeClean: a mirror created without --assume-clean
// is resynced by the kernel (1 GiB at md's default 200 MB/s maximum takes
// seconds, so the resync is seen under way); with ResyncSpeedLimitKB the
// array's sync_speed_max is set and the resync crawls.
func TestResyncWithoutAssumeClean(t *testing.T) {
	requireMD(t)
	devs := loops(t, 4, gib+8*mib)
	cfg := parse(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "physical_disks": [{"name": "`+devs[0].Name+`"}, {"name": "`+devs[1].Name+`"}]}]}`)
	res, err := Create(context.Background(), cfg, devs, Options{NamePrefix: prefix, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	md := res.LogicalDisks[0]["name"].(string)
	if a, s := syncAction(t, md), mdstat(t, md); a != "resync" && !strings.Contains(s, "resync") {
		t.Errorf("no resync without --assume-clean: sync_action %q, /proc/mdstat:\n%s", a, s)
	}
	if _, ok := res.LogicalDisks[0]["resync_speed_limit_kb"]; ok {
		t.Errorf("result %v", res.LogicalDisks[0])
	}

	cfg = parse(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "volume_name": "slow", "physical_disks": ["`+devs[2].Name+`", "`+devs[3].Name+`"]}]}`)
	res, err = Create(context.Background(), cfg, devs, Options{NamePrefix: prefix, ResyncSpeedLimitKB: 1000, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	md = res.LogicalDisks[0]["name"].(string)
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(md), "md/sync_speed_max"))
	if err != nil || strings.TrimSpace(string(b)) != "1000 (local)" {
		t.Errorf("sync_speed_max %q (%v), want 1000 (local)", b, err)
	}
	if res.LogicalDisks[0]["resync_speed_limit_kb"] != 1000 {
		t.Errorf("result %v", res.LogicalDisks[0])
	}
	time.Sleep(time.Second)
	b, _ = os.ReadFile(filepath.Join("/sys/block", filepath.Base(md), "md/sync_completed"))
	var done, total int64
	if _, err := fmt.Sscanf(string(b), "%d / %d", &done, &total); err != nil || total == 0 || done*100/total > 5 {
		t.Errorf("throttled resync: sync_completed %q after 1 s (1000 KiB/s over 1 GiB is ~0.1%%/s)", b)
	}
}

// TestStepsOnLoops runs the registered steps: create from the node's
// target_raid_config, then erase_devices_metadata, which must take the
// arrays apart before erasing the disks.
func TestStepsOnLoops(t *testing.T) {
	requireMD(t)
	devs := loops(t, 3, 128*mib)
	o := Options{Devices: devNames(devs), NamePrefix: prefix, Log: quiet}
	RegisterSteps(o)
	disk.RegisterSteps(disk.Options{Devices: devNames(devs), Log: quiet})
	create, ok := steps.Lookup(steps.Clean, "raid", "create_configuration")
	if !ok || create.Run == nil {
		t.Fatal("raid.create_configuration not registered")
	}
	node := map[string]any{"target_raid_config": decode(t, `{"logical_disks": [
		{"size_gb": "MAX", "raid_level": "5", "controller": "software", "volume_name": "steps"}]}`)}
	out, err := create.Run(context.Background(), steps.Request{
		Step: protocol.Step{Step: "create_configuration", Interface: "raid", Args: map[string]any{"assume_clean": true}},
		Node: node,
	})
	if err != nil {
		t.Fatal(err)
	}
	lds := out.(map[string]any)["logical_disks"].([]map[string]any)
	md := lds[0]["name"].(string)
	members := lds[0]["members"].([]string)
	if d := detail(t, md); d["Raid Level"] != "raid5" || d["Raid Devices"] != "3" {
		t.Errorf("detail %v", d)
	}
	checkFilesystem(t, md)

	// Creating again on disks that now have a partition table is refused.
	if _, err := create.Run(context.Background(), steps.Request{Node: node}); err == nil || !strings.Contains(err.Error(), "already has a GPT") && !strings.Contains(err.Error(), "in use") {
		t.Errorf("second create: %v", err)
	}

	erase, _ := steps.Lookup(steps.Clean, "deploy", "erase_devices_metadata")
	res, err := erase.Run(context.Background(), steps.Request{Node: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("erase_devices_metadata: %v", res)
	checkNoRAID(t, devs, members)
	b, _ := json.Marshal(res)
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("result %s: %v", b, err)
	}
	if r := got[md]; !strings.Contains(r, "array stopped") {
		t.Errorf("%s: %q", md, r)
	}
	for _, d := range devs {
		if r := got[d.Name]; r != "metadata erased" {
			t.Errorf("%s: %q", d.Name, r)
		}
	}
}

func TestDeleteStep(t *testing.T) {
	requireMD(t)
	devs := loops(t, 2, 128*mib)
	o := Options{Devices: devNames(devs), NamePrefix: prefix, Log: quiet}
	RegisterSteps(o)
	apply, _ := steps.Lookup(steps.Deploy, "raid", "apply_configuration")
	out, err := apply.Run(context.Background(), steps.Request{Step: protocol.Step{Args: map[string]any{
		"raid_config": decode(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "volume_name": "apply"}]}`),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	lds := out.(map[string]any)["logical_disks"].([]map[string]any)
	// Stop the array: Delete must still find its members by their
	// superblocks (the ramdisk assembles nothing on its own).
	run(t, "mdadm", "--stop", lds[0]["name"].(string))
	del, _ := steps.Lookup(steps.Clean, "raid", "delete_configuration")
	res, err := del.Run(context.Background(), steps.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(DeleteResult); len(r.Wiped) != 2 {
		t.Errorf("delete: %+v", r)
	}
	checkNoRAID(t, devs, lds[0]["members"].([]string))
}

func TestStepRefusesMalformedConfig(t *testing.T) {
	RegisterSteps(Options{Devices: []string{"/nonexistent"}, Log: quiet})
	create, _ := steps.Lookup(steps.Clean, "raid", "create_configuration")
	_, err := create.Run(context.Background(), steps.Request{Node: map[string]any{"target_raid_config": decode(t,
		`{"logical_disks": [{"size_gb": 10, "raid_level": "5", "controller": "software", "is_root_volume": true}]}`)}})
	if err == nil || !strings.Contains(err.Error(), "the root volume must be RAID-1") {
		t.Fatalf("error %v", err)
	}
	// No target: nothing to do.
	if out, err := create.Run(context.Background(), steps.Request{Node: map[string]any{}}); err != nil || len(out.(map[string]any)) != 0 {
		t.Fatalf("empty target: %v %v", out, err)
	}
	apply, _ := steps.Lookup(steps.Deploy, "raid", "apply_configuration")
	if _, err := apply.Run(context.Background(), steps.Request{Step: protocol.Step{Args: map[string]any{"raid_config": decode(t,
		`{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software", "physical_disks": ["/dev/sda"]}]}`)}}}); err == nil ||
		!strings.Contains(err.Error(), "RAID-1 needs at least 2 member disks, got 1") {
		t.Fatalf("apply: %v", err)
	}
	for _, tc := range []struct{ cfg, want string }{
		{`{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software", "is_root_volume": true, "filesystem": "ext4"}]}`,
			`logical_disks[0]: filesystem is for data volumes: the root volume receives the instance image`},
		{`{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software", "volume_name": "d", "filesystem": "zfs"}]}`,
			`logical_disks[0] ("d"): filesystem "zfs" is not supported (ext4, xfs, vfat)`},
		{`{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software"}], "extra": 1}`, `unknown property "extra"`},
	} {
		_, err := create.Run(context.Background(), steps.Request{Node: map[string]any{"target_raid_config": decode(t, tc.cfg)}})
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// Bad arguments are refused before apply deletes anything (Devices
	// would fail with "/nonexistent" otherwise).
	if _, err := apply.Run(context.Background(), steps.Request{Step: protocol.Step{Args: map[string]any{
		"raid_config":           decode(t, `{"logical_disks": [{"size_gb": 10, "raid_level": "1", "controller": "software"}]}`),
		"resync_speed_limit_kb": "fast",
	}}}); err == nil || !strings.Contains(err.Error(), `argument resync_speed_limit_kb is "fast", not a number of KiB/s`) {
		t.Errorf("bad resync_speed_limit_kb: %v", err)
	}
}

// TestPartitionsOnLoops checks the member partition tables (no md needed):
// GPT with Linux RAID partitions where the layout says, known to the
// kernel, and a disk with a table refused.
func TestPartitionsOnLoops(t *testing.T) {
	devs := loops(t, 2, gib+64*mib)
	cfg := parse(t, `{"logical_disks": [
		{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software"}]}`)
	p, err := layout(cfg, devs, Options{BootReserve: 4 * mib})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range p.disks {
		if err := writeTable(context.Background(), d, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		n1, err := partitionNode(context.Background(), "/", d.Name, 1)
		if err != nil {
			t.Fatal(err)
		}
		n2, err := partitionNode(context.Background(), "/", d.Name, 2)
		if err != nil {
			t.Fatal(err)
		}
		dump := run(t, "sfdisk", "-d", d.Name)
		for _, want := range []string{
			fmt.Sprintf("%s : start=        8192, size=     2097152, type=A19D880F-05FC-4D3B-A006-743F0F84911E", n1),
			fmt.Sprintf("%s : start=     2105344, size=      120832, type=A19D880F-05FC-4D3B-A006-743F0F84911E", n2),
		} {
			if !strings.Contains(dump, "label: gpt") || !strings.Contains(dump, want) {
				t.Errorf("sfdisk -d %s:\n%s\nwant %s", d.Name, dump, want)
			}
		}
		run(t, "sgdisk", "-v", d.Name)
	}
	_, err = Create(context.Background(), cfg, devs, Options{BootReserve: 4 * mib})
	if err == nil || !strings.Contains(err.Error(), "already has a GPT: run raid.delete_configuration or erase_devices_metadata first") {
		t.Fatalf("create over a table: %v", err)
	}
	// A whole-disk root mirror is refused on a disk with a table too.
	cfg = parse(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "is_root_volume": true}]}`)
	_, err = Create(context.Background(), cfg, devs, Options{})
	if err == nil || !strings.Contains(err.Error(), "already has a GPT") {
		t.Fatalf("whole-disk create over a table: %v", err)
	}
}
