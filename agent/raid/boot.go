package raid

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/rootdevice"
)

// PrepareRootMembers makes every member disk of the root mirror mdDevice
// bootable on its own, after a whole-disk image was written onto
// mdDevice. Call it after every image write; it returns nil at once for
// anything that is not an md device, and does nothing for:
//
//   - a mirror over whole disks (the layout Create picks when the root
//     volume has its disks to itself): with metadata 1.0 each member disk
//     reads, from sector 0, exactly the image, and boots by BIOS and UEFI
//     as it is;
//   - an array that is not RAID-1 (no member holds a whole copy).
//
// A mirror over partitions (the root volume shares its disks with other
// logical disks) has a GPT of RAID partitions on every member, not the
// image's partition table and boot code. For UEFI, the image's EFI System
// Partition (GPT type C12A7328-F81F-11D2-BA4B-00A0C93EC93B, MBR type 0xEF,
// or else a FAT partition holding /EFI/BOOT/BOOTX64.EFI) is copied byte for
// byte into a new ESP in the space Create left free at the start of every
// member disk (Options.BootReserve), replacing one an earlier deploy put
// there. BIOS boot from such members would need a boot loader installed
// from the image; that is not done, and a warning says so. An image
// without an ESP leaves the members unbootable: that is an error.
func PrepareRootMembers(ctx context.Context, mdDevice string, o Options) error {
	log := o.log()
	name := sysName(mdDevice)
	dir := filepath.Join(o.root(), "sys/block", name)
	if !strings.HasPrefix(name, "md") {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "md")); err != nil {
		return nil // not an md device
	}
	slaves, err := os.ReadDir(filepath.Join(dir, "slaves"))
	if err != nil || len(slaves) == 0 {
		return fmt.Errorf("prepare the root mirror %s: it has no members (not running?)", mdDevice)
	}
	var parts []string
	for _, s := range slaves {
		if _, err := os.Stat(filepath.Join(o.root(), "sys/class/block", s.Name(), "partition")); err != nil {
			log.Info("raid: root mirror over whole disks: every member disk is the image and boots on its own", "array", mdDevice)
			return nil
		}
		parts = append(parts, s.Name())
	}
	if level := readSys(filepath.Join(dir, "md/level")); level != "raid1" {
		log.Warn("raid: the image went to an md array that is not a mirror: no member disk can boot on its own", "array", mdDevice, "level", level)
		return nil
	}
	md, err := blockdev.Open(mdDevice, blockdev.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("prepare the root mirror: %w", err)
	}
	defer md.Close()
	esp, err := findESP(md)
	if err != nil {
		return fmt.Errorf("prepare the root mirror %s: %w", mdDevice, err)
	}
	warn := "raid: BIOS boot from the member disks is not possible: the root mirror is built on partitions (the root volume shares its disks with other logical disks), so the disks start with a GPT of RAID partitions, not the image's boot code; install a boot loader from the instance, or give the root volume disks of its own (whole-disk members boot by BIOS and UEFI)"
	if _, err := os.Stat(filepath.Join(o.root(), "sys/firmware/efi")); err != nil {
		warn += "; this machine booted the ramdisk by BIOS"
	}
	log.Warn(warn, "array", mdDevice)
	if esp.size == 0 {
		return fmt.Errorf("prepare the root mirror %s: the image has no EFI System Partition (no GPT type C12A7328-F81F-11D2-BA4B-00A0C93EC93B, no MBR type 0xEF, no FAT partition with /EFI/BOOT/BOOTX64.EFI), and its member disks are partitioned: none of them can boot, by UEFI or BIOS", mdDevice)
	}
	log.Info("raid: copying the image's ESP to every member disk", "array", mdDevice, "esp", esp.how, "offset", esp.start, "size", esp.size)
	done := map[string]bool{}
	for _, p := range parts {
		d := "/dev/" + rootdevice.ParentDisk(o.root(), p)
		if done[d] {
			continue
		}
		done[d] = true
		if err := copyESP(ctx, md, esp, d); err != nil {
			return fmt.Errorf("prepare the root mirror %s: %w", mdDevice, err)
		}
		log.Info("raid: ESP copied", "disk", d, "size", esp.size)
	}
	return nil
}

// espInfo locates the image's ESP on the md device; size 0: none.
type espInfo struct {
	start, size int64
	how         string
}

// fatTypes are the MBR partition types of FAT filesystems (and 0xEF).
var fatTypes = map[byte]bool{0x01: true, 0x04: true, 0x06: true, 0x0b: true, 0x0c: true, 0x0e: true, 0xef: true}

// findESP finds the image's ESP in the partition table written to dev.
func findESP(dev *blockdev.Device) (espInfo, error) {
	lbs := int64(dev.LogicalSectorSize())
	head := make([]byte, 2*lbs)
	if _, err := dev.ReadAt(head, 0); err != nil {
		return espInfo{}, fmt.Errorf("read the image's partition table: %w", err)
	}
	var cands []espInfo
	if string(head[lbs:lbs+8]) == "EFI PART" {
		tbl, err := disk.ReadGPT(dev)
		if err != nil {
			return espInfo{}, fmt.Errorf("read the image's GPT: %w", err)
		}
		for _, p := range tbl.Partitions {
			if p.Type == gpt.Unused || p.End < p.Start {
				continue
			}
			e := espInfo{start: int64(p.Start) * lbs, size: int64(p.End-p.Start+1) * lbs, how: "GPT partition " + strconv.Itoa(p.Index)}
			if strings.EqualFold(string(p.Type), string(gpt.EFISystemPartition)) {
				e.how += " (EFI System type)"
				return e, nil
			}
			cands = append(cands, e)
		}
	} else if head[510] == 0x55 && head[511] == 0xaa {
		for i := 0; i < 4; i++ {
			ent := head[446+16*i:]
			typ := ent[4]
			e := espInfo{
				start: int64(binary.LittleEndian.Uint32(ent[8:])) * lbs,
				size:  int64(binary.LittleEndian.Uint32(ent[12:])) * lbs,
				how:   fmt.Sprintf("MBR partition %d (type 0x%02x)", i+1, typ),
			}
			if e.size == 0 || e.start+e.size > dev.Size() {
				continue
			}
			if typ == 0xef {
				return e, nil
			}
			if fatTypes[typ] {
				cands = append(cands, e)
			}
		}
	}
	for _, e := range cands {
		if e.start+e.size <= dev.Size() && fatHasFile(dev, e.start, e.size, "EFI", "BOOT", "BOOTX64.EFI") {
			e.how += " (FAT with /EFI/BOOT/BOOTX64.EFI)"
			return e, nil
		}
	}
	return espInfo{}, nil
}

// copyESP copies the image's ESP into a new EFI System partition at the
// start of member disk d, in the space before its RAID partitions.
func copyESP(ctx context.Context, md *blockdev.Device, esp espInfo, d string) error {
	dev, err := blockdev.Open(d, blockdev.Options{Shared: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	tbl, err := disk.ReadGPT(dev)
	if err != nil {
		return fmt.Errorf("member disk %s: %w", d, err)
	}
	lbs := int64(dev.LogicalSectorSize())
	lowest := dev.Size()
	used := map[int]bool{}
	var keep []*gpt.Partition
	var dropped []int
	for _, p := range tbl.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		if strings.EqualFold(string(p.Type), string(gpt.EFISystemPartition)) {
			dropped = append(dropped, p.Index) // an earlier deploy's
			continue
		}
		keep = append(keep, p)
		used[p.Index] = true
		lowest = min(lowest, int64(p.Start)*lbs)
	}
	start := mib
	size := (esp.size + lbs - 1) / lbs * lbs
	if start+size > lowest {
		return fmt.Errorf("member disk %s: the image's ESP (%.1f MiB) does not fit in the %.1f MiB free before its RAID partitions (raid Options.BootReserve)",
			d, float64(size)/float64(mib), float64(lowest-start)/float64(mib))
	}
	index := 1
	for used[index] {
		index++
	}
	for _, n := range dropped {
		if err := blkpg(dev, unix.BLKPG_DEL_PARTITION, n, 0, 0); err != nil && err != unix.ENXIO {
			return fmt.Errorf("member disk %s: remove the earlier ESP (partition %d) from the kernel's view: %w", d, n, err)
		}
	}
	// The bytes first, then the table entry pointing at them.
	buf := make([]byte, 4*mib)
	if _, err := io.CopyBuffer(io.NewOffsetWriter(dev, start), io.NewSectionReader(ctxReader{ctx, md}, esp.start, esp.size), buf); err != nil {
		return fmt.Errorf("member disk %s: copy the ESP: %w", d, err)
	}
	tbl.Partitions = append(keep, &gpt.Partition{
		Index: index,
		Start: uint64(start / lbs),
		End:   uint64((start+size)/lbs - 1),
		Size:  uint64(size),
		Type:  gpt.EFISystemPartition,
		Name:  "EFI System Partition",
	})
	if err := disk.WriteGPT(dev, tbl); err != nil {
		return err
	}
	if err := dev.Flush(); err != nil {
		return err
	}
	return announce(dev, tbl)
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReader) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}

// blkpg adds or deletes partition pno in the kernel's view of dev.
func blkpg(dev *blockdev.Device, op int32, pno int, start, length int64) error {
	if !dev.IsBlockDevice() {
		return nil
	}
	bp := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{Op: op, Datalen: int32(unsafe.Sizeof(bp)), Data: (*byte)(unsafe.Pointer(&bp))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, dev.File().Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return errno
	}
	return nil
}

func readSys(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// fatHasFile reports whether the FAT12/16/32 filesystem at [off, off+size)
// of r has the file at path (8.3 names, as firmware looks them up: an
// ESP's /EFI/BOOT/BOOTX64.EFI always has a short name).
func fatHasFile(r io.ReaderAt, off, size int64, path ...string) bool {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, off); err != nil || bs[510] != 0x55 || bs[511] != 0xaa {
		return false
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	spc := int64(bs[13])
	rsvd := int64(binary.LittleEndian.Uint16(bs[14:]))
	nfats := int64(bs[16])
	rootEnts := int64(binary.LittleEndian.Uint16(bs[17:]))
	total := int64(binary.LittleEndian.Uint16(bs[19:]))
	fatSz := int64(binary.LittleEndian.Uint16(bs[22:]))
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	if fatSz == 0 {
		fatSz = int64(binary.LittleEndian.Uint32(bs[36:]))
	}
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 || rsvd == 0 || nfats == 0 || fatSz == 0 || total*bps > size {
		return false
	}
	rootSecs := (rootEnts*32 + bps - 1) / bps
	dataStart := rsvd + nfats*fatSz + rootSecs
	if total <= dataStart {
		return false
	}
	clusters := (total - dataStart) / spc
	bits := 32
	switch {
	case clusters < 4085:
		bits = 12
	case clusters < 65525:
		bits = 16
	}
	clusterBytes := spc * bps
	next := func(c uint32) uint32 {
		b := make([]byte, 4)
		fat := off + rsvd*bps
		switch bits {
		case 12:
			if _, err := r.ReadAt(b[:2], fat+int64(c)+int64(c)/2); err != nil {
				return 0
			}
			v := uint32(binary.LittleEndian.Uint16(b))
			if c&1 == 1 {
				v >>= 4
			}
			if v &= 0xfff; v >= 0xff8 {
				return 0
			}
			return v
		case 16:
			if _, err := r.ReadAt(b[:2], fat+2*int64(c)); err != nil {
				return 0
			}
			if v := uint32(binary.LittleEndian.Uint16(b)); v < 0xfff8 {
				return v
			}
			return 0
		}
		if _, err := r.ReadAt(b, fat+4*int64(c)); err != nil {
			return 0
		}
		if v := binary.LittleEndian.Uint32(b) & 0x0fffffff; v < 0x0ffffff8 {
			return v
		}
		return 0
	}
	// readDir returns a directory's bytes: the fixed root of FAT12/16
	// (cluster 0), or a cluster chain.
	readDir := func(first uint32) []byte {
		if first == 0 && bits != 32 {
			b := make([]byte, rootEnts*32)
			if _, err := r.ReadAt(b, off+(rsvd+nfats*fatSz)*bps); err != nil {
				return nil
			}
			return b
		}
		var out []byte
		for c, n := first, 0; c >= 2 && int64(c) < clusters+2 && n < 4096; c, n = next(c), n+1 {
			b := make([]byte, clusterBytes)
			if _, err := r.ReadAt(b, off+(dataStart+int64(c-2)*spc)*bps); err != nil {
				return nil
			}
			out = append(out, b...)
		}
		return out
	}
	dir := uint32(0)
	if bits == 32 {
		dir = binary.LittleEndian.Uint32(bs[44:])
	}
	for i, comp := range path {
		want := shortName(comp)
		entries := readDir(dir)
		found := false
		for e := 0; e+32 <= len(entries); e += 32 {
			ent := entries[e : e+32]
			if ent[0] == 0 {
				break
			}
			attr := ent[11]
			if ent[0] == 0xe5 || attr&0x0f == 0x0f || attr&0x08 != 0 || string(ent[:11]) != want {
				continue
			}
			isDir := attr&0x10 != 0
			if isDir != (i < len(path)-1) {
				continue
			}
			dir = uint32(binary.LittleEndian.Uint16(ent[20:]))<<16 | uint32(binary.LittleEndian.Uint16(ent[26:]))
			found = true
			break
		}
		if !found {
			return false
		}
	}
	return true
}

// shortName is a file name as an 8.3 directory entry stores it.
func shortName(s string) string {
	base, ext, _ := strings.Cut(strings.ToUpper(s), ".")
	return fmt.Sprintf("%-8.8s%-3.3s", base, ext)
}
