package raid

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/disk"
)

// requireTools skips the test unless the tools are installed.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (Debian packages dosfstools, mtools, fdisk)", n)
		}
	}
}

// makeFAT makes a FAT filesystem of size bytes with FAT width bits (12,
// 16 or 32) in a new file, holding the given files (paths from its root;
// directories are made) with a few bytes each. It returns the file.
func makeFAT(t *testing.T, size int64, bits int, files ...string) string {
	t.Helper()
	requireTools(t, "mkfs.vfat", "mmd", "mcopy")
	p := filepath.Join(t.TempDir(), fmt.Sprintf("fat%d.img", bits))
	run(t, "mkfs.vfat", "-C", "-F", fmt.Sprint(bits), "-n", "ESP", p, fmt.Sprint(size/1024))
	src := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(src, []byte("ironlite test payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, f := range files {
		parts := strings.Split(strings.Trim(f, "/"), "/")
		for i := 1; i < len(parts); i++ {
			d := "::/" + strings.Join(parts[:i], "/")
			if !made[d] {
				run(t, "mmd", "-i", p, d)
				made[d] = true
			}
		}
		run(t, "mcopy", "-i", p, src, "::/"+strings.Join(parts, "/"))
	}
	return p
}

// makeImage makes a disk image file of size bytes: the partition table
// given as an sfdisk script, and the files of contents (start offset in
// bytes -> file) copied in.
func makeImage(t *testing.T, size int64, script string, contents map[int64]string) string {
	t.Helper()
	requireTools(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "image.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	for off, src := range contents {
		copyInto(t, p, off, readFile(t, src))
	}
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyInto writes b at off of the file or device p.
func copyInto(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

const esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

func TestFATHasFile(t *testing.T) {
	for _, tc := range []struct {
		bits int
		size int64
	}{{12, 4 * mib}, {16, 16 * mib}, {32, 64 * mib}} {
		t.Run(fmt.Sprintf("FAT%d", tc.bits), func(t *testing.T) {
			p := makeFAT(t, tc.size, tc.bits, "EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi")
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !fatHasFile(f, 0, tc.size, "EFI", "BOOT", "BOOTX64.EFI") {
				t.Error("/EFI/BOOT/BOOTX64.EFI not found")
			}
			if !fatHasFile(f, 0, tc.size, "efi", "debian", "grubx64.efi") {
				t.Error("/EFI/debian/grubx64.efi not found")
			}
			for _, miss := range [][]string{{"EFI", "BOOT", "BOOTAA64.EFI"}, {"EFI", "BOOTX64.EFI"}, {"EFI", "BOOT", "BOOTX64.EFI", "X"}} {
				if fatHasFile(f, 0, tc.size, miss...) {
					t.Errorf("%v found", miss)
				}
			}
			// Shifted: the filesystem is not at offset 0.
			if fatHasFile(f, 512, tc.size-512, "EFI", "BOOT", "BOOTX64.EFI") {
				t.Error("found at a wrong offset")
			}
		})
	}
	// Lower-case names have an upper-case short name.
	p := makeFAT(t, 16*mib, 16, "efi/boot/bootx64.efi")
	f, _ := os.Open(p)
	defer f.Close()
	if !fatHasFile(f, 0, 16*mib, "EFI", "BOOT", "BOOTX64.EFI") {
		t.Error("lower-case bootx64.efi not found")
	}
}

// TestFindESPAndCopy: the ESP of GPT and MBR images is found and copied
// into a member disk's boot reserve (files standing in for the md device
// and the member disk).
func TestFindESPAndCopy(t *testing.T) {
	ctx := context.Background()
	// The member disk: a GPT with the root's RAID partition at 24 MiB.
	member := filepath.Join(t.TempDir(), "member.img")
	if err := os.WriteFile(member, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(member, 128*mib); err != nil {
		t.Fatal(err)
	}
	func() {
		d, err := blockdev.Open(member, blockdev.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*gpt.Partition{
			{Index: 1, Start: uint64(24 * mib / 512), End: uint64(100*mib/512 - 1), Size: uint64(76 * mib), Type: gpt.LinuxRAID, Name: "root"},
		}}
		if err := disk.WriteGPT(d, tbl); err != nil {
			t.Fatal(err)
		}
	}()
	memberGPT := func() []*gpt.Partition {
		d, err := blockdev.Open(member, blockdev.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		tbl, err := disk.ReadGPT(d)
		if err != nil {
			t.Fatal(err)
		}
		var ps []*gpt.Partition
		for _, p := range tbl.Partitions {
			if p.Type != gpt.Unused {
				ps = append(ps, p)
			}
		}
		return ps
	}
	deploy := func(image string) (espInfo, error) {
		md, err := blockdev.Open(image, blockdev.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		e, err := findESP(md)
		if err != nil || e.size == 0 {
			return e, err
		}
		return e, copyESP(ctx, md, e, member)
	}
	checkESP := func(image string, e espInfo, size int64) {
		t.Helper()
		ps := memberGPT()
		if len(ps) != 2 {
			t.Fatalf("member partitions: %+v", ps)
		}
		raid, p := ps[0], ps[1]
		if raid.Index != 1 || raid.Start != uint64(24*mib/512) || raid.Type != gpt.LinuxRAID {
			t.Errorf("the RAID partition changed: %+v", raid)
		}
		if p.Index != 2 || !strings.EqualFold(string(p.Type), esp) || p.Start != uint64(mib/512) || int64(p.End-p.Start+1)*512 != size {
			t.Errorf("ESP %+v, want partition 2 at 1 MiB of %d bytes", p, size)
		}
		if got, want := blockdevtest.ReadAt(t, member, mib, size), blockdevtest.ReadAt(t, image, e.start, e.size); !bytes.Equal(got, want) {
			t.Error("the copied ESP differs from the image's")
		}
		if out, err := exec.Command("sfdisk", "--verify", member).CombinedOutput(); err != nil {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
	}

	// GPT image: the ESP by type (its content need not hold BOOTX64.EFI).
	fat16 := makeFAT(t, 16*mib, 16, "EFI/debian/grubx64.efi")
	img := makeImage(t, 64*mib, "label: gpt\nstart=2048, size=32768, type="+esp+"\nstart=34816, type=0FC63DAF-8483-4772-8E79-3D47DE4709E4\n",
		map[int64]string{mib: fat16})
	e, err := deploy(img)
	if err != nil {
		t.Fatal(err)
	}
	if e.start != mib || e.size != 16*mib || !strings.Contains(e.how, "GPT partition 1 (EFI System type)") {
		t.Errorf("GPT image ESP %+v", e)
	}
	checkESP(img, e, 16*mib)

	// Redeploy with an MBR image whose FAT partition (type 0x0c) holds
	// the removable-media boot loader: it replaces the earlier ESP.
	fat12 := makeFAT(t, 8*mib, 12, "EFI/BOOT/BOOTX64.EFI")
	img = makeImage(t, 64*mib, "label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=16384, type=c, bootable\n",
		map[int64]string{4 * mib: fat12})
	if e, err = deploy(img); err != nil {
		t.Fatal(err)
	}
	if e.start != 4*mib || e.size != 8*mib || !strings.Contains(e.how, "MBR partition 2 (type 0x0c) (FAT with /EFI/BOOT/BOOTX64.EFI)") {
		t.Errorf("MBR image ESP %+v", e)
	}
	checkESP(img, e, 8*mib)

	// MBR type 0xEF is an ESP whatever it holds.
	img = makeImage(t, 64*mib, "label: dos\nstart=2048, size=8192, type=ef\n", map[int64]string{mib: fat12})
	if e, err = deploy(img); err != nil || e.start != mib || !strings.Contains(e.how, "type 0xef") {
		t.Errorf("0xEF: %+v %v", e, err)
	}

	// No ESP: a FAT partition without the boot loader is not one.
	img = makeImage(t, 64*mib, "label: dos\nstart=2048, size=16384, type=c\nstart=20480, type=83\n", map[int64]string{mib: fat16})
	if e, err = deploy(img); err != nil || e.size != 0 {
		t.Errorf("no ESP: %+v %v", e, err)
	}

	// An ESP larger than the reserve is refused, the disk left alone.
	fatBig := makeFAT(t, 32*mib, 16, "EFI/BOOT/BOOTX64.EFI")
	img = makeImage(t, 64*mib, "label: gpt\nstart=2048, size=65536, type="+esp+"\n", map[int64]string{mib: fatBig})
	if _, err = deploy(img); err == nil || !strings.Contains(err.Error(), "the image's ESP (32.0 MiB) does not fit in the 23.0 MiB free before its RAID partitions") {
		t.Errorf("big ESP: %v", err)
	}
	if ps := memberGPT(); len(ps) != 2 {
		t.Errorf("after a refused copy: %+v", ps)
	}
}

func TestPrepareRootMembersNotMD(t *testing.T) {
	// Anything but an md array: nothing to do.
	for _, d := range []string{"/dev/sda", filepath.Join(t.TempDir(), "x")} {
		if err := PrepareRootMembers(context.Background(), d, Options{Root: t.TempDir(), Log: quiet}); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
}
