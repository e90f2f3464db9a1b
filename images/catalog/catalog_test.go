package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree is a simplestreams server laid out like the real ones: an index
// with an image-ids stream that must be skipped, Ubuntu-style products
// (disk1.img) and LXC-style products (disk-kvm.img next to container
// items, versions named "YYYYMMDD_HH:MM").
func tree(t *testing.T, files map[string]string) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv
}

const (
	sumOld   = "1111111111111111111111111111111111111111111111111111111111111111"
	sumNoble = "2222222222222222222222222222222222222222222222222222222222222222"
	sumArm   = "3333333333333333333333333333333333333333333333333333333333333333"
	sumCent  = "4444444444444444444444444444444444444444444444444444444444444444"
)

const index = `{"format":"index:1.0","updated":"Thu, 20 Nov 2026 10:00:00 +0000","index":{
 "com.ubuntu.cloud:released:aws":{"datatype":"image-ids","path":"streams/v1/com.ubuntu.cloud:released:aws.json","format":"products:1.0","products":["x"]},
 "com.ubuntu.cloud:released:download":{"datatype":"image-downloads","path":"streams/v1/com.ubuntu.cloud:released:download.json","format":"products:1.0",
   "products":["com.ubuntu.cloud:server:24.04:amd64","com.ubuntu.cloud:server:24.04:arm64"]},
 "images":{"datatype":"image-downloads","path":"streams/v1/images.json","format":"products:1.0","products":["centos:9-Stream:amd64:cloud"]}}}`

const ubuntuProducts = `{"content_id":"com.ubuntu.cloud:released:download","datatype":"image-downloads","format":"products:1.0","products":{
 "com.ubuntu.cloud:server:24.04:amd64":{"aliases":"24.04,default,lts,n,noble","arch":"amd64","os":"ubuntu","release":"noble",
  "release_codename":"Noble Numbat","release_title":"24.04 LTS","version":"24.04","versions":{
   "20240423":{"label":"release","items":{
     "disk1.img":{"ftype":"disk1.img","path":"server/releases/noble/release-20240423/ubuntu-24.04-server-cloudimg-amd64.img","sha256":"` + sumOld + `","size":100,"md5":"x"}}},
   "20241004":{"label":"release","items":{
     "disk1.img":{"ftype":"disk1.img","path":"server/releases/noble/release-20241004/ubuntu-24.04-server-cloudimg-amd64.img","sha256":"` + sumNoble + `","size":600000000},
     "root.tar.xz":{"ftype":"root.tar.xz","path":"server/releases/noble/release-20241004/root.tar.xz","sha256":"` + sumOld + `","size":5}}},
   "20241101":{"label":"release","items":{
     "manifest":{"ftype":"manifest","path":"server/releases/noble/release-20241101/x.manifest","sha256":"` + sumOld + `","size":5}}}}},
 "com.ubuntu.cloud:server:24.04:arm64":{"aliases":"24.04,default,lts,n,noble","arch":"arm64","os":"ubuntu","release":"noble","versions":{
   "20241004":{"items":{"disk1.img":{"ftype":"disk1.img","path":"server/releases/noble/release-20241004/ubuntu-24.04-server-cloudimg-arm64.img","sha256":"` + sumArm + `","size":500}}}}}}}`

const lxcProducts = `{"content_id":"images","datatype":"image-downloads","format":"products:1.0","products":{
 "centos:9-Stream:amd64:cloud":{"aliases":"centos/9-Stream/cloud","arch":"amd64","os":"Centos","release":"9-Stream","release_title":"9-Stream","variant":"cloud","versions":{
   "20261120_07:08":{"items":{
     "incus.tar.xz":{"ftype":"incus.tar.xz","path":"images/centos/9-Stream/amd64/cloud/20261120_07:08/incus.tar.xz","sha256":"` + sumOld + `","size":1000,"combined_disk-kvm-img_sha256":"` + sumOld + `"},
     "disk.qcow2":{"ftype":"disk-kvm.img","path":"images/centos/9-Stream/amd64/cloud/20261120_07:08/disk.qcow2","sha256":"` + sumCent + `","size":612368384},
     "root.squashfs":{"ftype":"squashfs","path":"images/centos/9-Stream/amd64/cloud/20261120_07:08/rootfs.squashfs","sha256":"` + sumOld + `","size":9}}}}},
 "alpine:3.20:amd64:default":{"aliases":"alpine/3.20","arch":"amd64","os":"Alpine","release":"3.20","variant":"default","versions":{
   "20261120_13:00":{"items":{"root.tar.xz":{"ftype":"root.tar.xz","path":"images/alpine/3.20/amd64/default/20261120_13:00/rootfs.tar.xz","sha256":"` + sumOld + `","size":9}}}}}}}`

func goodTree(t *testing.T) *httptest.Server {
	return tree(t, map[string]string{
		"streams/v1/index.json":                              index,
		"streams/v1/com.ubuntu.cloud:released:download.json": ubuntuProducts,
		"streams/v1/images.json":                             lxcProducts,
	})
}

func newCatalog(t *testing.T, srcs map[string]string) *Catalog {
	t.Helper()
	s, err := OpenSources(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for n, u := range srcs {
		if err := s.Add(n, u); err != nil {
			t.Fatal(err)
		}
	}
	return New(s, nil)
}

func TestResolveAlias(t *testing.T) {
	srv := goodTree(t)
	c := newCatalog(t, map[string]string{"local": srv.URL + "/"})
	tests := []struct {
		ref, arch string
		want      Image
		err       error
		errText   string
	}{
		{ref: "local:24.04", want: Image{Name: "ubuntu-noble-amd64-20241004", Ref: "local:24.04",
			URL:      srv.URL + "/server/releases/noble/release-20241004/ubuntu-24.04-server-cloudimg-amd64.img",
			Checksum: Checksum{"sha256", sumNoble}, DiskFormat: "qcow2", Size: 600000000, Version: "20241004"}},
		{ref: "local:noble", arch: "aarch64", want: Image{Name: "ubuntu-noble-arm64-20241004", Ref: "local:noble",
			URL:      srv.URL + "/server/releases/noble/release-20241004/ubuntu-24.04-server-cloudimg-arm64.img",
			Checksum: Checksum{"sha256", sumArm}, DiskFormat: "qcow2", Size: 500, Version: "20241004"}},
		{ref: "local:centos/9-Stream/cloud", want: Image{Name: "centos-9-Stream-cloud-amd64-20261120_0708", Ref: "local:centos/9-Stream/cloud",
			URL:      srv.URL + "/images/centos/9-Stream/amd64/cloud/20261120_07:08/disk.qcow2",
			Checksum: Checksum{"sha256", sumCent}, DiskFormat: "qcow2", Size: 612368384, Version: "20261120_07:08"}},
		{ref: "local:22.04", err: ErrUnknownAlias, errText: `no image "22.04" in source "local"`},
		{ref: "local:24.04", arch: "riscv64", err: ErrUnknownAlias, errText: "no riscv64 image (available: amd64, arm64)"},
		{ref: "local:alpine/3.20", err: ErrUnknownAlias, errText: "has no disk image"},
		{ref: "nosuch:24.04", err: ErrUnknownSource, errText: `"nosuch" (configured: images, local, ubuntu)`},
		{ref: "local:", err: ErrInvalidReference, errText: "empty alias"},
		{ref: "24.04", err: ErrInvalidReference, errText: "SOURCE:ALIAS"},
	}
	for _, tt := range tests {
		t.Run(tt.ref+"/"+tt.arch, func(t *testing.T) {
			got, err := c.Resolve(context.Background(), tt.ref, Options{Arch: tt.arch})
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestList(t *testing.T) {
	srv := goodTree(t)
	c := newCatalog(t, map[string]string{"local": srv.URL})
	imgs, err := c.List(context.Background(), "local")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range imgs {
		got = append(got, strings.Join([]string{i.Alias, i.OS, i.Release, i.Arch, i.Version, i.Format}, " "))
	}
	want := []string{
		"24.04 ubuntu noble amd64 20241004 qcow2",
		"24.04 ubuntu noble arm64 20241004 qcow2",
		"centos/9-Stream/cloud Centos 9-Stream amd64 20261120_07:08 qcow2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if imgs[2].Size != 612368384 || imgs[0].Image.Checksum.Value != sumNoble {
		t.Fatalf("size/checksum not carried: %+v", imgs[2])
	}
	if _, err := c.List(context.Background(), "nosuch"); !errors.Is(err, ErrUnknownSource) {
		t.Fatalf("unknown source: %v", err)
	}
}

func TestBadStreams(t *testing.T) {
	item := func(path string) string {
		return `{"format":"products:1.0","products":{"p":{"aliases":"x","arch":"amd64","os":"o","release":"r","versions":{
		 "20260101":{"items":{"d":{"ftype":"disk-kvm.img","path":"` + path + `","sha256":"` + sumCent + `","size":10}}}}}}}`
	}
	idx := `{"format":"index:1.0","index":{"i":{"datatype":"image-downloads","path":"streams/v1/p.json"}}}`
	tests := []struct {
		name    string
		files   map[string]string
		err     error
		errText string
	}{
		{"malformed index", map[string]string{"streams/v1/index.json": `{"format":"index:1.0","index":{`}, ErrBadStream, "index.json: unexpected end of JSON input"},
		{"index wrong type", map[string]string{"streams/v1/index.json": `{"format":"index:1.0","index":[]}`}, ErrBadStream, "cannot unmarshal array"},
		{"index wrong format", map[string]string{"streams/v1/index.json": `{"format":"products:1.0"}`}, ErrBadStream, `index format "products:1.0"`},
		{"no downloads", map[string]string{"streams/v1/index.json": `{"format":"index:1.0","index":{}}`}, ErrBadStream, "no image-downloads stream"},
		{"malformed products", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": `{"products":{"p":{"versions":5}}}`}, ErrBadStream, "p.json"},
		{"missing products", map[string]string{"streams/v1/index.json": idx}, ErrUnreachable, "404"},
		{"index path traversal", map[string]string{"streams/v1/index.json": `{"format":"index:1.0","index":{"i":{"datatype":"image-downloads","path":"../../etc/passwd"}}}`}, ErrBadStream, `"../../etc/passwd" has a '.' or '..' segment`},
		{"dotdot", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("images/../../secret.qcow2")}, ErrBadStream, "'..' segment"},
		{"absolute", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("/etc/shadow")}, ErrBadStream, "is absolute"},
		{"other host", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("http://evil.example/x.qcow2")}, ErrBadStream, "is absolute"},
		{"escaped dotdot", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("images/%2e%2e/%2E%2E/x.qcow2")}, ErrBadStream, "'..' segment"},
		{"escaped slash", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("images/..%2f..%2fx.qcow2")}, ErrBadStream, "'..' segment"},
		{"double escaped", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("%252e%252e/x.qcow2")}, ErrBadStream, "'..' segment"},
		{"escaped absolute", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item("%2fetc/shadow")}, ErrBadStream, "is absolute"},
		{"backslash", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": item(`..\\..\\x`)}, ErrBadStream, "backslash"},
		{"bad sha", map[string]string{"streams/v1/index.json": idx, "streams/v1/p.json": strings.Replace(item("a/b.qcow2"), sumCent, "zz", 1)}, ErrBadStream, "no valid sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tree(t, tt.files)
			c := newCatalog(t, map[string]string{"s": srv.URL})
			_, err := c.Resolve(context.Background(), "s:x", Options{})
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("Resolve err = %v, want %v containing %q", err, tt.err, tt.errText)
			}
			if _, err := c.List(context.Background(), "s"); !errors.Is(err, tt.err) {
				t.Fatalf("List err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	c := newCatalog(t, map[string]string{"gone": url})
	_, err := c.Resolve(context.Background(), "gone:24.04", Options{})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `source "gone"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestResolveHTTPAndFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "centos9.qcow2")
	data := []byte("qcow2 image bytes")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(data)
	sum := hex.EncodeToString(d[:])
	c := newCatalog(t, nil)
	tests := []struct {
		ref     string
		opt     Options
		want    Image
		errText string
	}{
		{ref: "http://10.0.0.1:8080/centos9.qcow2", opt: Options{Checksum: Checksum{"SHA256", strings.ToUpper(sumCent)}},
			want: Image{Name: "centos9.qcow2", Ref: "http://10.0.0.1:8080/centos9.qcow2", URL: "http://10.0.0.1:8080/centos9.qcow2",
				Checksum: Checksum{"sha256", sumCent}, DiskFormat: "qcow2"}},
		{ref: "https://h/x.img", opt: Options{Checksum: Checksum{"sha256", sumCent}, Size: 7},
			want: Image{Name: "x.img", Ref: "https://h/x.img", URL: "https://h/x.img", Checksum: Checksum{"sha256", sumCent}, DiskFormat: "raw", Size: 7}},
		{ref: "http://h/x.img", errText: "needs a checksum"},
		{ref: "http://h/x.img", opt: Options{Checksum: Checksum{"md5", "d41d8cd98f00b204e9800998ecf8427e"}}, errText: `algorithm "md5" not accepted`},
		{ref: "http://h/x.img", opt: Options{Checksum: Checksum{"sha256", "abc"}}, errText: "not 64 hex digits"},
		{ref: "http://h/", opt: Options{Checksum: Checksum{"sha256", sumCent}}, errText: "names no file"},
		{ref: "http://h/x.img", opt: Options{Checksum: Checksum{"sha256", sumCent}, DiskFormat: "vmdk"}, errText: `disk format "vmdk"`},
		{ref: "file://" + img, want: Image{Name: "centos9.qcow2", Ref: "file://" + img, URL: "file://" + img,
			Checksum: Checksum{"sha256", sum}, DiskFormat: "qcow2", Size: int64(len(data))}},
		{ref: "file://" + dir + "/../" + filepath.Base(dir) + "/centos9.qcow2", errText: "without '..'"},
		{ref: "file://otherhost/" + img, errText: "must be local"},
		{ref: "file://" + dir, errText: "not a regular file"},
		{ref: "file://" + dir + "/missing.qcow2", errText: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := c.Resolve(context.Background(), tt.ref, tt.opt)
			if tt.errText != "" {
				if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want ErrInvalidReference containing %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSources(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.List(); len(got) != 2 || got[0] != DefaultSources[0] || got[1] != DefaultSources[1] {
		t.Fatalf("defaults: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, SourcesFile)); !os.IsNotExist(err) {
		t.Fatalf("defaults were written: %v", err)
	}
	if err := s.Add("lab", "http://10.0.0.1:8080/streams-root"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("images"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ name, url, text string }{
		{"http", "http://x/", "invalid source name"},
		{"Bad Name", "http://x/", "invalid source name"},
		{"ok", "ftp://x/", "must be http(s)"},
		{"ok", "http://user:pw@x/", "without credentials"},
		{"ok", "/local/path", "must be http(s)"},
	} {
		if err := s.Add(bad.name, bad.url); err == nil || !strings.Contains(err.Error(), bad.text) {
			t.Errorf("Add(%q, %q) = %v, want %q", bad.name, bad.url, err, bad.text)
		}
	}
	if err := s.Remove("nosuch"); !errors.Is(err, ErrUnknownSource) {
		t.Fatalf("Remove unknown: %v", err)
	}
	s2, err := OpenSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{{"lab", "http://10.0.0.1:8080/streams-root/"}, {"ubuntu", "https://cloud-images.ubuntu.com/releases/"}}
	if got := s2.List(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("reloaded: %+v, want %+v", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, SourcesFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSources(dir); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed file: %v", err)
	}
}
