package imagewrite

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/lima-vm/go-qcow2reader/image/qcow2"
	"github.com/ulikunitz/xz"
)

// qcow2 compressed clusters.
//
// go-qcow2reader opens a fresh decompressor for every compressed cluster
// and returns whatever one Read of it yields. Both hurt: a new flate reader
// allocates ~40 KiB of tables per 64 KiB cluster, and flate hands out its
// output in window-sized pieces, so a short first Read makes the reader
// decompress the same cluster again from the start to skip what it already
// has. We register decompressors that read the whole compressed cluster in
// one ReadAt (one lookup in the source's block cache instead of sixteen
// 4 KiB reads), decode it with a pooled decoder, and fill every Read
// completely: one decompression per cluster, no per-cluster allocation.
//
// Decoding is driven by the reader's Reads, never ahead of them: the
// descriptor's compressed length is an upper bound that runs into the next
// cluster's bytes, and a zstd cluster may be several frames (qemu's
// qcow2_zstd_decompress loops until the cluster is full), so "decode
// everything in the buffer" would decode garbage.

// maxCluster is the largest qcow2 cluster (cluster_bits 21).
const maxCluster = 2 << 20

var inPool = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// decoder is a pooled, resettable decompressor.
type decoder interface {
	io.Reader
	reset(r io.Reader) error
}

type flateDecoder struct{ io.ReadCloser }

func (f flateDecoder) reset(r io.Reader) error { return f.ReadCloser.(flate.Resetter).Reset(r, nil) }

type zstdDecoder struct{ *zstd.Decoder }

func (z zstdDecoder) reset(r io.Reader) error { return z.Reset(r) }

var (
	flatePool = sync.Pool{New: func() any { return flateDecoder{flate.NewReader(bytes.NewReader(nil))} }}
	zstdPool  = sync.Pool{New: func() any {
		// Synchronous (concurrency 1): parallelism comes from the
		// writer's workers, one cluster each.
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxCluster*4))
		if err != nil {
			panic(fmt.Sprintf("zstd decoder: %v", err)) // only on invalid options
		}
		return zstdDecoder{d}
	}}
)

func init() {
	qcow2.SetDecompressor(qcow2.CompressionTypeZlib, func(r io.Reader) (io.ReadCloser, error) {
		return openCluster(r, &flatePool)
	})
	qcow2.SetDecompressor(qcow2.CompressionTypeZstd, func(r io.Reader) (io.ReadCloser, error) {
		return openCluster(r, &zstdPool)
	})
}

// openCluster reads the compressed cluster that r (an *io.SectionReader
// over the image, sized to the cluster's maximum compressed length) holds
// and returns a reader of its decompressed bytes.
func openCluster(r io.Reader, pool *sync.Pool) (io.ReadCloser, error) {
	bp := inPool.Get().(*[]byte)
	var in []byte
	if sr, ok := r.(*io.SectionReader); ok && sr.Size() <= 2*maxCluster {
		if cap(*bp) < int(sr.Size()) {
			*bp = make([]byte, sr.Size())
		}
		n, err := sr.ReadAt((*bp)[:sr.Size()], 0)
		// The last cluster of a file may end before the upper bound.
		if err != nil && err != io.EOF {
			inPool.Put(bp)
			return nil, fmt.Errorf("read compressed cluster: %w", err)
		}
		in = (*bp)[:n]
	} else {
		b, err := io.ReadAll(io.LimitReader(r, 2*maxCluster))
		if err != nil {
			inPool.Put(bp)
			return nil, fmt.Errorf("read compressed cluster: %w", err)
		}
		in = b
	}
	d := pool.Get().(decoder)
	if err := d.reset(bytes.NewReader(in)); err != nil {
		pool.Put(d)
		inPool.Put(bp)
		return nil, fmt.Errorf("decompress cluster: %w", err)
	}
	return &clusterReader{d: d, pool: pool, in: bp}, nil
}

type clusterReader struct {
	d    decoder
	pool *sync.Pool
	in   *[]byte
}

// Read fills p completely when the cluster has that much, so the qcow2
// reader never comes back for the rest.
func (c *clusterReader) Read(p []byte) (int, error) {
	if c.d == nil {
		return 0, io.ErrClosedPipe
	}
	n, err := io.ReadFull(c.d, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (c *clusterReader) Close() error {
	if c.d != nil {
		c.pool.Put(c.d)
		inPool.Put(c.in)
		c.d, c.in = nil, nil
	}
	return nil
}

// Stream decompression for raw images published compressed.

// streamReader wraps a compressed stream.
func streamReader(f Format, r io.Reader) (io.ReadCloser, error) {
	switch f {
	case Gzip:
		// klauspost's gzip is a drop-in for compress/gzip and about
		// twice as fast at inflating; multistream (pigz, concatenated
		// members) is handled.
		zr, err := gzip.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderLowmem(false), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case XZ:
		zr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(zr), nil
	}
	return nil, fmt.Errorf("%s is not a stream compression", f)
}

// maxZstdWindow bounds the memory a zstd stream may demand. zstd -19 uses
// 8 MiB windows and --ultra -22 or --long=27 128 MiB; anything larger
// would not fit the agent's memory budget on a small machine.
const maxZstdWindow = 128 << 20
