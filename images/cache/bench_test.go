package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkServe4Readers measures what a deploy of four machines at once
// costs the controller: four agents reading disjoint quarters of one cached
// image with Range requests over loopback HTTP. It reports the aggregate
// MB/s and the ratio to reading the same file locally (one sequential read
// through the page cache), i.e. how much of the disk/page-cache speed the
// HTTP path keeps. Size: 256 MiB, or IRONLITE_BENCH_SIZE bytes (e.g.
// 1073741824 for 1 GiB).
func BenchmarkServe4Readers(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("IRONLITE_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 4 {
			b.Fatalf("IRONLITE_BENCH_SIZE=%q: want a byte count", s)
		}
		size = n
	}
	src := filepath.Join(b.TempDir(), "image.raw")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for left := size; left > 0; {
		n := min(left, int64(len(chunk)))
		chunk[0]++ // not all-equal blocks
		f.Write(chunk[:n])
		h.Write(chunk[:n])
		left -= n
	}
	f.Close()
	sum := hex.EncodeToString(h.Sum(nil))
	c, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	e, err := c.Import(context.Background(), image("file://"+src, sum, size), nil)
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(src)

	// Local baseline: one sequential read of the cached file.
	localStart := time.Now()
	lf, err := os.Open(e.Path)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(io.Discard, lf, buf); err != nil {
		b.Fatal(err)
	}
	lf.Close()
	localMBs := float64(size) / 1e6 / time.Since(localStart).Seconds()

	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	url := srv.URL + "/images/" + sum + "/image.raw"
	quarter := size / 4

	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range int64(4) {
			wg.Go(func() {
				first, last := i*quarter, (i+1)*quarter-1
				if i == 3 {
					last = size - 1
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
				resp, err := client.Do(req)
				if err != nil {
					errs[i] = err
					return
				}
				defer resp.Body.Close()
				n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 1<<20))
				if err == nil && (resp.StatusCode != http.StatusPartialContent || n != last-first+1) {
					err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	httpMBs := float64(size) * float64(b.N) / 1e6 / time.Since(start).Seconds()
	b.ReportMetric(httpMBs, "MB/s-http")
	b.ReportMetric(localMBs, "MB/s-local")
	b.ReportMetric(httpMBs/localMBs, "ratio")
}
