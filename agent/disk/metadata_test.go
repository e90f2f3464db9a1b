package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
)

const mib = 1 << 20

func TestMetadataRanges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, lbs int64
		parts     []extent
		want      []extent
	}{
		{
			name: "bare disk", size: 100 * mib, lbs: 512,
			want: []extent{{0, mib}, {99 * mib, 100 * mib}},
		},
		{
			name: "GPT partitions", size: 100 * mib, lbs: 512,
			parts: []extent{{mib, 11 * mib}, {11 * mib, 99*mib - 33*512}},
			want:  []extent{{0, 2 * mib}, {10 * mib, 12 * mib}, {98*mib - 33*512, 99*mib - 33*512}, {99 * mib, 100 * mib}},
		},
		{
			name: "partition smaller than two spans is zeroed whole", size: 100 * mib, lbs: 512,
			parts: []extent{{50 * mib, 51*mib + 512}},
			want:  []extent{{0, mib}, {50 * mib, 51*mib + 512}, {99 * mib, 100 * mib}},
		},
		{
			name: "tiny device is zeroed whole", size: mib + 4096, lbs: 512,
			want: []extent{{0, mib + 4096}},
		},
		{
			name: "4Kn sectors: GPT spans are at least 34 and 33 sectors", size: 100 * mib, lbs: 4096,
			want: []extent{{0, mib}, {99 * mib, 100 * mib}},
		},
		{
			name: "corrupt entries past the end or reversed are ignored", size: 100 * mib, lbs: 512,
			parts: []extent{{200 * mib, 210 * mib}, {20 * mib, 10 * mib}, {95 * mib, 300 * mib}},
			want:  []extent{{0, mib}, {95 * mib, 96 * mib}, {99 * mib, 100 * mib}},
		},
		{
			name: "unaligned entries are widened to sectors", size: 100 * mib, lbs: 4096,
			parts: []extent{{50*mib + 512, 60*mib + 1024}},
			want:  []extent{{0, mib}, {50 * mib, 51*mib + 4096}, {59 * mib, 60*mib + 4096}, {99 * mib, 100 * mib}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := metadataRanges(tc.size, tc.lbs, tc.parts)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("metadataRanges = %v, want %v", got, tc.want)
			}
		})
	}
}

// ebr builds an extended boot record: the logical partition (relative to
// the EBR) and the link to the next EBR (relative to the extended
// partition).
func ebr(start, size, next uint32) []byte {
	b := make([]byte, 512)
	if size > 0 {
		b[446+4] = 0x83
		binary.LittleEndian.PutUint32(b[446+8:], start)
		binary.LittleEndian.PutUint32(b[446+12:], size)
	}
	if next > 0 {
		b[462+4] = 0x05
		binary.LittleEndian.PutUint32(b[462+8:], next)
		binary.LittleEndian.PutUint32(b[462+12:], 1)
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestLogicalPartitions(t *testing.T) {
	disk := make([]byte, 4096*512)
	put := func(sector int, b []byte) { copy(disk[sector*512:], b) }
	// Extended partition at sector 100: logical at 100+2 (10 sectors),
	// next EBR at 100+50: logical at 150+2 (20 sectors), next EBR at 100
	// again (a loop a broken tool could leave).
	put(100, ebr(2, 10, 50))
	put(150, ebr(2, 20, 0))
	got := logicalPartitions(bytes.NewReader(disk), 100, 512)
	want := []extent{{102 * 512, 112 * 512}, {152 * 512, 172 * 512}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("logicalPartitions = %v, want %v", got, want)
	}
	put(150, ebr(2, 20, 0xffff_0000)) // points far past the end
	if got := logicalPartitions(bytes.NewReader(disk), 100, 512); len(got) != 2 {
		t.Errorf("chain past the end: %v", got)
	}
	put(150, ebr(2, 20, 0)) // stop, then make a cycle
	put(150, ebr(2, 20, 50))
	if got := logicalPartitions(bytes.NewReader(disk), 100, 512); len(got) != 2 {
		t.Errorf("cyclic chain: %v", got)
	}
}

// layout is a partitioned test disk: an sfdisk script and what to put in
// each partition (mkfs.ext4, mkswap, md superblocks, an LVM PV).
type layout struct {
	name   string
	script string
	// fill maps partition numbers to what is created on them and the
	// blkid TYPE expected there.
	fill map[int]string
	// pttype is blkid's PTTYPE for the disk.
	pttype string
}

var layouts = []layout{
	{
		name: "gpt",
		script: "label: gpt\n" +
			"size=16MiB, type=L\n" + // 1: ext4
			"size=8MiB, type=S\n" + // 2: swap
			"size=12MiB, type=R\n" + // 3: md v1.2 (4 KiB in)
			"size=12MiB, type=R\n" + // 4: md v0.90 (end)
			"size=12MiB, type=V\n" + // 5: LVM PV
			"type=R\n", // 6: md v1.0 (end)
		fill:   map[int]string{1: "ext4", 2: "swap", 3: "md-1.2", 4: "md-0.90", 5: "lvm", 6: "md-1.0"},
		pttype: "gpt",
	},
	{
		name: "dos with logical partitions",
		script: "label: dos\n" +
			"size=16MiB, type=83\n" + // 1: ext4
			"type=5\n" + // 2: extended, the rest
			"size=16MiB, type=83\n" + // 5: ext4
			"size=8MiB, type=82\n" + // 6: swap
			"type=83\n", // 7: ext4
		fill:   map[int]string{1: "ext4", 5: "ext4", 6: "swap", 7: "ext4"},
		pttype: "dos",
	},
}

// blkidType is what blkid reports for what fill puts on a partition.
func blkidType(fill string) string {
	switch {
	case strings.HasPrefix(fill, "md-"):
		return "linux_raid_member"
	case fill == "lvm":
		return "LVM2_member"
	}
	return fill
}

// partition writes an sfdisk script to dev (a loop device with partition
// scanning) and waits for the partition nodes. Kernels built without
// partition table parsers (some VM kernels) find none: partx then adds
// them with BLKPG, from the table as util-linux reads it.
func partition(t *testing.T, dev, script string, first int) {
	t.Helper()
	cmd := exec.Command("sfdisk", "-q", dev)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	p := fmt.Sprintf("%sp%d", dev, first)
	if _, err := os.Stat(filepath.Join("/sys/class/block", filepath.Base(dev), filepath.Base(p))); err != nil {
		run(t, "partx", "--add", dev)
	}
	waitFor(t, p)
}

// mdadmUsable reports whether mdadm can create arrays here (it needs the
// kernel's md driver).
func mdadmUsable() bool {
	_, err := exec.LookPath("mdadm")
	_, err2 := os.Stat("/proc/mdstat")
	return err == nil && err2 == nil
}

// build partitions dev, fills the partitions and returns their byte
// extents by number. md superblocks come from mdadm where it works, else
// they are written by hand (as blkid recognises them); the LVM label needs
// pvcreate (skipped, and logged, without it).
func (l layout) build(t *testing.T, dev string) map[int]extent {
	t.Helper()
	first := 1
	for n := range l.fill {
		first = min(first, n)
	}
	partition(t, dev, l.script, first)
	parts := map[int]extent{}
	for n, fill := range l.fill {
		p := fmt.Sprintf("%sp%d", dev, n)
		waitFor(t, p)
		var start, size int64
		name := filepath.Base(p)
		if _, err := fmt.Sscan(readStr("/", filepath.Base(dev), name+"/start"), &start); err != nil {
			t.Fatalf("%s start: %v", name, err)
		}
		if _, err := fmt.Sscan(readStr("/", filepath.Base(dev), name+"/size"), &size); err != nil {
			t.Fatalf("%s size: %v", name, err)
		}
		switch {
		case fill == "ext4":
			run(t, "mkfs.ext4", "-q", "-F", p)
		case fill == "swap":
			run(t, "mkswap", p)
		case strings.HasPrefix(fill, "md-") && mdadmUsable():
			md := "/dev/md/ironlite-test-" + name
			run(t, "mdadm", "--create", md, "--run", "--force", "--level=1", "--raid-devices=2",
				"--metadata="+strings.TrimPrefix(fill, "md-"), p, "missing")
			run(t, "mdadm", "--stop", md)
		case strings.HasPrefix(fill, "md-"):
			writeMDSuperblock(t, p, size*512, strings.TrimPrefix(fill, "md-"))
		case fill == "lvm":
			if _, err := exec.LookPath("pvcreate"); err != nil {
				t.Logf("pvcreate not installed (Debian package lvm2): no LVM label on %s", p)
				continue
			}
			cmd := exec.Command("pvcreate", "-ff", "-y", p)
			cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("pvcreate: %v\n%s", err, out)
			}
		}
		parts[n] = extent{start * 512, (start + size) * 512}
	}
	// Drop the whole disk's cached pages: the fills wrote through the
	// partition devices, whose caches are separate.
	run(t, "blockdev", "--flushbufs", dev)
	return parts
}

// writeMDSuperblock writes an md superblock of the given version at the
// place mdadm puts it on a member of size bytes: v0.90 in the last 64-128
// KiB, v1.0 8-12 KiB from the end, v1.1 at 0, v1.2 at 4 KiB. Only the
// fields blkid checks are filled in (magic, version, offset, checksum).
func writeMDSuperblock(t *testing.T, dev string, size int64, version string) {
	t.Helper()
	le := binary.LittleEndian
	sb := make([]byte, 4096)
	le.PutUint32(sb[0:], 0xa92b4efc)
	var off int64
	if version == "0.90" {
		off = size&^0xffff - 0x10000
		le.PutUint32(sb[8:], 90)      // minor_version
		le.PutUint32(sb[20:], 0x1234) // set_uuid0
		le.PutUint32(sb[28:], 1)      // level
		le.PutUint32(sb[40:], 2)      // raid_disks
		le.PutUint32(sb[152:], csum(sb, 4096))
	} else {
		switch version {
		case "1.0":
			off = (size/512 - 16) &^ 7 * 512
		case "1.1":
			off = 0
		case "1.2":
			off = 4096
		default:
			t.Fatalf("md version %s", version)
		}
		le.PutUint32(sb[4:], 1) // major_version
		copy(sb[16:32], "ironlite-md-uuid")
		copy(sb[32:], "ironlite:test")
		le.PutUint32(sb[72:], 1)                  // level
		le.PutUint32(sb[92:], 2)                  // raid_disks
		le.PutUint64(sb[144:], uint64(off/512))   // super_offset
		le.PutUint32(sb[220:], 2)                 // max_dev
		le.PutUint16(sb[258:], 0xffff)            // dev_roles[1]: missing
		le.PutUint32(sb[216:], csum(sb, 256+2*2)) // sb_csum
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(sb, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// csum is md's superblock checksum: the sum of the little-endian 32-bit
// words, carries folded back in.
func csum(b []byte, n int) uint32 {
	var s uint64
	for i := 0; i+4 <= n; i += 4 {
		s += uint64(binary.LittleEndian.Uint32(b[i:]))
	}
	return uint32(s&0xffffffff + s>>32)
}

func TestEraseMetadata(t *testing.T) {
	requireTool(t, "sfdisk", "fdisk")
	requireTool(t, "blkid", "util-linux")
	requireTool(t, "mkfs.ext4", "e2fsprogs")
	requireTool(t, "mkswap", "util-linux")
	for _, l := range layouts {
		// "loop": erase the loop device, whose partitions the kernel
		// knows; "file": erase its backing file, where only our reading
		// of the partition tables finds the partitions.
		for _, target := range []string{"loop", "file"} {
			t.Run(l.name+"/"+target, func(t *testing.T) {
				file := blockdevtest.File(t, "disk.img", 112*mib, nil)
				dev := blockdevtest.Loop(t, file, true)
				parts := l.build(t, dev)
				if got := probe(t, dev, 0, 0); !strings.Contains(got, "PTTYPE="+l.pttype) {
					t.Fatalf("before: blkid -p %s = %s, want PTTYPE %s", dev, got, l.pttype)
				}
				for n, p := range parts {
					want := "TYPE=" + blkidType(l.fill[n])
					if got := probe(t, dev, p.start, p.end-p.start); !strings.Contains(got, want) {
						t.Fatalf("before: partition %d (%s): blkid -p = %q, want %s", n, l.fill[n], got, want)
					}
				}

				erase := dev
				if target == "file" {
					erase = file
				}
				if err := eraseMetadata(context.Background(), "/", erase, quiet); err != nil {
					t.Fatalf("EraseMetadata(%s): %v", erase, err)
				}

				if got := probe(t, erase, 0, 0); got != "" {
					t.Errorf("after: blkid -p %s = %s, want nothing", erase, got)
				}
				if got := partitionTable(t, erase); got != "" {
					t.Errorf("after: sfdisk -d %s:\n%s", erase, got)
				}
				for n, p := range parts {
					if got := probe(t, erase, p.start, p.end-p.start); got != "" {
						t.Errorf("after: partition %d (%s at %d): blkid -p = %s, want nothing", n, l.fill[n], p.start, got)
					}
				}
				if target == "loop" {
					if _, err := os.Stat(dev + "p1"); err == nil {
						t.Errorf("%sp1 still exists: the kernel did not re-read the partition table", dev)
					}
				}
			})
		}
	}
}

// TestEraseMetadataInUse checks that a disk in use is refused, never
// overwritten under its user, and that the error says so.
func TestEraseMetadataInUse(t *testing.T) {
	requireTool(t, "sfdisk", "fdisk")
	requireTool(t, "mkfs.ext4", "e2fsprogs")
	for _, holder := range []string{"mount", "md"} {
		t.Run(holder, func(t *testing.T) {
			file := blockdevtest.File(t, "disk.img", 64*mib, nil)
			dev := blockdevtest.Loop(t, file, true)
			partition(t, dev, "label: gpt\nsize=32MiB, type=R\n", 1)
			p := dev + "p1"
			var release func()
			want := "in use"
			switch holder {
			case "mount":
				run(t, "mkfs.ext4", "-q", "-F", p)
				dir := t.TempDir()
				if out, err := exec.Command("mount", p, dir).CombinedOutput(); err != nil {
					t.Skipf("cannot mount here: %v: %s", err, out)
				}
				release = func() { run(t, "umount", dir) }
			case "md":
				if !mdadmUsable() {
					t.Skip("mdadm not installed or no md driver (Debian package mdadm)")
				}
				md := "/dev/md/ironlite-test-busy"
				run(t, "mdadm", "--create", md, "--run", "--force", "--level=1", "--raid-devices=2", p, "missing")
				release = func() { run(t, "mdadm", "--stop", md) }
				want = "held by md"
			}
			released := false
			t.Cleanup(func() {
				if !released {
					release()
				}
			})
			before := probe(t, dev, 0, 0)

			err := eraseMetadata(context.Background(), "/", dev, quiet)
			if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), want) {
				t.Fatalf("EraseMetadata on a disk in use = %v, want EBUSY saying %q", err, want)
			}
			if after := probe(t, dev, 0, 0); after != before || !strings.Contains(after, "gpt") {
				t.Errorf("the refused disk was modified: blkid -p = %s, was %s", after, before)
			}
			release()
			released = true
			if err := eraseMetadata(context.Background(), "/", dev, quiet); err != nil {
				t.Fatalf("EraseMetadata once released: %v", err)
			}
		})
	}
}

func TestEraseMetadataReadOnly(t *testing.T) {
	file := blockdevtest.File(t, "disk.img", 8*mib, bytes.Repeat([]byte{0xaa}, mib))
	dev := readOnlyLoop(t, file)
	if err := EraseMetadata(context.Background(), dev); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("EraseMetadata on a read-only device = %v, want ErrReadOnly", err)
	}
	if _, err := Zero(context.Background(), dev); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Zero on a read-only device = %v, want ErrReadOnly", err)
	}
}

// readOnlyLoop attaches file read-only (losetup -r).
func readOnlyLoop(t *testing.T, file string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	requireTool(t, "losetup", "mount")
	dev := strings.TrimSpace(run(t, "losetup", "--find", "--show", "--read-only", file))
	t.Cleanup(func() { run(t, "losetup", "--detach", dev) })
	return dev
}

// TestEraseMetadataHostileGPT erases image files whose GPT headers are
// valid (CRC included) but claim absurd entry arrays: go-diskfs alone
// dies of out-of-memory on the second one, and the previous tenant
// controls the disk's contents.
func TestEraseMetadataHostileGPT(t *testing.T) {
	for _, tc := range []struct {
		name        string
		count, size uint32
	}{
		{"entry size 0", 128, 0},
		{"four billion entries", 0xffffffff, 128},
		{"huge entries", 4, 0x80000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := blockdevtest.File(t, "disk.img", 8*mib, nil)
			h := make([]byte, 92)
			copy(h, "EFI PART")
			binary.LittleEndian.PutUint32(h[8:], 0x00010000) // revision 1.0
			binary.LittleEndian.PutUint32(h[12:], 92)        // header size
			binary.LittleEndian.PutUint64(h[24:], 1)         // my LBA
			binary.LittleEndian.PutUint64(h[32:], 8*mib/512-1)
			binary.LittleEndian.PutUint64(h[72:], 2) // entries at LBA 2
			binary.LittleEndian.PutUint32(h[80:], tc.count)
			binary.LittleEndian.PutUint32(h[84:], tc.size)
			binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
			f, err := os.OpenFile(file, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(h, 512); err != nil {
				t.Fatal(err)
			}
			f.Close()

			done := make(chan error, 1)
			go func() { done <- eraseMetadata(context.Background(), "/", file, quiet) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("EraseMetadata: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("EraseMetadata hangs on a hostile GPT")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:mib], make([]byte, mib)) {
				t.Error("the GPT header was not erased")
			}
		})
	}
}
