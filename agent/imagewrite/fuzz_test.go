package imagewrite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// memTarget is an in-memory disk of a fixed size.
type memTarget struct {
	mu  sync.Mutex
	buf []byte
}

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, fmt.Errorf("write beyond the %d-byte target at %d", len(m.buf), off)
	}
	return copy(m.buf[off:], p), nil
}

func (m *memTarget) ZeroRange(_ context.Context, off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+n > int64(len(m.buf)) {
		return fmt.Errorf("zero beyond the %d-byte target at %d", len(m.buf), off)
	}
	clear(m.buf[off : off+n])
	return nil
}

// fuzzMaxVirtual bounds the virtual size the fuzzer writes out; larger
// (fuzzed) sizes are still opened and mapped, which is where a malicious
// header would make the reader allocate or loop.
const fuzzMaxVirtual = 1 << 20

// FuzzQCOW2 feeds arbitrary bytes through the qcow2 path: header vetting,
// go-qcow2reader's parsing and our decompressors. It must never panic,
// and the vetting must keep allocations bounded (a header may claim any
// L1 size). Seeds are small images made by qemu-img: plain, zlib, zstd.
//
//	go test -fuzz FuzzQCOW2 -fuzztime 60s ./agent/imagewrite
func FuzzQCOW2(f *testing.F) {
	for _, seed := range qcow2Seeds(f) {
		f.Add(seed)
	}
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		header, err := readHeader(src, int64(len(data)))
		if err != nil || Detect(header) != QCOW2 {
			return
		}
		img, err := openQCOW2(src, header, int64(len(data)))
		if err != nil {
			return
		}
		defer img.Close()
		size := img.Size()
		w := &writer{dst: &memTarget{buf: make([]byte, min(size, fuzzMaxVirtual))}, workers: 2, chunk: 64 << 10, counters: &counters{}}
		if size > fuzzMaxVirtual {
			// Map the extents only.
			for off, n := int64(0), 0; off < size && n < 4096; n++ {
				l, _, err := qcow2Extents{img}.next(off, size)
				if err != nil || l <= 0 {
					return
				}
				off += l
			}
			return
		}
		_ = w.copyExtents(context.Background(), qcow2Extents{img}, size)
	})
}

func qcow2Seeds(f *testing.F) [][]byte {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return nil
	}
	dir := f.TempDir()
	raw := filepath.Join(dir, "seed.raw")
	data := bytes.Repeat([]byte("ironlite fuzz seed "), 600)
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		f.Fatal(err)
	}
	var seeds [][]byte
	for i, args := range [][]string{
		{"-O", "qcow2", "-o", "cluster_size=512"},
		{"-O", "qcow2", "-c", "-o", "cluster_size=512"},
		{"-O", "qcow2", "-c", "-o", "cluster_size=512,compression_type=zstd"},
	} {
		out := filepath.Join(dir, fmt.Sprintf("seed%d.qcow2", i))
		cmd := exec.Command("qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), raw, out)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			f.Fatalf("qemu-img: %v: %s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}
