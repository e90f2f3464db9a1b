// Package catalog turns an image reference, as an operator types it into
// instance_info image_source, into something the cache and the agent can
// fetch and verify: a URL, a checksum, a disk format and a size.
//
// Three forms are understood:
//
//   - http(s)://host/path: the caller supplies the checksum (Ironic's
//     image_os_hash_algo/_value); a remote URL without one is refused,
//     because nothing downstream could verify what it wrote.
//   - file:///path: a file on the controller, which serves it; its sha256
//     is computed here when the caller did not give one.
//   - SOURCE:ALIAS, e.g. ubuntu:24.04 or images:centos/9-Stream: looked up
//     in a simplestreams source (see [Sources]); the newest version of the
//     product with that alias and arch that has a qcow2 disk item wins, and
//     the checksum and size come from the stream.
//
// The package fetches and parses simplestreams itself (see [Stream]); it
// imports neither agent/ nor controller/.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Checksum is a digest in Ironic's split form (image_os_hash_algo,
// image_os_hash_value).
type Checksum struct {
	Algo  string `json:"algo"`
	Value string `json:"value"`
}

// String is "algo:hex", the form --checksum accepts.
func (c Checksum) String() string { return c.Algo + ":" + c.Value }

// Image is a resolved reference.
type Image struct {
	Name       string   `json:"name"`
	Ref        string   `json:"ref"` // the reference as given, e.g. "ubuntu:24.04"
	URL        string   `json:"url"`
	Checksum   Checksum `json:"checksum"`
	DiskFormat string   `json:"disk_format"` // "qcow2" or "raw"
	Size       int64    `json:"size"`        // 0 when unknown (http without a size)
	Version    string   `json:"version,omitempty"`
}

// ErrInvalidReference is returned (wrapped) for references that cannot
// name an image at all, and for missing or unusable checksums.
var ErrInvalidReference = errors.New("invalid image reference")

// Options are what the caller knows beside the reference.
type Options struct {
	// Arch selects among the products of an alias; default amd64
	// ("x86_64" and "aarch64" are accepted too).
	Arch string
	// Checksum is required for http(s) and optional for file://.
	Checksum Checksum
	// DiskFormat overrides the format guessed from the file name for
	// http(s) and file:// ("qcow2" or "raw").
	DiskFormat string
	// Size, when known, is checked on download.
	Size int64
}

// Catalog resolves references. The zero HTTP client means
// http.DefaultClient with a 60 s timeout.
type Catalog struct {
	Sources *Sources
	Client  *http.Client
}

// New returns a catalog over the given sources.
func New(sources *Sources, client *http.Client) *Catalog {
	return &Catalog{Sources: sources, Client: client}
}

var defaultClient = &http.Client{Timeout: 60 * time.Second}

func (c *Catalog) client() *http.Client {
	if c.Client != nil {
		return c.Client
	}
	return defaultClient
}

// algos are the digests accepted for http(s) and file:// images; md5 and
// sha1 are refused as Ironic's agent refuses them by default.
var algos = map[string]int{"sha256": 64, "sha384": 96, "sha512": 128}

var hexOnly = regexp.MustCompile(`^[0-9a-f]+$`)

func checkChecksum(ref string, c Checksum) (Checksum, error) {
	c.Algo = strings.ToLower(strings.TrimSpace(c.Algo))
	c.Value = strings.ToLower(strings.TrimSpace(c.Value))
	n, ok := algos[c.Algo]
	if !ok {
		return c, fmt.Errorf("%w: %s: checksum algorithm %q not accepted (want sha256, sha384 or sha512)", ErrInvalidReference, ref, c.Algo)
	}
	if len(c.Value) != n || !hexOnly.MatchString(c.Value) {
		return c, fmt.Errorf("%w: %s: %s checksum %q is not %d hex digits", ErrInvalidReference, ref, c.Algo, c.Value, n)
	}
	return c, nil
}

func guessFormat(name, given string) (string, error) {
	switch given {
	case "qcow2", "raw":
		return given, nil
	case "":
	default:
		return "", fmt.Errorf("%w: disk format %q not supported (want qcow2 or raw)", ErrInvalidReference, given)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".qcow2", ".qcow", ".qcow2c":
		return "qcow2", nil
	}
	return "raw", nil
}

// Resolve turns a reference into an image. It never writes anything; for
// SOURCE:ALIAS it fetches the source's index and products files.
func (c *Catalog) Resolve(ctx context.Context, ref string, opt Options) (Image, error) {
	ref = strings.TrimSpace(ref)
	scheme, rest, ok := strings.Cut(ref, ":")
	if !ok || scheme == "" {
		return Image{}, fmt.Errorf("%w: %q: want http(s)://..., file:///path or SOURCE:ALIAS", ErrInvalidReference, ref)
	}
	switch strings.ToLower(scheme) {
	case "http", "https":
		return resolveHTTP(ref, opt)
	case "file":
		return resolveFile(ref, opt)
	}
	if c.Sources == nil {
		return Image{}, fmt.Errorf("%w %q: no sources configured", ErrUnknownSource, scheme)
	}
	return c.resolveAlias(ctx, ref, scheme, rest, opt.Arch)
}

func resolveHTTP(ref string, opt Options) (Image, error) {
	u, err := url.Parse(ref)
	if err != nil || u.Host == "" {
		return Image{}, fmt.Errorf("%w: %q is not a valid URL", ErrInvalidReference, ref)
	}
	if opt.Checksum.Algo == "" && opt.Checksum.Value == "" {
		return Image{}, fmt.Errorf("%w: %s: an http(s) image needs a checksum", ErrInvalidReference, ref)
	}
	sum, err := checkChecksum(ref, opt.Checksum)
	if err != nil {
		return Image{}, err
	}
	name := imageBase(u.Path)
	if name == "" {
		return Image{}, fmt.Errorf("%w: %q names no file", ErrInvalidReference, ref)
	}
	format, err := guessFormat(name, opt.DiskFormat)
	if err != nil {
		return Image{}, err
	}
	if opt.Size < 0 {
		return Image{}, fmt.Errorf("%w: %s: negative size %d", ErrInvalidReference, ref, opt.Size)
	}
	return Image{Name: name, Ref: ref, URL: u.String(), Checksum: sum, DiskFormat: format, Size: opt.Size}, nil
}

// resolveFile accepts only file:///abs/path (or file://localhost/...), with
// no "." or ".." segments, and a regular file: the controller will serve
// whatever this returns, so the reference must not be able to wander.
func resolveFile(ref string, opt Options) (Image, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %q is not a valid URL", ErrInvalidReference, ref)
	}
	if u.Host != "" && u.Host != "localhost" {
		return Image{}, fmt.Errorf("%w: %q: file URLs must be local (file:///path)", ErrInvalidReference, ref)
	}
	p := u.Path
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || u.RawQuery != "" || u.Fragment != "" {
		return Image{}, fmt.Errorf("%w: %q: want an absolute, clean path without '..'", ErrInvalidReference, ref)
	}
	st, err := os.Stat(p)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %s: %w", ErrInvalidReference, ref, err)
	}
	if !st.Mode().IsRegular() {
		return Image{}, fmt.Errorf("%w: %s is not a regular file", ErrInvalidReference, ref)
	}
	if opt.Size != 0 && opt.Size != st.Size() {
		return Image{}, fmt.Errorf("%w: %s is %d bytes, expected %d", ErrInvalidReference, ref, st.Size(), opt.Size)
	}
	format, err := guessFormat(p, opt.DiskFormat)
	if err != nil {
		return Image{}, err
	}
	var sum Checksum
	if opt.Checksum.Algo == "" && opt.Checksum.Value == "" {
		v, err := fileSHA256(p)
		if err != nil {
			return Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		sum = Checksum{Algo: "sha256", Value: v}
	} else if sum, err = checkChecksum(ref, opt.Checksum); err != nil {
		return Image{}, err
	}
	return Image{Name: filepath.Base(p), Ref: ref, URL: (&url.URL{Scheme: "file", Path: p}).String(),
		Checksum: sum, DiskFormat: format, Size: st.Size()}, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
