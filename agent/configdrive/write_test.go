package configdrive

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	builder "github.com/ironlite/ironlite/images/configdrive"
)

const (
	miB = int64(1) << 20
	giB = int64(1) << 30
	tiB = int64(1) << 40
)

// testISO builds a real config drive with userBytes of user data.
func testISO(t *testing.T, userBytes int) []byte {
	t.Helper()
	c := builder.Contents{MetaData: map[string]any{"uuid": "0b6a1a2c-7c8e-4a52-b0f5-0c3b1f2d9e41"}}
	if userBytes > 0 {
		c.UserData = bytes.Repeat([]byte("#"), userBytes)
	}
	iso, err := builder.BuildISO(c)
	if err != nil {
		t.Fatal(err)
	}
	return iso
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
}

func run(t *testing.T, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// newDisk returns a sparse file of size bytes partitioned by the sfdisk
// script (none if empty).
func newDisk(t *testing.T, size int64, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if script != "" {
		needTool(t, "sfdisk", "fdisk")
		run(t, script, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", p)
	}
	return p
}

// imageOnBiggerDisk mimics a whole-disk image written to a larger disk: a
// disk of imageSize partitioned by script, then grown to diskSize, so the
// backup GPT sits where the image ended.
func imageOnBiggerDisk(t *testing.T, imageSize, diskSize int64, script string) string {
	t.Helper()
	p := newDisk(t, imageSize, script)
	if err := os.Truncate(p, diskSize); err != nil {
		t.Fatal(err)
	}
	return p
}

type sfdiskPart struct {
	Node  string `json:"node"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	Type  string `json:"type"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
}

type sfdiskTable struct {
	Label      string       `json:"label"`
	ID         string       `json:"id"`
	FirstLBA   int64        `json:"firstlba"`
	LastLBA    int64        `json:"lastlba"`
	SectorSize int64        `json:"sectorsize"`
	Partitions []sfdiskPart `json:"partitions"`
}

func (s sfdiskTable) part(n int) (sfdiskPart, bool) {
	for _, p := range s.Partitions {
		digits := strings.TrimRight(p.Node, "0123456789")
		if p.Node[len(digits):] == fmt.Sprint(n) {
			return p, true
		}
	}
	return sfdiskPart{}, false
}

func dump(t *testing.T, dev string) sfdiskTable {
	t.Helper()
	needTool(t, "sfdisk", "fdisk")
	var v struct {
		PT sfdiskTable `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "", "sfdisk", "-J", dev)), &v); err != nil {
		t.Fatal(err)
	}
	return v.PT
}

func blkidAt(t *testing.T, dev string, off int64) string {
	t.Helper()
	needTool(t, "blkid", "util-linux")
	args := []string{"-p", "-o", "export"}
	if off > 0 {
		args = append(args, "-O", fmt.Sprint(off))
	}
	return run(t, "", "blkid", append(args, dev)...)
}

// check verifies what Write reported against the disk: the table as
// sfdisk reads it, the image bytes, the zeroed rest of a new partition and
// what blkid finds there.
func check(t *testing.T, dev string, res Result, iso []byte) sfdiskTable {
	t.Helper()
	pt := dump(t, dev)
	if pt.Label != res.Table {
		t.Errorf("sfdisk label %q, Result.Table %q", pt.Label, res.Table)
	}
	p, ok := pt.part(res.Partition)
	if !ok {
		t.Fatalf("sfdisk shows no partition %d: %+v", res.Partition, pt.Partitions)
	}
	if p.Start*pt.SectorSize != res.Offset || p.Size*pt.SectorSize != res.Size {
		t.Errorf("partition %d at %d+%d sectors, Result says offset %d size %d", res.Partition, p.Start, p.Size, res.Offset, res.Size)
	}
	if res.Table == "gpt" && !strings.EqualFold(p.UUID, res.PartUUID) {
		t.Errorf("partition GUID %s, Result.PartUUID %s", p.UUID, res.PartUUID)
	}
	if res.Table == "dos" && res.PartUUID != fmt.Sprintf("%s-%02x", strings.TrimPrefix(pt.ID, "0x"), res.Partition) {
		t.Errorf("Result.PartUUID %s for disk id %s", res.PartUUID, pt.ID)
	}
	if got := blockdevtest.ReadAt(t, dev, res.Offset, int64(len(iso))); !bytes.Equal(got, iso) {
		t.Error("the partition does not start with the image")
	}
	if res.Created {
		rest := blockdevtest.ReadAt(t, dev, res.Offset+int64(len(iso)), res.Size-int64(len(iso)))
		if !allZero(rest) {
			t.Error("the new partition is not zero past the image")
		}
	}
	if out := blkidAt(t, dev, res.Offset); !strings.Contains(out, "TYPE=iso9660\n") || !strings.Contains(out, "LABEL=config-2\n") {
		t.Errorf("blkid at offset %d:\n%s", res.Offset, out)
	}
	if out := run(t, "", "sfdisk", "--verify", dev); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", out)
	}
	if res.Table == "gpt" {
		if _, err := exec.LookPath("sgdisk"); err == nil {
			if out := run(t, "", "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
				t.Errorf("sgdisk -v:\n%s", out)
			}
		}
	}
	return pt
}

func write(t *testing.T, dev string, iso []byte) Result {
	t.Helper()
	res, err := Write(context.Background(), dev, iso)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const gptImage = "label: gpt\nsize=20MiB, type=U, name=esp\nsize=50MiB, type=L, name=root\n"

func TestWriteGPTImageSmallerThanDisk(t *testing.T) {
	dev := imageOnBiggerDisk(t, 100*miB, giB, gptImage)
	before := dump(t, dev)
	if before.LastLBA != 100*miB/512-34 {
		t.Fatalf("setup: last LBA %d", before.LastLBA)
	}
	iso := testISO(t, 1000)
	res := write(t, dev, iso)

	sectors := giB / 512
	last := sectors - 34 // 128 entries of 128 bytes, header, backup header
	start := (last + 1 - 64*miB/512) / 2048 * 2048
	want := Result{Table: "gpt", Partition: 3, Offset: start * 512, Size: (last - start + 1) * 512, PartUUID: res.PartUUID, Created: true}
	if res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}
	pt := check(t, dev, res, iso)
	if pt.LastLBA != last {
		t.Errorf("last usable LBA %d, want %d: backup GPT not moved to the end", pt.LastLBA, last)
	}
	for i, p := range before.Partitions {
		if after := pt.Partitions[i]; after.Start != p.Start || after.Size != p.Size || after.UUID != p.UUID || after.Name != p.Name || after.Type != p.Type {
			t.Errorf("partition %s changed: %+v -> %+v", p.Node, p, after)
		}
	}
	if p, _ := pt.part(3); p.Name != "config-2" || p.Type != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" {
		t.Errorf("new partition %+v", p)
	}
	// The protective MBR now covers the whole disk.
	if got := binary.LittleEndian.Uint32(blockdevtest.ReadAt(t, dev, 446+12, 4)); int64(got) != sectors-1 {
		t.Errorf("protective MBR covers %d sectors, want %d", got, sectors-1)
	}
}

// TestWriteGPTMatchesSgdisk compares the geometry with what IPA runs:
// sgdisk -e, then sgdisk -n 0:-64MB:0. sgdisk -e keeps as many sectors
// unused at the end of the disk as before the first usable one (2048 in
// sfdisk's tables), where we, like sfdisk and the UEFI spec, end the usable
// space just before the backup entries; so sgdisk's partition may end up
// to 1 MiB earlier. Both are at least 64 MiB, start on a 1 MiB boundary
// and get the first free partition number.
func TestWriteGPTMatchesSgdisk(t *testing.T) {
	needTool(t, "sgdisk", "gdisk")
	for _, size := range []int64{giB, giB + 12345*512} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ours := imageOnBiggerDisk(t, 100*miB, size, gptImage)
			theirs := filepath.Join(t.TempDir(), "sgdisk.img")
			run(t, "", "cp", "--sparse=always", ours, theirs)
			run(t, "", "sgdisk", "-e", theirs)
			run(t, "", "sgdisk", "-n", "0:-64MB:0", theirs)
			res := write(t, ours, testISO(t, 0))
			want, _ := dump(t, theirs).part(3)
			got, _ := dump(t, ours).part(3)
			if res.Partition != 3 {
				t.Errorf("partition %d, sgdisk picks 3", res.Partition)
			}
			for _, p := range []sfdiskPart{got, want} {
				if p.Start%2048 != 0 || p.Size < 64*miB/512 {
					t.Errorf("partition at %d+%d: not aligned or smaller than 64 MiB", p.Start, p.Size)
				}
			}
			if d := got.Start - want.Start; d < 0 || d > 2048 {
				t.Errorf("partition 3 at %d+%d, sgdisk puts it at %d+%d", got.Start, got.Size, want.Start, want.Size)
			}
		})
	}
}

func TestWriteGPTFullSizeImage(t *testing.T) {
	dev := newDisk(t, 300*miB, gptImage)
	iso := testISO(t, 0)
	res := write(t, dev, iso)
	check(t, dev, res, iso)
	if res.Partition != 3 || res.Offset+res.Size != (300*miB/512-33)*512 {
		t.Errorf("Result = %+v", res)
	}
}

func TestWriteMBR(t *testing.T) {
	dev := newDisk(t, 512*miB, "label: dos\nlabel-id: 0x1234abcd\nsize=50MiB, type=83, bootable\nsize=50MiB, type=82\nsize=50MiB, type=83\n")
	iso := testISO(t, 0)
	res := write(t, dev, iso)
	want := Result{Table: "dos", Partition: 4, Offset: 448 * miB, Size: 64 * miB, PartUUID: "1234abcd-04", Created: true}
	if res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}
	pt := check(t, dev, res, iso)
	if p, _ := pt.part(4); p.Type != "c" {
		t.Errorf("partition type %s, want c (what parted gives fat32)", p.Type)
	}
	if _, err := exec.LookPath("parted"); err == nil {
		// What IPA runs, on a copy.
		theirs := newDisk(t, 512*miB, "label: dos\nsize=50MiB, type=83, bootable\nsize=50MiB, type=82\nsize=50MiB, type=83\n")
		run(t, "", "parted", "-a", "optimal", "-s", "--", theirs, "mkpart", "primary", "fat32", "-64MiB", "-0")
		p, _ := dump(t, theirs).part(4)
		if p.Start*512 != res.Offset || p.Size*512 != res.Size || p.Type != "c" {
			t.Errorf("parted puts it at %+v", p)
		}
	}
}

func TestWriteMBRZeroSignature(t *testing.T) {
	dev := newDisk(t, 256*miB, "label: dos\nsize=50MiB, type=83\n")
	// sfdisk makes up an id for 0; clear it as some image builders leave it.
	putAt(t, dev, 440, make([]byte, 4))
	res := write(t, dev, testISO(t, 0))
	if res.PartUUID != "" || res.Partition != 2 {
		t.Errorf("Result = %+v, want partition 2 without PARTUUID", res)
	}
}

func TestWriteReusesExistingPartition(t *testing.T) {
	for _, label := range []string{"gpt", "dos"} {
		t.Run(label, func(t *testing.T) {
			dev := newDisk(t, 512*miB, "label: "+label+"\nsize=50MiB\nsize=10MiB\nsize=100MiB\n")
			p2, _ := dump(t, dev).part(2)
			old := testISO(t, 0)
			putAt(t, dev, p2.Start*512, old)

			iso := testISO(t, 100<<10) // bigger than the old one
			res := write(t, dev, iso)
			if res.Partition != 2 || res.Created || res.Offset != p2.Start*512 || res.Size != 10*miB {
				t.Errorf("Result = %+v, want partition 2 reused", res)
			}
			pt := check(t, dev, res, iso)
			if len(pt.Partitions) != 3 {
				t.Errorf("partitions %+v, want the 3 there were", pt.Partitions)
			}
			// Again (a rebuild): the same partition.
			if again := write(t, dev, old); again.Partition != 2 || again.Created {
				t.Errorf("second Write = %+v", again)
			}
		})
	}
}

func TestWriteTwiceReusesCreatedPartition(t *testing.T) {
	dev := imageOnBiggerDisk(t, 100*miB, giB, gptImage)
	first := write(t, dev, testISO(t, 0))
	iso := testISO(t, 5000)
	second := write(t, dev, iso)
	if second.Created || second.Partition != first.Partition || second.Offset != first.Offset || second.PartUUID != first.PartUUID {
		t.Errorf("second Write = %+v, first %+v", second, first)
	}
	check(t, dev, second, iso)
}

func TestWriteReusesLogicalPartition(t *testing.T) {
	// 1: primary; 2: extended holding 5 and 6.
	dev := newDisk(t, 512*miB, "label: dos\nsize=50MiB, type=83\ntype=5\nsize=20MiB, type=83\nsize=20MiB, type=83\n")
	pt := dump(t, dev)
	p6, ok := pt.part(6)
	if !ok {
		t.Fatalf("setup: no partition 6: %+v", pt.Partitions)
	}
	putAt(t, dev, p6.Start*512, testISO(t, 0))
	iso := testISO(t, 10)
	res := write(t, dev, iso)
	if res.Partition != 6 || res.Created || res.Offset != p6.Start*512 {
		t.Errorf("Result = %+v, want logical partition 6 reused", res)
	}
	check(t, dev, res, iso)
}

func TestWriteRefuses(t *testing.T) {
	iso := testISO(t, 0)
	tests := []struct {
		name   string
		dev    func(t *testing.T) string
		iso    []byte
		err    string
		target error
	}{
		{
			name: "no partition table",
			dev:  func(t *testing.T) string { return newDisk(t, 256*miB, "") },
			err:  "no partition table", target: ErrNoPartitionTable,
		},
		{
			name: "MBR signature without partitions",
			dev: func(t *testing.T) string {
				p := newDisk(t, 256*miB, "")
				putAt(t, p, 510, []byte{0x55, 0xaa})
				return p
			},
			err: "the MBR has no partitions", target: ErrNoPartitionTable,
		},
		{
			name: "GPT end of disk in use",
			dev:  func(t *testing.T) string { return newDisk(t, 256*miB, "label: gpt\nsize=20MiB, name=esp\nname=root\n") },
			err:  `but partition 2 (root), sectors 43008-522239 overlaps them`,
		},
		{
			name: "MBR end of disk in use",
			dev:  func(t *testing.T) string { return newDisk(t, 256*miB, "label: dos\nsize=200MiB, type=83\n") },
			err:  "partition 1 (type 0x83), sectors 2048-411647 overlaps",
		},
		{
			name: "MBR extended partition at the end",
			dev:  func(t *testing.T) string { return newDisk(t, 256*miB, "label: dos\nsize=20MiB\ntype=5\nsize=10MiB\n") },
			err:  "partition 2 (extended, holding the logical partitions)",
		},
		{
			name: "MBR four primaries",
			dev: func(t *testing.T) string {
				return newDisk(t, 512*miB, "label: dos\nsize=20MiB\nsize=20MiB\nsize=20MiB\nsize=20MiB\n")
			},
			err: "the MBR already has 4 primary partitions",
		},
		{
			name: "disk too small",
			dev:  func(t *testing.T) string { return newDisk(t, 60*miB, "label: gpt\nsize=1MiB\n") },
			err:  "too small for a 64 MiB config drive partition",
		},
		{
			name: "existing config-2 partition too small",
			dev: func(t *testing.T) string {
				p := newDisk(t, 256*miB, "label: gpt\nsize=1MiB\nsize=200MiB\n")
				putAt(t, p, 2048*512, testISO(t, 0))
				return p
			},
			iso: testISO(t, 1<<20),
			err: "the existing config drive partition 1 (type 0fc63daf-8483-4772-8e79-3d69d8477de4) is 1048576 bytes, too small",
		},
		{
			name: "two config-2 partitions",
			dev: func(t *testing.T) string {
				p := newDisk(t, 512*miB, "label: gpt\nsize=10MiB\nsize=10MiB\n")
				pt := dump(t, p)
				for _, q := range pt.Partitions {
					putAt(t, p, q.Start*512, iso)
				}
				return p
			},
			err: "more than one partition with label \"config-2\"",
		},
		{
			name: "image larger than the disk",
			dev: func(t *testing.T) string {
				p := newDisk(t, 512*miB, "label: gpt\nsize=400MiB\n")
				if err := os.Truncate(p, 300*miB); err != nil {
					t.Fatal(err)
				}
				return p
			},
			err: "past the last usable sector",
		},
		{
			name: "image too big",
			dev:  func(t *testing.T) string { return "/nonexistent" },
			iso:  make([]byte, MaxSize+1),
			err:  "config drive size exceeds maximum limit of 64 MiB",
		},
		{
			name: "empty image",
			dev:  func(t *testing.T) string { return "/nonexistent" },
			iso:  []byte{},
			err:  "config drive image is empty",
		},
		{
			name: "no such disk",
			dev:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			err:  "no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := tt.dev(t)
			img := iso
			if tt.iso != nil {
				img = tt.iso
			}
			before := tableAreas(dev)
			_, err := Write(context.Background(), dev, img)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Write error = %v, want %q", err, tt.err)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("error %v is not %v", err, tt.target)
			}
			if after := tableAreas(dev); !bytes.Equal(before, after) {
				t.Error("refused, but the disk was modified")
			}
		})
	}
}

func TestWriteBeyond2TiB(t *testing.T) {
	t.Run("gpt", func(t *testing.T) {
		dev := imageOnBiggerDisk(t, 100*miB, 3*tiB, gptImage)
		iso := testISO(t, 0)
		res := write(t, dev, iso)
		check(t, dev, res, iso)
		if res.Offset+res.Size != (3*tiB/512-33)*512 {
			t.Errorf("Result = %+v, not at the end of the disk", res)
		}
		if got := binary.LittleEndian.Uint32(blockdevtest.ReadAt(t, dev, 446+12, 4)); got != 0xffffffff {
			t.Errorf("protective MBR covers %#x sectors, want 0xffffffff", got)
		}
	})
	t.Run("dos", func(t *testing.T) {
		dev := newDisk(t, 3*tiB, "label: dos\nsize=100MiB, type=83\n")
		iso := testISO(t, 0)
		res := write(t, dev, iso)
		check(t, dev, res, iso)
		// IPA: parted mkpart 2TiB-65MiB 2TiB-1MiB.
		if res.Offset != 2*tiB-65*miB || res.Size != 64*miB {
			t.Errorf("Result = %+v, want the 64 MiB below 2 TiB - 1 MiB", res)
		}
	})
}

func TestFSLabel(t *testing.T) {
	fat := func(off int, fstype string) []byte {
		b := make([]byte, 4096)
		b[510], b[511] = 0x55, 0xaa
		sig, label, typ := 38, 43, 54
		if off == 32 {
			sig, label, typ = 66, 71, 82
		}
		b[sig] = 0x29
		copy(b[label:], "CONFIG-2   ")
		copy(b[typ:], fstype)
		return b
	}
	ext := make([]byte, 4096)
	binary.LittleEndian.PutUint16(ext[1024+56:], 0xef53)
	copy(ext[1024+120:], "config-2")
	noName := fat(16, "FAT16   ")
	copy(noName[43:], "NO NAME    ")

	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"iso", testISO(t, 0), "config-2"},
		{"fat32", fat(32, "FAT32   "), "CONFIG-2"},
		{"fat16", fat(16, "FAT16   "), "CONFIG-2"},
		{"fat no name", noName, ""},
		{"ext4", ext, "config-2"},
		{"zeroes", make([]byte, 64<<10), ""},
		{"short", []byte{1, 2, 3}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fsLabel(bytes.NewReader(tt.b), 0, int64(len(tt.b))); got != tt.want {
				t.Errorf("fsLabel = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFSLabelMkfs(t *testing.T) {
	needTool(t, "mkfs.ext4", "e2fsprogs")
	p := filepath.Join(t.TempDir(), "fs.img")
	run(t, "", "mkfs.ext4", "-q", "-L", "config-2", p, "4M")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := fsLabel(f, 0, 4*miB); got != "config-2" {
		t.Errorf("fsLabel(mkfs.ext4 -L config-2) = %q", got)
	}
}

// tableAreas returns what Write could have changed on a refused disk: the
// first MiB (MBR, primary GPT) and the last 65 MiB (backup GPT, the config
// drive partition); nil if dev is not a readable file.
func tableAreas(dev string) []byte {
	f, err := os.Open(dev)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	head := make([]byte, min(miB, st.Size()))
	tail := make([]byte, min(65*miB, st.Size()))
	f.ReadAt(head, 0)
	f.ReadAt(tail, st.Size()-int64(len(tail)))
	return append(head, tail...)
}

func putAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestWriteLoopDevice runs Write on real block devices: it goes through
// the whole-disk device, the kernel re-reads the table, and the new
// partition's own device node holds the config drive.
func TestWriteLoopDevice(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script string
		part   int
	}{
		{"gpt", gptImage, 3},
		{"dos", "label: dos\nsize=20MiB, type=83\nsize=50MiB, type=83\n", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := imageOnBiggerDisk(t, 100*miB, giB, tt.script)
			dev := blockdevtest.Loop(t, file, true)
			iso := testISO(t, 0)
			res := write(t, dev, iso)
			if res.Partition != tt.part || !res.Created {
				t.Errorf("Result = %+v", res)
			}
			check(t, dev, res, iso)
			for n := 1; n < res.Partition; n++ {
				partNode(t, dev, n) // the image's partitions are still known
			}
			node := partNode(t, dev, res.Partition)
			if out := run(t, "", "blkid", "-p", "-o", "export", node); !strings.Contains(out, "TYPE=iso9660\n") || !strings.Contains(out, "LABEL=config-2\n") {
				t.Errorf("blkid %s:\n%s", node, out)
			}
			if got := blockdevtest.ReadAt(t, node, 0, int64(len(iso))); !bytes.Equal(got, iso) {
				t.Errorf("%s does not hold the image", node)
			}
			if size := run(t, "", "blockdev", "--getsize64", node); strings.TrimSpace(size) != fmt.Sprint(res.Size) {
				t.Errorf("%s is %s bytes, Result.Size %d", node, strings.TrimSpace(size), res.Size)
			}
		})
	}
}

// TestWriteLoopDevice4K covers 4096-byte logical sectors: the GPT's LBAs
// and the alignment are in 4 KiB units.
func TestWriteLoopDevice4K(t *testing.T) {
	file := newDisk(t, giB, "")
	dev := loop4K(t, file)
	run(t, "label: gpt\nsize=20MiB, type=U\nsize=50MiB, type=L\n", "sfdisk", "-q", dev)
	iso := testISO(t, 0)
	res := write(t, dev, iso)
	last := giB/4096 - 6 // 128 entries of 128 bytes are 4 sectors
	start := (last + 1 - 64*miB/4096) / 256 * 256
	if res.Partition != 3 || res.Offset != start*4096 || res.Size != (last-start+1)*4096 {
		t.Errorf("Result = %+v, want partition 3 at sector %d", res, start)
	}
	pt := check(t, dev, res, iso)
	if pt.SectorSize != 4096 || pt.LastLBA != last {
		t.Errorf("sfdisk: sector size %d, last LBA %d", pt.SectorSize, pt.LastLBA)
	}
	node := partNode(t, dev, 3)
	if got := blockdevtest.ReadAt(t, node, 0, int64(len(iso))); !bytes.Equal(got, iso) {
		t.Errorf("%s does not hold the image", node)
	}
}

func loop4K(t *testing.T, file string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	needTool(t, "losetup", "mount")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control: loop devices unavailable")
	}
	dev := strings.TrimSpace(run(t, "", "losetup", "--find", "--show", "--partscan", "--sector-size", "4096", file))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// partNode waits for the partition's device node (devtmpfs creates it
// when the kernel adds the partition; no udev needed).
func partNode(t *testing.T, dev string, n int) string {
	t.Helper()
	node := fmt.Sprintf("%sp%d", dev, n)
	for range 50 {
		if _, err := os.Stat(node); err == nil {
			return node
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear after the partition table was re-read", node)
	return ""
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
