package imagewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Format is what an image file is, detected from its first bytes. The
// file name and the operator's disk_format are never trusted for this: a
// "raw" image that is really a qcow2 with a backing file pointing at
// /etc/shadow is the CVE-2024-44082 attack on IPA.
type Format string

// Formats the agent knows. Only Raw and QCOW2 (plus Raw inside a
// compressed stream) are written; the others are recognised so that the
// error can name them.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	Gzip  Format = "gzip"
	XZ    Format = "xz"
	Zstd  Format = "zstd"
	VMDK  Format = "vmdk"
	VHDX  Format = "vhdx"
	VHD   Format = "vpc"
	VDI   Format = "vdi"
	ISO   Format = "iso"
)

// Compressed reports whether f is a stream compression wrapped around a
// raw image.
func (f Format) Compressed() bool { return f == Gzip || f == XZ || f == Zstd }

// headerSize is how many bytes Detect wants (the ISO9660 signature sits at
// 32 KiB + 1).
const headerSize = 32*1024 + 8

var magics = []struct {
	off   int
	magic []byte
	f     Format
}{
	{0, []byte("QFI\xfb"), QCOW2},
	{0, []byte{0x1f, 0x8b}, Gzip},
	{0, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, XZ},
	{0, []byte{0x28, 0xb5, 0x2f, 0xfd}, Zstd},
	{0, []byte("KDMV"), VMDK},
	{0, []byte("# Disk DescriptorFile"), VMDK},
	{0, []byte("vhdxfile"), VHDX},
	{0, []byte("conectix"), VHD},
	{64, []byte{0x7f, 0x10, 0xda, 0xbe}, VDI},
	{32769, []byte("CD001"), ISO},
}

// Detect names the format of an image from its first bytes (up to
// headerSize; fewer for tiny images). Anything unrecognised is raw.
func Detect(header []byte) Format {
	for _, m := range magics {
		if len(header) >= m.off+len(m.magic) && bytes.Equal(header[m.off:m.off+len(m.magic)], m.magic) {
			return m.f
		}
	}
	return Raw
}

// readHeader reads the first bytes of ra for Detect.
func readHeader(ra io.ReaderAt, size int64) ([]byte, error) {
	n := int64(headerSize)
	if size >= 0 && size < n {
		n = size
	}
	buf := make([]byte, n)
	got, err := ra.ReadAt(buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
		return nil, fmt.Errorf("read image header: %w", err)
	}
	return buf[:got], nil
}

// ErrUnsupportedImage is wrapped by every refusal of an image for what it
// is (format, qcow2 feature), as opposed to a failure to read it.
var ErrUnsupportedImage = errors.New("unsupported image")

// qcow2Header is the part of the qcow2 header we vet before handing the
// image to the reader (qemu docs/interop/qcow2.txt).
type qcow2Header struct {
	Version           uint32
	BackingFileOffset uint64
	BackingFileSize   uint32
	ClusterBits       uint32
	Size              uint64
	CryptMethod       uint32
	L1Size            uint32
	L1Offset          uint64
	Incompatible      uint64
	HeaderLength      uint32
	CompressionType   uint8
}

const (
	qcow2IncompatDirty      = 1 << 0
	qcow2IncompatCorrupt    = 1 << 1
	qcow2IncompatDataFile   = 1 << 2
	qcow2IncompatCompressed = 1 << 3
	qcow2IncompatExtL2      = 1 << 4
)

func parseQCOW2Header(h []byte) (qcow2Header, error) {
	var q qcow2Header
	if len(h) < 72 {
		return q, fmt.Errorf("%w: qcow2 header truncated (%d bytes)", ErrUnsupportedImage, len(h))
	}
	be := binary.BigEndian
	q.Version = be.Uint32(h[4:])
	q.BackingFileOffset = be.Uint64(h[8:])
	q.BackingFileSize = be.Uint32(h[16:])
	q.ClusterBits = be.Uint32(h[20:])
	q.Size = be.Uint64(h[24:])
	q.CryptMethod = be.Uint32(h[32:])
	q.L1Size = be.Uint32(h[36:])
	q.L1Offset = be.Uint64(h[40:])
	if q.Version >= 3 {
		if len(h) < 104 {
			return q, fmt.Errorf("%w: qcow2 v3 header truncated", ErrUnsupportedImage)
		}
		q.Incompatible = be.Uint64(h[72:])
		q.HeaderLength = be.Uint32(h[100:])
		if q.HeaderLength > 104 && len(h) > 104 {
			q.CompressionType = h[104]
		}
	}
	return q, nil
}

// vet refuses what must never be written from a remote image: a backing
// file (it would be opened on the agent's filesystem), an external data
// file, encryption, and headers that do not make sense — including an L1
// table larger than the image needs or the file holds, which the reader
// would otherwise allocate whole (a 16-byte header could ask for 32 GiB).
func (q qcow2Header) vet(fileSize int64) error {
	if err := q.vetFeatures(); err != nil {
		return err
	}
	clusterSize := uint64(1) << q.ClusterBits
	perL2 := clusterSize / 8
	if q.Incompatible&qcow2IncompatExtL2 != 0 {
		perL2 = clusterSize / 16
	}
	needed := (q.Size + clusterSize*perL2 - 1) / (clusterSize * perL2)
	switch {
	case q.L1Size == 0 || uint64(q.L1Size) < needed:
		return fmt.Errorf("%w: qcow2 L1 table has %d entries, %d needed for the virtual size", ErrUnsupportedImage, q.L1Size, needed)
	case uint64(q.L1Size)*8 > 32<<20:
		// qemu's own limit (QCOW_MAX_L1_SIZE). A larger L1 than the size
		// needs is legal (shrunk images, internal snapshots).
		return fmt.Errorf("%w: qcow2 L1 table of %d entries exceeds qemu's 32 MiB limit", ErrUnsupportedImage, q.L1Size)
	case q.L1Offset == 0 || q.L1Offset%512 != 0 || (fileSize >= 0 && q.L1Offset+uint64(q.L1Size)*8 > uint64(fileSize)):
		return fmt.Errorf("%w: qcow2 L1 table at offset %d (%d entries) lies outside the %d-byte file", ErrUnsupportedImage, q.L1Offset, q.L1Size, fileSize)
	}
	return nil
}

func (q qcow2Header) vetFeatures() error {
	switch {
	case q.Version != 2 && q.Version != 3:
		return fmt.Errorf("%w: qcow2 version %d (only 2 and 3 exist)", ErrUnsupportedImage, q.Version)
	case q.BackingFileOffset != 0 || q.BackingFileSize != 0:
		return fmt.Errorf("%w: the qcow2 image has a backing file; flatten it first (qemu-img convert -O qcow2 in.qcow2 out.qcow2)", ErrUnsupportedImage)
	case q.Incompatible&qcow2IncompatDataFile != 0:
		return fmt.Errorf("%w: the qcow2 image keeps its data in an external data file; convert it to a self-contained image first", ErrUnsupportedImage)
	case q.CryptMethod != 0:
		return fmt.Errorf("%w: the qcow2 image is encrypted (method %d); decrypt it before deploying", ErrUnsupportedImage, q.CryptMethod)
	case q.Incompatible&qcow2IncompatCorrupt != 0:
		return fmt.Errorf("%w: the qcow2 image is marked corrupt; check it with qemu-img check -r all", ErrUnsupportedImage)
	case q.ClusterBits < 9 || q.ClusterBits > 21:
		return fmt.Errorf("%w: qcow2 cluster_bits %d out of range 9..21", ErrUnsupportedImage, q.ClusterBits)
	case q.Size == 0 || q.Size > 1<<56:
		return fmt.Errorf("%w: qcow2 virtual size %d is not plausible", ErrUnsupportedImage, q.Size)
	case q.Incompatible&qcow2IncompatExtL2 != 0:
		// go-qcow2reader re-reads a whole L2 table per cluster for these:
		// a hostile or merely large image would crawl.
		return fmt.Errorf("%w: qcow2 extended L2 entries (subclusters) are not supported; convert the image with qemu-img convert -O qcow2", ErrUnsupportedImage)
	case q.Incompatible&^(qcow2IncompatDirty|qcow2IncompatCompressed) != 0:
		return fmt.Errorf("%w: qcow2 incompatible feature bits %#x are not supported", ErrUnsupportedImage, q.Incompatible)
	case q.CompressionType > 1:
		return fmt.Errorf("%w: qcow2 compression type %d is not supported (zlib and zstd are)", ErrUnsupportedImage, q.CompressionType)
	}
	return nil
}

// checkDiskFormat compares the operator's disk_format (image_info, may be
// empty) with what the bytes say, as IPA's format inspector does after
// CVE-2024-44082. A compressed raw image is still "raw" to Ironic.
func checkDiskFormat(declared string, detected, inner Format) error {
	actual := detected
	if detected.Compressed() {
		actual = inner
	}
	if actual != Raw && actual != QCOW2 {
		return fmt.Errorf("%w: the image is %s; only raw and qcow2 (and raw compressed with gzip, xz or zstd) can be written — convert it with qemu-img convert -O qcow2", ErrUnsupportedImage, actual)
	}
	switch declared {
	case "", "auto":
		return nil
	case "raw", "qcow2":
		if Format(declared) != actual {
			return fmt.Errorf("%w: security: disk_format is %q but the image content is %s", ErrUnsupportedImage, declared, actual)
		}
		return nil
	default:
		return fmt.Errorf("%w: disk_format %q is not supported (raw or qcow2)", ErrUnsupportedImage, declared)
	}
}
