package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/ironlite/ironlite/agent/blockdev"
)

// metadataSpan is how much is zeroed at each end of the disk and of each
// partition. IPA runs wipefs (which erases exactly the signatures blkid
// finds), zeroes the first and last 33 sectors and runs sgdisk -Z. Without
// those tools we zero whole regions instead, and 1 MiB at both ends covers
// every signature blkid and the kernel look for:
//
//   - MBR and primary GPT header and entries (LBA 0-33 with 512-byte
//     sectors, 0-5 with 4 KiB ones); backup GPT in the last 33 sectors;
//   - ext2/3/4 (superblock at 1 KiB), xfs (0), vfat/exfat/NTFS boot sector
//     (0; NTFS's backup in the last sector), btrfs primary superblock
//     (64 KiB), swap (last bytes of the first page), ISO9660 and UDF volume
//     descriptors (32 KiB), LVM2 label (sectors 0-3), LUKS1/2 headers (0
//     and 16 KiB), bcache (4 KiB), ZFS labels (two in the first 512 KiB, two
//     in the last);
//   - md superblocks: v1.1 at 0, v1.2 at 4 KiB, v1.0 in the last 8-12 KiB
//     and v0.90 in the last 64-128 KiB of the member.
//
// Whole regions also beat wipefs on damaged metadata it cannot parse (IPA
// needs the dd passes for GPTs whose CRC sgdisk refuses), and it is still a
// few MiB per disk: seconds.
const metadataSpan = 1 << 20

// EraseMetadata destroys the partition tables and the filesystem, RAID and
// LVM signatures on the block device dev, so that nothing on it is
// recognised or assembled on the next boot: it zeroes both ends of the
// disk and of every partition found in its GPT, MBR (with logical
// partitions) or the kernel's view, then flushes and makes the kernel
// re-read the (now empty) partition table. It fails if the device is in
// use (mounted, an active md member, held by device-mapper).
func EraseMetadata(ctx context.Context, dev string) error {
	return eraseMetadata(ctx, "/", dev, slog.Default())
}

// EraseMetadataOf is EraseMetadata on a device the caller has open (the
// image writer erases after it has vetted the image, with the disk held
// exclusively all along).
func EraseMetadataOf(ctx context.Context, d *blockdev.Device) error {
	return eraseOpen(ctx, "/", d, slog.Default())
}

func eraseMetadata(ctx context.Context, sysRoot, path string, log *slog.Logger) error {
	d, err := openForErase(sysRoot, path)
	if err != nil {
		return err
	}
	defer d.Close()
	return eraseOpen(ctx, sysRoot, d, log)
}

func eraseOpen(ctx context.Context, sysRoot string, d *blockdev.Device, log *slog.Logger) error {
	path := d.Path()
	lbs := int64(d.LogicalSectorSize())
	parts := partitionTables(d, log)
	if d.IsBlockDevice() {
		parts = append(parts, kernelPartitions(sysRoot, sysName(path))...)
	}
	ranges := metadataRanges(d.Size(), lbs, parts)
	var total int64
	for _, r := range ranges {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.ZeroRange(ctx, r.start, r.end-r.start); err != nil {
			return fmt.Errorf("erase metadata of %s: %w", path, err)
		}
		total += r.end - r.start
	}
	if err := d.Flush(); err != nil {
		return fmt.Errorf("erase metadata of %s: %w", path, err)
	}
	if err := d.RereadPartitions(ctx); err != nil {
		return fmt.Errorf("erase metadata of %s: %w", path, err)
	}
	log.Info("disk: metadata erased", "device", path, "partitions", len(parts), "ranges", len(ranges), "bytes", total)
	return nil
}

// ErrReadOnly is wrapped by the error of an erase of a read-only device.
var ErrReadOnly = errors.New("device is read-only")

// openForErase opens a device for erasing, exclusively. A read-only device is
// refused up front (the kernel lets it be opened for writing and fails
// each write), and the error for a device in use names its holders when
// sysfs knows them.
func openForErase(sysRoot, path string) (*blockdev.Device, error) {
	st := readState(sysRoot, sysName(path))
	if st.readOnly && blockdev.IsBlockDevice(path) {
		return nil, fmt.Errorf("%s: %w", path, ErrReadOnly)
	}
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil && len(st.holders) > 0 {
		return nil, fmt.Errorf("%w (held by %s)", err, strings.Join(st.holders, ", "))
	}
	return d, err
}

// extent is a byte range [start, end).
type extent struct{ start, end int64 }

// metadataRanges computes the sector-aligned, merged ranges to zero on a
// device of size bytes: metadataSpan (at least the 34 and 33 GPT sectors)
// at both ends of the device and of each partition.
func metadataRanges(size, lbs int64, parts []extent) []extent {
	var rs []extent
	add := func(start, end int64) {
		start = max(0, start) / lbs * lbs
		end = min(size, (end+lbs-1)/lbs*lbs)
		if start < end {
			rs = append(rs, extent{start, end})
		}
	}
	add(0, max(metadataSpan, 34*lbs))
	add(size-max(metadataSpan, 33*lbs), size)
	for _, p := range parts {
		if p.start >= size || p.end <= p.start {
			continue // a corrupt entry pointing past the disk
		}
		add(p.start, min(p.end, p.start+metadataSpan))
		add(max(p.start, p.end-metadataSpan), p.end)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].start < rs[j].start })
	var out []extent
	for _, r := range rs {
		if n := len(out); n > 0 && r.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// partitionTables returns the partitions of the GPT and of the MBR on the
// device (both: a hybrid MBR may describe what the GPT does not). A table
// that cannot be read is not an error: the device ends are zeroed anyway,
// and damaged metadata is exactly what cleaning must not trip over.
func partitionTables(d *blockdev.Device, log *slog.Logger) []extent {
	lbs := d.LogicalSectorSize()
	var parts []extent
	if t, err := ReadGPT(d); err == nil {
		for _, p := range t.Partitions {
			if p.End >= p.Start {
				parts = append(parts, extent{int64(p.Start) * int64(lbs), (int64(p.End) + 1) * int64(lbs)})
			}
		}
		if t.RecoveredFromBackup {
			log.Info("disk: primary GPT damaged, read the backup", "device", d.Path())
		}
	} else {
		log.Debug("disk: no GPT", "device", d.Path(), "reason", err)
	}
	t, err := mbr.Read(d.File(), lbs, lbs)
	if err != nil {
		log.Debug("disk: no MBR", "device", d.Path(), "reason", err)
		return parts
	}
	for _, p := range t.Partitions {
		if p.Type == mbr.Empty || p.Type == mbr.GPTProtective || p.Size == 0 {
			continue
		}
		// MBR addresses are in logical sectors; go-diskfs's GetStart
		// assumes 512 bytes, so compute the offsets here.
		parts = append(parts, extent{int64(p.Start) * int64(lbs), (int64(p.Start) + int64(p.Size)) * int64(lbs)})
		if isExtended(byte(p.Type)) {
			parts = append(parts, logicalPartitions(d, int64(p.Start), int64(lbs))...)
		}
	}
	return parts
}

func isExtended(t byte) bool {
	return t == byte(mbr.ExtendedCHS) || t == byte(mbr.ExtendedLBA) || t == byte(mbr.LinuxExtended)
}

// logicalPartitions walks the chain of extended boot records starting at
// sector ext (go-diskfs reads only the four primary entries). Each EBR
// holds the logical partition relative to itself and the next EBR relative
// to ext.
func logicalPartitions(r io.ReaderAt, ext, lbs int64) []extent {
	var out []extent
	seen := map[int64]bool{}
	b := make([]byte, lbs)
	for ebr := ext; len(seen) < 128 && !seen[ebr]; {
		seen[ebr] = true
		if _, err := r.ReadAt(b, ebr*lbs); err != nil || b[510] != 0x55 || b[511] != 0xaa {
			break
		}
		entry := func(i int) (typ byte, start, size int64) {
			e := b[446+16*i:]
			return e[4], int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		}
		if typ, start, size := entry(0); typ != 0 && size > 0 {
			out = append(out, extent{(ebr + start) * lbs, (ebr + start + size) * lbs})
		}
		typ, next, _ := entry(1)
		if !isExtended(typ) || next == 0 {
			break
		}
		ebr = ext + next
	}
	return out
}

// kernelPartitions returns the partitions the kernel knows of (sysfs
// start and size, in 512-byte units): they may come from a table we do
// not parse (BSD disklabels, a GPT the kernel read before it was damaged).
func kernelPartitions(sysRoot, name string) []extent {
	var out []extent
	dir := filepath.Join(sysRoot, "sys/class/block", name)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), name) {
			continue
		}
		read := func(attr string) int64 {
			b, err := os.ReadFile(filepath.Join(dir, e.Name(), attr))
			if err != nil {
				return -1
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
		start, size := read("start"), read("size")
		if start >= 0 && size > 0 {
			out = append(out, extent{start * 512, (start + size) * 512})
		}
	}
	return out
}

// MDArray is an md array the kernel knows (assembled, or inactive with
// members claimed) and the block devices it is built on.
type MDArray struct {
	// Device is the array's node, "/dev/md127".
	Device string
	// Members are the member devices ("/dev/sdb1"), whole disks or
	// partitions.
	Members []string
	// Disks are the disks holding the members ("/dev/sdb" for both a
	// whole-disk member and a partition of sdb).
	Disks []string
}

// MDArrays lists the md arrays in sysRoot's sys/block with their members,
// sorted by device name. Arrays without members (stopped, or containers
// being torn down) are left out.
func MDArrays(sysRoot string) ([]MDArray, error) {
	if sysRoot == "" {
		sysRoot = "/"
	}
	ents, err := os.ReadDir(filepath.Join(sysRoot, "sys/block"))
	if err != nil {
		return nil, fmt.Errorf("list md arrays: %w", err)
	}
	var out []MDArray
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "md") {
			continue
		}
		slaves, _ := os.ReadDir(filepath.Join(sysRoot, "sys/block", name, "slaves"))
		if len(slaves) == 0 {
			continue
		}
		a := MDArray{Device: "/dev/" + name}
		seen := map[string]bool{}
		for _, s := range slaves {
			a.Members = append(a.Members, "/dev/"+s.Name())
			d := "/dev/" + parentDisk(sysRoot, s.Name())
			if !seen[d] {
				seen[d] = true
				a.Disks = append(a.Disks, d)
			}
		}
		sort.Strings(a.Members)
		sort.Strings(a.Disks)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// parentDisk is the sysfs name of the disk holding the block device name:
// the device itself unless it is a partition.
func parentDisk(sysRoot, name string) string {
	if readStr(sysRoot, name, "partition") == "" {
		return name
	}
	p, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "sys/class/block", name))
	if err != nil {
		return name
	}
	return filepath.Base(filepath.Dir(p))
}

// StopMDArrays stops the arrays (mdadm --stop) and then destroys the md
// superblocks on their members (mdadm --zero-superblock), so that neither
// the kernel nor a later mdadm --assemble finds them again and the members
// can be opened exclusively and erased. Arrays are stopped in reverse
// name order and retried once, so that an array built on another array
// goes first. Every array is tried; the errors are reported together.
func StopMDArrays(ctx context.Context, arrays []MDArray, log *slog.Logger) error {
	log = logger(log)
	var errs []error
	pending := append([]MDArray(nil), arrays...)
	sort.Slice(pending, func(i, j int) bool { return pending[i].Device > pending[j].Device })
	for pass := 0; pass < 2 && len(pending) > 0; pass++ {
		var failed []MDArray
		errs = errs[:0]
		for _, a := range pending {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := mdadm(ctx, "--stop", a.Device); err != nil {
				failed = append(failed, a)
				errs = append(errs, err)
				continue
			}
			log.Info("disk: md array stopped", "array", a.Device, "members", a.Members)
		}
		pending = failed
	}
	for _, a := range arrays {
		for _, m := range a.Members {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := mdadm(ctx, "--zero-superblock", m); err != nil {
				errs = append(errs, err)
				continue
			}
			log.Info("disk: md superblock erased", "array", a.Device, "member", m)
		}
	}
	return errors.Join(errs...)
}

// mdadm runs mdadm with args and returns an error carrying its output.
func mdadm(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "mdadm", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mdadm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
