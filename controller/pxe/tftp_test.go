package pxe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type tftpFixture struct {
	root    string // served directory
	outside string // a directory next to root, with a "secret" file
	addr    string
	logs    *syncBuffer
	payload []byte // content of undionly.kpxe
}

// startTFTP serves a fresh root on 127.0.0.1:0 until the test ends.
func startTFTP(t *testing.T) *tftpFixture {
	t.Helper()
	dir := t.TempDir()
	fx := &tftpFixture{
		root:    filepath.Join(dir, "tftpboot"),
		outside: filepath.Join(dir, "outside"),
		logs:    &syncBuffer{},
		// Not a multiple of any block size, so the last block is short.
		payload: make([]byte, 300_001),
	}
	rand.Read(fx.payload)
	for _, d := range []string{fx.root, fx.outside, filepath.Join(fx.root, "efi")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(fx.root, "undionly.kpxe"), fx.payload)
	writeFile(t, filepath.Join(fx.root, "efi", "snponly.efi"), []byte("snponly"))
	writeFile(t, filepath.Join(fx.outside, "secret"), []byte("secret"))
	// A link that stays inside the root is served; one that leaves is not.
	symlink(t, "efi/snponly.efi", filepath.Join(fx.root, "ipxe.efi"))
	symlink(t, filepath.Join(fx.outside, "secret"), filepath.Join(fx.root, "abs-escape"))
	symlink(t, "../outside/secret", filepath.Join(fx.root, "rel-escape"))
	symlink(t, "../outside", filepath.Join(fx.root, "dir-escape"))

	log := slog.New(slog.NewTextHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := NewTFTPServer(fx.root, log)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = conn.LocalAddr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	t.Cleanup(func() {
		srv.Shutdown()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	fx.waitReady(t)
	return fx
}

// waitReady waits until the server negotiates large blocks: a request that
// arrives before Serve has enabled IP_PKTINFO gets blksize clamped to 512
// (reference/libraries.md §5).
func (fx *tftpFixture) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		opts, err := rawOACK(fx.addr, "undionly.kpxe", "blksize", "1468")
		if err == nil && opts["blksize"] == "1468" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: opts=%v err=%v", opts, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func (fx *tftpFixture) client(t *testing.T, blksize int) *tftp.Client {
	t.Helper()
	c, err := tftp.NewClient(fx.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	return c
}

// rawOACK sends an RRQ with the given options and returns the options of
// the server's OACK, then aborts the transfer with an ERROR packet (so the
// server does not retransmit and Shutdown need not wait). It reads the
// wire directly because pin/tftp's client does not expose what was
// negotiated.
func rawOACK(addr, file string, kv ...string) (map[string]string, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	srv, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	req := []byte{0, 1}
	for _, s := range append([]string{file, "octet"}, kv...) {
		req = append(append(req, s...), 0)
	}
	if _, err := conn.WriteTo(req, srv); err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65536)
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		return nil, err
	}
	// Abort: ERROR, code 0, empty message.
	conn.WriteTo([]byte{0, 5, 0, 0, 0}, from)
	switch op := binary.BigEndian.Uint16(buf); op {
	case 6: // OACK
	case 5:
		return nil, errors.New("server error: " + strings.TrimRight(string(buf[4:n]), "\x00"))
	default:
		return nil, fmt.Errorf("no OACK: opcode %d", op)
	}
	fields := strings.Split(strings.TrimSuffix(string(buf[2:n]), "\x00"), "\x00")
	opts := map[string]string{}
	for i := 0; i+1 < len(fields); i += 2 {
		opts[fields[i]] = fields[i+1]
	}
	return opts, nil
}

func TestTFTPRead(t *testing.T) {
	fx := startTFTP(t)
	tests := []struct {
		name    string
		file    string
		blksize int
		want    []byte
	}{
		{"default blocks", "undionly.kpxe", 0, fx.payload},
		{"blksize 1468", "undionly.kpxe", 1468, fx.payload},
		{"blksize 8192", "undionly.kpxe", 8192, fx.payload},
		{"subdirectory", "efi/snponly.efi", 1468, []byte("snponly")},
		{"cleaned name", "./efi//snponly.efi", 0, []byte("snponly")},
		{"symlink inside root", "ipxe.efi", 0, []byte("snponly")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wt, err := fx.client(t, tt.blksize).Receive(tt.file, "octet")
			if err != nil {
				t.Fatalf("Receive(%q): %v", tt.file, err)
			}
			size, ok := wt.(tftp.IncomingTransfer).Size()
			if !ok || size != int64(len(tt.want)) {
				t.Errorf("tsize = %d, %v; want %d, true", size, ok, len(tt.want))
			}
			var got bytes.Buffer
			n, err := wt.WriteTo(&got)
			if err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			if n != int64(len(tt.want)) || !bytes.Equal(got.Bytes(), tt.want) {
				t.Errorf("got %d bytes, not equal to the %d bytes served", n, len(tt.want))
			}
		})
	}
}

func TestTFTPNegotiation(t *testing.T) {
	fx := startTFTP(t)
	opts, err := rawOACK(fx.addr, "undionly.kpxe", "blksize", "1468", "tsize", "0")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"blksize": "1468", "tsize": "300001"}
	for k, v := range want {
		if opts[k] != v {
			t.Errorf("OACK %s = %q, want %q (all: %v)", k, opts[k], v, opts)
		}
	}
}

func TestTFTPRefused(t *testing.T) {
	fx := startTFTP(t)
	tests := []struct {
		name string
		file string
		want string // message in the client's error
	}{
		{"missing file", "nope.efi", "file not found"},
		{"directory", "efi", "file not found"},
		{"dot-dot", "../outside/secret", "access violation"},
		{"dot-dot inside", "efi/../undionly.kpxe", "access violation"},
		{"etc passwd", "../../../../etc/passwd", "access violation"},
		{"absolute", "/etc/passwd", "access violation"},
		{"absolute into root", filepath.Join(fx.root, "undionly.kpxe"), "access violation"},
		{"backslash", `..\outside\secret`, "access violation"},
		{"absolute symlink escape", "abs-escape", "access violation"},
		{"relative symlink escape", "rel-escape", "access violation"},
		{"symlinked directory escape", "dir-escape/secret", "access violation"},
		{"empty name", "", "access violation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wt, err := fx.client(t, 0).Receive(tt.file, "octet")
			if err == nil {
				var got bytes.Buffer
				wt.WriteTo(&got)
				t.Fatalf("Receive(%q) served %q, want error %q", tt.file, got.String(), tt.want)
			}
			if !strings.Contains(err.Error(), "message: "+tt.want) {
				t.Errorf("Receive(%q) error = %v, want message %q", tt.file, err, tt.want)
			}
			if strings.Contains(err.Error(), fx.root) {
				t.Errorf("error leaks the root path: %v", err)
			}
		})
	}
}

func TestTFTPWriteRefused(t *testing.T) {
	fx := startTFTP(t)
	rf, err := fx.client(t, 0).Send("upload.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("WRQ error = %v, want read-only refusal", err)
	}
	if _, err := os.Stat(filepath.Join(fx.root, "upload.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload.bin exists after refused write (stat: %v)", err)
	}
	if !strings.Contains(fx.logs.String(), "tftp write refused") {
		t.Errorf("refused write not logged:\n%s", fx.logs)
	}
}

func TestTFTPLogsTransfer(t *testing.T) {
	fx := startTFTP(t)
	wt, err := fx.client(t, 1468).Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.WriteTo(io.Discard); err != nil {
		t.Fatal(err)
	}
	// The server logs after its last DATA is acknowledged, which may be a
	// moment after the client returns.
	deadline := time.Now().Add(2 * time.Second)
	for {
		logs := fx.logs.String()
		var line string
		for l := range strings.Lines(logs) {
			if strings.Contains(l, `msg="tftp transfer"`) {
				line = l
			}
		}
		if line != "" {
			for _, want := range []string{"client=127.0.0.1:", "file=undionly.kpxe", "bytes=300001", "duration="} {
				if !strings.Contains(line, want) {
					t.Errorf("log line %q lacks %q", line, want)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transfer log line:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTFTPListenAndServeStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewTFTPServer(t.TempDir(), nil)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, "127.0.0.1:0") }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
}

func TestTFTPListenAndServeBadAddr(t *testing.T) {
	err := NewTFTPServer(t.TempDir(), nil).ListenAndServe(context.Background(), "256.0.0.1:69")
	if err == nil || !strings.Contains(err.Error(), "tftp: listen on 256.0.0.1:69") {
		t.Fatalf("err = %v, want wrapped listen error", err)
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"undionly.kpxe", "undionly.kpxe", true},
		{"efi/snponly.efi", "efi/snponly.efi", true},
		{"./a//b/", "a/b", true},
		{"", "", false},
		{".", "", false},
		{"./", "", false},
		{"..", "", false},
		{"a/../b", "", false},
		{"/abs", "", false},
		{`a\b`, "", false},
		{"a\x00b", "", false},
		{"a\nb", "", false},
	}
	for _, tt := range tests {
		got, err := cleanName(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
