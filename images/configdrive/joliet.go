package configdrive

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// fixJoliet repairs the Joliet directory tree go-diskfs v1.9.4 writes. Its
// Joliet directory records for subdirectories (as opposed to "." and "..")
// point at the primary tree's extent and size, so a Joliet reader (Windows,
// `isoinfo -J`, Linux mounted with norock) sees the Joliet root and then
// 8-bit names decoded as UCS-2: garbage, and no openstack/latest. The
// Joliet path table and each Joliet directory's own "." record are right,
// so every subdirectory record is pointed back at the extent the path table
// gives for it, with that directory's size.
//
// Linux prefers Rock Ridge when both are present, so cloud-init is not
// affected either way; this keeps the Joliet names genisoimage -J gives.
func fixJoliet(img []byte) error {
	svd, err := jolietDescriptor(img)
	if err != nil || svd < 0 {
		return err
	}
	bs := int(binary.LittleEndian.Uint16(img[svd+128:]))
	ptSize := int(binary.LittleEndian.Uint32(img[svd+132:]))
	ptLoc := int(binary.LittleEndian.Uint32(img[svd+140:]))
	if bs == 0 || ptLoc*bs+ptSize > len(img) {
		return fmt.Errorf("joliet path table at block %d (%d bytes) is outside the image", ptLoc, ptSize)
	}

	type dir struct {
		name   []byte // UCS-2BE, as in the directory records
		parent int    // 1-based directory number
		extent int
	}
	var dirs []dir
	pt := img[ptLoc*bs : ptLoc*bs+ptSize]
	for len(pt) >= 8 {
		n := int(pt[0])
		if n == 0 || 8+n > len(pt) {
			break
		}
		dirs = append(dirs, dir{
			name:   pt[8 : 8+n],
			parent: int(binary.LittleEndian.Uint16(pt[6:])),
			extent: int(binary.LittleEndian.Uint32(pt[2:])),
		})
		pt = pt[8+n+n%2:]
	}

	for i, d := range dirs {
		if i == 0 { // the root is not in any directory
			continue
		}
		if d.parent < 1 || d.parent > len(dirs) {
			return fmt.Errorf("joliet path table entry %d has parent %d", i+1, d.parent)
		}
		size, err := dirSize(img, d.extent, bs)
		if err != nil {
			return err
		}
		parent := dirs[d.parent-1].extent
		psize, err := dirSize(img, parent, bs)
		if err != nil {
			return err
		}
		rec, err := findRecord(img[parent*bs:parent*bs+psize], d.name, bs)
		if err != nil {
			return fmt.Errorf("joliet directory at block %d: %w", parent, err)
		}
		putBoth32(rec[2:], uint32(d.extent))
		putBoth32(rec[10:], uint32(size))
	}
	return nil
}

// jolietDescriptor returns the offset of the Joliet supplementary volume
// descriptor, or -1 when there is none.
func jolietDescriptor(img []byte) (int, error) {
	for off := 16 * isoBlock; off+isoBlock <= len(img); off += isoBlock {
		vd := img[off : off+isoBlock]
		if !bytes.Equal(vd[1:6], []byte("CD001")) {
			return 0, fmt.Errorf("volume descriptor at byte %d has no CD001 signature", off)
		}
		switch vd[0] {
		case 255: // set terminator
			return -1, nil
		case 2:
			esc := vd[88:91]
			if esc[0] == '%' && esc[1] == '/' && (esc[2] == '@' || esc[2] == 'C' || esc[2] == 'E') {
				return off, nil
			}
		}
	}
	return 0, fmt.Errorf("no volume descriptor set terminator")
}

// dirSize is the data length recorded in a directory's "." record.
func dirSize(img []byte, extent, bs int) (int, error) {
	off := extent * bs
	if off+34 > len(img) || img[off] < 34 {
		return 0, fmt.Errorf("no directory record at block %d", extent)
	}
	size := int(binary.LittleEndian.Uint32(img[off+10:]))
	if off+size > len(img) {
		return 0, fmt.Errorf("directory at block %d (%d bytes) is outside the image", extent, size)
	}
	return size, nil
}

// findRecord returns the subdirectory record named name in a directory's
// data. Records do not cross block boundaries; a zero length byte means the
// rest of the block is padding.
func findRecord(data, name []byte, bs int) ([]byte, error) {
	for off := 0; off < len(data); {
		n := int(data[off])
		if n == 0 {
			off = (off/bs + 1) * bs
			continue
		}
		if n < 34 || off+n > len(data) {
			return nil, fmt.Errorf("bad directory record at byte %d", off)
		}
		rec := data[off : off+n]
		nameLen := int(rec[32])
		if 33+nameLen <= n && rec[25]&2 != 0 && bytes.Equal(rec[33:33+nameLen], name) {
			return rec, nil
		}
		off += n
	}
	return nil, fmt.Errorf("no record for subdirectory %q", name)
}

// putBoth32 writes v in ISO9660's both-byte-order form.
func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}
