package api_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/store"
	"github.com/ironlite/ironlite/images/streamtest"
)

// newImageEnv is a controller whose image service has the source "lab",
// a simplestreams tree on loopback with a good, a tampered and a
// wrongly sized image, and "dead", a source nobody answers.
func newImageEnv(t *testing.T) (*env, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte("disk-kvm "), 20000)
	tree := streamtest.New(t,
		streamtest.Image{Alias: "centos/9-Stream", Data: data},
		streamtest.Image{Alias: "tampered/1", Data: data[:5000], SHA256: strings.Repeat("ab", 32)},
		streamtest.Image{Alias: "short/1", Data: data[:7000], Size: 7001},
	)
	dir := t.TempDir()
	imgs, err := imagestore.Open(dir, imagestore.Config{BaseURL: "http://192.0.2.1:6385"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	fake.Register(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(st, reg, conductor.Config{Host: "test-host"}, log)
	srv := httptest.NewServer(api.New(cond, api.Config{Images: imgs}, log))
	t.Cleanup(func() { srv.Close(); imgs.Close(); cond.Stop(); st.Close() })
	e := &env{t: t, srv: srv, cond: cond, st: st}
	for name, u := range map[string]string{"lab": tree.URL, "dead": "http://127.0.0.1:1/"} {
		if r := e.do("POST", "/v1/image_sources", "", map[string]string{"name": name, "url": u}); r.status != 201 {
			t.Fatalf("add source %s: %d %s", name, r.status, r.body)
		}
	}
	return e, data
}

func (e *env) waitImage(id, state string) map[string]any {
	e.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		r := e.do("GET", "/v1/images/"+id, "", nil)
		if r.status == 200 && r.json(e.t)["state"] == state {
			return r.json(e.t)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("image %s never %s: %d %s", id, state, r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestImagesAPI(t *testing.T) {
	e, data := newImageEnv(t)
	sha := streamtest.SHA256(data)

	r := e.do("POST", "/v1/images", "", map[string]string{"ref": "lab:centos/9-Stream"})
	if r.status != 202 && r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["id"] != sha || r.header.Get("Location") == "" {
		t.Fatalf("import answer: %v (Location %q)", m, r.header.Get("Location"))
	}
	img := e.waitImage(sha, "active")
	if img["size"] != float64(len(data)) || img["ref"] != "lab:centos/9-Stream" || img["disk_format"] != "qcow2" {
		t.Errorf("image: %v", img)
	}
	if r := e.do("POST", "/v1/images", "", map[string]string{"ref": "lab:centos/9-Stream"}); r.status != 200 || r.json(t)["state"] != "active" {
		t.Errorf("second import: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/images/"+sha[:10], "", nil); r.status != 200 || r.json(t)["id"] != sha {
		t.Errorf("get by prefix: %d %s", r.status, r.body)
	}
	list := e.do("GET", "/v1/images", "", nil).json(t)["images"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != sha {
		t.Errorf("list: %v", list)
	}

	// Tampered sha256 and wrong size: accepted, then failed with the
	// reason, nothing cached; delete forgets the failure.
	for _, c := range []struct{ ref, sha, want string }{
		{"lab:tampered/1", strings.Repeat("ab", 32), "checksum"},
		{"lab:short/1", streamtest.SHA256(data[:7000]), "size"},
	} {
		if r := e.do("POST", "/v1/images", "", map[string]string{"ref": c.ref}); r.status != 202 {
			t.Fatalf("import %s: %d %s", c.ref, r.status, r.body)
		}
		img := e.waitImage(c.sha, "failed")
		if msg, _ := img["error"].(string); !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q", c.ref, msg)
		}
		if r := e.do("DELETE", "/v1/images/"+c.sha, "", nil); r.status != 204 {
			t.Errorf("delete failed import: %d %s", r.status, r.body)
		}
	}

	// Bad input: clear errors, nothing imported.
	for _, c := range []struct {
		body   any
		status int
		want   string
	}{
		{`{"ref": `, 400, "Malformed JSON"},
		{map[string]string{"ref": "lab:centos/9-Stream", "checksun": "x"}, 400, "unknown field"},
		{map[string]string{}, 400, "Missing \"ref\""},
		{map[string]string{"ref": "lab:debian/12"}, 400, `no image "debian/12"`},
		{map[string]string{"ref": "nosuch:x"}, 400, "unknown image source"},
		{map[string]string{"ref": "dead:centos/9-Stream"}, 502, "unreachable"},
		{map[string]string{"ref": "https://example.com/x.qcow2", "checksum": "sha256"}, 400, "expected algo:hex"},
		{map[string]string{"ref": "https://example.com/x.qcow2"}, 400, "checksum"},
	} {
		r := e.do("POST", "/v1/images", "", c.body)
		if r.status != c.status || !strings.Contains(r.fault(t), c.want) {
			t.Errorf("POST %v: %d %s, want %d %q", c.body, r.status, r.body, c.status, c.want)
		}
	}
	if n := len(e.do("GET", "/v1/images", "", nil).json(t)["images"].([]any)); n != 1 {
		t.Errorf("%d images after the bad requests, want 1", n)
	}

	// Sources and remote listing.
	srcs := e.do("GET", "/v1/image_sources", "", nil).json(t)["sources"].([]any)
	if len(srcs) != 4 { // images, ubuntu (defaults), lab, dead
		t.Errorf("sources: %v", srcs)
	}
	remote := e.do("GET", "/v1/image_sources/lab/images", "", nil).json(t)["images"].([]any)
	if len(remote) != 3 {
		t.Errorf("remote images: %v", remote)
	}
	for _, c := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"GET", "/v1/image_sources/nosuch/images", nil, 404},
		{"GET", "/v1/image_sources/dead/images", nil, 502},
		{"DELETE", "/v1/image_sources/nosuch", nil, 404},
		{"POST", "/v1/image_sources", map[string]string{"name": "http", "url": "http://x/"}, 400},
		{"POST", "/v1/image_sources", map[string]string{"name": "ok", "url": "ftp://x/"}, 400},
		{"GET", "/v1/images/nosuch", nil, 404},
		{"DELETE", "/v1/images/" + strings.Repeat("0", 64), nil, 404},
	} {
		if r := e.do(c.method, c.path, "", c.body); r.status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.status, r.body, c.status)
		}
	}
	if r := e.do("DELETE", "/v1/image_sources/dead", "", nil); r.status != 204 {
		t.Errorf("remove source: %d %s", r.status, r.body)
	}

	if r := e.do("DELETE", "/v1/images/"+sha, "", nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/images/"+sha, "", nil); r.status != 404 {
		t.Errorf("after delete: %d", r.status)
	}
}

func TestImagesDisabled(t *testing.T) {
	e := newEnv(t)
	if r := e.do("GET", "/v1/images", "", nil); r.status != 404 || !strings.Contains(r.fault(t), "not enabled") {
		t.Errorf("images without a store: %d %s", r.status, r.body)
	}
}
