package extraparts

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/google/uuid"
)

// maxGPTArray bounds the partition entry array a GPT header may claim, as
// agent/disk does: the header comes from an image or a previous tenant.
const maxGPTArray = 1 << 20

// errNoTable is returned for a disk or image with neither MBR nor GPT.
var errNoTable = errors.New("no partition table")

// extent is a partition in sectors, end inclusive.
type extent struct {
	number     int
	start, end int64
	name       string // GPT partition name
	guid       string // GPT partition GUID, lower case
	typ        string // GPT type GUID (upper case, as go-diskfs spells it) or MBR type "0x83"
	extended   bool   // MBR extended partition: a container of logicals
}

func (e extent) String() string {
	s := fmt.Sprintf("partition %d", e.number)
	if e.name != "" {
		s += " (" + e.name + ")"
	}
	return s + fmt.Sprintf(", sectors %d-%d", e.start, e.end)
}

// table is what planning needs of a partition table. It is read here
// rather than with go-diskfs because it must also be read from an image's
// virtual disk (an io.ReaderAt over HTTP or qcow2) before the image is
// written; the table is then changed on the disk with go-diskfs.
type table struct {
	kind        string // "gpt" or "dos", as blkid names them
	parts       []extent
	slots       int   // GPT entries in the array, or 4 primary MBR slots
	firstUsable int64 // GPT header's first usable LBA; 1 MiB on MBR
	arrayLBAs   int64 // sectors of one copy of the GPT entry array
	signature   uint32
}

// readTable reads the MBR or GPT at the start of r. Like the kernel, it
// takes the MBR's word for which it is: a GPT needs a protective (or
// hybrid) MBR entry of type 0xEE, so that a stale backup GPT at the end of
// the disk is never taken for the image's.
func readTable(r io.ReaderAt, ss int64) (*table, error) {
	s0 := make([]byte, 512)
	if _, err := r.ReadAt(s0, 0); err != nil {
		return nil, fmt.Errorf("read the partition table: %w", err)
	}
	if s0[510] != 0x55 || s0[511] != 0xaa {
		return nil, errNoTable
	}
	t := &table{kind: "dos", slots: 4, firstUsable: alignment / ss, signature: binary.LittleEndian.Uint32(s0[440:])}
	for i := range 4 {
		e := s0[446+16*i : 446+16*i+16]
		typ, start, n := e[4], int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0xee {
			return readGPT(r, ss)
		}
		if typ == 0 || n == 0 {
			continue
		}
		t.parts = append(t.parts, extent{number: i + 1, start: start, end: start + n - 1, typ: fmt.Sprintf("0x%02x", typ),
			extended: typ == 0x05 || typ == 0x0f || typ == 0x85})
	}
	if len(t.parts) == 0 {
		return nil, fmt.Errorf("%w: the MBR has no partitions", errNoTable)
	}
	return t, nil
}

func readGPT(r io.ReaderAt, ss int64) (*table, error) {
	h := make([]byte, 92)
	if _, err := r.ReadAt(h, ss); err != nil {
		return nil, fmt.Errorf("read the GPT header: %w", err)
	}
	if string(h[:8]) != "EFI PART" {
		return nil, errors.New("protective MBR but no GPT header at LBA 1")
	}
	t := &table{kind: "gpt", firstUsable: int64(binary.LittleEndian.Uint64(h[40:]))}
	lba := int64(binary.LittleEndian.Uint64(h[72:]))
	count, size := int64(binary.LittleEndian.Uint32(h[80:])), int64(binary.LittleEndian.Uint32(h[84:]))
	if size < 128 || size%8 != 0 || count*size > maxGPTArray || count == 0 {
		return nil, fmt.Errorf("implausible GPT header: %d entries of %d bytes", count, size)
	}
	t.slots = int(count)
	t.arrayLBAs = (count*size + ss - 1) / ss
	arr := make([]byte, count*size)
	if _, err := r.ReadAt(arr, lba*ss); err != nil {
		return nil, fmt.Errorf("read the GPT entries: %w", err)
	}
	for i := range count {
		e := arr[i*size : i*size+128]
		if allZero(e[:16]) {
			continue
		}
		name := make([]uint16, 36)
		for j := range name {
			name[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		t.parts = append(t.parts, extent{
			number: int(i) + 1,
			start:  int64(binary.LittleEndian.Uint64(e[32:])),
			end:    int64(binary.LittleEndian.Uint64(e[40:])),
			name:   string(utf16.Decode(name)),
			guid:   mixedEndianGUID(e[16:32]),
			typ:    strings.ToUpper(mixedEndianGUID(e[0:16])),
		})
	}
	return t, nil
}

// mixedEndianGUID formats a GUID as stored on disk (first three fields
// little-endian), the way blkid and sgdisk print it.
func mixedEndianGUID(b []byte) string {
	var u uuid.UUID
	copy(u[:], b)
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	return u.String()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// limit is the sector before which partitions must end on a disk of
// sectors sectors carrying this kind of table: the GPT's last usable
// sector + 1 once its backup sits at the disk's end, or MBRLimit.
func (t *table) limit(sectors, ss int64, mbrLimit func(sectors, ss int64) int64) int64 {
	if t.kind == "gpt" {
		return sectors - 1 - t.arrayLBAs
	}
	return mbrLimit(sectors, ss)
}
