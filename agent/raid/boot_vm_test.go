package raid

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/rootdevice"
)

// These tests build real arrays: they need an md-capable kernel and run
// in qemu through testdata/vmtest.sh (they skip elsewhere).

// tableOf is `sfdisk -d dev` without the lines naming the device, so that
// the tables of two devices compare.
func tableOf(t *testing.T, dev string) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(run(t, "sfdisk", "-d", dev), "\n") {
		if strings.HasPrefix(l, "device:") {
			continue
		}
		if k, v, ok := strings.Cut(l, " : "); ok && strings.HasPrefix(k, dev) {
			l = strings.TrimPrefix(k, dev) + " : " + v
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func reread(t *testing.T, dev string) {
	t.Helper()
	d, err := blockdev.Open(dev, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.RereadPartitions(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func blkid(t *testing.T, dev, tag string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "blkid", "-p", "-o", "value", "-s", tag, dev))
}

// TestWholeDiskRootMirror: a root volume alone on its disks is a mirror
// of whole disks with metadata 1.0. A whole-disk image written to the
// array (an MBR with boot code and a bootable FAT partition) is, byte for
// byte, what each member disk holds from sector 0: each one alone has the
// image's partition table and a FAT that fscks clean. After a "reboot"
// (array stopped), Assemble brings the array back under its name and the
// root device choice picks it.
func TestWholeDiskRootMirror(t *testing.T) {
	requireMD(t)
	requireTools(t, "sfdisk", "mkfs.vfat", "fsck.vfat", "mmd", "mcopy")
	ctx := context.Background()
	devs := loops(t, 2, 96*mib)
	cfg := parse(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "is_root_volume": true}]}`)
	o := Options{AssumeClean: true, NamePrefix: prefix, Devices: devNames(devs), Log: quiet}
	res, err := Create(ctx, cfg, devs, o)
	if err != nil {
		t.Fatal(err)
	}
	root := res.LogicalDisks[0]
	md := root["name"].(string)
	if root["member_layout"] != "whole_disks" || root["metadata"] != "1.0" || !slices.Equal(root["members"].([]string), devNames(devs)) {
		t.Errorf("result %v", root)
	}
	if d := detail(t, md); d["Version"] != "1.0" || d["Raid Level"] != "raid1" || d["Active Devices"] != "2" {
		t.Errorf("mdadm --detail: %v", d)
	}
	for _, d := range devs {
		if typ := blkid(t, d.Name, "TYPE"); typ != "linux_raid_member" {
			t.Errorf("blkid -p %s: %q, want a bare md member", d.Name, typ)
		}
	}

	// The image: MBR boot code, a bootable FAT32 partition with the
	// boot loaders' files.
	fat := makeFAT(t, 40*mib, 32, "EFI/BOOT/BOOTX64.EFI", "syslinux/syslinux.cfg")
	img := makeImage(t, 48*mib, "label: dos\nstart=2048, size=81920, type=c, bootable\n", map[int64]string{mib: fat})
	copyInto(t, img, 0, []byte("\xeb\x63\x90IRONLITE TEST BOOT CODE"))
	image := readFile(t, img)
	copyInto(t, md, 0, image)
	if err := PrepareRootMembers(ctx, md, o); err != nil {
		t.Fatalf("PrepareRootMembers on whole disks: %v", err)
	}
	want := tableOf(t, md)
	for _, d := range devs {
		if got := blockdevtest.ReadAt(t, d.Name, 0, int64(len(image))); !bytes.Equal(got, image) {
			t.Errorf("%s does not start with the image", d.Name)
		}
		if got := tableOf(t, d.Name); got != want {
			t.Errorf("sfdisk -d %s:\n%s\nwant (the array's):\n%s", d.Name, got, want)
		}
	}
	if !strings.Contains(want, "start=        2048, size=       81920, type=c, bootable") {
		t.Errorf("array table:\n%s", want)
	}

	// Each member alone, as firmware sees it after a reboot.
	run(t, "mdadm", "--stop", md)
	for _, d := range devs {
		reread(t, d.Name)
		p1, err := partitionNode(ctx, "/", d.Name, 1)
		if err != nil {
			t.Fatal(err)
		}
		run(t, "fsck.vfat", "-n", p1)
		if typ, label := blkid(t, p1, "TYPE"), blkid(t, p1, "LABEL"); typ != "vfat" || label != "ESP" {
			t.Errorf("blkid -p %s: TYPE %q LABEL %q", p1, typ, label)
		}
		// blkid reports the md superblock (so that the instance's udev
		// assembles the mirror) and not the partition table behind it,
		// which the kernel and sfdisk read.
		if got := blkid(t, d.Name, "TYPE"); got != "linux_raid_member" {
			t.Errorf("blkid -p %s: TYPE %q", d.Name, got)
		}
		if got := tableOf(t, d.Name); got != want {
			t.Errorf("sfdisk -d %s alone:\n%s\nwant\n%s", d.Name, got, want)
		}
		if got := blockdevtest.ReadAt(t, d.Name, 0, 64); !bytes.Equal(got, image[:64]) {
			t.Errorf("%s: boot code %q", d.Name, got)
		}
	}

	// A fresh ramdisk: Assemble starts it again, under its name.
	arrays, err := Assemble(ctx, Options{Devices: devNames(devs), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(arrays) != 1 || arrays[0].Name != prefix+"root" {
		t.Fatalf("Assemble: %+v", arrays)
	}
	md = arrays[0].Device
	if l, err := os.Readlink(arrays[0].Link()); err != nil || l != md {
		t.Errorf("%s -> %q (%v), want %s", arrays[0].Link(), l, err, md)
	}
	if d := detail(t, md); d["Active Devices"] != "2" || !strings.HasPrefix(d["State"], "clean") {
		t.Errorf("assembled: %v", d)
	}
	if got := tableOf(t, md); got != want {
		t.Errorf("assembled array's table:\n%s\nwant\n%s", got, want)
	}

	// The root device: the array, by the node's RAID config or by hints.
	arr, err := describe("/", md)
	if err != nil {
		t.Fatal(err)
	}
	cands := append([]protocol.BlockDevice{arr}, devs...)
	for _, node := range []map[string]any{
		{"raid_config": map[string]any{"logical_disks": res.LogicalDisks}},
		{"target_raid_config": decode(t, `{"logical_disks": [{"size_gb": "MAX", "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "`+prefix+`root"}]}`)},
		{"properties": map[string]any{"root_device": map[string]any{"name": "/dev/md/" + prefix + "root"}}},
		{"properties": map[string]any{"root_device": map[string]any{"size": "<= 1"}}},
	} {
		got, err := rootdevice.ForNode(cands, node)
		if err != nil || got.Name != md {
			t.Errorf("ForNode(%v) = %s, %v; want %s", node, got.Name, err, md)
		}
	}

	// One disk gone (the other failed): the mirror starts degraded.
	run(t, "mdadm", "--stop", md)
	arrays, err = Assemble(ctx, Options{Devices: []string{devs[1].Name}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(arrays) != 1 || arrays[0].Name != prefix+"root" {
		t.Fatalf("Assemble one member: %+v", arrays)
	}
	md = arrays[0].Device
	if d := detail(t, md); d["Active Devices"] != "1" || !strings.Contains(d["State"], "degraded") {
		t.Errorf("degraded: %v", d)
	}
	if got := tableOf(t, md); got != want {
		t.Errorf("degraded array's table:\n%s\nwant\n%s", got, want)
	}

	// Delete finds the members of a stopped array by their superblocks,
	// behind the image's partition table.
	run(t, "mdadm", "--stop", md)
	del, err := Delete(ctx, Options{Devices: devNames(devs), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Stopped) != 0 || len(del.Wiped) != 2 {
		t.Errorf("delete: %+v", del)
	}
	checkNoRAID(t, devs, devNames(devs))
	if _, err := os.Lstat("/dev/md/" + prefix + "root"); err == nil {
		t.Error("the /dev/md link outlived the array")
	}
}

// TestPartitionedRootESP: a root volume sharing its disks with a data
// volume is a mirror of partitions behind a boot reserve.
// PrepareRootMembers copies the image's ESP into a new ESP in that reserve
// on every member disk, replaces it on a redeploy, and refuses an image
// without one.
func TestPartitionedRootESP(t *testing.T) {
	requireMD(t)
	requireTools(t, "sfdisk", "sgdisk", "mkfs.vfat", "fsck.vfat", "mmd", "mcopy")
	ctx := context.Background()
	devs := loops(t, 2, gib+200*mib)
	cfg := parse(t, `{"logical_disks": [
		{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software", "volume_name": "scratch"}]}`)
	o := Options{AssumeClean: true, NamePrefix: prefix, BootReserve: 40 * mib, Devices: devNames(devs), Log: quiet}
	res, err := Create(ctx, cfg, devs, o)
	if err != nil {
		t.Fatal(err)
	}
	root := res.LogicalDisks[0]
	md := root["name"].(string)
	if root["member_layout"] != "partitions" || root["metadata"] != "1.0" {
		t.Errorf("root %v", root)
	}

	deploy := func(script string, fat string, fatAt int64) error {
		t.Helper()
		contents := map[int64]string{}
		if fat != "" {
			contents[fatAt] = fat
		}
		img := makeImage(t, 64*mib, script, contents)
		copyInto(t, md, 0, readFile(t, img))
		return PrepareRootMembers(ctx, md, o)
	}
	espRE := regexp.MustCompile(`(?m)^(\S+) : start=\s*(\d+), size=\s*(\d+), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B`)
	checkESP := func(fat string) {
		t.Helper()
		want := readFile(t, fat)
		for _, d := range devs {
			dump := run(t, "sfdisk", "-d", d.Name)
			esps := espRE.FindAllStringSubmatch(dump, -1)
			if len(esps) != 1 || esps[0][2] != "2048" || esps[0][3] != fmt.Sprint(len(want)/512) {
				t.Fatalf("%s: ESP entries %q in\n%s", d.Name, esps, dump)
			}
			for _, n := range []string{"1", "2"} {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(d.Name) + `p` + n + ` : start=\s*\d+, size=\s*\d+, type=A19D880F`).MatchString(dump) {
					t.Errorf("%s: RAID partition %s gone:\n%s", d.Name, n, dump)
				}
			}
			run(t, "sgdisk", "-v", d.Name)
			node := esps[0][1]
			if _, err := os.Stat(node); err != nil {
				t.Fatalf("the kernel does not know the ESP: %v", err)
			}
			if got := blockdevtest.ReadAt(t, node, 0, int64(len(want))); !bytes.Equal(got, want) {
				t.Errorf("%s: the ESP differs from the image's", node)
			}
			run(t, "fsck.vfat", "-n", node)
			if typ := blkid(t, node, "TYPE"); typ != "vfat" {
				t.Errorf("blkid -p %s: %q", node, typ)
			}
		}
		if d := detail(t, md); d["Active Devices"] != "2" || !strings.HasPrefix(d["State"], "clean") {
			t.Errorf("root mirror after the ESP copy: %v", d)
		}
	}

	// A GPT image with a typed ESP.
	fat := makeFAT(t, 24*mib, 16, "EFI/BOOT/BOOTX64.EFI")
	if err := deploy("label: gpt\nstart=2048, size=49152, type="+esp+"\nstart=51200, type=0FC63DAF-8483-4772-8E79-3D47DE4709E4\n", fat, mib); err != nil {
		t.Fatal(err)
	}
	checkESP(fat)

	// Redeploy: an MBR image whose FAT partition holds the boot loader;
	// the ESP is replaced.
	fat = makeFAT(t, 12*mib, 12, "EFI/BOOT/BOOTX64.EFI")
	if err := deploy("label: dos\nstart=8192, size=24576, type=c, bootable\nstart=32768, type=83\n", fat, 4*mib); err != nil {
		t.Fatal(err)
	}
	checkESP(fat)

	// No ESP in the image: the members cannot boot.
	err = deploy("label: dos\nstart=2048, type=83\n", "", 0)
	if err == nil || !strings.Contains(err.Error(), "the image has no EFI System Partition") {
		t.Errorf("image without an ESP: %v", err)
	}

	if _, err := Delete(ctx, Options{Devices: devNames(devs), Log: quiet}); err != nil {
		t.Fatal(err)
	}
	checkNoRAID(t, devs, append(root["members"].([]string), res.LogicalDisks[1]["members"].([]string)...))
}

// TestDataVolumes: four volumes of four levels on four disks, three of
// them formatted (the ironlite filesystem key), the last placed by
// physical_disks hints.
func TestDataVolumes(t *testing.T) {
	requireMD(t)
	requireTools(t, "mkfs.xfs", "xfs_repair", "mkfs.vfat", "fsck.vfat", "mkfs.ext4", "fsck.ext4")
	ctx := context.Background()
	devs := loops(t, 4, 3*gib+64*mib)
	cfg := parse(t, fmt.Sprintf(`{"logical_disks": [
		{"size_gb": 1, "raid_level": "5", "controller": "software", "volume_name": "r5", "filesystem": "xfs", "label": "data-r5"},
		{"size_gb": 1, "raid_level": "1+0", "controller": "software", "volume_name": "r10", "filesystem": "vfat", "label": "DATAR10"},
		{"size_gb": 1, "raid_level": "6", "controller": "software", "volume_name": "r6", "filesystem": "ext4"},
		{"size_gb": "MAX", "raid_level": "0", "controller": "software", "volume_name": "r0", "physical_disks": [{"name": %q}, {"name": %q}]}]}`,
		devs[3].Name, devs[2].Name))
	res, err := Create(ctx, cfg, devs, Options{AssumeClean: true, NamePrefix: prefix, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LogicalDisks) != 4 {
		t.Fatalf("result %v", res)
	}
	var members []string
	for i, tc := range []struct {
		name, mdLevel, fs, label, fsck string
		devices                        int
	}{
		{"r5", "raid5", "xfs", "data-r5", "xfs_repair", 4},
		{"r10", "raid10", "vfat", "DATAR10", "fsck.vfat", 4},
		{"r6", "raid6", "ext4", "", "fsck.ext4", 4},
		{"r0", "raid0", "", "", "", 2},
	} {
		ld := res.LogicalDisks[i]
		md := ld["name"].(string)
		members = append(members, ld["members"].([]string)...)
		if ld["volume_name"] != prefix+tc.name || len(ld["members"].([]string)) != tc.devices || ld["member_layout"] != "partitions" {
			t.Errorf("%s: result %v", tc.name, ld)
		}
		if d := detail(t, md); d["Raid Level"] != tc.mdLevel || d["Raid Devices"] != fmt.Sprint(tc.devices) || d["Version"] != "1.2" {
			t.Errorf("%s: mdadm --detail %v", tc.name, d)
		}
		if tc.fs == "" {
			if _, ok := ld["filesystem_uuid"]; ok {
				t.Errorf("%s: filesystem_uuid without a filesystem: %v", tc.name, ld)
			}
			continue
		}
		uuid, _ := ld["filesystem_uuid"].(string)
		if typ, id, label := blkid(t, md, "TYPE"), blkid(t, md, "UUID"), blkid(t, md, "LABEL"); typ != tc.fs || id != uuid || uuid == "" || label != tc.label {
			t.Errorf("%s: blkid -p TYPE %q UUID %q LABEL %q; want %s %q %q", tc.name, typ, id, label, tc.fs, uuid, tc.label)
		}
		if ld["filesystem"] != tc.fs {
			t.Errorf("%s: result filesystem %v", tc.name, ld["filesystem"])
		}
		switch tc.fsck {
		case "fsck.ext4":
			run(t, "fsck.ext4", "-n", "-f", md)
		default:
			run(t, tc.fsck, "-n", md)
		}
	}
	// r0 is on the disks its hints name, after their three partitions.
	r0 := res.LogicalDisks[3]
	if got := r0["physical_disks"].([]string); !slices.Equal(got, []string{devs[3].Name, devs[2].Name}) {
		t.Errorf("r0 on %v", got)
	}
	if got := r0["members"].([]string); !strings.HasSuffix(got[0], "p4") {
		t.Errorf("r0 members %v", got)
	}

	del, err := Delete(ctx, Options{Devices: devNames(devs), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Stopped) != 4 || len(del.Wiped) != 4 {
		t.Errorf("delete %+v", del)
	}
	checkNoRAID(t, devs, members)
}
