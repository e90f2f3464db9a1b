package configdrive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/google/uuid"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/disk"
)

// Label is the filesystem label cloud-init looks for, and by which IPA
// finds a config drive partition an image already has.
const Label = "config-2"

// ErrNoPartitionTable is returned for a disk with neither an MBR nor a GPT:
// IPA requires a whole-disk image to have partitions ("No partitions found
// on the device").
var ErrNoPartitionTable = errors.New("no partition table")

// Result says where the config drive went.
type Result struct {
	Table     string `json:"table"`        // partition table type as blkid names it: "gpt" or "dos"
	Partition int    `json:"partition"`    // partition number, the N of /dev/sdaN
	Offset    int64  `json:"offset_bytes"` // byte offset of the partition on the disk
	Size      int64  `json:"size_bytes"`   // partition size in bytes
	// PartUUID is the partition's PARTUUID as blkid reports it: the GPT
	// partition GUID (lower case), or for MBR "<disk signature>-<NN>";
	// empty for an MBR disk whose signature is zero.
	PartUUID string `json:"partuuid,omitempty"`
	// Created tells a partition added at the end of the disk from an
	// existing config-2 partition that was overwritten.
	Created bool `json:"created"`
}

// Geometry of the partition Write adds, as IPA creates it with
// `sgdisk -n 0:-64MB:0` (GPT) or `parted -a optimal mkpart primary fat32
// -64MiB -0` (MBR): the last 64 MiB of the usable space, start aligned down
// to 1 MiB, so a little more than 64 MiB when the disk's end is unaligned.
const (
	partSize  = MaxSize
	alignment = 1 << 20
	// mbrFAT32LBA is the type parted gives "fat32" partitions. IPA's
	// fallback rewrites an unmountable ISO partition as vfat.
	mbrFAT32LBA = 0x0c
)

// part is a partition of either table kind, in sectors (End inclusive).
type part struct {
	number     int
	start, end int64
	desc       string // for messages: GPT name or MBR type
	extended   bool   // MBR extended partition: a container, not a filesystem
}

func (p part) String() string {
	s := fmt.Sprintf("partition %d", p.number)
	if p.desc != "" {
		s += " (" + p.desc + ")"
	}
	return s
}

// Write puts the config drive image iso on dev, a whole disk (or a regular
// file standing in for one) that a whole-disk image has just been written
// to, the way IPA's create_config_drive_partition does:
//
//   - the disk must have a partition table (GPT or MBR);
//   - on GPT, a backup header left in the middle of the disk by an image
//     smaller than the disk is moved to the disk's end first (sgdisk -e);
//   - a partition whose filesystem is labelled config-2 (any case) is
//     reused, if the image fits; two are an error;
//   - otherwise a partition is added in the last 64 MiB of the disk, which
//     must be free (on MBR, below 2 TiB, and in a free primary slot:
//     logical partitions are not created, as in IPA).
//
// The image is written at the partition's offset through the whole-disk
// device, the rest of a new partition is zeroed (no stale signatures for
// blkid), the partition table is written last, the device is flushed and
// the kernel asked to re-read the partition table; partitions it still
// does not know (a kernel without table parsers) are added with BLKPG, as
// partprobe would.
//
// A block device is opened exclusively: Write fails if the disk or one of
// its partitions is mounted or held.
//
// Unlike IPA, Write does not test-mount the result and rebuild it as vfat
// when the kernel cannot mount ISO9660 from the partition (sectors larger
// than 2 KiB); it logs a warning. And where sgdisk places a new GPT
// partition at the end of the largest free block, wherever that is, Write
// only uses the end of the disk and says which partition is in the way.
func Write(ctx context.Context, dev string, iso []byte) (Result, error) {
	if len(iso) == 0 {
		return Result{}, errors.New("config drive image is empty")
	}
	if len(iso) > MaxSize {
		return Result{}, fmt.Errorf("config drive size exceeds maximum limit of %d MiB: the image is %d bytes", MaxSize>>20, len(iso))
	}
	if l := fsLabel(bytes.NewReader(iso), 0, int64(len(iso))); !strings.EqualFold(l, Label) {
		slog.WarnContext(ctx, "config drive image has no config-2 label; cloud-init will not find it", "label", l)
	}

	d, err := blockdev.Open(dev, blockdev.Options{})
	if err != nil {
		return Result{}, fmt.Errorf("config drive: %w", err)
	}
	defer d.Close()
	w := &writer{d: d, ss: int64(d.LogicalSectorSize()), sectors: d.Size() / int64(d.LogicalSectorSize())}
	if w.ss > 2048 {
		slog.WarnContext(ctx, "ISO9660 config drive on a disk with sectors larger than 2 KiB: Linux cannot mount it from the partition (IPA would rewrite it as vfat)",
			"device", dev, "sector_size", w.ss)
	}

	kind, err := w.tableKind()
	if err != nil {
		return Result{}, fmt.Errorf("config drive on %s: %w", dev, err)
	}
	var res Result
	if kind == "gpt" {
		res, err = w.writeGPT(ctx, iso)
	} else {
		res, err = w.writeMBR(ctx, iso)
	}
	if err != nil {
		return Result{}, fmt.Errorf("config drive on %s: %w", dev, err)
	}
	if err := d.Flush(); err != nil {
		return Result{}, fmt.Errorf("config drive on %s: %w", dev, err)
	}
	if err := d.RereadPartitions(ctx); err != nil {
		return Result{}, fmt.Errorf("config drive on %s: written, but: %w", dev, err)
	}
	if err := announcePartitions(d, w.ss, w.final); err != nil {
		return Result{}, fmt.Errorf("config drive on %s: written, but: %w", dev, err)
	}
	slog.InfoContext(ctx, "config drive written", "device", dev, "table", res.Table, "partition", res.Partition,
		"offset", res.Offset, "size", res.Size, "partuuid", res.PartUUID, "created", res.Created, "image_bytes", len(iso))
	return res, nil
}

type writer struct {
	d       *blockdev.Device
	ss      int64  // logical sector size
	sectors int64  // disk size in sectors
	final   []part // the partitions on disk once written
}

// tableKind tells "gpt" from "dos" by the first sector, as the kernel
// does: a GPT needs a protective (or hybrid) MBR with a type 0xEE entry.
// Looking at the MBR first also keeps a stale backup GPT at the end of the
// disk, left by a previous deployment, from being taken for this image's.
func (w *writer) tableKind() (string, error) {
	s0 := make([]byte, 512)
	if _, err := w.d.ReadAt(s0, 0); err != nil {
		return "", fmt.Errorf("read the partition table: %w", err)
	}
	if s0[510] != 0x55 || s0[511] != 0xaa {
		return "", fmt.Errorf("%w: the image written to the disk must have partitions", ErrNoPartitionTable)
	}
	used := false
	for i := range 4 {
		e := s0[446+16*i : 446+16*i+16]
		if e[4] == 0xee {
			return "gpt", nil
		}
		used = used || e[4] != 0
	}
	if !used {
		return "", fmt.Errorf("%w: the MBR has no partitions; the image written to the disk must have partitions", ErrNoPartitionTable)
	}
	return "dos", nil
}

// gptHeader holds the primary header fields go-diskfs does not expose.
type gptHeader struct {
	firstUsable, entriesLBA int64
	entries, entrySize      int64
}

func (w *writer) readGPTHeader() (gptHeader, error) {
	b := make([]byte, 92)
	if _, err := w.d.ReadAt(b, w.ss); err != nil {
		return gptHeader{}, fmt.Errorf("read the GPT header: %w", err)
	}
	return gptHeader{
		firstUsable: int64(binary.LittleEndian.Uint64(b[40:])),
		entriesLBA:  int64(binary.LittleEndian.Uint64(b[72:])),
		entries:     int64(binary.LittleEndian.Uint32(b[80:])),
		entrySize:   int64(binary.LittleEndian.Uint32(b[84:])),
	}, nil
}

func (w *writer) writeGPT(ctx context.Context, iso []byte) (Result, error) {
	tbl, err := disk.ReadGPT(w.d)
	if err != nil {
		return Result{}, fmt.Errorf("read the GPT: %w", err)
	}
	if tbl.RecoveredFromBackup {
		// The backup at the end of the disk may be a previous
		// deployment's, not this image's.
		return Result{}, errors.New("the primary GPT is corrupt; refusing to rebuild it from a backup at the end of the disk, which may be left from a previous deployment")
	}
	h, err := w.readGPTHeader()
	if err != nil {
		return Result{}, err
	}
	// go-diskfs rewrites the entries at LBA 2 with 128-byte entries and a
	// whole number of sectors; refuse what it would corrupt.
	if h.entriesLBA != 2 || h.entrySize != gpt.PartitionEntrySize || h.entries*h.entrySize%w.ss != 0 {
		return Result{}, fmt.Errorf("unsupported GPT layout (%d entries of %d bytes at LBA %d)", h.entries, h.entrySize, h.entriesLBA)
	}

	// sgdisk -e: an image smaller than the disk leaves the backup header
	// where the image ended and the usable space ending there.
	moved := tbl.TotalSize() != uint64(w.sectors*w.ss)
	if moved {
		slog.InfoContext(ctx, "moving the backup GPT to the end of the disk", "device", w.d.Path(),
			"from_sector", int64(tbl.TotalSize())/w.ss-1, "to_sector", w.sectors-1)
		if err := tbl.Repair(uint64(w.sectors * w.ss)); err != nil {
			return Result{}, fmt.Errorf("move the backup GPT: %w", err)
		}
	}
	last := int64(tbl.LastDataSector())
	parts := make([]part, 0, len(tbl.Partitions))
	for _, p := range tbl.Partitions {
		q := part{number: p.Index, start: int64(p.Start), end: int64(p.End), desc: p.Name}
		if q.desc == "" {
			q.desc = "type " + strings.ToLower(string(p.Type))
		}
		if q.end > last {
			return Result{}, fmt.Errorf("%s ends at sector %d, past the last usable sector %d: is the image larger than the disk?", q, q.end, last)
		}
		parts = append(parts, q)
	}

	existing, err := w.findLabelled(parts)
	if err != nil {
		return Result{}, err
	}
	if p := existing; p != nil {
		w.final = parts
		if moved {
			if err := w.writeGPTTable(tbl); err != nil {
				return Result{}, err
			}
		}
		res, err := w.reuse(ctx, *p, iso)
		res.Table = "gpt"
		for _, gp := range tbl.Partitions {
			if gp.Index == p.number {
				res.PartUUID = strings.ToLower(gp.GUID)
			}
		}
		return res, err
	}

	start, end, err := w.region(h.firstUsable, last+1, parts)
	if err != nil {
		return Result{}, err
	}
	index := 0
	used := map[int]bool{}
	for _, p := range tbl.Partitions {
		used[p.Index] = true
	}
	for i := 1; i <= int(h.entries); i++ {
		if !used[i] {
			index = i
			break
		}
	}
	if index == 0 {
		return Result{}, fmt.Errorf("all %d GPT partition entries are in use", h.entries)
	}

	if err := w.fill(ctx, start, end, iso); err != nil {
		return Result{}, err
	}
	guid := uuid.New()
	w.final = append(parts, part{number: index, start: start, end: end, desc: Label})
	tbl.Partitions = append(tbl.Partitions, &gpt.Partition{
		Index: index,
		Start: uint64(start),
		End:   uint64(end),
		Type:  gpt.LinuxFilesystem, // sgdisk's default, as IPA leaves it
		Name:  Label,
		GUID:  guid.String(),
	})
	if err := w.writeGPTTable(tbl); err != nil {
		return Result{}, err
	}
	return Result{
		Table:     "gpt",
		Partition: index,
		Offset:    start * w.ss,
		Size:      (end - start + 1) * w.ss,
		PartUUID:  guid.String(),
		Created:   true,
	}, nil
}

// writeGPTTable writes both GPT copies and fits the protective MBR.
func (w *writer) writeGPTTable(tbl *gpt.Table) error { return disk.WriteGPT(w.d, tbl) }

func (w *writer) writeMBR(ctx context.Context, iso []byte) (Result, error) {
	tbl, err := mbr.Read(w.d.File(), int(w.ss), int(w.ss))
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrNoPartitionTable, err)
	}
	var (
		primaries []part // used slots
		all       []part // primaries and logicals, for the label search
		free      = 0    // first free slot, 1-based
	)
	for _, p := range tbl.Partitions {
		if p.Type == mbr.Empty {
			if free == 0 {
				free = p.Index
			}
			continue
		}
		q := part{
			number:   p.Index,
			start:    int64(p.Start),
			end:      int64(p.Start) + int64(p.Size) - 1,
			desc:     fmt.Sprintf("type 0x%02x", byte(p.Type)),
			extended: isExtended(byte(p.Type)),
		}
		if q.extended {
			q.desc = "extended, holding the logical partitions"
		}
		if q.end >= w.sectors {
			return Result{}, fmt.Errorf("%s ends at sector %d, past the end of the %d-sector disk: is the image larger than the disk?", q, q.end, w.sectors)
		}
		primaries = append(primaries, q)
		all = append(all, q)
		if q.extended {
			logicals, err := w.logicals(q)
			if err != nil {
				return Result{}, err
			}
			all = append(all, logicals...)
		}
	}
	var sig [4]byte
	if _, err := w.d.ReadAt(sig[:], 440); err != nil {
		return Result{}, fmt.Errorf("read the disk signature: %w", err)
	}
	partUUID := func(n int) string {
		if s := binary.LittleEndian.Uint32(sig[:]); s != 0 {
			return fmt.Sprintf("%08x-%02x", s, n)
		}
		return ""
	}

	existing, err := w.findLabelled(all)
	if err != nil {
		return Result{}, err
	}
	if p := existing; p != nil {
		w.final = all
		res, err := w.reuse(ctx, *p, iso)
		res.Table, res.PartUUID = "dos", partUUID(p.number)
		return res, err
	}

	if free == 0 {
		// IPA: "Config drive cannot be created ... Disk uses MBR
		// partitioning and already has 4 primary partitions." Creating a
		// logical partition is its TODO too (launchpad bug 1561283).
		return Result{}, fmt.Errorf("the MBR already has 4 primary partitions (%s); a config drive partition needs a free one (logical partitions are not created)", partList(primaries))
	}
	// MBR addresses 2^32 sectors (2 TiB with 512-byte sectors). On a
	// bigger disk IPA puts the partition just below that, 1 MiB short.
	start, end, err := w.region(alignment/w.ss, MBRLimit(w.sectors, w.ss), primaries)
	if err != nil {
		return Result{}, err
	}
	if err := w.fill(ctx, start, end, iso); err != nil {
		return Result{}, err
	}
	w.final = append(all, part{number: free, start: start, end: end, desc: Label})
	entry := make([]byte, 16)
	entry[4] = mbrFAT32LBA
	copy(entry[1:4], chs(start))
	copy(entry[5:8], chs(end))
	binary.LittleEndian.PutUint32(entry[8:], uint32(start))
	binary.LittleEndian.PutUint32(entry[12:], uint32(end-start+1))
	if _, err := w.d.WriteAt(entry, int64(446+16*(free-1))); err != nil {
		return Result{}, fmt.Errorf("write the MBR entry: %w", err)
	}
	return Result{
		Table:     "dos",
		Partition: free,
		Offset:    start * w.ss,
		Size:      (end - start + 1) * w.ss,
		PartUUID:  partUUID(free),
		Created:   true,
	}, nil
}

// region picks the sectors [start, end] for a new partition: the last
// partSize bytes before limit (exclusive), start aligned down to 1 MiB. It
// must not begin before first nor overlap any of parts.
func (w *writer) region(first, limit int64, parts []part) (start, end int64, err error) {
	end = limit - 1
	start = RegionStart(limit, w.ss)
	if start < first {
		return 0, 0, fmt.Errorf("the %d-byte disk is too small for a %d MiB config drive partition", w.sectors*w.ss, partSize>>20)
	}
	var overlapping []part
	for _, p := range parts {
		if p.start <= end && p.end >= start {
			overlapping = append(overlapping, p)
		}
	}
	if len(overlapping) > 0 {
		return 0, 0, fmt.Errorf("the last %d MiB of the disk (sectors %d-%d) must be free for the config drive partition, but %s overlaps them",
			partSize>>20, start, end, partList(overlapping))
	}
	return start, end, nil
}

// RegionStart is the first sector of the region Write adds a config drive
// partition in, on a disk whose partitions must end before sector limit
// (the GPT's last usable sector + 1, or MBRLimit): the last 64 MiB, start
// aligned down to 1 MiB. Whoever adds partitions after an image and wants
// a config drive to fit later keeps them before it.
func RegionStart(limit, sectorSize int64) int64 {
	align := max(alignment/sectorSize, 1)
	return (limit - partSize/sectorSize) / align * align
}

// MBRLimit is the sector before which MBR partitions must end on a disk of
// sectors sectors: the disk's end, or on a disk too big for the MBR's
// 32-bit sector numbers (2 TiB with 512-byte sectors) 1 MiB short of
// that, as IPA places a config drive there.
func MBRLimit(sectors, sectorSize int64) int64 {
	if sectors > 1<<32 {
		return 1<<32 - alignment/sectorSize
	}
	return sectors
}

// IsConfigDrive tells whether the size bytes at off of r hold a filesystem
// labelled config-2 (any case), as Write finds an image's own config drive
// partition.
func IsConfigDrive(r io.ReaderAt, off, size int64) bool {
	return strings.EqualFold(fsLabel(r, off, size), Label)
}

func partList(parts []part) string {
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = fmt.Sprintf("%s, sectors %d-%d", p, p.start, p.end)
	}
	return strings.Join(s, "; ")
}

// fill zeroes the new partition's sectors [start, end] past the image, then
// writes the image at its start. Zeroing first keeps it from discarding
// cached pages the image write has dirtied; doing both before the table
// means the partition never appears with anything else in it.
func (w *writer) fill(ctx context.Context, start, end int64, iso []byte) error {
	off := start * w.ss
	tail := (int64(len(iso)) + w.ss - 1) / w.ss * w.ss
	if err := w.d.ZeroRange(ctx, off+tail, (end-start+1)*w.ss-tail); err != nil {
		return fmt.Errorf("zero the config drive partition: %w", err)
	}
	return w.put(off, iso)
}

func (w *writer) put(off int64, iso []byte) error {
	if _, err := w.d.WriteAt(iso, off); err != nil {
		return fmt.Errorf("write the config drive image: %w", err)
	}
	return nil
}

// reuse overwrites an existing config-2 partition, as IPA does.
func (w *writer) reuse(ctx context.Context, p part, iso []byte) (Result, error) {
	size := (p.end - p.start + 1) * w.ss
	if int64(len(iso)) > size {
		return Result{}, fmt.Errorf("the existing config drive %s is %d bytes, too small for the %d-byte image", p, size, len(iso))
	}
	slog.InfoContext(ctx, "overwriting the existing config drive partition", "device", w.d.Path(), "partition", p.number)
	if err := w.put(p.start*w.ss, iso); err != nil {
		return Result{}, err
	}
	return Result{Partition: p.number, Offset: p.start * w.ss, Size: size}, nil
}

// findLabelled returns the partition whose filesystem is labelled
// config-2, nil if none; more than one is an error, as in IPA.
func (w *writer) findLabelled(parts []part) (*part, error) {
	var found []part
	for _, p := range parts {
		if p.extended {
			continue
		}
		if strings.EqualFold(fsLabel(w.d, p.start*w.ss, (p.end-p.start+1)*w.ss), Label) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &found[0], nil
	default:
		return nil, fmt.Errorf("more than one partition with label %q exists: %s", Label, partList(found))
	}
}

// logicals walks the chain of extended boot records in ext and returns the
// logical partitions, numbered from 5 as Linux numbers them.
func (w *writer) logicals(ext part) ([]part, error) {
	var parts []part
	ebr := make([]byte, 512)
	cur := ext.start
	for n := 5; n < 5+256; n++ {
		if _, err := w.d.ReadAt(ebr, cur*w.ss); err != nil {
			return nil, fmt.Errorf("read the extended boot record at sector %d: %w", cur, err)
		}
		if ebr[510] != 0x55 || ebr[511] != 0xaa {
			break
		}
		e := ebr[446:]
		if start, size := int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:])); e[4] != 0 && size > 0 {
			parts = append(parts, part{number: n, start: cur + start, end: cur + start + size - 1, desc: fmt.Sprintf("logical, type 0x%02x", e[4])})
		}
		next := e[16:]
		rel := int64(binary.LittleEndian.Uint32(next[8:]))
		if !isExtended(next[4]) || rel == 0 {
			break
		}
		cur = ext.start + rel
		if cur <= ext.start || cur > ext.end {
			return nil, fmt.Errorf("extended boot record chain leaves the extended partition (sector %d)", cur)
		}
	}
	return parts, nil
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// chs encodes an LBA as MBR cylinder/head/sector for the usual 255-head,
// 63-sector geometry, or the "beyond CHS" marker 1023/254/63, as fdisk
// and parted do. Nothing modern reads it.
func chs(lba int64) []byte {
	const heads, spt = 255, 63
	c := lba / (heads * spt)
	if c > 1023 {
		return []byte{0xfe, 0xff, 0xff}
	}
	h := (lba / spt) % heads
	s := lba%spt + 1
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

// fsLabel returns the label of an ISO9660, FAT or ext2/3/4 filesystem at
// [off, off+size) of r, "" if there is none; what lsblk's LABEL shows,
// which IPA matches against config-2.
func fsLabel(r io.ReaderAt, off, size int64) string {
	read := func(at, n int64) []byte {
		if at+n > size {
			return nil
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off+at); err != nil {
			return nil
		}
		return b
	}
	// ISO9660 primary volume descriptor at 32 KiB.
	if b := read(32768, 72); b != nil && b[0] == 1 && string(b[1:6]) == "CD001" {
		return strings.TrimRight(string(b[40:72]), " \x00")
	}
	// ext2/3/4 superblock at 1 KiB, magic 0xEF53.
	if b := read(1024, 136); b != nil && binary.LittleEndian.Uint16(b[56:]) == 0xef53 {
		return strings.TrimRight(string(b[120:136]), "\x00")
	}
	// FAT boot sector: the label sits after the extended boot signature
	// 0x29, at 43 (FAT12/16) or 71 (FAT32).
	if b := read(0, 512); b != nil && b[510] == 0x55 && b[511] == 0xaa {
		for _, f := range []struct{ sig, label, fstype int }{{66, 71, 82}, {38, 43, 54}} {
			if b[f.sig] == 0x29 && bytes.HasPrefix(b[f.fstype:f.fstype+8], []byte("FAT")) {
				if l := strings.TrimRight(string(b[f.label:f.label+11]), " \x00"); l != "NO NAME" {
					return l
				}
				return ""
			}
		}
	}
	return ""
}
