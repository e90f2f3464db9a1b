package imagestore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
	"github.com/ironlite/ironlite/images/streamtest"
)

func newStore(t *testing.T, sources map[string]string, inUse InUseFunc) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	srcs, err := catalog.OpenSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, u := range sources {
		if err := srcs.Add(name, u); err != nil {
			t.Fatal(err)
		}
	}
	c, err := cache.Open(filepath.Join(dir, "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.RetryDelay = time.Millisecond
	s := New(Config{Catalog: catalog.New(srcs, nil), Cache: c, BaseURL: "http://192.0.2.1:6385/", InUse: inUse})
	t.Cleanup(s.Close)
	return s, dir
}

func waitState(t *testing.T, s *Store, id, want string) Image {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		img, err := s.Get(context.Background(), id)
		if err == nil && img.State == want {
			return img
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s: want state %s, have %+v (err %v)", id, want, img, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestImportAliasInBackground(t *testing.T) {
	data := bytes.Repeat([]byte("centos-disk "), 50000)
	srv := streamtest.New(t, streamtest.Image{Alias: "centos/9-Stream", Data: data})
	s, dir := newStore(t, map[string]string{"lab": srv.URL}, nil)
	ctx := context.Background()

	img, err := s.Start(ctx, "lab:centos/9-Stream", catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sha := streamtest.SHA256(data)
	if img.ID != sha || (img.State != Importing && img.State != Active) {
		t.Fatalf("Start: %+v", img)
	}
	got := waitState(t, s, sha, Active)
	if got.Size != int64(len(data)) || got.Ref != "lab:centos/9-Stream" || got.DiskFormat != "qcow2" {
		t.Fatalf("imported: %+v", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "images", "blobs", sha))
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("cached bytes differ (err %v)", err)
	}
	for _, id := range []string{sha[:12], got.Name, "lab:centos/9-Stream"} {
		if g, err := s.Get(ctx, id); err != nil || g.ID != sha {
			t.Errorf("Get(%q) = %+v, %v", id, g, err)
		}
	}
	// A second Start finds it cached.
	again, err := s.Start(ctx, "lab:centos/9-Stream", catalog.Options{})
	if err != nil || again.State != Active {
		t.Fatalf("second Start: %+v, %v", again, err)
	}
	u, err := s.URL(cache.Entry{SHA256: sha, Name: got.Name})
	if err != nil || u != "http://192.0.2.1:6385/images/"+sha+"/"+got.Name {
		t.Fatalf("URL = %q, %v", u, err)
	}
}

func TestImportRefusesBadMetadata(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 100000)
	srv := streamtest.New(t,
		streamtest.Image{Alias: "tampered/1", Data: data, SHA256: strings.Repeat("ab", 32)},
		streamtest.Image{Alias: "short/1", Data: data, Size: int64(len(data)) + 5},
	)
	s, dir := newStore(t, map[string]string{"lab": srv.URL}, nil)
	ctx := context.Background()
	for _, tc := range []struct{ ref, sha, want string }{
		{"lab:tampered/1", strings.Repeat("ab", 32), "checksum"},
		{"lab:short/1", streamtest.SHA256(data), "size"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			if _, err := s.Start(ctx, tc.ref, catalog.Options{}); err != nil {
				t.Fatal(err)
			}
			img := waitState(t, s, tc.sha, Failed)
			if !strings.Contains(img.Error, tc.want) {
				t.Errorf("error %q does not mention %s", img.Error, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "images", "blobs", tc.sha)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused image is in the cache (stat: %v)", err)
			}
			// A failed import is forgotten by delete.
			if err := s.Delete(ctx, tc.sha); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, tc.sha); !errors.Is(err, ErrNotFound) {
				t.Errorf("after delete: %v", err)
			}
		})
	}
	// Fetch (the deploy's path) reports the mismatch as an error.
	if _, err := s.Fetch(ctx, "lab:tampered/1", catalog.Options{}, nil); !errors.Is(err, cache.ErrChecksum) {
		t.Errorf("Fetch of tampered image: %v", err)
	}
}

func TestBadReferences(t *testing.T) {
	srv := streamtest.New(t, streamtest.Image{Alias: "centos/9-Stream", Data: []byte("x")})
	s, dir := newStore(t, map[string]string{"lab": srv.URL, "dead": "http://127.0.0.1:1/"}, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		ref  string
		want error
	}{
		{"lab:debian/12", catalog.ErrUnknownAlias},
		{"nosuch:centos/9-Stream", catalog.ErrUnknownSource},
		{"dead:centos/9-Stream", catalog.ErrUnreachable},
		{"https://example.com/x.qcow2", catalog.ErrInvalidReference}, // no checksum
	} {
		if _, err := s.Start(ctx, tc.ref, catalog.Options{}); !errors.Is(err, tc.want) {
			t.Errorf("Start(%q) = %v, want %v", tc.ref, err, tc.want)
		}
	}
	imgs, err := s.List(ctx)
	if err != nil || len(imgs) != 0 {
		t.Fatalf("List after bad references = %+v, %v", imgs, err)
	}
	if des, _ := os.ReadDir(filepath.Join(dir, "images", "partial")); len(des) != 0 {
		t.Errorf("partial files left: %v", des)
	}
}

func TestOfflineFallbackAndInUse(t *testing.T) {
	data := bytes.Repeat([]byte("y"), 4096)
	srv := streamtest.New(t, streamtest.Image{Alias: "centos/9-Stream", Data: data})
	users := map[string][]string{}
	s, _ := newStore(t, map[string]string{"lab": srv.URL}, func(context.Context) (map[string][]string, error) {
		return users, nil
	})
	ctx := context.Background()
	e, err := s.Fetch(ctx, "lab:centos/9-Stream", catalog.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close() // the source goes away: the cached import still resolves
	img, err := s.Resolve(ctx, "lab:centos/9-Stream", catalog.Options{})
	if err != nil || img.Checksum.Value != e.SHA256 {
		t.Fatalf("offline Resolve = %+v, %v", img, err)
	}
	users[e.SHA256] = []string{"node-1"}
	if err := s.Delete(ctx, e.SHA256); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "node-1") {
		t.Fatalf("Delete in use = %v", err)
	}
	delete(users, e.SHA256)
	if err := s.Delete(ctx, e.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "lab:centos/9-Stream", catalog.Options{}); !errors.Is(err, catalog.ErrUnreachable) {
		t.Fatalf("offline Resolve after delete = %v", err)
	}
}

func TestIsCatalogRef(t *testing.T) {
	for ref, want := range map[string]bool{
		"images:centos/9-Stream": true, "ubuntu:24.04": true,
		"http://x/y.img": false, "HTTPS://x/y": false, "file:///tmp/x": false,
		"/tmp/x": false, "": false, ":x": false, "glance://abc": false,
	} {
		if got := IsCatalogRef(ref); got != want {
			t.Errorf("IsCatalogRef(%q) = %v", ref, got)
		}
	}
}
