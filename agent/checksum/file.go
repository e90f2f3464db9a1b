package checksum

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// MaxFileSize bounds a checksum file: real ones list a handful of images, and
// the agent runs in a small RAM disk, so anything bigger is a wrong URL (the
// image itself, say).
const MaxFileSize = 1 << 20

// FetchTimeout bounds the whole fetch of one checksum file.
const FetchTimeout = 30 * time.Second

// userAgent is what the agent calls itself on HTTP requests.
const userAgent = "ironlite-agent"

// fetchFile downloads a checksum file and picks the entry for imageURL.
// wantAlgo, when not empty, is the algorithm the value must have
// (os_hash_algo).
func fetchFile(ctx context.Context, fileURL, wantAlgo, imageURL string, o Options) (Expected, error) {
	data, err := download(ctx, fileURL, o.HTTPClient)
	if err != nil {
		return Expected{}, err
	}
	return fromFile(data, fileURL, wantAlgo, imageURL, o)
}

func download(ctx context.Context, fileURL string, client *http.Client) ([]byte, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL, nil)
	if err != nil {
		return nil, fmt.Errorf("checksum file %s: %w", fileURL, err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch checksum file: %w", err) // *url.Error names the URL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch checksum file %s: HTTP %s", fileURL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch checksum file %s: %w", fileURL, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("checksum file %s is larger than %d bytes: not a checksum file", fileURL, MaxFileSize)
	}
	return data, nil
}

func readLocalFile(name, imageURL string, o Options) (Expected, error) {
	f, err := os.Open(name)
	if err != nil {
		return Expected{}, fmt.Errorf("checksum %q is neither <algo>:<hex>, a hex value, a URL nor a readable checksum file: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return Expected{}, fmt.Errorf("read checksum file %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return Expected{}, fmt.Errorf("checksum file %s is larger than %d bytes: not a checksum file", name, MaxFileSize)
	}
	return fromFile(data, name, "", imageURL, o)
}

// entry is one "<digest> <name>" line of a checksum file.
type entry struct {
	algo  string // from a BSD line; empty for GNU lines (inferred from length)
	value string
	name  string
}

// bsdLine matches BSD-style lines: "SHA256 (ubuntu.img) = 0123...".
var bsdLine = regexp.MustCompile(`^([A-Za-z0-9_-]+) ?\((.*)\) ?= ?([0-9A-Fa-f]+)$`)

// parseFile splits a checksum file into entries and lone values. Lines that
// are neither (comments, PGP armour of signed CHECKSUM files, blank lines)
// are ignored.
func parseFile(data []byte) (entries []entry, lone []string) {
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := bsdLine.FindStringSubmatch(line); m != nil {
			if _, ok := algorithms[canonAlgo(m[1])]; ok {
				entries = append(entries, entry{algo: canonAlgo(m[1]), value: m[3], name: m[2]})
			}
			continue
		}
		value, name, found := strings.Cut(line, " ")
		if !found {
			value, name, found = strings.Cut(line, "\t")
		}
		// GNU coreutils prefixes the line with a backslash when the name
		// has escaped characters.
		value = strings.TrimPrefix(value, `\`)
		if !found {
			if isHexDigits(value) {
				lone = append(lone, value)
			} else if _, _, ok := splitAlgo(value); ok {
				lone = append(lone, value)
			}
			continue
		}
		if !isHexDigits(value) {
			continue
		}
		// "<hex>  name" (text mode) or "<hex> *name" (binary mode).
		name = strings.TrimPrefix(strings.TrimLeft(name, " \t"), "*")
		entries = append(entries, entry{value: value, name: name})
	}
	return entries, lone
}

// imageName is the file name a checksum file lists the image under: the last
// path element of its URL, as IPA matches it.
func imageName(imageURL string) string {
	if u, err := url.Parse(imageURL); err == nil && u.Path != "" {
		return path.Base(u.Path)
	}
	return path.Base(imageURL)
}

func fromFile(data []byte, source, wantAlgo, imageURL string, o Options) (Expected, error) {
	entries, lone := parseFile(data)
	if len(entries) == 0 {
		switch len(lone) {
		case 0:
			return Expected{}, fmt.Errorf("checksum file %s has no checksum in it", source)
		case 1:
			if a, v, ok := splitAlgo(lone[0]); ok {
				if wantAlgo != "" && a != wantAlgo {
					return Expected{}, fmt.Errorf("checksum file %s has a %s value but os_hash_algo is %s", source, a, wantAlgo)
				}
				return newExpected(a, v, source, o)
			}
			return newExpected(wantAlgo, lone[0], source, o)
		default:
			return Expected{}, fmt.Errorf("checksum file %s has %d values and no file names: cannot tell which is the image's", source, len(lone))
		}
	}

	want := imageName(imageURL)
	var matched []entry
	for _, e := range entries {
		n := strings.TrimPrefix(e.name, "./")
		if n == want || path.Base(n) == want {
			matched = append(matched, e)
		}
	}
	if len(matched) == 0 {
		if len(entries) > 1 {
			return Expected{}, fmt.Errorf("checksum file %s has no entry for %q (the file name of %s)", source, want, imageURL)
		}
		// A file for exactly one image is taken whatever name it gives:
		// images are often served under another name (a controller cache
		// by UUID, a redirect), and a wrong file still fails verification.
		matched = entries
	}
	return pick(matched, source, wantAlgo, o)
}

// pick chooses among the entries for the image: the one with wantAlgo when
// given, else the strongest one the policy allows.
func pick(matched []entry, source, wantAlgo string, o Options) (Expected, error) {
	var best *Expected
	var firstErr error
	for _, e := range matched {
		algo := e.algo
		if algo == "" {
			algo = algoForLength(len(e.value))
		}
		if wantAlgo != "" && algo != wantAlgo && e.algo != "" {
			continue
		}
		if wantAlgo != "" {
			algo = wantAlgo
		}
		exp, err := newExpected(algo, e.value, source, o)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if best == nil || algorithms[exp.Algo].rank > algorithms[best.Algo].rank {
			best = &exp
		}
	}
	if best != nil {
		return *best, nil
	}
	if firstErr != nil {
		return Expected{}, firstErr
	}
	return Expected{}, errors.New("checksum file " + source + " has no " + wantAlgo + " entry for the image")
}
