package filesystem

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
)

// Info is what a filesystem's superblock says of it, in blkid's terms.
type Info struct {
	Type  string `json:"type"`  // "ext4", "ext3", "ext2", "xfs", "vfat", "swap"; "" if none recognised
	UUID  string `json:"uuid"`  // as blkid prints it
	Label string `json:"label"` // "" if none
}

// IdentifyDevice reads the superblock of the filesystem on path.
func IdentifyDevice(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Info{}, fmt.Errorf("size of %s: %w", path, err)
	}
	return Identify(f, size), nil
}

// Identify recognises the filesystems Make creates in the size bytes of
// r, reading their superblocks the way blkid does; Info.Type is empty for
// anything else. It never fails: unreadable means unrecognised.
func Identify(r io.ReaderAt, size int64) Info {
	read := func(off, n int64) []byte {
		if off+n > size {
			return nil
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil
		}
		return b
	}
	// ext2/3/4: superblock at 1 KiB, magic 0xEF53 at 56.
	if b := read(1024, 256); b != nil && binary.LittleEndian.Uint16(b[56:]) == 0xef53 {
		compat := binary.LittleEndian.Uint32(b[92:])
		incompat := binary.LittleEndian.Uint32(b[96:])
		typ := "ext2"
		switch {
		case incompat&(0x40|0x80|0x200) != 0: // extents, 64bit, flex_bg
			typ = "ext4"
		case compat&0x4 != 0: // has_journal
			typ = "ext3"
		}
		return Info{Type: typ, UUID: guid(b[104:120]), Label: cstring(b[120:136])}
	}
	// xfs: "XFSB", sb_uuid at 32, sb_fname[12] at 108.
	if b := read(0, 120); b != nil && string(b[:4]) == "XFSB" {
		return Info{Type: XFS, UUID: guid(b[32:48]), Label: cstring(b[108:120])}
	}
	// swap: "SWAPSPACE2" in the last 10 bytes of the first page; the
	// header at 1 KiB holds uuid (at 12) and volume name (at 28).
	for page := int64(4096); page <= 65536; page *= 2 {
		if b := read(page-10, 10); b != nil && string(b) == "SWAPSPACE2" {
			h := read(1024, 44)
			if h == nil {
				return Info{}
			}
			return Info{Type: Swap, UUID: guid(h[12:28]), Label: cstring(h[28:44])}
		}
	}
	// FAT: boot sector with the extended boot signature 0x29 at 66
	// (FAT32) or 38 (FAT12/16), then the volume id and label.
	if b := read(0, 512); b != nil && b[510] == 0x55 && b[511] == 0xaa {
		for _, f := range []struct{ sig, id, label, fstype int }{{66, 67, 71, 82}, {38, 39, 43, 54}} {
			if b[f.sig] != 0x29 || !bytes.HasPrefix(b[f.fstype:f.fstype+8], []byte("FAT")) {
				continue
			}
			v := binary.LittleEndian.Uint32(b[f.id:])
			label := strings.TrimRight(string(b[f.label:f.label+11]), " \x00")
			if label == "NO NAME" {
				label = ""
			}
			return Info{Type: VFAT, UUID: fmt.Sprintf("%04X-%04X", v>>16, v&0xffff), Label: label}
		}
	}
	return Info{}
}

func guid(b []byte) string {
	u, err := uuid.FromBytes(b)
	if err != nil {
		return ""
	}
	return u.String()
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
