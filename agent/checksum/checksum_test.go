package checksum

import (
	"context"
	"crypto/md5" //nolint:gosec // test vectors
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	data      = []byte("the image bytes")
	sha256Hex = hexSum(sha256.New(), data)
	sha512Hex = hexSum(sha512.New(), data)
	sha384Hex = hexSum(sha512.New384(), data)
	md5Hex    = hexSum(md5.New(), data)
	otherHex  = strings.Repeat("ab", 32)
)

func hexSum(h interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}, b []byte) string {
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// checksumServer serves checksum files by path; other paths are 404.
func checksumServer(t *testing.T, files map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != userAgent {
			http.Error(w, "bad user agent", http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/huge" {
			w.Write([]byte(strings.Repeat("0", MaxFileSize+10)))
			return
		}
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestFromImageInfo(t *testing.T) {
	srv := checksumServer(t, map[string]string{
		"/single":       sha256Hex + "\n",
		"/single-algo":  "sha512:" + sha512Hex,
		"/SHA256SUMS":   otherHex + "  other.img\n" + sha256Hex + " *disk.qcow2\n",
		"/sub/SUMS":     otherHex + "  other.img\n" + sha256Hex + "  ./images/disk.qcow2\n",
		"/BSD":          "SHA256 (other.img) = " + otherHex + "\nSHA256 (disk.qcow2) = " + strings.ToUpper(sha256Hex) + "\n",
		"/multi-algo":   "MD5 (disk.qcow2) = " + md5Hex + "\nSHA512 (disk.qcow2) = " + sha512Hex + "\nSHA256 (disk.qcow2) = " + sha256Hex + "\n",
		"/one-entry":    sha256Hex + "  renamed.qcow2\n",
		"/no-match":     otherHex + "  a.img\n" + otherHex + "  b.img\n",
		"/empty":        "\n# nothing here\n",
		"/md5-only":     md5Hex + "  disk.qcow2\n",
		"/several-lone": sha256Hex + "\n" + otherHex + "\n",
		"/signed": "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# disk.qcow2: 15 bytes\n" +
			"SHA256 (disk.qcow2) = " + sha256Hex + "\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAdFiEE\n-----END PGP SIGNATURE-----\n",
	})
	imageURL := "http://images.example/path/disk.qcow2?token=x"

	tests := []struct {
		name    string
		info    map[string]any
		weak    bool
		want    Expected
		wantErr string // substring; empty means success
		isWeak  bool
	}{
		{name: "os_hash sha256", info: map[string]any{"os_hash_algo": "sha256", "os_hash_value": sha256Hex},
			want: Expected{"sha256", sha256Hex, "os_hash_value"}},
		{name: "os_hash sha512 upper case, spaces", info: map[string]any{"os_hash_algo": "SHA512", "os_hash_value": " " + strings.ToUpper(sha512Hex) + "\n"},
			want: Expected{"sha512", sha512Hex, "os_hash_value"}},
		{name: "os_hash wins over checksum", info: map[string]any{"os_hash_algo": "sha256", "os_hash_value": sha256Hex, "checksum": md5Hex},
			want: Expected{"sha256", sha256Hex, "os_hash_value"}},
		{name: "os_hash_value length does not match algo", info: map[string]any{"os_hash_algo": "sha512", "os_hash_value": sha256Hex},
			wantErr: "is not a sha512 value"},
		{name: "os_hash unsupported algo", info: map[string]any{"os_hash_algo": "blake2b", "os_hash_value": sha256Hex},
			wantErr: `unsupported algorithm "blake2b"`},
		{name: "os_hash_value URL", info: map[string]any{"os_hash_algo": "sha256", "os_hash_value": srv.URL + "/SHA256SUMS"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/SHA256SUMS"}},
		{name: "os_hash_value URL picks the algo", info: map[string]any{"os_hash_algo": "sha512", "os_hash_value": srv.URL + "/multi-algo"},
			want: Expected{"sha512", sha512Hex, srv.URL + "/multi-algo"}},
		{name: "only os_hash_algo falls back to checksum", info: map[string]any{"os_hash_algo": "sha256", "checksum": sha256Hex},
			want: Expected{"sha256", sha256Hex, "checksum"}},
		{name: "bare sha256", info: map[string]any{"checksum": sha256Hex},
			want: Expected{"sha256", sha256Hex, "checksum"}},
		{name: "bare sha384", info: map[string]any{"checksum": sha384Hex},
			want: Expected{"sha384", sha384Hex, "checksum"}},
		{name: "bare sha512", info: map[string]any{"checksum": sha512Hex},
			want: Expected{"sha512", sha512Hex, "checksum"}},
		{name: "bare md5 refused", info: map[string]any{"checksum": md5Hex},
			wantErr: "md5 refused", isWeak: true},
		{name: "bare md5 allowed", info: map[string]any{"checksum": md5Hex}, weak: true,
			want: Expected{"md5", md5Hex, "checksum"}},
		{name: "algo prefix", info: map[string]any{"checksum": "sha256:" + sha256Hex},
			want: Expected{"sha256", sha256Hex, "checksum"}},
		{name: "algo prefix upper case", info: map[string]any{"checksum": "SHA-512:" + sha512Hex},
			want: Expected{"sha512", sha512Hex, "checksum"}},
		{name: "algo prefix md5 refused", info: map[string]any{"checksum": "md5:" + md5Hex},
			wantErr: "publish a sha256", isWeak: true},
		{name: "malformed hex", info: map[string]any{"checksum": strings.Repeat("zz", 32)},
			wantErr: "checksum: \"zzzz"},
		{name: "malformed hex with algo", info: map[string]any{"checksum": "sha256:" + strings.Repeat("zz", 32)},
			wantErr: "is not a sha256 value"},
		{name: "wrong length", info: map[string]any{"checksum": "abc123"},
			wantErr: "from its 6 characters"},
		{name: "missing", info: map[string]any{"urls": []any{imageURL}},
			wantErr: "image checksum is not available"},
		{name: "not a string", info: map[string]any{"checksum": 42},
			wantErr: "image checksum is not available"},
		{name: "file single value", info: map[string]any{"checksum": srv.URL + "/single"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/single"}},
		{name: "file single value with algo", info: map[string]any{"checksum": srv.URL + "/single-algo"},
			want: Expected{"sha512", sha512Hex, srv.URL + "/single-algo"}},
		{name: "file GNU binary mode", info: map[string]any{"checksum": srv.URL + "/SHA256SUMS"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/SHA256SUMS"}},
		{name: "file GNU with directory", info: map[string]any{"checksum": srv.URL + "/sub/SUMS"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/sub/SUMS"}},
		{name: "file BSD", info: map[string]any{"checksum": srv.URL + "/BSD"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/BSD"}},
		{name: "file BSD strongest algo", info: map[string]any{"checksum": srv.URL + "/multi-algo"},
			want: Expected{"sha512", sha512Hex, srv.URL + "/multi-algo"}},
		{name: "file PGP-signed CHECKSUM", info: map[string]any{"checksum": srv.URL + "/signed"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/signed"}},
		{name: "file with one entry under another name", info: map[string]any{"checksum": srv.URL + "/one-entry"},
			want: Expected{"sha256", sha256Hex, srv.URL + "/one-entry"}},
		{name: "file without a matching entry", info: map[string]any{"checksum": srv.URL + "/no-match"},
			wantErr: `no entry for "disk.qcow2" (the file name of ` + imageURL},
		{name: "file empty", info: map[string]any{"checksum": srv.URL + "/empty"},
			wantErr: "has no checksum in it"},
		{name: "file md5 refused", info: map[string]any{"checksum": srv.URL + "/md5-only"},
			wantErr: "md5 refused", isWeak: true},
		{name: "file several lone values", info: map[string]any{"checksum": srv.URL + "/several-lone"},
			wantErr: "2 values and no file names"},
		{name: "file 404", info: map[string]any{"checksum": srv.URL + "/missing"},
			wantErr: "fetch checksum file " + srv.URL + "/missing: HTTP 404"},
		{name: "file too big", info: map[string]any{"checksum": srv.URL + "/huge"},
			wantErr: "larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromImageInfo(context.Background(), tt.info, imageURL, Options{HTTPClient: srv.Client(), AllowWeak: tt.weak})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrWeakAlgorithm) != tt.isWeak {
					t.Errorf("errors.Is(err, ErrWeakAlgorithm) = %v, want %v", !tt.isWeak, tt.isWeak)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFromImageInfoUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL + "/SUMS"
	srv.Close()
	_, err := FromImageInfo(context.Background(), map[string]any{"checksum": u}, "http://x/disk.img", Options{})
	if err == nil || !strings.Contains(err.Error(), u) {
		t.Fatalf("error = %v, want one naming %s", err, u)
	}
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	sums := filepath.Join(dir, "SHA256SUMS")
	if err := os.WriteFile(sums, []byte(otherHex+"  other.img\n"+sha256Hex+"  disk.raw.zst\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := checksumServer(t, map[string]string{"/SUMS": sha512Hex + "  disk.raw.zst\n"})
	imageURL := "/var/lib/images/disk.raw.zst"

	tests := []struct {
		spec    string
		want    Expected
		wantErr string
	}{
		{spec: "sha256:" + sha256Hex, want: Expected{"sha256", sha256Hex, "--checksum"}},
		{spec: strings.ToUpper(sha512Hex), want: Expected{"sha512", sha512Hex, "--checksum"}},
		{spec: sums, want: Expected{"sha256", sha256Hex, sums}},
		{spec: "file://" + sums, want: Expected{"sha256", sha256Hex, sums}},
		{spec: srv.URL + "/SUMS", want: Expected{"sha512", sha512Hex, srv.URL + "/SUMS"}},
		{spec: "", wantErr: "empty checksum"},
		{spec: "abc", wantErr: "from its 3 characters"},
		{spec: md5Hex, wantErr: "md5 refused"},
		{spec: filepath.Join(dir, "nope"), wantErr: "neither <algo>:<hex>"},
		{spec: "sha256:xyz", wantErr: "is not a sha256 value"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := Parse(context.Background(), tt.spec, imageURL, Options{HTTPClient: srv.Client()})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	for _, algo := range []string{"md5", "sha1", "sha256", "sha384", "sha512"} {
		t.Run(algo, func(t *testing.T) {
			h := Expected{Algo: algo}.New()
			h.Write(data)
			sum := h.Sum(nil)
			e, err := newExpected(algo, hex.EncodeToString(sum), "test", Options{AllowWeak: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Verify(sum, "http://x/disk.img", int64(len(data))); err != nil {
				t.Errorf("Verify(right sum) = %v", err)
			}
			sum[0] ^= 0xff
			err = e.Verify(sum, "http://x/disk.img", int64(len(data)))
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("Verify(wrong sum) = %v, want *MismatchError", err)
			}
			want := fmt.Sprintf("checksum mismatch for http://x/disk.img: %s expected %s (from test) got %s after reading 15 bytes",
				algo, e.Value, hex.EncodeToString(sum))
			if err.Error() != want {
				t.Errorf("error = %q\nwant    %q", err, want)
			}
		})
	}
}

func TestString(t *testing.T) {
	e := Expected{Algo: "sha256", Value: sha256Hex}
	if got, err := Parse(context.Background(), e.String(), "", Options{}); err != nil || got.Value != e.Value || got.Algo != e.Algo {
		t.Errorf("Parse(String()) = %+v, %v", got, err)
	}
}
