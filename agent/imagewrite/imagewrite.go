// Package imagewrite writes a disk image onto a disk: source -> format ->
// checksum -> device, without ever staging the image in memory or on a
// local filesystem.
//
// IPA downloads a qcow2 into the ramdisk's tmpfs and runs qemu-img on it, so
// the image must fit in RAM. Here a qcow2 is read straight over HTTP Range
// requests (agent/imagesource's io.ReaderAt) with go-qcow2reader, its data
// extents are written by parallel workers and its zero extents are zeroed
// on the disk; raw images, optionally gzip/xz/zstd compressed, stream. The
// published file's checksum is computed in file order by the source while
// the writer reads it in whatever order suits it, and is verified before
// the write is declared done. Memory stays bounded by the worker count, the
// chunk size and the source's cache, whatever the image size.
package imagewrite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/lima-vm/go-qcow2reader"
	"github.com/lima-vm/go-qcow2reader/image"
	"github.com/lima-vm/go-qcow2reader/image/qcow2"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/progress"
)

// Source is an opened image file (agent/imagesource over HTTP or a local
// file).
type Source interface {
	io.ReaderAt
	// Size is the file's length in bytes.
	Size() int64
	// Stream reads the file sequentially from the start (compressed raw
	// images).
	Stream(ctx context.Context) (io.ReadCloser, error)
}

// Options tune a write.
type Options struct {
	// DiskFormat is image_info's disk_format ("raw", "qcow2" or empty):
	// when set, the detected format must agree.
	DiskFormat string
	// Workers is the number of parallel read/write workers (default 8).
	Workers int
	// ChunkSize is the unit of parallel work in bytes (default 4 MiB).
	ChunkSize int64
	// BeforeWrite, if set, runs once the image has been vetted (format,
	// features, size) and before the first byte is written: the place to
	// wipe the disk's old metadata, so that a refused image leaves the
	// disk untouched.
	BeforeWrite func(ctx context.Context) error
	// Check, if set, runs once the image has been vetted and before
	// BeforeWrite, with the image's virtual disk (what will land on the
	// device, readable before a byte is written) and its size; a
	// compressed stream cannot be read ahead, so it gets (nil, -1). An
	// error refuses the image with the disk untouched: the place to check
	// that partitions to be added after the image will fit.
	Check func(ctx context.Context, disk io.ReaderAt, size int64) error
	// Limit, if positive, is how many bytes of the device the image may
	// cover: what lies beyond (an ephemeral partition kept across a
	// rebuild) is never written. A larger image is refused before the
	// write, a compressed stream as soon as it passes the limit.
	Limit int64
	Log   *slog.Logger
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = max(8, 2*runtime.GOMAXPROCS(0))
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 4 << 20
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Result describes a finished write.
type Result struct {
	// Format is the file's format; Inner the format inside a compressed
	// stream (raw).
	Format Format `json:"format"`
	Inner  Format `json:"inner_format,omitempty"`
	// SourceBytes is the image file's size, ImageBytes its virtual size
	// (what lands on the disk).
	SourceBytes int64 `json:"source_bytes"`
	ImageBytes  int64 `json:"image_bytes"`
	// WrittenBytes were written as data, ZeroedBytes zeroed (zero extents,
	// all-zero chunks).
	WrittenBytes int64         `json:"written_bytes"`
	ZeroedBytes  int64         `json:"zeroed_bytes"`
	Duration     time.Duration `json:"duration_ns"`
}

// Write writes the image in src onto dev, which must be at least as large
// as the image (a regular file standing in for a disk is grown), and
// flushes it. The caller then verifies the source's checksum and, only if
// it matches, calls Finish; a disk whose image failed verification must be
// treated as garbage (and wiped).
func Write(ctx context.Context, src Source, dev *blockdev.Device, o Options) (*Result, error) {
	o.defaults()
	start := time.Now()
	res := &Result{SourceBytes: src.Size()}
	header, err := readHeader(src, src.Size())
	if err != nil {
		return nil, err
	}
	res.Format = Detect(header)
	w := &writer{dst: dev, workers: o.Workers, chunk: o.ChunkSize, prog: progress.From(ctx), counters: &counters{}}

	switch {
	case res.Format == QCOW2:
		if err := checkDiskFormat(o.DiskFormat, res.Format, ""); err != nil {
			return nil, err
		}
		img, err := openQCOW2(src, header, src.Size())
		if err != nil {
			return nil, err
		}
		defer img.Close()
		res.ImageBytes = img.Size()
		if err := fit(dev, res.ImageBytes, o.Limit); err != nil {
			return nil, err
		}
		if err := check(ctx, o, img, res.ImageBytes); err != nil {
			return nil, err
		}
		if err := before(ctx, o); err != nil {
			return nil, err
		}
		o.Log.Info("writing qcow2 image", "device", dev.Path(), "virtual_size", res.ImageBytes, "file_size", res.SourceBytes, "workers", o.Workers)
		w.prog.SetPhase("write", res.ImageBytes)
		if err := w.copyExtents(ctx, qcow2Extents{img}, res.ImageBytes); err != nil {
			return nil, fmt.Errorf("write qcow2 image to %s: %w", dev.Path(), err)
		}

	case res.Format.Compressed():
		rc, err := src.Stream(ctx)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		counted := &countingReader{r: rc, prog: w.prog}
		w.prog = nil // progress counts compressed input, not output
		prog := counted.prog
		zr, err := streamReader(res.Format, counted)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedImage, err)
		}
		defer zr.Close()
		br := bufio.NewReaderSize(zr, headerSize)
		peek, err := br.Peek(headerSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s stream: %w", res.Format, err)
		}
		res.Inner = Detect(peek)
		if res.Inner == QCOW2 {
			return nil, fmt.Errorf("%w: the image is a qcow2 inside %s; a qcow2 cannot be streamed out of a compressed file — publish the qcow2 uncompressed (qemu-img convert -c compresses it internally) or a compressed raw image", ErrUnsupportedImage, res.Format)
		}
		if err := checkDiskFormat(o.DiskFormat, res.Format, res.Inner); err != nil {
			return nil, err
		}
		limit := dev.Size()
		if !dev.IsBlockDevice() {
			limit = -1
		}
		if o.Limit > 0 && (limit < 0 || o.Limit < limit) {
			limit = o.Limit
		}
		if err := check(ctx, o, nil, -1); err != nil {
			return nil, err
		}
		if err := before(ctx, o); err != nil {
			return nil, err
		}
		o.Log.Info("writing compressed raw image", "device", dev.Path(), "compression", res.Format, "file_size", res.SourceBytes, "workers", o.Workers)
		// The stream's decompressed size is unknown up front; progress
		// follows the compressed bytes consumed.
		prog.SetPhase("write", res.SourceBytes)
		n, err := w.copyStream(ctx, br, limit)
		if err != nil {
			return nil, fmt.Errorf("write %s-compressed image to %s: %w", res.Format, dev.Path(), err)
		}
		res.ImageBytes = n
		prog.Complete()

	default:
		if err := checkDiskFormat(o.DiskFormat, res.Format, ""); err != nil {
			return nil, err
		}
		res.ImageBytes = src.Size()
		if err := fit(dev, res.ImageBytes, o.Limit); err != nil {
			return nil, err
		}
		if err := check(ctx, o, src, res.ImageBytes); err != nil {
			return nil, err
		}
		if err := before(ctx, o); err != nil {
			return nil, err
		}
		o.Log.Info("writing raw image", "device", dev.Path(), "size", res.ImageBytes, "workers", o.Workers)
		w.prog.SetPhase("write", res.ImageBytes)
		if err := w.copyExtents(ctx, rawExtents{src}, res.ImageBytes); err != nil {
			return nil, fmt.Errorf("write raw image to %s: %w", dev.Path(), err)
		}
	}
	res.WrittenBytes = w.counters.written.Load()
	res.ZeroedBytes = w.counters.zeroed.Load()
	if err := dev.Flush(); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

func check(ctx context.Context, o Options, disk io.ReaderAt, size int64) error {
	if o.Check == nil {
		return nil
	}
	return o.Check(ctx, disk, size)
}

func before(ctx context.Context, o Options) error {
	if o.BeforeWrite == nil {
		return nil
	}
	return o.BeforeWrite(ctx)
}

// Finish makes a disk written by Write (and verified) consistent: the
// GPT's backup header moved to the disk's real end (a whole-disk image is
// usually smaller than the disk), everything flushed past every cache,
// partitions re-read. Write has flushed the image already, and FixGPT
// reads through the same file, so one flush at the end suffices.
func Finish(ctx context.Context, dev *blockdev.Device) error {
	if err := FixGPT(dev); err != nil {
		return err
	}
	if err := dev.Flush(); err != nil {
		return err
	}
	return dev.RereadPartitions(ctx)
}

// fit checks that an image of size bytes fits dev, and the first limit
// bytes of it if limit is positive, growing a regular file.
func fit(dev *blockdev.Device, size, limit int64) error {
	if size < 0 {
		return fmt.Errorf("%w: image size unknown", ErrUnsupportedImage)
	}
	if limit > 0 && size > limit {
		return fmt.Errorf("%w: the image is %d bytes (%.1f GiB) but only the first %d bytes (%.1f GiB) of %s may be written: what follows is kept",
			ErrTooLarge, size, gib(size), limit, gib(limit), dev.Path())
	}
	if dev.IsBlockDevice() {
		if size > dev.Size() {
			return fmt.Errorf("%w: the image is %d bytes (%.1f GiB) but %s has only %d bytes (%.1f GiB)", ErrTooLarge, size, gib(size), dev.Path(), dev.Size(), gib(dev.Size()))
		}
		return nil
	}
	if size > dev.Size() {
		return dev.Truncate(size)
	}
	return nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// openQCOW2 vets the header and opens the image.
func openQCOW2(src io.ReaderAt, header []byte, fileSize int64) (image.Image, error) {
	h, err := parseQCOW2Header(header)
	if err != nil {
		return nil, err
	}
	if err := h.vet(fileSize); err != nil {
		return nil, err
	}
	// Hide src's Close (the image's Close would close it; the caller owns
	// it and still needs it to finish the checksum) and its Name (so the
	// reader can never resolve a backing file on the local filesystem).
	img, err := qcow2reader.OpenWithType(struct{ io.ReaderAt }{src}, qcow2.Type)
	if err != nil {
		return nil, fmt.Errorf("%w: open qcow2: %v", ErrUnsupportedImage, err)
	}
	if err := img.Readable(); err != nil {
		img.Close()
		return nil, fmt.Errorf("%w: qcow2: %v", ErrUnsupportedImage, err)
	}
	if img.Size() <= 0 {
		img.Close()
		return nil, fmt.Errorf("%w: qcow2 virtual size %d", ErrUnsupportedImage, img.Size())
	}
	return img, nil
}

type qcow2Extents struct{ image.Image }

// maxExtentQuery bounds one Extent call: the reader walks the range
// cluster by cluster, so an unbounded query over a (claimed) petabyte of
// unallocated space would spin for hours before returning.
const maxExtentQuery = 1 << 30

func (q qcow2Extents) next(off, size int64) (int64, bool, error) {
	e, err := q.Extent(off, min(size-off, maxExtentQuery))
	if err != nil {
		return 0, false, err
	}
	if e.Start != off {
		return 0, false, fmt.Errorf("extent starts at %d, not %d", e.Start, off)
	}
	if e.Length <= 0 || e.Length > size-off {
		return 0, false, fmt.Errorf("extent of %d bytes at %d does not fit the %d-byte image", e.Length, off, size)
	}
	return e.Length, e.Zero || !e.Allocated, nil
}

type rawExtents struct{ io.ReaderAt }

func (rawExtents) next(off, size int64) (int64, bool, error) { return size - off, false, nil }

// countingReader feeds progress with the compressed bytes consumed.
type countingReader struct {
	r    io.Reader
	prog *progress.Tracker
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.prog.Add(int64(n))
	return n, err
}
