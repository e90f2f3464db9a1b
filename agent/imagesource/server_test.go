package imagesource

import (
	"bytes"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// imageServer serves one file over loopback with http.ServeContent (which
// honours Range), with knobs for the failures a deploy meets in the field.
type imageServer struct {
	*httptest.Server
	data []byte

	// Knobs; set before the first request.
	useTLS     bool
	dropAfter  int64         // close the connection after this many body bytes of each response
	noRange    bool          // ignore Range: answer 200 with the whole file
	failFirst  int64         // answer the first failFirst requests with 500
	status     int           // answer every request with this status
	truncateAt int64         // the file ends here although its size is len(data); 0: off
	stallOnce  atomic.Bool   // the next response sends 1000 bytes, then nothing until the client gives up
	hang       chan struct{} // when set, block every request after the first until closed or the client leaves
	replaced   []byte        // when set, served instead of data after the first request

	requests atomic.Int64
	ranged   atomic.Int64
	served   atomic.Int64 // body bytes written
	mu       sync.Mutex
	ranges   []string
}

func newImageServer(t testing.TB, data []byte, configure func(*imageServer)) *imageServer {
	t.Helper()
	s := &imageServer{data: data}
	if configure != nil {
		configure(s)
	}
	s.Server = httptest.NewUnstartedServer(s)
	// Hijacked and cut connections make the server log; keep test output clean.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if s.useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

var errDropped = errors.New("connection dropped on purpose")

// dropWriter cuts the connection once a response has sent left bytes.
type dropWriter struct {
	http.ResponseWriter
	left    int64
	dropped bool
}

func (d *dropWriter) Write(p []byte) (int, error) {
	if d.dropped {
		return 0, errDropped
	}
	if int64(len(p)) <= d.left {
		d.left -= int64(len(p))
		return d.ResponseWriter.Write(p)
	}
	n, _ := d.ResponseWriter.Write(p[:d.left])
	d.left = 0
	d.dropped = true
	rc := http.NewResponseController(d.ResponseWriter)
	rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
	return n, errDropped
}

// stallWriter sends left bytes, then nothing until the client gives up.
type stallWriter struct {
	http.ResponseWriter
	left int64
	done <-chan struct{}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= s.left {
		s.left -= int64(len(p))
		return s.ResponseWriter.Write(p)
	}
	n, _ := s.ResponseWriter.Write(p[:s.left])
	s.left = 0
	http.NewResponseController(s.ResponseWriter).Flush()
	<-s.done
	return n, errDropped
}

func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
func (d *dropWriter) Unwrap() http.ResponseWriter  { return d.ResponseWriter }
func (c *countWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// countWriter counts body bytes.
type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// truncReader claims size bytes but fails reads past cut.
type truncReader struct {
	data      []byte
	size, cut int64
	off       int64
}

func (r *truncReader) Read(p []byte) (int, error) {
	if r.off >= r.cut {
		return 0, errors.New("truncated")
	}
	n := copy(p, r.data[r.off:r.cut])
	r.off += int64(n)
	return n, nil
}

func (r *truncReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		r.off = off
	case io.SeekCurrent:
		r.off += off
	case io.SeekEnd:
		r.off = r.size + off
	}
	return r.off, nil
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	if r.Header.Get("User-Agent") != UserAgent {
		http.Error(w, "bad user agent", http.StatusBadRequest)
		return
	}
	if s.status != 0 {
		http.Error(w, http.StatusText(s.status), s.status)
		return
	}
	if n <= s.failFirst {
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	if s.hang != nil && n > 1 {
		select {
		case <-s.hang:
		case <-r.Context().Done():
			return
		}
	}
	if s.noRange {
		r.Header.Del("Range")
	}
	if rg := r.Header.Get("Range"); rg != "" {
		s.ranged.Add(1)
		s.mu.Lock()
		s.ranges = append(s.ranges, rg)
		s.mu.Unlock()
	}
	var content io.ReadSeeker = bytes.NewReader(s.data)
	if s.replaced != nil && n > 1 {
		content = bytes.NewReader(s.replaced)
	}
	if s.truncateAt > 0 {
		content = &truncReader{data: s.data, size: int64(len(s.data)), cut: s.truncateAt}
	}
	w = &countWriter{ResponseWriter: w, n: &s.served}
	if s.dropAfter > 0 {
		w = &dropWriter{ResponseWriter: w, left: s.dropAfter}
	}
	if s.stallOnce.CompareAndSwap(true, false) {
		w = &stallWriter{ResponseWriter: w, left: 1000, done: r.Context().Done()}
	}
	http.ServeContent(w, r, "image", time.Time{}, content)
}

// noLeaks fails the test if goroutines started after before are still
// running a moment after the test's cleanup work.
func noLeaks(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		now := runtime.NumGoroutine()
		if now <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines before, %d after:\n%s", before, now, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
