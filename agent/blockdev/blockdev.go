// Package blockdev opens a disk for writing and wraps the Linux block-device
// ioctls the agent needs: zeroing and discarding ranges, flushing the
// kernel's buffers, and re-reading the partition table.
//
// A regular file may stand in for a disk (tests, `ironlite-agent
// write-image` onto an image file): zeroing then punches holes or writes
// zeroes, and the ioctls that only make sense for devices are no-ops. So the
// same writer code runs on /dev/sda, a loop device and a file.
package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device is an open disk (or a file standing in for one).
type Device struct {
	f      *os.File
	path   string
	size   int64
	block  bool
	sector int
	// noZeroOut is set after the first EOPNOTSUPP from BLKZEROOUT, so we
	// fall back to writing zeroes without asking again. Workers zero
	// concurrently, hence atomic.
	noZeroOut atomic.Bool
}

// Options tune Open.
type Options struct {
	// ReadOnly opens the device for reading only (inspection, erase checks).
	ReadOnly bool
	// Shared drops O_EXCL for block devices. By default a block device is
	// opened exclusively, which fails with EBUSY while it or one of its
	// partitions is mounted or part of an md array: that is the protection
	// we want before overwriting a disk.
	Shared bool
	// Create creates a regular file if it does not exist (write-image onto
	// a new image file).
	Create bool
}

// IsBlockDevice reports whether path is a block device (not a regular file
// standing in for one, not a character device).
func IsBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && isBlockMode(st.Mode())
}

func isBlockMode(m os.FileMode) bool { return m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0 }

// Open opens path as a disk.
func Open(path string, o Options) (*Device, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	st, statErr := os.Stat(path)
	isBlock := statErr == nil && isBlockMode(st.Mode())
	if isBlock && !o.Shared && !o.ReadOnly {
		flags |= unix.O_EXCL
	}
	if statErr != nil && o.Create && errors.Is(statErr, os.ErrNotExist) {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("open %s: device is in use (mounted, part of an md array or held by another process): %w", path, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	d := &Device{f: f, path: path, block: isBlock, sector: 512}
	if err := d.refreshSize(); err != nil {
		f.Close()
		return nil, err
	}
	if isBlock {
		if n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && n > 0 {
			d.sector = n
		}
	}
	return d, nil
}

func (d *Device) refreshSize() error {
	if d.block {
		var size uint64
		if err := ioctlPtr(d.f, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
			return fmt.Errorf("size of %s: %w", d.path, err)
		}
		d.size = int64(size)
		return nil
	}
	st, err := d.f.Stat()
	if err != nil {
		return fmt.Errorf("size of %s: %w", d.path, err)
	}
	d.size = st.Size()
	return nil
}

// Path is the path Open was given.
func (d *Device) Path() string { return d.path }

// Size is the device size in bytes (a regular file's current length).
func (d *Device) Size() int64 { return d.size }

// IsBlockDevice tells a real block device from a file standing in for one.
func (d *Device) IsBlockDevice() bool { return d.block }

// LogicalSectorSize is the device's logical block size (512 for files).
func (d *Device) LogicalSectorSize() int { return d.sector }

// File exposes the open file, e.g. for go-diskfs.
func (d *Device) File() *os.File { return d.f }

// ReadAt implements io.ReaderAt.
func (d *Device) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("write %d bytes at offset %d of %s: %w", len(p), off, d.path, err)
	}
	return n, nil
}

// Truncate sets a regular file's length (write-image onto a file whose
// image is bigger than the file). It is an error on a block device smaller
// than size.
func (d *Device) Truncate(size int64) error {
	if d.block {
		if size > d.size {
			return fmt.Errorf("%s is %d bytes, too small for %d bytes", d.path, d.size, size)
		}
		return nil
	}
	if err := d.f.Truncate(size); err != nil {
		return fmt.Errorf("resize %s to %d bytes: %w", d.path, size, err)
	}
	d.size = size
	return nil
}

// ZeroRange makes [off, off+n) read back as zeroes. On a block device it
// uses BLKZEROOUT (the kernel picks WRITE ZEROES / UNMAP-with-zeroing when
// the device guarantees it, else writes zero pages), falling back to plain
// writes. On a file it punches a hole, keeping the size, so a sparse target
// stays sparse. It never relies on stale contents being zero.
func (d *Device) ZeroRange(ctx context.Context, off, n int64) error {
	if n <= 0 {
		return nil
	}
	if d.block && !d.noZeroOut.Load() {
		// BLKZEROOUT bypasses the page cache; a buffered write to the
		// same page running concurrently (the writer's workers, qcow2
		// clusters smaller than a page) could write stale bytes back
		// over the zeroes. So only whole pages are zeroed by ioctl, and
		// the unaligned edges are written through the cache.
		align := int64(max(d.sector, os.Getpagesize()))
		start := (off + align - 1) / align * align
		end := (off + n) / align * align
		if end-start >= align {
			r := [2]uint64{uint64(start), uint64(end - start)}
			err := ioctlPtr(d.f, unix.BLKZEROOUT, unsafe.Pointer(&r))
			if err == nil {
				if err := d.writeZeroes(ctx, off, start-off); err != nil {
					return err
				}
				return d.writeZeroes(ctx, end, off+n-end)
			}
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
				return fmt.Errorf("zero %d bytes at offset %d of %s: %w", n, off, d.path, err)
			}
			d.noZeroOut.Store(true)
		}
	}
	if !d.block {
		err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
	}
	return d.writeZeroes(ctx, off, n)
}

// zeroBuf is shared by every fallback zero write; it is never written to.
var zeroBuf = make([]byte, 1<<20)

func (d *Device) writeZeroes(ctx context.Context, off, n int64) error {
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := min(n, int64(len(zeroBuf)))
		if _, err := d.WriteAt(zeroBuf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Discard issues BLKDISCARD over the range. Whether discarded blocks read
// back as zeroes depends on the device; callers that need zeroes use
// ZeroRange (which already uses zeroing unmap where guaranteed).
func (d *Device) Discard(off, n int64) error {
	if !d.block {
		return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	r := [2]uint64{uint64(off), uint64(n)}
	if err := ioctlPtr(d.f, unix.BLKDISCARD, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("discard %d bytes at offset %d of %s: %w", n, off, d.path, err)
	}
	return nil
}

// SecureDiscard issues BLKSECDISCARD (devices that support it guarantee the
// old data is gone, not just unmapped).
func (d *Device) SecureDiscard(off, n int64) error {
	if !d.block {
		return fmt.Errorf("secure discard on %s: not a block device: %w", d.path, unix.EOPNOTSUPP)
	}
	r := [2]uint64{uint64(off), uint64(n)}
	if err := ioctlPtr(d.f, unix.BLKSECDISCARD, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("secure discard on %s: %w", d.path, err)
	}
	return nil
}

// Flush makes written data durable and drops the kernel's buffer cache of
// the device (BLKFLSBUF), so that whatever reads the disk next (partprobe,
// the config-drive writer, the rebooted machine's firmware under a VM's
// cache=writeback) sees what we wrote, not stale pages.
func (d *Device) Flush() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", d.path, err)
	}
	if d.block {
		if err := unix.IoctlSetInt(int(d.f.Fd()), unix.BLKFLSBUF, 0); err != nil {
			return fmt.Errorf("flush buffers of %s: %w", d.path, err)
		}
	}
	return nil
}

// RereadPartitions asks the kernel to re-read the partition table
// (BLKRRPART), retrying EBUSY for a moment because udev or a previous
// opener may still hold a partition. A file has no partitions to re-read.
func (d *Device) RereadPartitions(ctx context.Context) error {
	if !d.block {
		return nil
	}
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		err = unix.IoctlSetInt(int(d.f.Fd()), unix.BLKRRPART, 0)
		if err == nil || !errors.Is(err, unix.EBUSY) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil && errors.Is(err, unix.EINVAL) {
		// Loop devices without LO_FLAGS_PARTSCAN and md devices refuse
		// BLKRRPART; there is nothing to re-read for them.
		return nil
	}
	if err != nil {
		return fmt.Errorf("re-read partition table of %s: %w", d.path, err)
	}
	return nil
}

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }

var _ io.ReaderAt = (*Device)(nil)
var _ io.WriterAt = (*Device)(nil)

func ioctlPtr(f *os.File, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Queue facts from /sys/block/<dev>/queue, used to pick the erase method.
type Queue struct {
	// WriteZeroesMax > 0 means the device offloads zeroing (WRITE ZEROES
	// or zeroing UNMAP): BLKZEROOUT is then fast and guaranteed.
	WriteZeroesMax int64
	// DiscardMax > 0 means the device accepts discard.
	DiscardMax int64
	Rotational bool
}

// ReadQueue reads the queue attributes of the block device at path, looking
// under sysRoot ("/" normally; a fake tree in tests).
func ReadQueue(sysRoot, path string) (Queue, error) {
	name := filepath.Base(path)
	dir := filepath.Join(sysRoot, "sys/class/block", name, "queue")
	if _, err := os.Stat(dir); err != nil {
		// A partition's queue lives under its parent disk.
		dir = filepath.Join(sysRoot, "sys/class/block", name, "..", "queue")
	}
	read := func(f string) int64 {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v
	}
	if _, err := os.Stat(dir); err != nil {
		return Queue{}, fmt.Errorf("queue attributes of %s: %w", path, err)
	}
	return Queue{
		WriteZeroesMax: read("write_zeroes_max_bytes"),
		DiscardMax:     read("discard_max_bytes"),
		Rotational:     read("rotational") == 1,
	}, nil
}
