// Package imagestore is the controller's image service: it puts the
// catalogue (images/catalog: references, simplestreams sources) in front
// of the verified local cache (images/cache) and keeps track of the
// imports running in the background, so the API can start an import,
// report its progress, list, show and delete cached images, and the deploy
// can turn "images:centos/9-Stream" into a URL and checksum for the agent.
package imagestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
)

// Image states.
const (
	Active    = "active"    // verified and in the cache
	Importing = "importing" // being downloaded
	Failed    = "failed"    // the last import failed; nothing was cached
)

// Errors callers may test with errors.Is (besides the catalog's and the
// cache's own).
var (
	ErrNotFound = errors.New("image not found")
	ErrInUse    = cache.ErrInUse
	ErrNoURL    = errors.New("images are not served to machines")
)

// Image is a cached image or an import, as the API shows it.
type Image struct {
	ID         string     `json:"id"` // the sha256 of the content
	Name       string     `json:"name"`
	Ref        string     `json:"ref"` // the reference it was imported from
	Source     string     `json:"source_url"`
	DiskFormat string     `json:"disk_format"`
	Size       int64      `json:"size"`
	State      string     `json:"state"`
	Progress   *Progress  `json:"progress,omitempty"`
	Error      string     `json:"error,omitempty"`
	ImportedAt *time.Time `json:"imported_at,omitempty"`
	StartedAt  *time.Time `json:"import_started_at,omitempty"`
	InUseBy    []string   `json:"in_use_by,omitempty"` // node UUIDs deploying it
}

// Progress of an import.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"` // -1 while unknown
}

// InUseFunc reports the images that running deploys use: the nodes'
// UUIDs by sha256. It is asked once per listing, not once per image.
type InUseFunc func(ctx context.Context) (map[string][]string, error)

// Config assembles a Store.
type Config struct {
	Catalog *catalog.Catalog
	Cache   *cache.Cache
	// BaseURL is the controller's boot URL as machines reach it; cached
	// images are served below it at /images/<sha256>/<name>. Empty: the
	// deploy cannot use cached images.
	BaseURL string
	InUse   InUseFunc
	Log     *slog.Logger
}

// Store is the image service. Its methods are safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger
	// ctx bounds background imports; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	jobs map[string]*job // by sha256: running and failed imports
	wg   sync.WaitGroup
}

type job struct {
	img     catalog.Image
	started time.Time
	done    int64
	total   int64
	err     error
	running bool
}

// New returns a store.
func New(cfg Config) *Store {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel, jobs: map[string]*job{}}
}

// Open opens the image service of a data dir: the simplestreams sources
// in <dataDir>/image-sources.json and the cache in <dataDir>/images/.
// cfg's Catalog and Cache are filled in.
func Open(dataDir string, cfg Config) (*Store, error) {
	srcs, err := catalog.OpenSources(dataDir)
	if err != nil {
		return nil, fmt.Errorf("image sources: %w", err)
	}
	c, err := cache.Open(filepath.Join(dataDir, "images"), nil)
	if err != nil {
		return nil, err
	}
	cfg.Catalog, cfg.Cache = catalog.New(srcs, nil), c
	return New(cfg), nil
}

// Close stops the background imports (their partial files stay and are
// resumed by the next import) and waits for them.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

// Sources is the configured simplestreams sources.
func (s *Store) Sources() *catalog.Sources { return s.cfg.Catalog.Sources }

// Remote lists a source's images.
func (s *Store) Remote(ctx context.Context, source string) ([]catalog.RemoteImage, error) {
	return s.cfg.Catalog.List(ctx, source)
}

// IsCatalogRef tells whether image_source names a catalogue image
// (SOURCE:ALIAS) rather than a URL the agent downloads itself.
func IsCatalogRef(src string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(src), ":")
	if !ok || scheme == "" {
		return false
	}
	switch strings.ToLower(scheme) {
	case "http", "https", "file":
		return false
	}
	return !strings.Contains(src, "://")
}

// Check tells, without network access, whether a catalogue reference
// can be resolved at all: its source is configured and it has an alias.
func (s *Store) Check(ref string) error {
	source, alias, _ := strings.Cut(strings.TrimSpace(ref), ":")
	if _, err := s.cfg.Catalog.Sources.Get(source); err != nil {
		return err
	}
	if alias == "" {
		return fmt.Errorf("%w: %q has an empty alias", catalog.ErrInvalidReference, ref)
	}
	return nil
}

// Resolve turns a reference into what an import would fetch. A
// catalogue reference whose source cannot be reached resolves to the
// cached image imported from the same reference, if there is one, so
// deploys keep working offline.
func (s *Store) Resolve(ctx context.Context, ref string, opt catalog.Options) (catalog.Image, error) {
	img, err := s.cfg.Catalog.Resolve(ctx, ref, opt)
	if err == nil || !errors.Is(err, catalog.ErrUnreachable) {
		return img, err
	}
	if e, ok := s.cachedRef(ref); ok {
		s.log.Warn("image source unreachable; using the cached image imported from the same reference",
			"ref", ref, "sha256", e.SHA256, "err", err)
		return catalog.Image{Name: e.Name, Ref: e.Ref, URL: e.URL, DiskFormat: e.DiskFormat, Size: e.Size,
			Checksum: catalog.Checksum{Algo: "sha256", Value: e.SHA256}}, nil
	}
	return img, err
}

func (s *Store) cachedRef(ref string) (cache.Entry, bool) {
	es, err := s.cfg.Cache.List()
	if err != nil {
		return cache.Entry{}, false
	}
	for _, e := range es { // newest first
		if e.Ref == ref {
			return e, true
		}
	}
	return cache.Entry{}, false
}

// Fetch resolves ref and imports it into the cache unless it is there
// already, waiting for the import; progress (may be nil) follows it.
// Concurrent fetches of one image share one download.
func (s *Store) Fetch(ctx context.Context, ref string, opt catalog.Options, progress func(done, total int64)) (cache.Entry, error) {
	img, err := s.Resolve(ctx, ref, opt)
	if err != nil {
		return cache.Entry{}, err
	}
	return s.importImage(ctx, img, progress)
}

// Start resolves ref and starts importing it in the background; the
// returned image is Active when it was cached already, else Importing.
func (s *Store) Start(ctx context.Context, ref string, opt catalog.Options) (Image, error) {
	img, err := s.Resolve(ctx, ref, opt)
	if err != nil {
		return Image{}, err
	}
	if err := checkImportable(img); err != nil {
		return Image{}, err
	}
	sha := img.Checksum.Value
	if e, err := s.cfg.Cache.Get(sha); err == nil {
		return fromEntry(e, s.users(ctx)), nil
	}
	j := s.begin(img)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if _, err := s.run(s.ctx, img, j, nil); err != nil {
			s.log.Warn("image import failed", "ref", img.Ref, "sha256", sha, "err", err)
		}
	}()
	return s.fromJob(sha, j), nil
}

func checkImportable(img catalog.Image) error {
	if !strings.EqualFold(img.Checksum.Algo, "sha256") {
		return fmt.Errorf("%w: %s: the image cache is addressed by sha256; give the image's sha256 (got %s)", catalog.ErrInvalidReference, img.Ref, img.Checksum.Algo)
	}
	return nil
}

func (s *Store) importImage(ctx context.Context, img catalog.Image, progress func(done, total int64)) (cache.Entry, error) {
	if err := checkImportable(img); err != nil {
		return cache.Entry{}, err
	}
	return s.run(ctx, img, s.begin(img), progress)
}

// begin registers an import (or joins the one running), so that List
// shows it from now on.
func (s *Store) begin(img catalog.Image) *job {
	sha := strings.ToLower(img.Checksum.Value)
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[sha]
	if !ok || !j.running {
		j = &job{img: img, started: time.Now().UTC(), total: img.Size, running: true}
		if j.total == 0 {
			j.total = -1
		}
		s.jobs[sha] = j
	}
	return j
}

func (s *Store) run(ctx context.Context, img catalog.Image, j *job, progress func(done, total int64)) (cache.Entry, error) {
	sha := strings.ToLower(img.Checksum.Value)
	s.log.Info("image import", "ref", img.Ref, "sha256", sha, "url", redactURL(img.URL), "size", img.Size)
	e, err := s.cfg.Cache.Import(ctx, img, func(done, total int64) {
		s.mu.Lock()
		j.done, j.total = done, total
		s.mu.Unlock()
		if progress != nil {
			progress(done, total)
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil && s.jobs[sha] == j {
			// The caller gave up or the controller stops: the partial
			// file stays for the next import, nothing failed.
			delete(s.jobs, sha)
			return e, err
		}
		j.running, j.err = false, err
		return e, err
	}
	if s.jobs[sha] == j {
		delete(s.jobs, sha)
	}
	s.log.Info("image imported", "ref", img.Ref, "sha256", sha, "size", e.Size)
	return e, nil
}

// redactURL drops user info and the query (signed URLs) from logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

// List returns the cached images, newest first, then the imports running
// or failed.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	es, err := s.cfg.Cache.List()
	if err != nil {
		return nil, err
	}
	users := s.users(ctx)
	out := make([]Image, 0, len(es))
	for _, e := range es {
		out = append(out, fromEntry(e, users))
	}
	s.mu.Lock()
	var jobs []Image
	for sha, j := range s.jobs {
		if !slices.ContainsFunc(out, func(i Image) bool { return i.ID == sha }) {
			jobs = append(jobs, s.fromJobLocked(sha, j))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(jobs, func(a, b Image) int { return b.StartedAt.Compare(*a.StartedAt) })
	return append(out, jobs...), nil
}

// Get finds an image by sha256 (or a unique prefix of at least 8 hex
// digits), by name or by the reference it was imported from.
func (s *Store) Get(ctx context.Context, id string) (Image, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Image{}, err
	}
	var hits []Image
	for _, i := range all {
		switch {
		case i.ID == id:
			return i, nil
		case len(id) >= 8 && strings.HasPrefix(i.ID, strings.ToLower(id)), i.Name == id, i.Ref == id:
			hits = append(hits, i)
		}
	}
	switch len(hits) {
	case 0:
		return Image{}, fmt.Errorf("%w: %q is not the sha256, name or reference of a cached image (see `ironlite image list`)", ErrNotFound, id)
	case 1:
		return hits[0], nil
	}
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.ID
	}
	return Image{}, fmt.Errorf("%w: %q matches %d images (%s); use the sha256", ErrNotFound, id, len(hits), strings.Join(ids, ", "))
}

// Delete removes a cached image, or forgets a failed import. It is
// refused while a deploy uses the image or it is being imported.
func (s *Store) Delete(ctx context.Context, id string) error {
	img, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	switch img.State {
	case Importing:
		return fmt.Errorf("%w: image %s is being imported; wait for it to finish", ErrInUse, img.ID)
	case Failed:
		s.mu.Lock()
		delete(s.jobs, img.ID)
		s.mu.Unlock()
		return nil
	}
	if len(img.InUseBy) > 0 {
		return fmt.Errorf("%w: image %s is used by the deploy of node(s) %s; delete it when they are done", ErrInUse, img.ID, strings.Join(img.InUseBy, ", "))
	}
	if err := s.cfg.Cache.Delete(img.ID); err != nil {
		return err
	}
	s.log.Info("image deleted", "sha256", img.ID, "name", img.Name)
	return nil
}

// Handler serves cached images to machines at /images/<sha256>[/<name>],
// with Range, ETag and Last-Modified.
func (s *Store) Handler() http.Handler { return s.cfg.Cache.Handler() }

// URL is where machines download a cached image.
func (s *Store) URL(e cache.Entry) (string, error) {
	if s.cfg.BaseURL == "" {
		return "", fmt.Errorf("%w: the controller has no boot URL (set serve --boot-url)", ErrNoURL)
	}
	name := e.Name
	if name == "" {
		name = e.SHA256
	}
	return s.cfg.BaseURL + "/images/" + e.SHA256 + "/" + url.PathEscape(name), nil
}

// users is what InUse reports (nil without one, or on error: logged).
func (s *Store) users(ctx context.Context) map[string][]string {
	if s.cfg.InUse == nil {
		return nil
	}
	users, err := s.cfg.InUse(ctx)
	if err != nil {
		s.log.Warn("images in use by deploys", "err", err)
	}
	return users
}

func fromEntry(e cache.Entry, users map[string][]string) Image {
	t := e.ImportedAt
	return Image{ID: e.SHA256, Name: e.Name, Ref: e.Ref, Source: redactURL(e.URL), DiskFormat: e.DiskFormat,
		Size: e.Size, State: Active, ImportedAt: &t, InUseBy: users[e.SHA256]}
}

func (s *Store) fromJob(sha string, j *job) Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fromJobLocked(sha, j)
}

func (s *Store) fromJobLocked(sha string, j *job) Image {
	t := j.started
	img := Image{ID: sha, Name: j.img.Name, Ref: j.img.Ref, Source: redactURL(j.img.URL),
		DiskFormat: j.img.DiskFormat, Size: j.img.Size, StartedAt: &t,
		Progress: &Progress{Done: j.done, Total: j.total}, State: Importing}
	if !j.running {
		img.State, img.Progress = Failed, nil
		if j.err != nil {
			img.Error = j.err.Error()
		}
	}
	return img
}
