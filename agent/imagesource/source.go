// Package imagesource opens the bytes of an image, from an http(s) URL or a
// local file, for the agent's image pipeline.
//
// A Source offers two ways in:
//
//   - ReadAt, an io.ReaderAt for qcow2 (lima-vm/go-qcow2reader), backed for
//     HTTP by Range requests into a bounded block cache with readahead, so
//     that 64 KiB cluster reads from several workers become a few large
//     requests instead of one request each, and so that a multi-GiB image
//     never has to fit in the ramdisk's memory (reference/ironic.md §4.5-4.6
//     is what IPA does instead: download to /tmp, i.e. RAM);
//   - Stream, a sequential io.ReadCloser from offset 0 for raw and
//     compressed images, which works with servers that ignore Range.
//
// Both survive dropped connections and 5xx answers by asking again for the
// missing remainder only, and both report truncation as io.ErrUnexpectedEOF
// with the URL and offsets.
//
// The checksum Ironic gives covers the published file, but a qcow2 reader
// reads it out of order. So a Source feeds an optional hash.Hash with every
// byte of the file exactly once, in file order: a background hasher hashes
// blocks as soon as the block at the hash cursor is in the cache, whoever
// fetched it. Blocks ahead of the cursor stay cached until hashed; readers
// that find the cache full of them wait while the hasher can free room by
// itself, and otherwise evict them, in which case the hasher (or, at the
// end, FinishHash) reads them from the server again. Memory stays bounded
// by Options.CacheSize; Stats reports what the bound cost in re-fetched
// bytes (none when the readers' working set fits in the cache).
package imagesource

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Options.
const (
	// DefaultBlockSize is the unit of HTTP Range requests and of the cache:
	// large enough that request overhead is small next to the transfer on a
	// LAN, small enough that 8 readers in 8 regions fit in the cache.
	DefaultBlockSize = 2 << 20
	// DefaultCacheSize bounds the block buffers of one Source.
	DefaultCacheSize = 64 << 20
	// DefaultReadahead is both how many blocks ahead of a sequential reader
	// are prefetched and how many prefetches run at once.
	DefaultReadahead = 4
	// DefaultRequestTimeout is how long a request may go without response
	// headers or body bytes (IPA's image_download_connection_timeout).
	DefaultRequestTimeout = 60 * time.Second
	// DefaultAttempts is how many attempts in a row may fail without
	// progress before a read gives up.
	DefaultAttempts = 5
	// DefaultRetryDelay is the first pause after a failure without progress;
	// it doubles on each further failure, up to maxRetryDelay.
	DefaultRetryDelay = time.Second

	maxRetryDelay = 10 * time.Second
)

// UserAgent is sent with every request.
const UserAgent = "ironlite-agent"

// Options configures Open. The zero value is usable.
type Options struct {
	// Hash, when set, is fed every byte of the file exactly once, in order;
	// FinishHash returns its sum.
	Hash hash.Hash

	// HTTPClient is used as is when set (CABundle, InsecureSkipVerify,
	// Proxies and NoProxy are then ignored); it should have no overall
	// Timeout, which would cut long streams. Otherwise Open builds one with
	// NewHTTPClient and closes its idle connections on Close.
	HTTPClient *http.Client
	// CABundle is a PEM file of CA certificates trusted in addition to the
	// system ones.
	CABundle string
	// InsecureSkipVerify disables TLS verification (an operator's choice for
	// a lab; ipa-insecure).
	InsecureSkipVerify bool
	// Proxies maps a URL scheme ("http", "https") to a proxy URL, as IPA's
	// image_info "proxies". Empty means the environment's proxies.
	Proxies map[string]string
	// NoProxy lists hosts not to proxy, as image_info "no_proxy" and
	// NO_PROXY.
	NoProxy string

	// RequestTimeout is how long a request may go without progress
	// (DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Attempts is how many attempts in a row may fail without progress
	// (DefaultAttempts). A 4xx answer, a TLS failure or a server that
	// ignores Range is not retried.
	Attempts int
	// RetryDelay is the first pause between attempts (DefaultRetryDelay).
	RetryDelay time.Duration

	// BlockSize is the size of a Range request and cache block
	// (DefaultBlockSize).
	BlockSize int64
	// CacheSize bounds the memory of cached blocks (DefaultCacheSize); at
	// least one block is always allowed, and hashing uses one more 256 KiB
	// buffer. Give it room for the readers' working set: for convert-style
	// readers (workers each taking the next segment), twice workers ×
	// segment size. Otherwise blocks are evicted before they are hashed and
	// fetched twice: 8 workers with qcow2reader's default 32 MiB segments
	// need 512 MiB; with 4 MiB segments the default fits.
	CacheSize int64
	// Readahead is how many blocks ahead of a sequential reader are
	// prefetched (at most 16), and how many prefetches may run at once
	// (DefaultReadahead); negative disables readahead.
	Readahead int

	// Logger receives retries (slog.Default when nil).
	Logger *slog.Logger
}

// Stats are counters of a Source, for logs and benchmarks.
type Stats struct {
	Requests       int64 // HTTP requests sent, retries included
	Retries        int64 // requests repeated or resumed after a failure
	BytesFetched   int64 // body bytes received (bytes read, for a local file)
	BytesRefetched int64 // part of BytesFetched already fetched once before
	CacheHits      int64 // ReadAt blocks found in the cache or in flight
	CacheMisses    int64 // ReadAt blocks fetched on demand
	Prefetches     int64 // blocks fetched by readahead
	CacheBytes     int64 // memory held by block buffers now
	MaxCacheBytes  int64 // peak of CacheBytes
	BytesHashed    int64 // bytes fed to Options.Hash so far
}

// ErrRangeNotSupported is wrapped by errors caused by a server that answers
// a Range request with the whole file.
var ErrRangeNotSupported = errors.New("server does not support HTTP Range requests")

// ErrClosed is wrapped by reads after Close.
var ErrClosed = errors.New("image source closed")

// Source is an opened image. Its methods are safe for concurrent use.
type Source struct {
	url  string // as given to Open
	name string
	size int64 // -1 when unknown (a server without Range that sends no length)

	ctx    context.Context // the Source's lifetime; cancelled by Close
	cancel context.CancelFunc
	log    *slog.Logger

	file *os.File // local files
	rem  *remote  // http(s)
	c    *cache   // http(s), when Range works

	hash  hashState
	stats counters
	wg    sync.WaitGroup // background goroutines (hasher, prefetches)

	closeOnce sync.Once
	closeErr  error
}

// hashState is the in-order hashing cursor.
type hashState struct {
	mu    sync.Mutex
	h     hash.Hash
	upTo  int64        // bytes [0, upTo) have been fed to h; guarded by mu
	upToA atomic.Int64 // copy of upTo readable without mu
	eof   bool         // a feeding stream reached a clean end of file; guarded by mu
	sum   []byte       // set once FinishHash succeeded; guarded by mu
	buf   []byte       // for reading ranges straight into the hash; guarded by mu
}

type counters struct {
	requests, retries, fetched, refetched, hits, misses, prefetches,
	cacheBytes, maxCacheBytes atomic.Int64
}

// Open opens src: an http(s) URL, a file:// URL or a local path. For HTTP it
// sends one small Range request to learn the size and whether the server
// honours Range. ctx bounds the whole life of the Source: cancelling it
// aborts reads in progress, as Close does.
func Open(ctx context.Context, src string, o Options) (*Source, error) {
	o = o.withDefaults()
	s := &Source{url: src, size: -1, log: o.Logger}
	s.hash.h = o.Hash
	lifetime, cancel := context.WithCancelCause(ctx)
	s.ctx, s.cancel = lifetime, func() { cancel(errClosing) }

	var err error
	switch lower := strings.ToLower(src); {
	case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "https://"):
		var u *url.URL
		if u, err = url.Parse(src); err != nil {
			err = fmt.Errorf("image URL %q: %w", src, err)
			break
		}
		s.name = path.Base(u.Path)
		err = s.openRemote(o)
	case strings.HasPrefix(lower, "file://"):
		var u *url.URL
		if u, err = url.Parse(src); err != nil {
			err = fmt.Errorf("image URL %q: %w", src, err)
			break
		}
		err = s.openLocal(u.Path)
	case strings.Contains(src, "://"):
		err = fmt.Errorf("image %q: unsupported URL scheme (want http, https, file or a path)", src)
	default:
		err = s.openLocal(src)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (o Options) withDefaults() Options {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Readahead == 0 {
		o.Readahead = DefaultReadahead
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (s *Source) openLocal(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("open image %s: not a regular file", name)
	}
	s.file, s.size, s.name = f, fi.Size(), filepath.Base(name)
	return nil
}

// URL returns the source as given to Open.
func (s *Source) URL() string { return s.url }

// Name returns the image's file name: the last element of its URL path or
// file path ("ubuntu.qcow2"), which checksum files list it under.
func (s *Source) Name() string { return s.name }

// Size returns the size of the file in bytes, or -1 when a server without
// Range support did not announce it.
func (s *Source) Size() int64 { return s.size }

// RangeSupported reports whether ReadAt can work: always for local files,
// for HTTP when the server honours Range requests.
func (s *Source) RangeSupported() bool { return s.rem == nil || s.rem.rangeOK }

// Stats returns a snapshot of the counters.
func (s *Source) Stats() Stats {
	return Stats{
		Requests:       s.stats.requests.Load(),
		Retries:        s.stats.retries.Load(),
		BytesFetched:   s.stats.fetched.Load(),
		BytesRefetched: s.stats.refetched.Load(),
		CacheHits:      s.stats.hits.Load(),
		CacheMisses:    s.stats.misses.Load(),
		Prefetches:     s.stats.prefetches.Load(),
		CacheBytes:     s.stats.cacheBytes.Load(),
		MaxCacheBytes:  s.stats.maxCacheBytes.Load(),
		BytesHashed:    s.hash.upToA.Load(),
	}
}

// ReadAt implements io.ReaderAt. Reads past the end return io.EOF with the
// bytes before it, as io.ReaderAt wants.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, s.closedErr(err)
	}
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", s.url, off)
	}
	if s.size >= 0 && off >= s.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if s.size >= 0 && int64(len(p)) > s.size-off {
		want = p[:s.size-off]
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.readAtLocal(want, off)
	} else {
		n, err = s.readAtRemote(want, off)
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// closedErr describes a read refused because the Source's context ended.
func (s *Source) closedErr(err error) error {
	if context.Cause(s.ctx) == errClosing {
		err = ErrClosed
	}
	return fmt.Errorf("read %s: %w", s.url, err)
}

// errClosing is the cancellation cause of a Source's context set by Close.
var errClosing = errors.New("closing")

// Stream returns a sequential reader of the whole file from offset 0. It
// feeds Options.Hash as it reads (bytes already hashed are skipped), and an
// HTTP stream resumes after a dropped connection with a Range request from
// where it stopped. Closing it does not close the Source.
func (s *Source) Stream(ctx context.Context) (io.ReadCloser, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, s.closedErr(err)
	}
	if s.file != nil {
		return &localStream{s: s, r: io.NewSectionReader(s.file, 0, s.size)}, nil
	}
	return s.newStream(ctx, 0, s.size, true), nil
}

// feed hashes the part of p (the file bytes at off) beyond the hash cursor,
// if p reaches it.
func (s *Source) feed(off int64, p []byte) {
	if s.hash.h == nil {
		return
	}
	s.hash.mu.Lock()
	s.feedLocked(off, p)
	s.hash.mu.Unlock()
	if s.c != nil {
		s.c.wake() // readers may wait on the cursor
	}
}

func (s *Source) feedLocked(off int64, p []byte) {
	h := &s.hash
	end := off + int64(len(p))
	if off <= h.upTo && end > h.upTo {
		h.h.Write(p[h.upTo-off:])
		h.upTo = end
		h.upToA.Store(end)
	}
}

// FinishHash reads whatever part of the file has not been hashed yet, in
// order, and returns the sum of Options.Hash over the whole file. Call it
// once the consumer is done; it may be called again and returns the same
// sum.
func (s *Source) FinishHash(ctx context.Context) ([]byte, error) {
	if s.hash.h == nil {
		return nil, errors.New("imagesource: FinishHash without Options.Hash")
	}
	if err := s.ctx.Err(); err != nil {
		return nil, s.closedErr(err)
	}
	s.hash.mu.Lock()
	defer s.hash.mu.Unlock()
	if s.hash.sum != nil {
		return s.hash.sum, nil
	}
	var err error
	switch {
	case s.file != nil:
		err = s.finishLocal(ctx)
	case s.size < 0:
		// Size unknown: only a stream read to its end tells where the
		// file ends; re-read from the start otherwise.
		if !s.hash.eof {
			err = s.finishRemote(ctx)
		}
	default:
		err = s.finishRemote(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", s.url, err)
	}
	s.hash.sum = s.hash.h.Sum(nil)
	return s.hash.sum, nil
}

// Close stops background work, waits for it, and releases the cache, the
// file and (when Open built the HTTP client) idle connections.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		if s.c != nil {
			s.c.mu.Lock()
			s.c.closed = true
			s.c.mu.Unlock()
		}
		s.cancel()
		s.wg.Wait()
		if s.c != nil {
			s.c.release()
		}
		if s.rem != nil && s.rem.ownClient {
			s.rem.client.CloseIdleConnections()
		}
		if s.file != nil {
			s.closeErr = s.file.Close()
		}
	})
	return s.closeErr
}
