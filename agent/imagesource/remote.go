package imagesource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// NewHTTPClient builds the client Open uses when Options.HTTPClient is nil:
// the CA bundle, TLS verification, proxies and no_proxy of o. It is exported
// so that the checksum file of an image is fetched the same way as the image.
// The client has no overall timeout: a multi-GiB download must not be cut
// short, stalls are caught per request (Options.RequestTimeout).
func NewHTTPClient(o Options) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Readahead and parallel readers keep several requests in flight;
	// the default of 2 idle connections per host would close and reopen
	// connections all the time.
	tr.MaxIdleConnsPerHost = 16
	if o.CABundle != "" || o.InsecureSkipVerify {
		cfg := &tls.Config{InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // the operator's choice
		if o.CABundle != "" {
			pem, err := os.ReadFile(o.CABundle)
			if err != nil {
				return nil, fmt.Errorf("CA bundle: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA bundle %s: no PEM certificate in it", o.CABundle)
			}
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	}
	if len(o.Proxies) > 0 || o.NoProxy != "" {
		proxy := (&httpproxy.Config{
			HTTPProxy:  o.Proxies["http"],
			HTTPSProxy: o.Proxies["https"],
			NoProxy:    o.NoProxy,
		}).ProxyFunc()
		tr.Proxy = func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
	}
	return &http.Client{Transport: tr}, nil
}

// HTTPError is an unexpected HTTP status.
type HTTPError struct {
	URL    string
	Status string // "404 Not Found"
	Code   int
}

func (e *HTTPError) Error() string { return fmt.Sprintf("GET %s: HTTP %s", e.URL, e.Status) }

// retryable reports whether a request may succeed if repeated: server
// errors, timeouts and rate limiting; not "not found" or "forbidden".
func (e *HTTPError) retryable() bool {
	return e.Code >= 500 || e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests
}

// TLSError is a failed verification of the server's certificate. It is
// never retried: only the operator can fix it.
type TLSError struct {
	URL string
	Err error // the x509 error
}

func (e *TLSError) Error() string {
	var hint string
	var hostErr x509.HostnameError
	switch {
	case errors.As(e.Err, new(x509.UnknownAuthorityError)):
		hint = "pass the CA bundle that signed the server's certificate, or disable verification (insecure) in a lab"
	case errors.As(e.Err, &hostErr):
		hint = "use the host name the certificate was issued for, or fix the certificate"
	default:
		hint = "fix the server's certificate, pass the CA bundle that signed it, or disable verification (insecure) in a lab"
	}
	return fmt.Sprintf("TLS: %s for %s: %s", strings.TrimPrefix(e.Err.Error(), "x509: "), e.URL, hint)
}

func (e *TLSError) Unwrap() error { return e.Err }

// permanentError marks an error that repeating the request cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// errStalled is the cancellation cause of a request that made no progress
// for Options.RequestTimeout.
var errStalled = errors.New("stalled")

// remote is the HTTP side of a Source: requests, their checks and retries.
type remote struct {
	url        string
	client     *http.Client
	ownClient  bool // built by Open: its idle connections are closed on Close
	timeout    time.Duration
	attempts   int
	retryDelay time.Duration
	log        *slog.Logger
	stats      *counters

	// Learned by the probe in Open, read-only afterwards.
	size    int64 // -1 unknown
	rangeOK bool
	etag    string
}

// response is an answered GET whose body starts at file offset start.
type response struct {
	body   io.ReadCloser
	start  int64
	length int64 // bytes the body should carry, -1 unknown
	total  int64 // size of the file, -1 unknown
	full   bool  // 200: the whole file, Range ignored or not asked
	etag   string
}

func (s *Source) openRemote(o Options) error {
	r := &remote{
		url:        s.url,
		client:     o.HTTPClient,
		timeout:    o.RequestTimeout,
		attempts:   o.Attempts,
		retryDelay: o.RetryDelay,
		log:        o.Logger,
		stats:      &s.stats,
		size:       -1,
	}
	if r.client == nil {
		c, err := NewHTTPClient(o)
		if err != nil {
			return fmt.Errorf("image %s: %w", s.url, err)
		}
		r.client, r.ownClient = c, true
	}
	s.rem = r
	if err := r.probe(s.ctx); err != nil {
		return err
	}
	s.size = r.size
	if r.rangeOK && r.size > 0 {
		s.c = newCache(s, o)
		if s.hash.h != nil {
			s.startHasher()
		}
	}
	return nil
}

// probe learns the size of the file and whether Range works, with the
// smallest Range request there is. (HEAD is not used: presigned URLs are
// often valid for GET only.)
func (r *remote) probe(ctx context.Context) error {
	var t retrier
	for {
		resp, err := r.get(ctx, 0, 0, true)
		if err == nil {
			defer resp.body.Close()
			r.size, r.etag = resp.total, resp.etag
			r.rangeOK = !resp.full
			if r.rangeOK && resp.total < 0 {
				return permanent(fmt.Errorf("GET %s: the server does not tell the file size (Content-Range: bytes 0-0/*)", r.url))
			}
			if !resp.full {
				// Drain the byte so that the connection is reused.
				n, _ := io.Copy(io.Discard, resp.body)
				r.stats.fetched.Add(n)
			}
			return nil
		}
		var empty *emptyFileError
		if errors.As(err, &empty) {
			r.size, r.rangeOK = 0, true
			return nil
		}
		if err := t.failed(ctx, r, err, 0); err != nil {
			return err
		}
	}
}

// emptyFileError is a 416 answer to the probe of an empty file.
type emptyFileError struct{}

func (*emptyFileError) Error() string { return "empty file" }

// get sends one GET for the bytes [off, end] of the file (end < 0: to the
// end; ranged false: no Range header, the whole file) and checks the answer.
// A ranged request answered with 200 is returned with full set: the caller
// decides whether it can use it. The body is guarded by a watchdog that
// cancels the request after r.timeout without progress.
func (r *remote) get(ctx context.Context, off, end int64, ranged bool) (*response, error) {
	reqCtx, cancel := context.WithCancelCause(ctx)
	wd := newWatchdog(r.timeout, cancel)
	fail := func(err error) (*response, error) {
		wd.stop()
		cancel(nil)
		return nil, err
	}
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, r.url, nil)
	if err != nil {
		return fail(permanent(fmt.Errorf("image URL %s: %w", r.url, err)))
	}
	req.Header.Set("User-Agent", UserAgent)
	// Ask for the bytes as they are on the server: with transparent gzip,
	// ranges and lengths would no longer be those of the file.
	req.Header.Set("Accept-Encoding", "identity")
	rangeHdr := ""
	if ranged {
		rangeHdr = fmt.Sprintf("bytes=%d-", off)
		if end >= 0 {
			rangeHdr += strconv.FormatInt(end, 10)
		}
		req.Header.Set("Range", rangeHdr)
	}
	r.stats.requests.Add(1)
	resp, err := r.client.Do(req)
	if err != nil {
		return fail(r.transportError(ctx, reqCtx, err))
	}
	body := &watchedBody{body: resp.Body, wd: wd, ctx: reqCtx, cancel: cancel, r: r}
	reject := func(err error) (*response, error) {
		body.Close()
		return nil, err
	}
	if etag := resp.Header.Get("ETag"); r.etag != "" && etag != "" && etag != r.etag {
		return reject(permanent(fmt.Errorf("GET %s: the image changed during the download (ETag %s, was %s)", r.url, etag, r.etag)))
	}
	out := &response{body: body, start: off, length: -1, total: -1}
	switch {
	case resp.StatusCode == http.StatusPartialContent && ranged:
		start, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return reject(permanent(fmt.Errorf("GET %s (Range: %s): %w", r.url, rangeHdr, err)))
		}
		if start != off || last < start {
			return reject(permanent(fmt.Errorf("GET %s (Range: %s): server sent bytes %d-%d", r.url, rangeHdr, start, last)))
		}
		out.length, out.total = last-start+1, total
	case resp.StatusCode == http.StatusOK:
		out.full, out.start, out.length, out.total = true, 0, resp.ContentLength, resp.ContentLength
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && ranged:
		_, _, total, _ := parseContentRange(resp.Header.Get("Content-Range"))
		if off == 0 && total == 0 {
			return reject(&emptyFileError{})
		}
		return reject(permanent(fmt.Errorf("GET %s (Range: %s): HTTP %s: the file is %s bytes, shorter than the %d announced: %w",
			r.url, rangeHdr, resp.Status, totalString(total), r.size, io.ErrUnexpectedEOF)))
	default:
		herr := &HTTPError{URL: r.url, Status: resp.Status, Code: resp.StatusCode}
		if herr.retryable() {
			return reject(herr)
		}
		return reject(permanent(herr))
	}
	if r.size >= 0 && out.total >= 0 && out.total != r.size {
		return reject(permanent(fmt.Errorf("GET %s: the image changed during the download (size %d, was %d)", r.url, out.total, r.size)))
	}
	out.etag = resp.Header.Get("ETag")
	return out, nil
}

func totalString(total int64) string {
	if total < 0 {
		return "fewer"
	}
	return strconv.FormatInt(total, 10)
}

// parseContentRange parses "bytes first-last/total" (total may be "*",
// returned as -1) and "bytes */total" (first and last returned as -1).
func parseContentRange(v string) (first, last, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return -1, -1, -1, fmt.Errorf("bad Content-Range %q", v)
	}
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return bad()
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return bad()
		}
	}
	if rng == "*" {
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return bad()
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil {
		return bad()
	}
	return first, last, total, nil
}

// transportError classifies an error of client.Do or of a body read.
// parent is the caller's context, reqCtx the request's own.
func (r *remote) transportError(parent, reqCtx context.Context, err error) error {
	if context.Cause(reqCtx) == errStalled && parent.Err() == nil {
		return fmt.Errorf("GET %s: no progress for %s", r.url, r.timeout)
	}
	if parent.Err() != nil {
		return permanent(fmt.Errorf("GET %s: %w", r.url, parent.Err()))
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return permanent(&TLSError{URL: r.url, Err: cve.Err})
	}
	for _, target := range []any{new(x509.UnknownAuthorityError), new(x509.HostnameError), new(x509.CertificateInvalidError)} {
		if errors.As(err, target) {
			return permanent(&TLSError{URL: r.url, Err: err})
		}
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return err // names the method and URL already
	}
	return fmt.Errorf("GET %s: %w", r.url, err)
}

// watchdog cancels a request that makes no progress for d.
type watchdog struct {
	t *time.Timer
	d time.Duration
}

func newWatchdog(d time.Duration, cancel context.CancelCauseFunc) *watchdog {
	return &watchdog{t: time.AfterFunc(d, func() { cancel(errStalled) }), d: d}
}

func (w *watchdog) kick() { w.t.Reset(w.d) }
func (w *watchdog) stop() { w.t.Stop() }

// watchedBody is a response body that kicks the watchdog on progress,
// describes its errors, and releases the request on Close.
type watchedBody struct {
	body   io.ReadCloser
	wd     *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
	r      *remote
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.wd.kick()
	}
	if err != nil && err != io.EOF {
		if context.Cause(b.ctx) == errStalled {
			err = fmt.Errorf("no data for %s", b.r.timeout)
		}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.wd.stop()
	err := b.body.Close()
	b.cancel(nil)
	return err
}

// retrier counts attempts in a row that fail without progress.
type retrier struct {
	failures int
	lastPos  int64
}

// failed decides what to do after err, seen at file offset pos (how far the
// operation had got). It returns nil after waiting when another attempt
// should be made, or the error to give up with. An attempt that got further
// than the previous one resets the count, so that a server dropping the
// connection every N bytes is still read to the end.
func (t *retrier) failed(ctx context.Context, r *remote, err error, pos int64) error {
	if ctx.Err() != nil {
		if isPermanent(err) {
			return err
		}
		return fmt.Errorf("GET %s: %w", r.url, ctx.Err())
	}
	if isPermanent(err) {
		return err
	}
	progressed := pos > t.lastPos
	if progressed {
		t.failures = 0
	}
	t.lastPos = pos
	t.failures++
	if t.failures >= r.attempts {
		return fmt.Errorf("%w (gave up after %d attempts)", err, t.failures)
	}
	r.stats.retries.Add(1)
	r.log.Warn("image download interrupted, retrying", "url", r.url, "offset", pos, "attempt", t.failures, "err", err)
	if progressed {
		return nil // a dropped connection after progress: resume at once
	}
	delay := r.retryDelay << (t.failures - 1)
	if delay > maxRetryDelay || delay <= 0 {
		delay = maxRetryDelay
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (interrupted: %w)", err, ctx.Err())
	}
}

// fetchInto fills dst with the file bytes at off, with Range requests,
// resuming after failures from the first missing byte.
func (r *remote) fetchInto(ctx context.Context, dst []byte, off int64) error {
	var t retrier
	t.lastPos = off
	for got := 0; got < len(dst); {
		n, err := r.readOnce(ctx, dst[got:], off+int64(got))
		got += n
		if err != nil {
			if err := t.failed(ctx, r, err, off+int64(got)); err != nil {
				return err
			}
		}
	}
	return nil
}

// readOnce sends one Range request for dst and reads what it gets. A nil
// error means at least one byte was read (the server may send less than
// asked).
func (r *remote) readOnce(ctx context.Context, dst []byte, off int64) (int, error) {
	last := off + int64(len(dst)) - 1
	resp, err := r.get(ctx, off, last, true)
	if err != nil {
		return 0, err
	}
	defer resp.body.Close()
	if resp.full {
		return 0, permanent(fmt.Errorf("GET %s (Range: bytes=%d-%d): %w; needed for qcow2 streaming", r.url, off, last, ErrRangeNotSupported))
	}
	want := min(resp.length, int64(len(dst)))
	n, err := io.ReadFull(resp.body, dst[:want])
	r.stats.fetched.Add(int64(n))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("GET %s (Range: bytes=%d-%d): body ended at offset %d, %d bytes short: %w",
			r.url, off, last, off+int64(n), want-int64(n), err)
	}
	return n, nil
}

// stream is a sequential reader of [off, end) of a remote file that resumes
// with Range requests after failures.
type stream struct {
	s      *Source
	r      *remote
	ctx    context.Context
	stop   func() bool // detaches ctx from the Source's lifetime
	cancel context.CancelFunc
	off    int64
	end    int64 // -1: to the end of the file, whatever its size
	feed   bool  // feed the Source's hash (false when the caller holds it)
	resp   *response
	t      retrier
	err    error // sticky
}

// newStream reads [off, end) (end -1: to EOF); ctx and the Source's
// lifetime both bound it.
func (s *Source) newStream(ctx context.Context, off, end int64, feed bool) *stream {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	st := &stream{s: s, r: s.rem, ctx: ctx, stop: stop, cancel: cancel, off: off, end: end, feed: feed}
	st.t.lastPos = off
	return st
}

func (st *stream) Read(p []byte) (int, error) {
	if st.err != nil {
		return 0, st.err
	}
	for {
		if st.end >= 0 && st.off >= st.end {
			st.closeBody()
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if st.resp == nil {
			if err := st.open(); err != nil {
				if err := st.t.failed(st.ctx, st.r, err, st.off); err != nil {
					st.err = err
					return 0, err
				}
				continue
			}
		}
		buf := p
		if st.end >= 0 && int64(len(buf)) > st.end-st.off {
			buf = buf[:st.end-st.off]
		}
		n, err := st.resp.body.Read(buf)
		if n > 0 {
			st.r.stats.fetched.Add(int64(n))
			if st.feed {
				st.s.feed(st.off, buf[:n])
			}
			st.off += int64(n)
		}
		if err == nil {
			return n, nil
		}
		st.closeBody()
		if err == io.EOF {
			if st.end < 0 {
				if st.feed {
					st.s.hash.mu.Lock()
					st.s.hash.eof = st.s.hash.upTo == st.off
					st.s.hash.mu.Unlock()
				}
				return n, io.EOF
			}
			if st.off >= st.end {
				return n, io.EOF
			}
			err = fmt.Errorf("GET %s: body ended at offset %d, before the end of the file at %d: %w", st.r.url, st.off, st.end, io.ErrUnexpectedEOF)
		} else if st.end >= 0 {
			err = fmt.Errorf("GET %s at offset %d of %d: %w", st.r.url, st.off, st.end, err)
		} else {
			err = fmt.Errorf("GET %s at offset %d: %w", st.r.url, st.off, err)
		}
		if ferr := st.t.failed(st.ctx, st.r, err, st.off); ferr != nil {
			st.err = ferr
			return n, ferr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// open sends the request for the rest of the stream: a plain GET from the
// start (which servers without Range support answer), Range from there on.
func (st *stream) open() error {
	if st.off == 0 && (st.end < 0 || st.end == st.r.size) {
		resp, err := st.r.get(st.ctx, 0, -1, false)
		if err != nil {
			return err
		}
		if resp.total >= 0 && st.end < 0 {
			st.end = resp.total
		}
		st.resp = resp
		return nil
	}
	last := int64(-1)
	if st.end >= 0 {
		last = st.end - 1
	}
	resp, err := st.r.get(st.ctx, st.off, last, true)
	if err != nil {
		return err
	}
	if resp.full {
		resp.body.Close()
		return permanent(fmt.Errorf("GET %s: %w: cannot resume the download at offset %d", st.r.url, ErrRangeNotSupported, st.off))
	}
	st.resp = resp
	return nil
}

func (st *stream) closeBody() {
	if st.resp != nil {
		st.resp.body.Close()
		st.resp = nil
	}
}

func (st *stream) Close() error {
	st.closeBody()
	st.stop()
	st.cancel()
	if st.err == nil {
		st.err = errors.New("read of a closed image stream")
	}
	return nil
}
