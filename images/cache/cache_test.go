package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlite/ironlite/images/catalog"
)

func payload(n int) ([]byte, string) {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	d := sha256.Sum256(b)
	return b, hex.EncodeToString(d[:])
}

// flaky serves data with Range support; while cuts > 0 it drops the
// connection after cutAfter bytes of a response.
type flaky struct {
	data     []byte
	cuts     atomic.Int32
	cutAfter int
	gets     atomic.Int32
	ranges   []string
	mu       sync.Mutex
	gate     chan struct{} // if set, responses wait for it
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.gets.Add(1)
	f.mu.Lock()
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	f.mu.Unlock()
	if f.gate != nil {
		<-f.gate
	}
	if f.cuts.Add(-1) >= 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(f.data[:f.cutAfter])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

func newCache(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.RetryDelay = time.Millisecond
	return c
}

func image(url, sum string, size int64) catalog.Image {
	return catalog.Image{Name: "disk.qcow2", Ref: "test:img", URL: url, DiskFormat: "qcow2", Size: size,
		Checksum: catalog.Checksum{Algo: "sha256", Value: sum}}
}

func assertEmpty(t *testing.T, c *Cache) {
	t.Helper()
	for _, d := range []string{"blobs", "partial"} {
		des, _ := os.ReadDir(filepath.Join(c.dir, d))
		if len(des) != 0 {
			t.Fatalf("%s not empty: %v", d, des)
		}
	}
}

func TestImport(t *testing.T) {
	data, sum := payload(3<<20 + 17)
	other, _ := payload(100)
	tests := []struct {
		name     string
		cuts     int32
		retries  int
		sum      string
		size     int64
		serve    []byte
		err      error
		keepPart bool
	}{
		{name: "ok", sum: sum, size: int64(len(data))},
		{name: "ok unknown size", sum: sum},
		{name: "resume after cut", cuts: 1, retries: 5, sum: sum, size: int64(len(data))},
		{name: "resume after 3 cuts", cuts: 3, retries: 5, sum: sum},
		{name: "tampered sha256", sum: strings.Repeat("a", 64), size: int64(len(data)), err: ErrChecksum},
		{name: "wrong size (metadata smaller)", sum: sum, size: int64(len(data)) - 1, err: ErrSize},
		{name: "wrong size (metadata larger)", sum: sum, size: int64(len(data)) + 1, err: ErrSize},
		{name: "tampered data", sum: sum, size: int64(len(data)), serve: append(append([]byte{}, data[:len(data)-100]...), other...), err: ErrChecksum},
		{name: "cut, no retries: partial kept", cuts: 1, retries: 0, sum: sum, size: int64(len(data)), err: io.ErrUnexpectedEOF, keepPart: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvData := data
			if tt.serve != nil {
				srvData = tt.serve
			}
			f := &flaky{data: srvData, cutAfter: 1 << 20}
			f.cuts.Store(tt.cuts)
			srv := httptest.NewServer(f)
			defer srv.Close()
			c := newCache(t, t.TempDir())
			c.Retries = tt.retries
			var last atomic.Int64
			e, err := c.Import(context.Background(), image(srv.URL+"/disk.qcow2", tt.sum, tt.size), func(done, total int64) { last.Store(done) })
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				t.Log(err)
				if tt.keepPart {
					st, err := os.Stat(c.partPath(tt.sum))
					if err != nil || st.Size() != 1<<20 {
						t.Fatalf("partial: %v %v", st, err)
					}
					return
				}
				assertEmpty(t, c)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(e.Path)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("blob differs (%v)", err)
			}
			if e.SHA256 != sum || e.Size != int64(len(data)) || e.Name != "disk.qcow2" || e.Ref != "test:img" || e.DiskFormat != "qcow2" || e.ImportedAt.IsZero() {
				t.Fatalf("entry %+v", e)
			}
			if last.Load() != int64(len(data)) {
				t.Fatalf("progress ended at %d", last.Load())
			}
			if tt.cuts > 0 {
				f.mu.Lock()
				rs := f.ranges
				f.mu.Unlock()
				if len(rs) != int(tt.cuts)+1 || rs[1] != "bytes=1048576-" {
					t.Fatalf("requests' ranges: %q", rs)
				}
			}
			// Persisted metadata survives a reopen.
			c2 := newCache(t, c.dir)
			e2, err := c2.Get(sum)
			if err != nil || e2.Name != e.Name || e2.Ref != e.Ref || !e2.ImportedAt.Equal(e.ImportedAt) {
				t.Fatalf("Get after reopen: %+v %v", e2, err)
			}
			if l, _ := c2.List(); len(l) != 1 || l[0].SHA256 != sum {
				t.Fatalf("List: %+v", l)
			}
			if des, _ := os.ReadDir(filepath.Join(c.dir, "partial")); len(des) != 0 {
				t.Fatalf("partial left: %v", des)
			}
		})
	}
}

// TestResumeAcrossRestart: a first process gets cut off and gives up; a
// second one (a new Cache on the same dir) asks only for the rest.
func TestResumeAcrossRestart(t *testing.T) {
	data, sum := payload(2<<20 + 5)
	f := &flaky{data: data, cutAfter: 1<<20 + 3}
	f.cuts.Store(1)
	srv := httptest.NewServer(f)
	defer srv.Close()
	dir := t.TempDir()
	c1 := newCache(t, dir)
	c1.Retries = 0
	if _, err := c1.Import(context.Background(), image(srv.URL, sum, 0), nil); err == nil {
		t.Fatal("first import succeeded")
	}
	c2 := newCache(t, dir)
	e, err := c2.Import(context.Background(), image(srv.URL, sum, int64(len(data))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.ranges[1] != "bytes=1048579-" {
		t.Fatalf("second request Range %q", f.ranges[1])
	}
	if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, data) {
		t.Fatal("blob differs")
	}
}

func TestImportFromFileAndExisting(t *testing.T) {
	data, sum := payload(1000)
	p := filepath.Join(t.TempDir(), "x.raw")
	os.WriteFile(p, data, 0o644)
	c := newCache(t, t.TempDir())
	img := image("file://"+p, sum, 1000)
	if _, err := c.Import(context.Background(), img, nil); err != nil {
		t.Fatal(err)
	}
	// Second import: no download (the file is gone), same entry.
	os.Remove(p)
	if e, err := c.Import(context.Background(), img, nil); err != nil || e.SHA256 != sum {
		t.Fatalf("%+v %v", e, err)
	}
	bad := img
	bad.Checksum.Algo = "md5"
	if _, err := c.Import(context.Background(), bad, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("md5: %v", err)
	}
}

func TestConcurrentImportsShareOneDownload(t *testing.T) {
	data, sum := payload(1 << 20)
	f := &flaky{data: data, gate: make(chan struct{})}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := newCache(t, t.TempDir())
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = c.Import(context.Background(), image(srv.URL, sum, int64(len(data))), nil)
		})
	}
	// Let every Import join before the server answers.
	for c.waiters(sum) < len(errs) {
		time.Sleep(time.Millisecond)
	}
	close(f.gate)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.gets.Load(); n != 1 {
		t.Fatalf("%d downloads", n)
	}
}

func (c *Cache) waiters(sha string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.inflight[sha]; cl != nil {
		return cl.waiters
	}
	return 0
}

func TestAcquireDelete(t *testing.T) {
	data, sum := payload(100)
	p := filepath.Join(t.TempDir(), "x.raw")
	os.WriteFile(p, data, 0o644)
	c := newCache(t, t.TempDir())
	if _, err := c.Import(context.Background(), image("file://"+p, sum, 100), nil); err != nil {
		t.Fatal(err)
	}
	r1, err := c.Acquire(sum)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := c.Acquire(sum)
	if err := c.Delete(sum); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "used by 2 deploy(s)") {
		t.Fatalf("Delete in use: %v", err)
	}
	r1()
	r1() // idempotent
	if err := c.Delete(sum); !errors.Is(err, ErrInUse) {
		t.Fatalf("Delete in use: %v", err)
	}
	r2()
	if err := c.Delete(sum); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, c)
	if err := c.Delete(sum); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete again: %v", err)
	}
	if _, err := c.Acquire(sum); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Acquire missing: %v", err)
	}
	if _, err := c.Get("../../etc/passwd"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Get traversal: %v", err)
	}
}

func TestHandler(t *testing.T) {
	data, sum := payload(10000)
	p := filepath.Join(t.TempDir(), "x.raw")
	os.WriteFile(p, data, 0o644)
	c := newCache(t, t.TempDir())
	if _, err := c.Import(context.Background(), image("file://"+p, sum, 10000), nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	etag := `"` + sum + `"`
	tests := []struct {
		name, path string
		hdr        map[string]string
		status     int
		body       []byte
		check      func(t *testing.T, r *http.Response, body []byte)
	}{
		{name: "full", path: "/images/" + sum, status: 200, body: data},
		{name: "full with name", path: "/images/" + sum + "/disk.qcow2", status: 200, body: data},
		{name: "single range", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=100-199"}, status: 206, body: data[100:200],
			check: func(t *testing.T, r *http.Response, _ []byte) {
				if cr := r.Header.Get("Content-Range"); cr != "bytes 100-199/10000" {
					t.Fatalf("Content-Range %q", cr)
				}
			}},
		{name: "suffix range", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=-10"}, status: 206, body: data[9990:]},
		{name: "multi range", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=0-9,5000-5009"}, status: 206,
			check: func(t *testing.T, r *http.Response, body []byte) {
				mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
				if err != nil || mt != "multipart/byteranges" {
					t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
				}
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				for _, want := range [][]byte{data[0:10], data[5000:5010]} {
					part, err := mr.NextPart()
					if err != nil {
						t.Fatal(err)
					}
					got, _ := io.ReadAll(part)
					if !bytes.Equal(got, want) {
						t.Fatalf("part %q: got %d bytes", part.Header.Get("Content-Range"), len(got))
					}
				}
			}},
		{name: "range past end", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=20000-"}, status: 416,
			check: func(t *testing.T, r *http.Response, _ []byte) {
				if cr := r.Header.Get("Content-Range"); cr != "bytes */10000" {
					t.Fatalf("Content-Range %q", cr)
				}
			}},
		{name: "garbage range", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=9-3"}, status: 416},
		{name: "if-none-match", path: "/images/" + sum, hdr: map[string]string{"If-None-Match": etag}, status: 304},
		{name: "if-range stale etag", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=0-0", "If-Range": `"other"`}, status: 200, body: data},
		{name: "if-range etag", path: "/images/" + sum, hdr: map[string]string{"Range": "bytes=0-0", "If-Range": etag}, status: 206, body: data[:1]},
		{name: "unknown sha", path: "/images/" + strings.Repeat("0", 64), status: 404},
		{name: "not a sha", path: "/images/..%2f..%2fetc%2fpasswd", status: 404},
		{name: "sidecar not served", path: "/images/" + sum + ".json", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Fatalf("body: %d bytes, want %d", len(body), len(tt.body))
			}
			// On 304 ServeContent drops Last-Modified, as RFC 9110 allows
			// when an ETag is sent.
			if resp.StatusCode < 300 && resp.Header.Get("Last-Modified") == "" {
				t.Fatal("no Last-Modified")
			}
			if resp.StatusCode < 300 || resp.StatusCode == 304 {
				if resp.Header.Get("ETag") != etag {
					t.Fatalf("ETag %q Last-Modified %q", resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"))
				}
			}
			if tt.check != nil {
				tt.check(t, resp, body)
			}
		})
	}
}

// TestDeleteWhileServing: a response in flight keeps streaming after the
// entry is deleted, and holds no lock that would block Delete.
func TestDeleteWhileServing(t *testing.T) {
	data, sum := payload(8 << 20)
	p := filepath.Join(t.TempDir(), "x.raw")
	os.WriteFile(p, data, 0o644)
	c := newCache(t, t.TempDir())
	if _, err := c.Import(context.Background(), image("file://"+p, sum, int64(len(data))), nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/images/" + sum)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(sum); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Fatalf("stream broken after delete: %v", err)
	}
}

// TestCancelOneWaiter: a caller that gives up does not fail the shared
// download for the others.
func TestCancelOneWaiter(t *testing.T) {
	data, sum := payload(1 << 20)
	f := &flaky{data: data, gate: make(chan struct{})}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := newCache(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	impatient := make(chan error, 1)
	go func() {
		_, err := c.Import(ctx, image(srv.URL, sum, int64(len(data))), nil)
		impatient <- err
	}()
	patient := make(chan error, 1)
	go func() {
		_, err := c.Import(context.Background(), image(srv.URL, sum, int64(len(data))), nil)
		patient <- err
	}()
	for c.waiters(sum) < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-impatient; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient: %v", err)
	}
	close(f.gate)
	if err := <-patient; err != nil {
		t.Fatalf("patient: %v", err)
	}
}
