package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ironlite/ironlite/agent/blockdev"
)

// maxGPTArray bounds the partition entry array a GPT header may claim
// (128 entries of 128 bytes is the norm).
const maxGPTArray = 1 << 20

// ReadGPT reads the GPT of d with go-diskfs, after checking the headers it
// would trust. A disk's contents come from a previous tenant or from the
// image being deployed: a header with a valid CRC may claim billions of
// entries, which go-diskfs allocates in one slice (a fatal out-of-memory
// that no recover catches), or entries of odd sizes. Such a table is an
// error, never read.
func ReadGPT(d *blockdev.Device) (t *gpt.Table, err error) {
	lbs := int64(d.LogicalSectorSize())
	for _, lba := range []int64{1, d.Size()/lbs - 1} {
		h := make([]byte, 92)
		if _, err := d.ReadAt(h, lba*lbs); err != nil || string(h[:8]) != "EFI PART" {
			continue
		}
		count, size := binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:])
		if size < 128 || size%8 != 0 || uint64(count)*uint64(size) > maxGPTArray {
			return nil, fmt.Errorf("implausible GPT header at LBA %d of %s: %d entries of %d bytes", lba, d.Path(), count, size)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("unreadable GPT on %s: %v", d.Path(), r)
		}
	}()
	return gpt.Read(d.File(), int(lbs), int(lbs))
}

// WriteGPT writes both copies of tbl (go-diskfs writes the backup first
// and syncs between steps) and fits the protective MBR to the disk.
// go-diskfs would rewrite the protective MBR with a 32-bit sector count
// that wraps past 2 TiB, and would clobber a hybrid MBR; so it is told not
// to and the MBR is adjusted here instead.
func WriteGPT(d *blockdev.Device, tbl *gpt.Table) error {
	tbl.ProtectiveMBR = false
	if err := tbl.Write(d.File(), d.Size()); err != nil {
		return fmt.Errorf("write the GPT of %s: %w", d.Path(), err)
	}
	return fitProtectiveMBR(d)
}

// fitProtectiveMBR makes a protective MBR (a single 0xEE entry from LBA 1)
// cover the whole disk, capped at 0xFFFFFFFF sectors, as sgdisk does when
// it moves the backup header. Anything else (a hybrid MBR) is left alone.
func fitProtectiveMBR(d *blockdev.Device) error {
	s0 := make([]byte, 512)
	if _, err := d.ReadAt(s0, 0); err != nil {
		return fmt.Errorf("read the protective MBR of %s: %w", d.Path(), err)
	}
	e := s0[446:]
	if e[4] != 0xee || binary.LittleEndian.Uint32(e[8:]) != 1 || !bytes.Equal(s0[446+16:510], make([]byte, 3*16)) {
		return nil
	}
	sectors := d.Size() / int64(d.LogicalSectorSize())
	size := uint32(min(sectors-1, 0xffffffff))
	if binary.LittleEndian.Uint32(e[12:]) == size {
		return nil
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], size)
	if _, err := d.WriteAt(b[:], 446+12); err != nil {
		return fmt.Errorf("update the protective MBR of %s: %w", d.Path(), err)
	}
	return nil
}

// ErrBackupOnly is returned when a disk's primary GPT is damaged and only
// a backup copy exists, which may be a previous deployment's.
var ErrBackupOnly = errors.New("the primary GPT is corrupt; refusing to rebuild it from a backup at the end of the disk, which may be left from a previous deployment")

// RelocateBackupGPT moves the backup GPT header and entries to the last
// sectors of the disk, as sgdisk -e does, when a whole-disk image smaller
// than the disk left them where the image ended. It reports whether it
// moved anything; a disk without a GPT is left alone.
func RelocateBackupGPT(d *blockdev.Device) (bool, error) {
	lbs := int64(d.LogicalSectorSize())
	if d.Size() < 2*lbs {
		return false, nil // too small to hold a GPT (a tiny raw image in a file)
	}
	h := make([]byte, 92)
	if _, err := d.ReadAt(h, lbs); err != nil {
		return false, fmt.Errorf("read the partition table of %s: %w", d.Path(), err)
	}
	if string(h[:8]) != "EFI PART" {
		return false, nil
	}
	if alternate := binary.LittleEndian.Uint64(h[32:]); int64(alternate) == d.Size()/lbs-1 {
		return false, fitProtectiveMBR(d)
	}
	tbl, err := ReadGPT(d)
	if err != nil {
		return false, err
	}
	if tbl.RecoveredFromBackup {
		return false, fmt.Errorf("%s: %w", d.Path(), ErrBackupOnly)
	}
	if err := tbl.Repair(uint64(d.Size())); err != nil {
		return false, fmt.Errorf("move the backup GPT of %s: %w", d.Path(), err)
	}
	return true, WriteGPT(d, tbl)
}
