package imagewrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/ironlite/ironlite/agent/progress"
)

// Target is where an image is written: a disk (agent/blockdev.Device) or
// anything that can write at offsets and make a range read back as zeroes.
type Target interface {
	io.WriterAt
	// ZeroRange makes [off, off+n) read back as zeroes. The writer calls it
	// for every zero or unallocated extent of the image: a dirty disk must
	// end byte-identical to the image, so zeroes are never "skipped".
	ZeroRange(ctx context.Context, off, n int64) error
}

// extents walks an image's virtual address space: for each run it tells
// whether the run reads as zeroes (no data needs to be read).
type extents interface {
	io.ReaderAt
	// next returns the run starting at off: its length and whether it is
	// known to be zero.
	next(off, size int64) (n int64, zero bool, err error)
}

// counters are shared by the workers; the Result is read from them.
type counters struct {
	written, zeroed atomic.Int64
}

// job is one piece of work for a worker: write buf (or read it from the
// image first when buf is nil) at off, or zero [off, off+n).
type job struct {
	off, n int64
	zero   bool
	buf    []byte
}

// writer copies an image onto a target with parallel workers.
type writer struct {
	dst      Target
	workers  int
	chunk    int64
	prog     *progress.Tracker
	counters *counters
}

// zeroes is compared against with bytes.Equal (memequal, vectorised).
var zeroes = make([]byte, 8<<20)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroes))
		if !bytes.Equal(b[:n], zeroes[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// put writes one chunk of data, zeroing instead when it is all zeroes (a
// raw image's empty space, a qcow2's allocated-but-zero clusters): zeroing
// is far cheaper than writing on devices that offload it, and keeps a
// file target sparse.
func (w *writer) put(ctx context.Context, buf []byte, off int64) error {
	if isZero(buf) {
		if err := w.dst.ZeroRange(ctx, off, int64(len(buf))); err != nil {
			return err
		}
		w.counters.zeroed.Add(int64(len(buf)))
	} else {
		if _, err := w.dst.WriteAt(buf, off); err != nil {
			return err
		}
		w.counters.written.Add(int64(len(buf)))
	}
	w.prog.Add(int64(len(buf)))
	return nil
}

// copyExtents writes size bytes of img to the target: the dispatcher walks
// the extents, data is read and written by w.workers goroutines, zero runs
// are zeroed in large pieces.
func (w *writer) copyExtents(ctx context.Context, img extents, size int64) error {
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan job, w.workers)
	g.Go(func() error {
		defer close(jobs)
		for off := int64(0); off < size; {
			n, zero, err := img.next(off, size)
			if err != nil {
				return fmt.Errorf("map image at offset %d: %w", off, err)
			}
			if n <= 0 {
				return fmt.Errorf("map image at offset %d: empty extent", off)
			}
			end := off + n
			for off < end {
				// Data is cut at chunk boundaries (aligned to the image,
				// hence to the device's sectors); zero runs go whole, up to
				// 1 GiB so progress keeps moving on huge sparse images.
				step := w.chunk - off%w.chunk
				if zero {
					step = max(step, min(1<<30, end-off))
				}
				step = min(step, end-off)
				select {
				case jobs <- job{off: off, n: step, zero: zero}:
				case <-ctx.Done():
					return ctx.Err()
				}
				off += step
			}
		}
		return nil
	})
	for range w.workers {
		g.Go(func() error {
			buf := make([]byte, w.chunk)
			for j := range jobs {
				if err := ctx.Err(); err != nil {
					return err // another worker failed, or the command was cancelled
				}
				if j.zero {
					if err := w.dst.ZeroRange(ctx, j.off, j.n); err != nil {
						return err
					}
					w.counters.zeroed.Add(j.n)
					w.prog.Add(j.n)
					continue
				}
				b := buf[:j.n]
				got, err := img.ReadAt(b, j.off)
				if err != nil && !(errors.Is(err, io.EOF) && int64(got) == j.n) {
					return fmt.Errorf("read image at offset %d (+%d): %w", j.off, j.n, err)
				}
				if err := w.put(ctx, b, j.off); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// copyStream writes a sequential stream (a decompressed raw image) to the
// target. Reading is necessarily sequential; writing is spread over the
// workers, with a bounded pool of buffers so memory stays at
// (workers+2) x chunk whatever the image size. It returns the stream's
// length.
func (w *writer) copyStream(ctx context.Context, r io.Reader, limit int64) (int64, error) {
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan job, w.workers)
	free := make(chan []byte, w.workers+2)
	for range cap(free) {
		free <- make([]byte, w.chunk)
	}
	var total int64
	g.Go(func() error {
		defer close(jobs)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			n, err := fill(r, buf)
			if n > 0 {
				if limit >= 0 && total+int64(n) > limit {
					return fmt.Errorf("%w: the decompressed image is larger than the %d bytes of the disk it may cover", ErrTooLarge, limit)
				}
				select {
				case jobs <- job{off: total, n: int64(n), buf: buf[:n]}:
				case <-ctx.Done():
					return ctx.Err()
				}
				total += int64(n)
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read image stream at offset %d: %w", total, err)
			}
		}
	})
	for range w.workers {
		g.Go(func() error {
			for j := range jobs {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := w.put(ctx, j.buf, j.off); err != nil {
					return err
				}
				free <- j.buf[:cap(j.buf)]
			}
			return nil
		})
	}
	err := g.Wait()
	return total, err
}

// ErrTooLarge is wrapped when the image does not fit the disk.
var ErrTooLarge = errors.New("image too large for the disk")

// fill reads until buf is full or the stream ends. Unlike io.ReadFull it
// reports a clean end as io.EOF even after a partial buffer, and passes a
// decompressor's io.ErrUnexpectedEOF (a truncated stream) through as the
// error it is.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
