package configdrive

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// MaxSize is the largest config drive IPA accepts ("Config drive size
// exceeds maximum limit of 64MiB"), and the size of the partition it
// creates for one.
const MaxSize = 64 << 20

// maxDownload bounds what Decode reads from a URL: the base64 text of a
// gzipped MaxSize image (gzip adds a little to incompressible data) with
// line breaks. Real config drives are kilobytes.
const maxDownload = (MaxSize+MaxSize/64)/3*4*77/76 + 1<<20

// Fetcher opens a URL for reading. The caller closes the body.
type Fetcher func(ctx context.Context, url string) (io.ReadCloser, error)

// HTTPFetcher returns a Fetcher that GETs with client (nil: a client that
// waits at most 60 s for response headers, IPA's
// image_download_connection_timeout), and turns HTTP errors into errors
// that quote the status and the start of the body, as IPA does.
func HTTPFetcher(client *http.Client) Fetcher {
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 60 * time.Second
		client = &http.Client{Transport: t}
	}
	return func(ctx context.Context, url string) (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 400 {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("got status code %d, response body %q", resp.StatusCode, body)
		}
		return resp.Body, nil
	}
}

// Decode turns the configdrive the conductor sent into the image to write,
// with IPA's semantics (partition_utils.get_configdrive):
//
//   - a string starting with http:// or https:// (any case) is a URL; its
//     content (at most about 88 MiB) is fetched with fetch (nil:
//     HTTPFetcher(nil)) and decoded like an inline string, except that
//     content that is not base64 is taken to be the image itself, and
//     gunzipped first if it is gzip (IPA would write the gzip stream);
//   - otherwise s is base64 (whitespace ignored) of a gzipped image. Base64
//     of an image that is not gzipped is an error, as in IPA.
//
// The decoded image is refused past MaxSize, without being read further.
func Decode(ctx context.Context, s string, fetch Fetcher) ([]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("config drive is empty")
	}
	if !isHTTPURL(s) {
		// Check the alphabet first, as Ironic's API does: a stray
		// character would otherwise surface as a gzip or padding error.
		if !isBase64Text(s) {
			return nil, errors.New("config drive is neither a URL nor base64 encoded (it must be a gzipped, base64-encoded ISO9660 or FAT image, or an http(s) URL)")
		}
		return decodeBase64Gzip(strings.NewReader(s), "")
	}

	if fetch == nil {
		fetch = HTTPFetcher(nil)
	}
	body, err := fetch(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("can't download the config drive from %s: %w", s, err)
	}
	defer body.Close()
	r := bufio.NewReaderSize(&limitedReader{r: body, n: maxDownload, url: s}, 4096)
	// IPA tries base64 and, when that fails on downloaded bytes, uses them
	// as they are: an ISO starts with 32 KiB of zeroes, a FAT or hybrid
	// image with boot code, so the first bytes tell.
	head, err := r.Peek(4096)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("can't download the config drive from %s: %w", s, err)
	}
	if len(head) == 0 {
		return nil, fmt.Errorf("config drive downloaded from %s is empty", s)
	}
	if !isBase64Text(string(head)) {
		var img io.Reader = r
		if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
			// A gzipped image served as is (configdrive.iso.gz). IPA
			// would write the gzip stream as the image; decompressing
			// is the only useful reading.
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, fmt.Errorf("config drive downloaded from %s looks gzipped but is not: %w", s, err)
			}
			img = zr
		}
		b, err := readMax(img)
		if err != nil {
			return nil, fmt.Errorf("config drive downloaded from %s: %w", s, err)
		}
		return b, nil
	}
	img, err := decodeBase64Gzip(r, s)
	if err != nil {
		return nil, err
	}
	return img, nil
}

func isHTTPURL(s string) bool {
	s = strings.ToLower(s)
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// decodeBase64Gzip streams base64 -> gunzip -> image, bounded by MaxSize.
// from names the URL the text came from, for errors ("" for inline).
func decodeBase64Gzip(text io.Reader, from string) ([]byte, error) {
	where := ""
	if from != "" {
		where = " (downloaded from " + from + ")"
	}
	var (
		bad *base64Error
		big *downloadLimitError
	)
	zr, err := gzip.NewReader(base64Reader{base64.NewDecoder(base64.StdEncoding, &spaceSkipper{r: text})})
	switch {
	case errors.As(err, &big):
		return nil, big
	case errors.As(err, &bad):
		return nil, fmt.Errorf("config drive is not base64 encoded%s: %w", where, bad.err)
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("config drive%s is base64 but not gzipped: it must be the base64 encoding of a gzipped ISO9660 or FAT image: %w", where, err)
	case err != nil:
		return nil, fmt.Errorf("config drive%s: %w", where, err)
	}
	img, err := readMax(zr)
	switch {
	case errors.As(err, &big):
		return nil, big
	case errors.As(err, &bad):
		return nil, fmt.Errorf("config drive is not base64 encoded%s: %w", where, bad.err)
	case err != nil:
		return nil, fmt.Errorf("error while decompressing the config drive%s: %w", where, err)
	}
	return img, nil
}

// base64Reader tags the base64 decoder's errors (bad characters, a
// truncated last quantum) so they are not reported as gzip's.
type base64Reader struct{ r io.Reader }

func (b base64Reader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &base64Error{err}
	}
	return n, err
}

type base64Error struct{ err error }

func (e *base64Error) Error() string { return "base64: " + e.err.Error() }
func (e *base64Error) Unwrap() error { return e.err }

// readMax reads r to the end, refusing more than MaxSize bytes.
func readMax(r io.Reader) ([]byte, error) {
	img, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(img) > MaxSize {
		return nil, fmt.Errorf("config drive size exceeds maximum limit of %d MiB", MaxSize>>20)
	}
	if len(img) == 0 {
		return nil, errors.New("config drive image is empty")
	}
	return img, nil
}

// isBase64Text reports whether s holds only base64 characters and
// whitespace.
func isBase64Text(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '+', c == '/', c == '=', isSpace(c):
		default:
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// spaceSkipper drops ASCII whitespace, which Ironic's API lets through in
// a base64 config drive and Python's b64decode ignores; Go's base64
// decoder only skips newlines.
type spaceSkipper struct{ r io.Reader }

func (s *spaceSkipper) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if !isSpace(c) {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// limitedReader fails, rather than stopping quietly, past n bytes.
type limitedReader struct {
	r   io.Reader
	n   int64 // bytes still allowed
	url string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	// Read at most one byte past the limit: enough to know it was passed.
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.n {
		return 0, &downloadLimitError{l.url}
	}
	l.n -= int64(n)
	return n, err
}

type downloadLimitError struct{ url string }

func (e *downloadLimitError) Error() string {
	return fmt.Sprintf("config drive download from %s is larger than %d MiB; refusing it", e.url, maxDownload>>20)
}
