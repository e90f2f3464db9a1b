package configdrive

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

const (
	// MaxSize is the largest config drive image IPA accepts ("Config
	// drive size exceeds maximum limit of 64MiB"): it writes the image
	// into a 64 MiB partition at the end of the disk.
	MaxSize = 64 << 20

	// Label is the volume label cloud-init and friends look for.
	Label = "config-2"

	isoBlock = 2048
	// isoOverhead bounds the blocks that are not file data: 16 system
	// blocks, the volume descriptors, directories and path tables of
	// both namespaces, with room to spare.
	isoOverhead = 64 * isoBlock
)

// versions are the metadata versions written, as openstacksdk writes them:
// cloud-init picks the newest it knows, older readers find 2012-08-10.
var versions = []string{"2012-08-10", "latest"}

// file names inside openstack/<version>/, as openstacksdk names them.
const (
	metaDataFile    = "meta_data.json"
	networkDataFile = "network_data.json"
	vendorDataFile  = "vendor_data2.json"
	userDataFile    = "user_data"
)

// Files returns the config drive's files by path (relative, slash
// separated, e.g. "openstack/latest/meta_data.json"), as openstacksdk's
// populate_directory lays them out: meta_data.json always, the others only
// when non-empty.
func (c Contents) Files() (map[string][]byte, error) {
	md := c.MetaData
	if md == nil {
		md = map[string]any{}
	}
	meta, err := marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encode meta_data: %w", err)
	}
	perVersion := map[string][]byte{metaDataFile: meta}
	if len(c.NetworkData) > 0 {
		if perVersion[networkDataFile], err = marshal(c.NetworkData); err != nil {
			return nil, fmt.Errorf("encode network_data: %w", err)
		}
	}
	if len(c.VendorData) > 0 {
		if perVersion[vendorDataFile], err = marshal(c.VendorData); err != nil {
			return nil, fmt.Errorf("encode vendor_data: %w", err)
		}
	}
	if len(c.UserData) > 0 {
		perVersion[userDataFile] = c.UserData
	}
	files := make(map[string][]byte, len(versions)*len(perVersion))
	for _, v := range versions {
		for name, data := range perVersion {
			files[path.Join("openstack", v, name)] = data
		}
	}
	return files, nil
}

// BuildISO packs c into an ISO9660 image labelled "config-2", with Rock
// Ridge and Joliet names as `genisoimage -J -r -V config-2` gives them, and
// returns the image. It refuses contents that would make the image larger
// than MaxSize, before building anything when the file sizes alone say so.
//
// The image is built by go-diskfs, not genisoimage, so the controller stays
// one static binary. One difference matters only to readers that ignore
// both Rock Ridge and Joliet: the plain ISO9660 names are 8.3 upper case
// (META_DAT.JSO), where openstacksdk's -allow-lowercase -l keeps them long.
// Linux (Rock Ridge) and Windows (Joliet) readers see the real names.
func BuildISO(c Contents) ([]byte, error) {
	files, err := c.Files()
	if err != nil {
		return nil, err
	}
	estimate := int64(isoOverhead)
	for _, data := range files {
		estimate += (int64(len(data)) + isoBlock - 1) / isoBlock * isoBlock
	}
	if estimate > MaxSize {
		return nil, fmt.Errorf("config drive would be about %d MiB, more than the %d MiB limit (its files are written once per metadata version: %v)",
			estimate>>20, MaxSize>>20, versions)
	}

	tmp, err := os.MkdirTemp("", "configdrive-")
	if err != nil {
		return nil, fmt.Errorf("build config drive: %w", err)
	}
	defer os.RemoveAll(tmp)
	iso, err := pack(tmp, files)
	if err != nil {
		return nil, fmt.Errorf("build config drive ISO: %w", err)
	}
	if len(iso) > MaxSize {
		return nil, fmt.Errorf("config drive ISO is %d bytes, more than the %d MiB limit", len(iso), MaxSize>>20)
	}
	return iso, nil
}

// pack writes files into an ISO image, staging them in a go-diskfs
// workspace under dir, and returns the image bytes.
func pack(dir string, files map[string][]byte) ([]byte, error) {
	workspace := filepath.Join(dir, "root")
	// The workspace's mode becomes the root directory's Rock Ridge mode.
	if err := os.Mkdir(workspace, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(workspace, 0o755); err != nil { // whatever the umask
		return nil, err
	}
	img := &memImage{limit: MaxSize + 1<<20}
	fs, err := iso9660.Create(img, 0, 0, isoBlock, workspace)
	if err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if err := fs.Mkdir("/" + path.Dir(p)); err != nil {
			return nil, fmt.Errorf("mkdir %s: %w", path.Dir(p), err)
		}
		w, err := fs.OpenFile("/"+p, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", p, err)
		}
		if _, err := w.Write(files[p]); err != nil {
			w.Close()
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
	}
	err = fs.Finalize(iso9660.FinalizeOptions{
		RockRidge:           true,
		Joliet:              true,
		VolumeIdentifier:    Label,
		PublisherIdentifier: "ironlite",
	})
	if err != nil {
		return nil, fmt.Errorf("finalize: %w", err)
	}

	// The volume size recorded in the primary volume descriptor is the
	// image size; the buffer may stop short of it, where only zeroes were
	// written (see memImage).
	b := img.b
	size, err := volumeSize(b)
	if err != nil {
		return nil, err
	}
	if size > int64(len(b)) {
		b = append(b, make([]byte, size-int64(len(b)))...)
	}
	b = b[:size]
	if err := fixJoliet(b); err != nil {
		return nil, fmt.Errorf("repair Joliet tree: %w", err)
	}
	return b, nil
}

// memImage is an in-memory, zero-initialised backend for go-diskfs's ISO
// writer, which only calls WriteAt on it.
//
// It ignores writes of nothing but zeroes. Finalize writes each region of a
// fresh image once, with one exception, a go-diskfs v1.9.4 bug: after a
// file whose size is a whole number of blocks (or zero) it "pads" a whole
// extra zero block, which lands on whatever follows the file. With Joliet
// on, the Joliet directories follow the last file and are written before
// it, so a user_data of 4096 bytes would wipe the Joliet root. In a
// zero-initialised image, skipping zero writes changes nothing else.
type memImage struct {
	b     []byte
	limit int64
}

var _ backend.Storage = (*memImage)(nil)

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if off < 0 || end > m.limit {
		return 0, fmt.Errorf("write of %d bytes at %d: image would exceed %d bytes", len(p), off, m.limit)
	}
	if !slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) {
		return len(p), nil
	}
	if end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memImage) Writable() (backend.WritableFile, error) { return m, nil }
func (m *memImage) Sys() (*os.File, error)                  { return nil, backend.ErrNotSuitable }
func (m *memImage) Path() string                            { return "" }
func (m *memImage) Stat() (iofs.FileInfo, error)            { return nil, backend.ErrNotSuitable }
func (m *memImage) Read([]byte) (int, error)                { return 0, backend.ErrNotSuitable }
func (m *memImage) Seek(int64, int) (int64, error)          { return 0, backend.ErrNotSuitable }
func (m *memImage) Close() error                            { return nil }

// volumeSize reads the volume space size (blocks × logical block size)
// from the primary volume descriptor at sector 16.
func volumeSize(img []byte) (int64, error) {
	const pvd = 16 * isoBlock
	if len(img) < pvd+isoBlock || img[pvd] != 1 || !bytes.Equal(img[pvd+1:pvd+6], []byte("CD001")) {
		return 0, fmt.Errorf("no ISO9660 primary volume descriptor in the built image")
	}
	blocks := binary.LittleEndian.Uint32(img[pvd+80:])
	blockSize := binary.LittleEndian.Uint16(img[pvd+128:])
	return int64(blocks) * int64(blockSize), nil
}

// Encode returns iso gzipped and base64-encoded (standard alphabet, no
// line breaks): the string Ironic stores and hands to the agent.
func Encode(iso []byte) (string, error) {
	var buf bytes.Buffer
	b64 := base64.NewEncoder(base64.StdEncoding, &buf)
	zw := gzip.NewWriter(b64)
	if _, err := zw.Write(iso); err != nil {
		return "", fmt.Errorf("gzip config drive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("gzip config drive: %w", err)
	}
	if err := b64.Close(); err != nil {
		return "", fmt.Errorf("base64 config drive: %w", err)
	}
	return buf.String(), nil
}

// Build turns a configdrive object from the API into the string the agent
// receives: FromJSON, BuildISO, Encode.
func Build(raw any, node NodeInfo) (string, error) {
	c, err := FromJSON(raw, node)
	if err != nil {
		return "", err
	}
	iso, err := BuildISO(c)
	if err != nil {
		return "", err
	}
	return Encode(iso)
}
