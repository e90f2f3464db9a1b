// Package extraparts adds swap and ephemeral partitions after a whole-disk
// image, as Ironic's instance_info asks for them (swap_mb, ephemeral_mb,
// ephemeral_format, preserve_ephemeral; IPA only honours these for
// partition images).
//
// Layout, in the free space after the image's last partition and after
// the image's own bytes (whichever ends later, so that a rebuild with an
// image of the same size never reaches into a kept ephemeral partition):
//
//	[image partitions][swap "swap1"][ephemeral "ephemeral0"] ... free ... [config-2]
//
// each new partition aligned to 1 MiB, swap first as the brief and
// Ironic's partition-image layout have it. The last 64 MiB of the disk
// (configdrive.RegionStart) are never used, with or without a config drive
// in this deploy: that is where agent/configdrive adds the config drive
// partition afterwards, as IPA does for whole-disk images, and where a
// later rebuild that keeps the ephemeral partition needs it to be free.
// Partition numbers are the lowest free ones: swap, then ephemeral, then
// the config drive. On MBR all must be primary partitions (types 0x82 and
// 0x83); a fourth slot already in use is an error, as for the config drive.
//
// Everything is planned before anything is written: [Check] plans against
// the image's own partition table before the image is written (so a refusal
// leaves the disk as it was), [Create] plans again against the disk and
// only then zeroes the new partitions' ends, writes the table (go-diskfs;
// GPT backup at the disk's end), makes the kernel see the partitions and
// formats them with agent/filesystem.
//
// preserve_ephemeral keeps the ephemeral partition of the previous
// deployment ([FindEphemeral]): the image may not reach into it (the write
// is limited to the bytes before it), the old metadata is erased around it
// ([Preserved.EraseAround]) and its table entry is put back after the
// image with the same sectors and, on GPT, the same partition GUID; its
// filesystem is not touched.
package extraparts

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/google/uuid"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/configdrive"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/filesystem"
	"github.com/ironlite/ironlite/agent/imagewrite"
)

// Names of the partitions, as Ironic and cloud-init know them: the GPT
// partition name and the filesystem label.
const (
	EphemeralLabel = "ephemeral0"
	SwapLabel      = "swap1"
)

const (
	alignment = 1 << 20
	// wipeSpan is zeroed at both ends of a new partition before it appears
	// in the table, so no stale signature (an old md superblock at its
	// end, a filesystem at its start) is found in it before mkfs runs.
	wipeSpan = 1 << 20
)

// ErrNoSpace is wrapped by the error when the partitions do not fit.
var ErrNoSpace = errors.New("not enough free space after the image")

// Spec is what image_info asks for.
type Spec struct {
	SwapMB      int64
	EphemeralMB int64
	// EphemeralFormat is "ext4" (the default), "xfs" or "vfat".
	EphemeralFormat   string
	PreserveEphemeral bool
	// ConfigDrive says a config drive is written after these partitions:
	// unless the image has its own config-2 partition, it needs a table
	// slot of its own.
	ConfigDrive bool
}

// Wanted tells whether there is anything to do.
func (s Spec) Wanted() bool { return s.SwapMB > 0 || s.EphemeralMB > 0 || s.PreserveEphemeral }

// EphemeralFormats are the formats an ephemeral partition may have.
var EphemeralFormats = []string{filesystem.Ext4, filesystem.XFS, filesystem.VFAT}

// Validate checks the sizes and the format, filling in the default format.
func (s *Spec) Validate() error {
	if s.SwapMB < 0 || s.EphemeralMB < 0 {
		return fmt.Errorf("swap_mb (%d) and ephemeral_mb (%d) must not be negative", s.SwapMB, s.EphemeralMB)
	}
	if s.EphemeralFormat == "" {
		s.EphemeralFormat = filesystem.Ext4
	}
	for _, f := range EphemeralFormats {
		if s.EphemeralFormat == f {
			return nil
		}
	}
	return fmt.Errorf("ephemeral_format %q is not supported (one of %s)", s.EphemeralFormat, strings.Join(EphemeralFormats, ", "))
}

// Partition is one partition made or kept, as get_partition_uuids reports it.
type Partition struct {
	Number         int    `json:"number"`
	PartitionUUID  string `json:"partition_uuid"`  // GPT partition GUID, or MBR "<signature>-<NN>"; "" for an MBR without signature
	FilesystemUUID string `json:"filesystem_uuid"` // as blkid prints it
	Device         string `json:"device"`          // e.g. /dev/sda3
	Format         string `json:"format"`          // ext4, xfs, vfat or swap
	Label          string `json:"label"`
	StartBytes     int64  `json:"start_bytes"`
	SizeBytes      int64  `json:"size_bytes"`
	Preserved      bool   `json:"preserved,omitempty"`
}

// Result lists what Create made or kept; nil members were not asked for.
type Result struct {
	Swap      *Partition `json:"swap,omitempty"`
	Ephemeral *Partition `json:"ephemeral,omitempty"`
}

// placement is a partition to put in the table.
type placement struct {
	extent
	role   string // "swap" or "ephemeral"
	format string
	label  string
	keep   *Preserved
}

// plan places the partitions on a disk of sectors sectors of ss bytes
// whose table (the image's) is t. keep is the ephemeral partition to put
// back, or nil. Nothing is read or written.
func plan(t *table, sectors, ss, imageBytes int64, s Spec, keep *Preserved, hasConfig2 bool) ([]placement, error) {
	limit := t.limit(sectors, ss, configdrive.MBRLimit)
	reserve := configdrive.RegionStart(limit, ss)
	align := max(alignment/ss, 1)
	alignUp := func(x int64) int64 { return (x + align - 1) / align * align }

	// After the image's bytes too, not only after its last partition: a
	// rebuild writes the whole image again, and must not reach into an
	// ephemeral partition it is asked to keep.
	cursor := max(alignUp(t.firstUsable), alignUp((imageBytes+ss-1)/ss))
	for _, p := range t.parts {
		cursor = max(cursor, alignUp(p.end+1))
	}
	occupied := append([]extent(nil), t.parts...)
	var out []placement
	if keep != nil {
		k := keep.extent
		for _, p := range t.parts {
			if p.start <= k.end && p.end >= k.start {
				return nil, fmt.Errorf("the image's %s overlaps the ephemeral partition to preserve (sectors %d-%d)", p, k.start, k.end)
			}
		}
		if k.end >= limit {
			return nil, fmt.Errorf("the ephemeral partition to preserve (sectors %d-%d) ends past the last usable sector %d", k.start, k.end, limit-1)
		}
		occupied = append(occupied, k)
		out = append(out, placement{extent: k, role: "ephemeral", format: keep.Filesystem.Type, label: keep.Filesystem.Label, keep: keep})
	}
	sort.Slice(occupied, func(i, j int) bool { return occupied[i].start < occupied[j].start })

	type want struct {
		role, format, label, name string
		mb                        int64
	}
	var wants []want
	if s.SwapMB > 0 {
		wants = append(wants, want{"swap", filesystem.Swap, SwapLabel, SwapLabel, s.SwapMB})
	}
	if s.EphemeralMB > 0 && keep == nil {
		wants = append(wants, want{"ephemeral", s.EphemeralFormat, EphemeralLabel, EphemeralLabel, s.EphemeralMB})
	}
	for _, w := range wants {
		n := (w.mb << 20) / ss
		start := cursor
		for _, o := range occupied {
			if start+n-1 < o.start {
				break
			}
			if o.end >= start {
				start = alignUp(o.end + 1)
			}
		}
		if start+n > reserve {
			free := max(0, reserve-cursor) * ss >> 20
			return nil, fmt.Errorf("%w: the %s partition needs %d MiB from sector %d on, but only %d MiB are free there before the last %d MiB of the disk, which are kept for the config drive (disk %d MiB, requested swap %d MiB + ephemeral %d MiB)",
				ErrNoSpace, w.role, w.mb, cursor, free, (limit-reserve)*ss>>20, sectors*ss>>20, s.SwapMB, s.EphemeralMB)
		}
		p := placement{extent: extent{start: start, end: start + n - 1, name: w.name}, role: w.role, format: w.format, label: w.label}
		out = append(out, p)
		occupied = append(occupied, p.extent)
		sort.Slice(occupied, func(i, j int) bool { return occupied[i].start < occupied[j].start })
		cursor = start + n
	}
	// Numbers: the kept partition its old one if free, then the lowest
	// free ones in order.
	taken := map[int]bool{}
	for _, p := range t.parts {
		taken[p.number] = true
	}
	if keep != nil && !taken[keep.number] && keep.number <= t.slots {
		out[0].number = keep.number
		taken[keep.number] = true
	}
	for i := range out {
		if out[i].number != 0 {
			continue
		}
		for n := 1; n <= t.slots; n++ {
			if !taken[n] {
				out[i].number, taken[n] = n, true
				break
			}
		}
		if out[i].number == 0 {
			return nil, noSlot(t, out)
		}
	}
	if s.ConfigDrive && !hasConfig2 && len(taken) >= t.slots {
		return nil, fmt.Errorf("%w; the config drive would need one more", noSlot(t, out))
	}
	return out, nil
}

func noSlot(t *table, out []placement) error {
	var roles []string
	for _, p := range out {
		roles = append(roles, p.role)
	}
	if t.kind == "dos" {
		var used []string
		for _, p := range t.parts {
			used = append(used, p.String())
		}
		return fmt.Errorf("the image's MBR has %d of its 4 primary partitions in use (%s) and %s need one each (logical partitions are not created)",
			len(t.parts), strings.Join(used, "; "), strings.Join(roles, " and "))
	}
	return fmt.Errorf("the image's GPT has %d of its %d entries in use and %s need one each", len(t.parts), t.slots, strings.Join(roles, " and "))
}

// hasConfigDrive tells whether a partition of t holds a config-2 filesystem.
func hasConfigDrive(r io.ReaderAt, t *table, ss int64) bool {
	for _, p := range t.parts {
		if !p.extended && configdrive.IsConfigDrive(r, p.start*ss, (p.end-p.start+1)*ss) {
			return true
		}
	}
	return false
}

// Check plans the partitions against an image before it is written: img is
// the image's virtual disk (size bytes; nil when it cannot be read ahead,
// a compressed stream), d the disk it goes to. An image without a
// partition table passes: the write refuses it on its own terms.
func Check(img io.ReaderAt, size int64, d *blockdev.Device, s Spec, keep *Preserved) error {
	ss := int64(d.LogicalSectorSize())
	sectors := d.Size() / ss
	if img == nil {
		// Only the sizes can be checked: the image is at least one sector.
		t := &table{kind: "dos", slots: 4, firstUsable: alignment / ss, parts: []extent{{number: 1, start: 1, end: 1}}}
		_, err := plan(t, sectors, ss, 0, s, keep, true)
		return err
	}
	t, err := readTable(img, ss)
	if err != nil {
		return nil
	}
	if _, err := plan(t, sectors, ss, size, s, keep, hasConfigDrive(img, t, ss)); err != nil {
		return fmt.Errorf("%s: %w", d.Path(), err)
	}
	return nil
}

// Create adds the partitions of s after the imageBytes-byte image written
// on the block device path (whose GPT backup is already at the disk's
// end), formats the
// new ones and reports them. It opens path exclusively, and closes it
// before the mkfs tools open the partitions.
func Create(ctx context.Context, path string, imageBytes int64, s Spec, keep *Preserved) (*Result, error) {
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		return nil, err
	}
	defer func() {
		if d != nil {
			d.Close()
		}
	}()
	if !d.IsBlockDevice() {
		return nil, fmt.Errorf("%s is not a block device: swap and ephemeral partitions are formatted through their device nodes", path)
	}
	ss := int64(d.LogicalSectorSize())
	t, err := readTable(d, ss)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	places, err := plan(t, d.Size()/ss, ss, imageBytes, s, keep, hasConfigDrive(d, t, ss))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range places {
		if p.keep != nil {
			continue
		}
		if err := wipeEnds(ctx, d, p.start*ss, (p.end-p.start+1)*ss); err != nil {
			return nil, err
		}
	}
	if t.kind == "gpt" {
		err = writeGPT(d, places)
	} else {
		err = writeMBR(d, places)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := d.Flush(); err != nil {
		return nil, err
	}
	if err := d.RereadPartitions(ctx); err != nil {
		return nil, err
	}
	final, err := readTable(d, ss)
	if err != nil {
		return nil, fmt.Errorf("%s: read back the partition table: %w", path, err)
	}
	var kp []imagewrite.KernelPartition
	for _, p := range final.parts {
		if !p.extended {
			kp = append(kp, imagewrite.KernelPartition{Number: p.number, Start: p.start * ss, Length: (p.end - p.start + 1) * ss})
		}
	}
	if err := imagewrite.AnnouncePartitions(d, kp); err != nil {
		return nil, err
	}
	res := &Result{}
	for _, p := range places {
		node, err := imagewrite.PartitionDevice(ctx, d, p.number)
		if err != nil {
			return nil, err
		}
		q := &Partition{Number: p.number, Device: node, Format: p.format, Label: p.label,
			StartBytes: p.start * ss, SizeBytes: (p.end - p.start + 1) * ss, Preserved: p.keep != nil}
		for _, f := range final.parts {
			if f.number == p.number {
				q.PartitionUUID = f.guid
			}
		}
		if final.kind == "dos" && final.signature != 0 {
			q.PartitionUUID = fmt.Sprintf("%08x-%02x", final.signature, p.number)
		}
		if p.role == "swap" {
			res.Swap = q
		} else {
			res.Ephemeral = q
		}
	}
	// The mkfs tools claim the partitions exclusively, which the kernel
	// refuses while the whole disk is held so.
	d.Close()
	d = nil
	for _, q := range []*Partition{res.Swap, res.Ephemeral} {
		if q == nil {
			continue
		}
		if q.Preserved {
			info, err := filesystem.IdentifyDevice(q.Device)
			if err != nil {
				return nil, fmt.Errorf("read the preserved ephemeral partition %s: %w", q.Device, err)
			}
			q.FilesystemUUID, q.Format, q.Label = info.UUID, info.Type, info.Label
			slog.InfoContext(ctx, "ephemeral partition preserved", "device", q.Device, "partuuid", q.PartitionUUID, "fs_uuid", q.FilesystemUUID, "format", q.Format)
			continue
		}
		if q.FilesystemUUID, err = filesystem.Make(ctx, q.Device, q.Format, q.Label); err != nil {
			return nil, err
		}
		slog.InfoContext(ctx, "partition added after the image", "device", q.Device, "label", q.Label, "format", q.Format,
			"size", q.SizeBytes, "partuuid", q.PartitionUUID, "fs_uuid", q.FilesystemUUID)
	}
	return res, nil
}

func wipeEnds(ctx context.Context, d *blockdev.Device, off, n int64) error {
	span := min(n, wipeSpan)
	for _, at := range []int64{off, off + n - span} {
		if err := d.ZeroRange(ctx, at, span); err != nil {
			return fmt.Errorf("zero the new partition at byte %d of %s: %w", off, d.Path(), err)
		}
	}
	return nil
}

// writeGPT adds the placements to the disk's GPT with go-diskfs, both
// copies, the backup at the disk's end.
func writeGPT(d *blockdev.Device, places []placement) error {
	tbl, err := disk.ReadGPT(d)
	if err != nil {
		return fmt.Errorf("read the GPT: %w", err)
	}
	if tbl.RecoveredFromBackup {
		return disk.ErrBackupOnly
	}
	// go-diskfs rewrites the entry array at LBA 2 in 128-byte entries;
	// refuse a layout it would corrupt, as agent/configdrive does.
	h := make([]byte, 92)
	if _, err := d.ReadAt(h, int64(d.LogicalSectorSize())); err != nil {
		return fmt.Errorf("read the GPT header: %w", err)
	}
	if lba, size := binary.LittleEndian.Uint64(h[72:]), binary.LittleEndian.Uint32(h[84:]); lba != 2 || size != gpt.PartitionEntrySize {
		return fmt.Errorf("unsupported GPT layout (entries of %d bytes at LBA %d)", size, lba)
	}
	if tbl.TotalSize() != uint64(d.Size()) {
		if err := tbl.Repair(uint64(d.Size())); err != nil {
			return fmt.Errorf("move the backup GPT: %w", err)
		}
	}
	for _, p := range places {
		np := &gpt.Partition{Index: p.number, Start: uint64(p.start), End: uint64(p.end), Name: p.name, GUID: uuid.NewString()}
		switch {
		case p.keep != nil:
			np.Name, np.GUID, np.Type = p.keep.name, p.keep.guid, gpt.Type(p.keep.typ)
		case p.role == "swap":
			np.Type = gpt.LinuxSwap
		default:
			np.Type = gpt.LinuxFilesystem
		}
		tbl.Partitions = append(tbl.Partitions, np)
	}
	return disk.WriteGPT(d, tbl)
}

// writeMBR puts the placements in free primary slots with go-diskfs,
// which rewrites the four entries and leaves the boot code and disk
// signature alone.
func writeMBR(d *blockdev.Device, places []placement) error {
	ss := d.LogicalSectorSize()
	tbl, err := mbr.Read(d.File(), ss, ss)
	if err != nil {
		return fmt.Errorf("read the MBR: %w", err)
	}
	if len(tbl.Partitions) != 4 {
		return fmt.Errorf("read the MBR: %d entries, not 4", len(tbl.Partitions))
	}
	for _, p := range places {
		typ := mbr.Linux
		if p.role == "swap" {
			typ = mbr.LinuxSwap
		}
		e := tbl.Partitions[p.number-1]
		if e.Type != mbr.Empty {
			return fmt.Errorf("MBR slot %d is not free", p.number)
		}
		sc, sh, ss := chs(p.start)
		ec, eh, es := chs(p.end)
		tbl.Partitions[p.number-1] = &mbr.Partition{Index: p.number, Type: typ, Start: uint32(p.start), Size: uint32(p.end - p.start + 1),
			StartCylinder: sc, StartHead: sh, StartSector: ss, EndCylinder: ec, EndHead: eh, EndSector: es}
	}
	if err := tbl.Write(d.File(), d.Size()); err != nil {
		return fmt.Errorf("write the MBR: %w", err)
	}
	return nil
}

// chs encodes an LBA the way go-diskfs stores it (cylinder, head, and the
// sector byte carrying the cylinder's high bits) for the usual 255-head,
// 63-sector geometry, or "beyond CHS" 1023/254/63, as fdisk does.
func chs(lba int64) (cyl, head, sector byte) {
	const heads, spt = 255, 63
	c := lba / (heads * spt)
	if c > 1023 {
		return 0xff, 0xfe, 0xff
	}
	h := (lba / spt) % heads
	s := lba%spt + 1
	return byte(c), byte(h), byte(s) | byte(c>>8)<<6
}
