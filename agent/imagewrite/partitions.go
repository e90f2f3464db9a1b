package imagewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/disk"
)

// FixGPT moves a GPT's backup header and partition array to the last
// sectors of the disk when the image put them elsewhere (the end of a
// smaller image), as IPA's fix_gpt_partition does with sgdisk -e. Without
// it the firmware and the kernel see a damaged GPT and some refuse to
// boot. A disk without a GPT is left alone.
func FixGPT(dev *blockdev.Device) error {
	if err := checkSectorSize(dev); err != nil {
		return err
	}
	_, err := disk.RelocateBackupGPT(dev)
	return err
}

// checkSectorSize refuses an image partitioned for 512-byte sectors on a
// disk with larger ones: its GPT sits at byte 512 where the disk's LBA 1
// is byte 4096, so neither the firmware nor the kernel would find it.
func checkSectorSize(dev *blockdev.Device) error {
	if dev.LogicalSectorSize() == 512 {
		return nil
	}
	b := make([]byte, 8)
	if _, err := dev.ReadAt(b, 512); err == nil && string(b) == "EFI PART" {
		return fmt.Errorf("%w: the image's GPT is laid out for 512-byte sectors but %s has %d-byte sectors; use an image built for %d-byte sectors",
			ErrUnsupportedImage, dev.Path(), dev.LogicalSectorSize(), dev.LogicalSectorSize())
	}
	return nil
}

// PartitionInfo is what standby.get_partition_uuids reports for a
// whole-disk image.
type PartitionInfo struct {
	// DiskIdentifier is the MBR disk signature as IPA reports it
	// ("0x7a3b1c2d"; "0x00000000" on most GPT disks).
	DiskIdentifier string
	// DiskGUID is the GPT disk GUID, empty for MBR disks.
	DiskGUID string
	// Partitions lists the partitions found.
	Partitions []Partition
}

// Partition is one entry of the disk's partition table.
type Partition struct {
	Number int    `json:"number"`
	Start  int64  `json:"start_bytes"`
	Size   int64  `json:"size_bytes"`
	UUID   string `json:"uuid,omitempty"` // GPT partition GUID
	Name   string `json:"name,omitempty"`
	Type   string `json:"type"`
}

// ErrNoPartitions is returned when a written whole-disk image has no
// partition table; IPA fails the deploy the same way.
var ErrNoPartitions = errors.New("no partitions found on the device after writing the image")

// ReadPartitions reads the disk identifier and partition table of dev.
func ReadPartitions(dev *blockdev.Device) (*PartitionInfo, error) {
	lbs := dev.LogicalSectorSize()
	if dev.Size() < int64(lbs) {
		return &PartitionInfo{DiskIdentifier: "0x00000000"}, fmt.Errorf("%s: %w", dev.Path(), ErrNoPartitions)
	}
	mbr := make([]byte, lbs)
	if _, err := dev.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("read partition table of %s: %w", dev.Path(), err)
	}
	if err := checkSectorSize(dev); err != nil {
		return nil, err
	}
	info := &PartitionInfo{DiskIdentifier: fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(mbr[440:]))}
	hdr := make([]byte, lbs)
	if _, err := dev.ReadAt(hdr, int64(lbs)); err == nil && string(hdr[:8]) == "EFI PART" {
		t, err := disk.ReadGPT(dev)
		if err != nil {
			return nil, fmt.Errorf("read GPT of %s: %w", dev.Path(), err)
		}
		info.DiskGUID = strings.ToLower(t.GUID)
		for _, p := range t.Partitions {
			if p.Type == gpt.Unused || p.Start == 0 {
				continue
			}
			info.Partitions = append(info.Partitions, Partition{
				Number: p.Index, Start: int64(p.Start) * int64(lbs), Size: int64(p.End-p.Start+1) * int64(lbs),
				UUID: strings.ToLower(p.GUID), Name: p.Name, Type: strings.ToLower(string(p.Type)),
			})
		}
	} else if mbr[510] == 0x55 && mbr[511] == 0xaa {
		for i := range 4 {
			e := mbr[446+16*i : 446+16*(i+1)]
			typ, start, n := e[4], binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
			if typ == 0 || n == 0 {
				continue
			}
			if typ == 0xee {
				return nil, fmt.Errorf("%s has a protective MBR but no readable GPT", dev.Path())
			}
			info.Partitions = append(info.Partitions, Partition{
				Number: i + 1, Start: int64(start) * int64(lbs), Size: int64(n) * int64(lbs), Type: fmt.Sprintf("0x%02x", typ),
			})
		}
	}
	if len(info.Partitions) == 0 {
		return info, fmt.Errorf("%s: %w", dev.Path(), ErrNoPartitions)
	}
	return info, nil
}
