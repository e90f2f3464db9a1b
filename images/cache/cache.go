// Package cache keeps instance images on the controller, addressed by
// their sha256, so an image is downloaded once and then served to any
// number of agents over the LAN (with Range requests, which the agent's
// qcow2 reader needs) instead of every deploy pulling it from the internet.
//
// Layout under the data dir:
//
//	blobs/<sha256>        the verified image
//	blobs/<sha256>.json   its metadata (name, source ref, format, size, imported-at)
//	partial/<sha256>.part an interrupted download, resumed with a Range request
//
// A blob appears only by rename after its size and sha256 were checked, so
// anything under blobs/ is verified. A partial file survives errors and
// process restarts (that is what makes resume work) but is deleted as soon
// as the data or the metadata is proven wrong.
//
// One process owns a data dir; reference counts and in-flight downloads are
// in memory.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlite/ironlite/images/catalog"
)

// Errors callers may test with errors.Is.
var (
	ErrNotFound = errors.New("image not in cache")
	ErrInUse    = errors.New("image in use")
	ErrChecksum = errors.New("image checksum mismatch")
	ErrSize     = errors.New("image size mismatch")
	ErrInvalid  = errors.New("invalid image")
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Entry is a cached image.
type Entry struct {
	SHA256     string    `json:"sha256"`
	Name       string    `json:"name"`
	Ref        string    `json:"ref"` // the reference it was imported from
	URL        string    `json:"url"`
	DiskFormat string    `json:"disk_format"`
	Size       int64     `json:"size"`
	ImportedAt time.Time `json:"imported_at"`
	// Path is the file on disk; not persisted.
	Path string `json:"-"`
}

// Cache is a content-addressed image store. Use [Open].
type Cache struct {
	dir    string
	client *http.Client
	// Retries is how many times a broken download is resumed within one
	// Import before giving up (the partial file stays for a later Import).
	Retries int
	// RetryDelay is the pause between resumes.
	RetryDelay time.Duration

	mu       sync.Mutex
	inflight map[string]*call
	refs     map[string]int
}

// Open creates (if needed) and opens a cache in dir. client may be nil:
// downloads then use a client with no overall timeout (images are large;
// the context bounds an Import) but a 30 s response-header timeout.
func Open(dir string, client *http.Client) (*Cache, error) {
	for _, d := range []string{"blobs", "partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("image cache: %w", err)
		}
	}
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 30 * time.Second
		client = &http.Client{Transport: t}
	}
	return &Cache{dir: dir, client: client, Retries: 5, RetryDelay: 500 * time.Millisecond,
		inflight: map[string]*call{}, refs: map[string]int{}}, nil
}

func (c *Cache) blobPath(sha string) string { return filepath.Join(c.dir, "blobs", sha) }
func (c *Cache) metaPath(sha string) string { return filepath.Join(c.dir, "blobs", sha+".json") }
func (c *Cache) partPath(sha string) string { return filepath.Join(c.dir, "partial", sha+".part") }

func checkSHA(sha string) error {
	if !hexSHA256.MatchString(sha) {
		return fmt.Errorf("%w: %q is not a lower-case hex sha256", ErrInvalid, sha)
	}
	return nil
}

// Get returns the cached entry for sha.
func (c *Cache) Get(sha string) (Entry, error) {
	if err := checkSHA(sha); err != nil {
		return Entry{}, err
	}
	st, err := os.Stat(c.blobPath(sha))
	if errors.Is(err, os.ErrNotExist) {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	e := Entry{SHA256: sha, Size: st.Size(), ImportedAt: st.ModTime().UTC()}
	if b, err := os.ReadFile(c.metaPath(sha)); err == nil {
		// A missing or broken sidecar (crash between the two renames)
		// leaves a usable, verified blob with less metadata.
		_ = json.Unmarshal(b, &e)
	}
	e.SHA256, e.Size, e.Path = sha, st.Size(), c.blobPath(sha)
	return e, nil
}

// List returns all cached entries, newest first.
func (c *Cache) List() ([]Entry, error) {
	des, err := os.ReadDir(filepath.Join(c.dir, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	var out []Entry
	for _, de := range des {
		if !hexSHA256.MatchString(de.Name()) {
			continue
		}
		e, err := c.Get(de.Name())
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return b.ImportedAt.Compare(a.ImportedAt) })
	return out, nil
}

// Acquire pins an entry for the duration of a deploy: Delete refuses it
// until every release has been called. release is idempotent.
func (c *Cache) Acquire(sha string) (release func(), err error) {
	if err := checkSHA(sha); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Checked under the lock so a concurrent Delete cannot slip between.
	if _, err := os.Stat(c.blobPath(sha)); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	c.refs[sha]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.refs[sha]--; c.refs[sha] <= 0 {
				delete(c.refs, sha)
			}
		})
	}, nil
}

// Delete removes an entry. It is refused while the entry is acquired or
// being imported. Readers that already opened the file (the HTTP handler)
// finish reading it: on Unix the data lives until the last close.
func (c *Cache) Delete(sha string) error {
	if err := checkSHA(sha); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.refs[sha]; n > 0 {
		return fmt.Errorf("%w: %s is used by %d deploy(s); retry when they finish", ErrInUse, sha, n)
	}
	if _, ok := c.inflight[sha]; ok {
		return fmt.Errorf("%w: %s is being imported", ErrInUse, sha)
	}
	if err := os.Remove(c.blobPath(sha)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, sha)
	} else if err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	if err := os.Remove(c.metaPath(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image cache: %w", err)
	}
	return nil
}

// call is one download shared by every concurrent Import of the same
// sha256. It runs on its own context, cancelled when the last waiter gives
// up, so one impatient caller cannot fail the others.
type call struct {
	done    chan struct{}
	entry   Entry
	err     error
	waiters int
	cancel  context.CancelFunc
	pmu     sync.Mutex
	progs   []func(done, total int64)
}

func (cl *call) progress(done, total int64) {
	cl.pmu.Lock()
	defer cl.pmu.Unlock()
	for _, p := range cl.progs {
		if p != nil {
			p(done, total)
		}
	}
}

// Import downloads img into the cache (or returns the existing entry),
// verifying its sha256 and, when img.Size > 0, its size. progress, if not
// nil, is called as data arrives (total is -1 while unknown). Concurrent
// Imports of the same sha256 share one download.
//
// A network failure is retried with Range requests from where the partial
// file ends (c.Retries times); if it still fails the partial file is kept
// so the next Import, even by a new process, resumes it. A checksum or
// size mismatch deletes the partial file: nothing is left in the cache.
func (c *Cache) Import(ctx context.Context, img catalog.Image, progress func(done, total int64)) (Entry, error) {
	if !strings.EqualFold(img.Checksum.Algo, "sha256") {
		return Entry{}, fmt.Errorf("%w: %s: the cache needs a sha256 checksum, got %q", ErrInvalid, img.Ref, img.Checksum.Algo)
	}
	sha := strings.ToLower(img.Checksum.Value)
	if err := checkSHA(sha); err != nil {
		return Entry{}, err
	}
	if img.Size < 0 {
		return Entry{}, fmt.Errorf("%w: %s: negative size %d", ErrInvalid, img.Ref, img.Size)
	}
	u, err := url.Parse(img.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
		return Entry{}, fmt.Errorf("%w: %s: URL %q is not http(s) or file", ErrInvalid, img.Ref, img.URL)
	}

	c.mu.Lock()
	if e, err := c.Get(sha); err == nil {
		c.mu.Unlock()
		if img.Size > 0 && e.Size != img.Size {
			return Entry{}, fmt.Errorf("%w: %s: cached %s is %d bytes, metadata says %d", ErrSize, img.Ref, sha, e.Size, img.Size)
		}
		if progress != nil {
			progress(e.Size, e.Size)
		}
		return e, nil
	}
	cl, ok := c.inflight[sha]
	if !ok {
		dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cl = &call{done: make(chan struct{}), cancel: cancel}
		c.inflight[sha] = cl
		go func() {
			cl.entry, cl.err = c.download(dctx, sha, img, cl.progress)
			cancel()
			c.mu.Lock()
			delete(c.inflight, sha)
			c.mu.Unlock()
			close(cl.done)
		}()
	}
	cl.waiters++
	cl.pmu.Lock()
	idx := len(cl.progs)
	cl.progs = append(cl.progs, progress)
	cl.pmu.Unlock()
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.entry, cl.err
	case <-ctx.Done():
		cl.pmu.Lock()
		cl.progs[idx] = nil
		cl.pmu.Unlock()
		c.mu.Lock()
		if cl.waiters--; cl.waiters == 0 {
			cl.cancel()
		}
		c.mu.Unlock()
		return Entry{}, ctx.Err()
	}
}

// errPermanent marks failures a retry cannot fix.
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

func (c *Cache) download(ctx context.Context, sha string, img catalog.Image, progress func(int64, int64)) (Entry, error) {
	part := c.partPath(sha)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	defer f.Close()

	// Re-hash what a previous attempt (or process) left, so the digest
	// covers the whole file without keeping hash state on disk.
	h := sha256.New()
	have, err := io.Copy(h, f)
	if err != nil {
		return Entry{}, fmt.Errorf("image cache: reading %s: %w", part, err)
	}
	if img.Size > 0 && have > img.Size {
		if err := restart(f, h); err != nil {
			return Entry{}, err
		}
		have = 0
	}

	total := img.Size
	var lastErr error
	for attempt := 0; ; attempt++ {
		var complete bool
		complete, total, err = c.fetch(ctx, img, f, h, &have, total, progress)
		if err == nil && complete {
			break
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			f.Close()
			os.Remove(part)
			return Entry{}, perm.error
		}
		var keep errKeep
		if errors.As(err, &keep) {
			return Entry{}, keep.error
		}
		lastErr = err
		if ctx.Err() != nil || attempt >= c.Retries {
			return Entry{}, fmt.Errorf("image cache: %s: download interrupted at %d bytes (kept for resume): %w", img.Ref, have, lastErr)
		}
		select {
		case <-ctx.Done():
			return Entry{}, fmt.Errorf("image cache: %s: download interrupted at %d bytes (kept for resume): %w", img.Ref, have, ctx.Err())
		case <-time.After(c.RetryDelay):
		}
	}

	fail := func(err error) (Entry, error) {
		f.Close()
		os.Remove(part)
		return Entry{}, err
	}
	if img.Size > 0 && have != img.Size {
		return fail(fmt.Errorf("%w: %s: got %d bytes, expected %d; download discarded", ErrSize, img.Ref, have, img.Size))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fail(fmt.Errorf("%w: %s: expected sha256 %s, got %s; download discarded", ErrChecksum, img.Ref, sha, got))
	}
	if err := f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	e := Entry{SHA256: sha, Name: img.Name, Ref: img.Ref, URL: img.URL, DiskFormat: img.DiskFormat,
		Size: have, ImportedAt: time.Now().UTC().Truncate(time.Second)}
	meta, _ := json.MarshalIndent(e, "", "  ")
	if err := os.WriteFile(c.metaPath(sha)+".tmp", append(meta, '\n'), 0o644); err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	if err := os.Rename(part, c.blobPath(sha)); err != nil {
		os.Remove(c.metaPath(sha) + ".tmp")
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	if err := os.Rename(c.metaPath(sha)+".tmp", c.metaPath(sha)); err != nil {
		return Entry{}, fmt.Errorf("image cache: %w", err)
	}
	os.Chtimes(c.blobPath(sha), e.ImportedAt, e.ImportedAt)
	e.Path = c.blobPath(sha)
	return e, nil
}

func restart(f *os.File, h interface{ Reset() }) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	h.Reset()
	return nil
}

// fetch does one request from *have onwards and appends to f. It returns
// complete=true when the source has no more data, and the total size when
// the server told it.
func (c *Cache) fetch(ctx context.Context, img catalog.Image, f *os.File, h hash.Hash, have *int64, total int64, progress func(int64, int64)) (bool, int64, error) {
	if total > 0 && *have == total {
		return true, total, nil
	}
	body, start, size, err := c.open(ctx, img, *have)
	if err != nil {
		return false, total, err
	}
	defer body.Close()
	if size >= 0 {
		if total > 0 && size != total {
			return false, total, errPermanent{fmt.Errorf("%w: %s: source has %d bytes, metadata says %d", ErrSize, img.Ref, size, total)}
		}
		total = size
	}
	if start != *have { // the server ignored Range: start again
		if err := restart(f, h); err != nil {
			return false, total, err
		}
		*have = 0
	}
	// Never take more than the expected size plus one byte: enough to
	// detect an oversized source without filling the disk.
	var r io.Reader = body
	if total > 0 {
		r = io.LimitReader(body, total-*have+1)
	}
	buf := make([]byte, 1<<20)
	w := io.MultiWriter(f, h)
	tot := total
	if tot <= 0 {
		tot = -1
	}
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return false, total, fmt.Errorf("image cache: %w", err)
			}
			*have += int64(n)
			if progress != nil {
				progress(*have, tot)
			}
			if total > 0 && *have > total {
				return false, total, errPermanent{fmt.Errorf("%w: %s: source sends more than %d bytes; download discarded", ErrSize, img.Ref, total)}
			}
		}
		if rerr == io.EOF {
			if total > 0 && *have < total {
				return false, total, fmt.Errorf("connection closed at %d of %d bytes: %w", *have, total, io.ErrUnexpectedEOF)
			}
			return true, total, nil
		}
		if rerr != nil {
			return false, total, rerr
		}
	}
}

// open returns the source's data from offset on: the body, the offset it
// actually starts at (0 when a server ignores Range) and the full size (-1
// when unknown).
func (c *Cache) open(ctx context.Context, img catalog.Image, offset int64) (io.ReadCloser, int64, int64, error) {
	u, _ := url.Parse(img.URL)
	if u.Scheme == "file" {
		fh, err := os.Open(u.Path)
		if err != nil {
			return nil, 0, 0, errPermanent{fmt.Errorf("%w: %s: %w", ErrInvalid, img.Ref, err)}
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, 0, 0, err
		}
		if _, err := fh.Seek(offset, io.SeekStart); err != nil {
			fh.Close()
			return nil, 0, 0, err
		}
		return fh, offset, st.Size(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
	if err != nil {
		return nil, 0, 0, errPermanent{err}
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, 0, resp.ContentLength, nil
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, 0, 0, fmt.Errorf("%s: bad Content-Range %q for offset %d", img.Ref, resp.Header.Get("Content-Range"), offset)
		}
		return resp.Body, start, size, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		// The partial file already holds everything (or more): let the
		// size/checksum checks decide.
		_, size, _ := parseContentRange(resp.Header.Get("Content-Range"))
		if size == offset {
			return io.NopCloser(strings.NewReader("")), offset, size, nil
		}
		return nil, 0, 0, errPermanent{fmt.Errorf("%w: %s: source is %d bytes but %d were already downloaded; download discarded", ErrSize, img.Ref, size, offset)}
	}
	resp.Body.Close()
	err = fmt.Errorf("%s: GET %s: %s", img.Ref, img.URL, resp.Status)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
		// Keep the partial file: a 404 says nothing about its bytes.
		return nil, 0, 0, errKeep{err}
	}
	return nil, 0, 0, err
}

// errKeep is permanent for this Import but keeps the partial file.
type errKeep struct{ error }

func (e errKeep) Unwrap() error { return e.error }

// parseContentRange parses "bytes start-end/size" (size may be "*": -1).
func parseContentRange(s string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, -1, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, -1, false
	}
	size = -1
	if sz != "*" {
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil {
			return 0, -1, false
		}
		size = n
	}
	if a, _, found := strings.Cut(rng, "-"); found {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return 0, size, false
		}
		return n, size, true
	}
	return 0, size, rng == "*"
}
