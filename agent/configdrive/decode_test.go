package configdrive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // 64 MiB under -race
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// wrap breaks s into lines of n characters, as base64(1) and many HTTP
// servers' files do.
func wrap(s string, n int, sep string) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + sep)
		s = s[n:]
	}
	b.WriteString(s)
	return b.String()
}

func TestDecodeInline(t *testing.T) {
	img := bytes.Repeat([]byte("config drive "), 1000)
	enc := base64.StdEncoding.EncodeToString(gz(t, img))
	exact := make([]byte, MaxSize)
	tests := []struct {
		name string
		in   string
		want []byte
		err  string
	}{
		{name: "plain", in: enc, want: img},
		{name: "wrapped lines", in: wrap(enc, 76, "\n"), want: img},
		{name: "CRLF, spaces and tabs", in: " \t" + wrap(enc, 60, "\r\n \t") + "\n", want: img},
		{name: "exactly 64 MiB", in: base64.StdEncoding.EncodeToString(gz(t, exact)), want: exact},
		{name: "over 64 MiB", in: base64.StdEncoding.EncodeToString(gz(t, make([]byte, MaxSize+1))), err: "exceeds maximum limit of 64 MiB"},
		{name: "empty", in: " \n", err: "empty"},
		{name: "not base64", in: "this is not a config drive!", err: "neither a URL nor base64"},
		{name: "JSON", in: `{"meta_data": {}}`, err: "neither a URL nor base64"},
		{name: "bad base64 late", in: enc[:len(enc)/2] + "*" + enc[len(enc)/2:], err: "neither a URL nor base64"},
		{name: "bad padding", in: enc + "A", err: "not base64 encoded"},
		{name: "base64 of a raw image", in: base64.StdEncoding.EncodeToString(img), err: "base64 but not gzipped"},
		{name: "base64 of too little", in: "QUJD", err: "base64 but not gzipped"},
		{name: "truncated gzip", in: base64.StdEncoding.EncodeToString(gz(t, img)[:40]), err: "decompressing"},
		{name: "empty image", in: base64.StdEncoding.EncodeToString(gz(t, nil)), err: "image is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fetch := func(context.Context, string) (io.ReadCloser, error) {
				t.Fatal("inline config drive fetched")
				return nil, nil
			}
			got, err := Decode(context.Background(), tt.in, fetch)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Decode error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Decode = %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestDecodeURL(t *testing.T) {
	iso := append(make([]byte, 32768), []byte("\x01CD001 the rest of an ISO")...)
	enc := base64.StdEncoding.EncodeToString(gz(t, iso))
	mux := http.NewServeMux()
	mux.HandleFunc("/b64", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, wrap(enc, 76, "\n")+"\n") })
	mux.HandleFunc("/raw.iso", func(w http.ResponseWriter, r *http.Request) { w.Write(iso) })
	mux.HandleFunc("/raw.iso.gz", func(w http.ResponseWriter, r *http.Request) { w.Write(gz(t, iso)) })
	mux.HandleFunc("/big.iso", func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, MaxSize+1)) })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/notgz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, base64.StdEncoding.EncodeToString(iso))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name string
		url  string
		want []byte
		err  string
	}{
		{name: "base64 gzip", url: srv.URL + "/b64", want: iso},
		{name: "scheme in upper case", url: strings.Replace(srv.URL, "http://", "HTTP://", 1) + "/b64", want: iso},
		{name: "raw image", url: srv.URL + "/raw.iso", want: iso},
		{name: "gzipped image", url: srv.URL + "/raw.iso.gz", want: iso},
		{name: "raw image too big", url: srv.URL + "/big.iso", err: "exceeds maximum limit of 64 MiB"},
		{name: "not found", url: srv.URL + "/nope", err: "status code 404"},
		{name: "empty body", url: srv.URL + "/empty", err: "is empty"},
		{name: "base64 but not gzip", url: srv.URL + "/notgz", err: "base64 but not gzipped"},
		{name: "connection refused", url: "http://127.0.0.1:1/cd", err: "can't download the config drive from http://127.0.0.1:1/cd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(context.Background(), tt.url, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Decode error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Decode = %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

// endless yields c forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

func TestDecodeDownloadBounded(t *testing.T) {
	// A small valid config drive followed by endless newlines: only the
	// download bound stops it.
	enc := base64.StdEncoding.EncodeToString(gz(t, []byte("x")))
	var read int64
	fetch := func(_ context.Context, url string) (io.ReadCloser, error) {
		if url != "https://example.invalid/cd" {
			t.Errorf("fetched %q", url)
		}
		return io.NopCloser(&countingReader{r: io.MultiReader(strings.NewReader(enc), endless('\n')), n: &read}), nil
	}
	_, err := Decode(context.Background(), "https://example.invalid/cd", fetch)
	if err == nil || !strings.HasPrefix(err.Error(), "config drive download from https://example.invalid/cd is larger than 88 MiB") {
		t.Fatalf("Decode error = %v, want the download bound", err)
	}
	if read > maxDownload+64<<10 {
		t.Errorf("read %d bytes, bound is %d", read, maxDownload)
	}
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

func TestDecodeFetchError(t *testing.T) {
	boom := errors.New("boom")
	fetch := func(context.Context, string) (io.ReadCloser, error) { return nil, boom }
	_, err := Decode(context.Background(), "http://x/cd", fetch)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "http://x/cd") {
		t.Errorf("Decode error = %v, want boom and the URL", err)
	}
}

func TestDecodeCanceled(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-block
	}))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Decode(ctx, srv.URL, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Decode error = %v, want context.Canceled", err)
	}
}
