// Package checksum turns the checksum forms Ironic accepts for an image into
// one expected digest, and checks a computed digest against it.
//
// IPA's image_info carries the expected value in one of several shapes
// (reference/ironic.md §3.9, §4.5): os_hash_algo + os_hash_value (Glance's
// multihash), or the legacy "checksum" field holding a bare hex value, an
// "<algo>:<hex>" value, or the http(s) URL of a checksum file. This package
// resolves all of them to an Expected, so the image pipeline only ever deals
// with "hash these bytes with Algo and compare with Value".
//
// Weak algorithms (md5, sha1) are refused unless the caller opts in: Ironic
// still defaults legacy "checksum" values to MD5, and silently accepting them
// would make a corrupted or substituted image look verified.
package checksum

import (
	"context"
	"crypto/md5"  //nolint:gosec // only with Options.AllowWeak
	"crypto/sha1" //nolint:gosec // only with Options.AllowWeak
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
)

// Expected is a resolved expected digest.
type Expected struct {
	// Algo is one of "md5", "sha1", "sha256", "sha384", "sha512".
	Algo string
	// Value is the digest in lower-case hex.
	Value string
	// Source says where the value came from: "os_hash_value", "checksum",
	// "--checksum", or the URL or path of a checksum file. It ends up in
	// mismatch errors, because a wrong checksum file is a common cause.
	Source string
}

// Options controls how checksums are resolved.
type Options struct {
	// HTTPClient fetches checksum files. Nil means http.DefaultClient (the
	// environment's proxies); pass the image's client to get the same
	// proxies and CA bundle. Each fetch is bounded by FetchTimeout anyway.
	HTTPClient *http.Client
	// AllowWeak accepts md5 and sha1 digests. Off by default: they do not
	// protect against a substituted image.
	AllowWeak bool
}

// ErrWeakAlgorithm is wrapped by errors about md5/sha1 digests refused
// because Options.AllowWeak is not set.
var ErrWeakAlgorithm = errors.New("weak checksum algorithm")

// algorithms maps canonical names to constructors and digest sizes in bytes.
var algorithms = map[string]struct {
	new  func() hash.Hash
	size int
	weak bool
	rank int // higher is stronger; picks among several entries in a file
}{
	"md5":    {md5.New, md5.Size, true, 1},
	"sha1":   {sha1.New, sha1.Size, true, 2},
	"sha256": {sha256.New, sha256.Size, false, 3},
	"sha384": {sha512.New384, sha512.Size384, false, 4},
	"sha512": {sha512.New, sha512.Size, false, 5},
}

// canonAlgo normalises an algorithm name ("SHA-256", "sha_256" -> "sha256").
func canonAlgo(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	name = strings.NewReplacer("-", "", "_", "").Replace(name)
	return name
}

// algoForLength infers the algorithm of a bare hex digest from its length, as
// IPA does for the legacy "checksum" field.
func algoForLength(hexLen int) string {
	for name, a := range algorithms {
		if a.size*2 == hexLen {
			return name
		}
	}
	return ""
}

// New returns a fresh hash for e.Algo. It panics on an Expected not built by
// this package, which is a programming error.
func (e Expected) New() hash.Hash {
	a, ok := algorithms[e.Algo]
	if !ok {
		panic(fmt.Sprintf("checksum: unknown algorithm %q", e.Algo))
	}
	return a.new()
}

// String returns "<algo>:<hex>", the form --checksum accepts.
func (e Expected) String() string { return e.Algo + ":" + e.Value }

// Verify compares sum, the digest of the image, with e. url and bytesRead
// describe what was hashed and end up in the *MismatchError.
func (e Expected) Verify(sum []byte, url string, bytesRead int64) error {
	got := hex.EncodeToString(sum)
	if got == e.Value {
		return nil
	}
	return &MismatchError{URL: url, Algo: e.Algo, Expected: e.Value, Got: got, BytesRead: bytesRead, Source: e.Source}
}

// MismatchError reports an image whose digest is not the expected one.
type MismatchError struct {
	URL       string
	Algo      string
	Expected  string
	Got       string
	BytesRead int64
	Source    string // where Expected came from
}

func (e *MismatchError) Error() string {
	from := ""
	if e.Source != "" {
		from = " (from " + e.Source + ")"
	}
	return fmt.Sprintf("checksum mismatch for %s: %s expected %s%s got %s after reading %d bytes",
		e.URL, e.Algo, e.Expected, from, e.Got, e.BytesRead)
}

// newExpected validates algo and value and applies the weak-algorithm policy.
// algo may be empty, then it is inferred from the value's length.
func newExpected(algo, value, source string, o Options) (Expected, error) {
	value = strings.ToLower(strings.TrimSpace(value))
	if algo == "" {
		algo = algoForLength(len(value))
		if algo == "" {
			return Expected{}, fmt.Errorf("%s: cannot tell the algorithm of %q from its %d characters (want 64 hex digits for sha256, 96 for sha384, 128 for sha512, or <algo>:<hex>)",
				where(source), value, len(value))
		}
	}
	algo = canonAlgo(algo)
	a, ok := algorithms[algo]
	if !ok {
		return Expected{}, fmt.Errorf("%s: unsupported algorithm %q (supported: sha256, sha384, sha512; md5, sha1 when weak checksums are allowed)", where(source), algo)
	}
	if _, err := hex.DecodeString(value); err != nil || len(value) != a.size*2 {
		return Expected{}, fmt.Errorf("%s: %q is not a %s value (%d hex digits)", where(source), value, algo, a.size*2)
	}
	if a.weak && !o.AllowWeak {
		return Expected{}, fmt.Errorf("%s: %w %s refused: publish a sha256 or sha512 checksum (os_hash_algo/os_hash_value, or checksum \"sha256:<hex>\"), or explicitly allow weak checksums",
			where(source), ErrWeakAlgorithm, algo)
	}
	return Expected{Algo: algo, Value: value, Source: source}, nil
}

// where names a Source in an error message.
func where(source string) string {
	if strings.ContainsAny(source, "/\\") {
		return "checksum file " + source
	}
	return source
}

// splitAlgo splits "<algo>:<hex>"; ok is false when spec has no known
// algorithm prefix (a URL or a Windows-free path, for instance).
func splitAlgo(spec string) (algo, value string, ok bool) {
	a, v, found := strings.Cut(spec, ":")
	if !found {
		return "", "", false
	}
	if _, known := algorithms[canonAlgo(a)]; !known {
		return "", "", false
	}
	return canonAlgo(a), v, true
}

// isHTTPURL reports whether s is an http(s) URL (a checksum file).
func isHTTPURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// FromImageInfo resolves the expected checksum of IPA's image_info.
// imageURL is the URL being downloaded; its file name selects the line of a
// multi-entry checksum file.
//
// As in IPA, os_hash_algo + os_hash_value win over checksum. Either value
// may be the http(s) URL of a checksum file.
func FromImageInfo(ctx context.Context, info map[string]any, imageURL string, o Options) (Expected, error) {
	algo, _ := info["os_hash_algo"].(string)
	value, _ := info["os_hash_value"].(string)
	if strings.TrimSpace(algo) != "" && strings.TrimSpace(value) != "" {
		value = strings.TrimSpace(value)
		if isHTTPURL(value) {
			return fetchFile(ctx, value, canonAlgo(algo), imageURL, o)
		}
		return newExpected(algo, value, "os_hash_value", o)
	}
	sum, _ := info["checksum"].(string)
	sum = strings.TrimSpace(sum)
	if sum == "" {
		return Expected{}, errors.New("image_info has neither os_hash_algo+os_hash_value nor checksum: image checksum is not available")
	}
	if isHTTPURL(sum) {
		return fetchFile(ctx, sum, "", imageURL, o)
	}
	if a, v, ok := splitAlgo(sum); ok {
		return newExpected(a, v, "checksum", o)
	}
	return newExpected("", sum, "checksum", o)
}

// Parse resolves a checksum given on a command line (--checksum SPEC):
// "<algo>:<hex>", a bare hex value (algorithm from its length), the http(s)
// URL of a checksum file, or a checksum file given as "file:///path" or a
// plain path. imageURL selects the line of a multi-entry checksum file.
func Parse(ctx context.Context, spec, imageURL string, o Options) (Expected, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return Expected{}, errors.New("empty checksum")
	case isHTTPURL(spec):
		return fetchFile(ctx, spec, "", imageURL, o)
	case strings.HasPrefix(spec, "file://"):
		return readLocalFile(strings.TrimPrefix(spec, "file://"), imageURL, o)
	}
	if a, v, ok := splitAlgo(spec); ok {
		return newExpected(a, v, "--checksum", o)
	}
	if isHexDigits(spec) {
		return newExpected("", spec, "--checksum", o)
	}
	return readLocalFile(spec, imageURL, o)
}

// isHexDigits reports whether s is made of hex digits only; such a spec is a
// value (possibly of a wrong length, which newExpected reports), not a path.
func isHexDigits(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return s != ""
}
