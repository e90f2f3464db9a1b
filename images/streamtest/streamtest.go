// Package streamtest serves a simplestreams tree on loopback, laid out as
// images.linuxcontainers.org publishes its VM images (an index, one
// products file, versions named "YYYYMMDD_HH:MM", a disk-kvm.img item
// beside container items), for tests of the image catalogue, the cache,
// the API and the deploy.
package streamtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Image is one product of the tree.
type Image struct {
	// Alias is what follows "SOURCE:", e.g. "centos/9-Stream".
	Alias string
	// Arch is the product arch (default amd64).
	Arch string
	// Data is the disk item's content.
	Data []byte
	// Version defaults to "20261120_07:08".
	Version string
	// SHA256 and Size, when set, are published instead of the real ones
	// (tampered metadata).
	SHA256 string
	Size   int64
}

// Server is a running tree.
type Server struct {
	*httptest.Server
	// Dir holds the files; tests may change them.
	Dir string
}

// ItemPath is where an image's disk item lives below the tree's root.
func ItemPath(img Image) string {
	return path.Join("images", img.Alias, arch(img), "cloud", version(img), "disk.qcow2")
}

func arch(img Image) string {
	if img.Arch == "" {
		return "amd64"
	}
	return img.Arch
}

func version(img Image) string {
	if img.Version == "" {
		return "20261120_07:08"
	}
	return img.Version
}

// SHA256 is the hex sha256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// New writes the tree for imgs into a temporary directory and serves it.
func New(t testing.TB, imgs ...Image) *Server {
	t.Helper()
	dir := t.TempDir()
	Write(t, dir, imgs...)
	s := &Server{Server: httptest.NewServer(http.FileServer(http.Dir(dir))), Dir: dir}
	t.Cleanup(s.Close)
	return s
}

// Write writes the tree for imgs into dir, for a server of the caller's
// (e.g. one inside a network namespace).
func Write(t testing.TB, dir string, imgs ...Image) {
	t.Helper()
	products := map[string]any{}
	for _, img := range imgs {
		item := ItemPath(img)
		write(t, dir, item, img.Data)
		sum, size := SHA256(img.Data), int64(len(img.Data))
		if img.SHA256 != "" {
			sum = img.SHA256
		}
		if img.Size != 0 {
			size = img.Size
		}
		osName, rel, _ := strings.Cut(img.Alias, "/")
		id := fmt.Sprintf("%s:%s:%s:cloud", osName, strings.ReplaceAll(rel, "/", "-"), arch(img))
		products[id] = map[string]any{
			"aliases": img.Alias + "/cloud," + img.Alias,
			"arch":    arch(img), "os": osName, "release": rel, "variant": "cloud",
			"versions": map[string]any{version(img): map[string]any{"items": map[string]any{
				"incus.tar.xz": map[string]any{"ftype": "incus.tar.xz", "path": path.Join(path.Dir(item), "incus.tar.xz"),
					"sha256": strings.Repeat("1", 64), "size": 10},
				"disk.qcow2": map[string]any{"ftype": "disk-kvm.img", "path": item, "sha256": sum, "size": size},
			}}},
		}
	}
	ids := []string{}
	for id := range products {
		ids = append(ids, id)
	}
	writeJSON(t, dir, "streams/v1/index.json", map[string]any{"format": "index:1.0", "index": map[string]any{
		"images": map[string]any{"datatype": "image-downloads", "path": "streams/v1/images.json",
			"format": "products:1.0", "products": ids}}})
	writeJSON(t, dir, "streams/v1/images.json", map[string]any{"content_id": "images",
		"datatype": "image-downloads", "format": "products:1.0", "products": products})
}

func writeJSON(t testing.TB, dir, rel string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, rel, b)
}

func write(t testing.TB, dir, rel string, b []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
