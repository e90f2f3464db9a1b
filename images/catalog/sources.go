package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// SourcesFile is the name of the file, inside the data dir, that holds the
// configured simplestreams sources. It is small JSON so an operator can read
// and edit it by hand when the controller is down.
const SourcesFile = "image-sources.json"

// DefaultSources are the sources a fresh data dir starts with. They are the
// two public servers LXD/Incus users know as "ubuntu:" and "images:", so
// `ubuntu:24.04` and `images:centos/9-Stream` mean here what they mean there.
var DefaultSources = []Source{
	{Name: "images", URL: "https://images.linuxcontainers.org/"},
	{Name: "ubuntu", URL: "https://cloud-images.ubuntu.com/releases/"},
}

// Source is one named simplestreams server.
type Source struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// ErrUnknownSource is returned (wrapped) for a source name that is not
// configured.
var ErrUnknownSource = errors.New("unknown image source")

// ErrInvalidSource is returned (wrapped) by Add for a bad name or URL.
var ErrInvalidSource = errors.New("invalid image source")

// sourceName is what may precede the colon in SOURCE:ALIAS. It excludes the
// URL schemes we resolve ourselves so "http:..." can never be shadowed.
var sourceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

var reservedNames = []string{"http", "https", "file"}

// Sources is the persisted set of simplestreams sources. It is safe for
// concurrent use; every change is written to disk (atomically, via a
// temporary file and rename) before it is visible, so a crash never leaves a
// half-written file.
type Sources struct {
	mu   sync.Mutex
	path string
	list map[string]string
}

// OpenSources loads the sources kept in dataDir, or the defaults when the
// file does not exist yet (the defaults are not written until the first
// change, so an untouched data dir stays empty).
func OpenSources(dataDir string) (*Sources, error) {
	s := &Sources{path: filepath.Join(dataDir, SourcesFile), list: map[string]string{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		for _, d := range DefaultSources {
			s.list[d.Name] = d.URL
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image sources: %w", err)
	}
	var list []Source
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("image sources: malformed %s: %w", s.path, err)
	}
	for _, src := range list {
		u, err := checkSource(src.Name, src.URL)
		if err != nil {
			return nil, fmt.Errorf("image sources: %s: %w", s.path, err)
		}
		s.list[src.Name] = u
	}
	return s, nil
}

// checkSource validates a name and URL and returns the URL normalised to end
// in "/" (item paths are relative to it).
func checkSource(name, raw string) (string, error) {
	if !sourceName.MatchString(name) || slices.Contains(reservedNames, name) {
		return "", fmt.Errorf("%w: invalid source name %q: want lower-case letters, digits, '.', '_' or '-', and not http, https or file", ErrInvalidSource, name)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %q: URL %q: %w", ErrInvalidSource, name, raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: %q: URL %q must be http(s)://host/path without credentials, query or fragment", ErrInvalidSource, name, raw)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		u.RawPath = ""
	}
	return u.String(), nil
}

// Add adds or replaces a source and persists the set.
func (s *Sources) Add(name, rawURL string) error {
	u, err := checkSource(name, rawURL)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.list[name]
	s.list[name] = u
	if err := s.saveLocked(); err != nil {
		if had {
			s.list[name] = old
		} else {
			delete(s.list, name)
		}
		return err
	}
	return nil
}

// Remove deletes a source and persists the set.
func (s *Sources) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.list[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownSource, name)
	}
	delete(s.list, name)
	if err := s.saveLocked(); err != nil {
		s.list[name] = old
		return err
	}
	return nil
}

// List returns the sources sorted by name.
func (s *Sources) List() []Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Source, 0, len(s.list))
	for n, u := range s.list {
		out = append(out, Source{Name: n, URL: u})
	}
	slices.SortFunc(out, func(a, b Source) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Get returns the named source or an error listing the known ones.
func (s *Sources) Get(name string) (Source, error) {
	s.mu.Lock()
	u, ok := s.list[name]
	s.mu.Unlock()
	if !ok {
		names := []string{}
		for _, src := range s.List() {
			names = append(names, src.Name)
		}
		return Source{}, fmt.Errorf("%w %q (configured: %s)", ErrUnknownSource, name, strings.Join(names, ", "))
	}
	return Source{Name: name, URL: u}, nil
}

func (s *Sources) saveLocked() error {
	list := make([]Source, 0, len(s.list))
	for n, u := range s.list {
		list = append(list, Source{Name: n, URL: u})
	}
	slices.SortFunc(list, func(a, b Source) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return fmt.Errorf("image sources: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), SourcesFile+".tmp*")
	if err != nil {
		return fmt.Errorf("image sources: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("image sources: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("image sources: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image sources: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("image sources: %w", err)
	}
	return nil
}
