package pxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// Messages sent to TFTP clients in ERROR packets. They are deliberately
// generic: the detailed reason (which may name paths on the controller) goes
// to the log, never onto the wire. pin/tftp sends every handler error with
// code 1 ("file not found"); the message is what tells them apart.
var (
	errNotFound = errors.New("file not found")
	errAccess   = errors.New("access violation")
	errReadOnly = errors.New("access violation: server is read-only")
)

// TFTPServer is a read-only TFTP server for the first boot stage: the iPXE
// binaries (undionly.kpxe, ipxe.efi, snponly.efi) that firmware without
// iPXE fetches before it can speak HTTP. Everything after that goes over
// HTTP, so this server is small on purpose: it serves regular files below
// one root directory and refuses everything else.
//
// A TFTPServer serves once: after Shutdown it cannot be restarted.
type TFTPServer struct {
	root string
	log  *slog.Logger
	srv  *tftp.Server
}

// NewTFTPServer returns a server for the files below root. A nil log
// discards log output. root is made absolute now so that a later change of
// the working directory cannot change what is served.
func NewTFTPServer(root string, log *slog.Logger) *TFTPServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	s := &TFTPServer{root: root, log: log.With("component", "tftp")}
	// A non-nil write handler (rather than nil) lets us log refused
	// writes; it answers every WRQ with an error.
	s.srv = tftp.NewServer(s.handleRead, s.handleWrite)
	s.srv.SetHook(failureHook{log: s.log})
	return s
}

// Serve answers requests arriving on conn until Shutdown is called, then
// returns nil. conn should be a *net.UDPConn: with it the library learns
// the interface MTU and can negotiate block sizes above 512 bytes.
func (s *TFTPServer) Serve(conn net.PacketConn) error {
	if err := s.srv.Serve(conn); err != nil {
		return fmt.Errorf("tftp: serve on %s: %w", conn.LocalAddr(), err)
	}
	return nil
}

// ListenAndServe listens on the UDP address addr (usually ":69") and serves
// until ctx is done, then shuts down, waiting for transfers in flight, and
// returns nil.
func (s *TFTPServer) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: listen on %s: %w", addr, err)
	}
	// If ctx ends before Serve has registered conn, Shutdown cannot close
	// it; Serve still returns (the library checks for cancellation before
	// each read), and this Close releases the socket.
	defer conn.Close()
	stop := context.AfterFunc(ctx, s.Shutdown)
	defer stop()
	s.log.Info("tftp server listening", "addr", conn.LocalAddr().String(), "root", s.root)
	return s.Serve(conn)
}

// Shutdown stops accepting requests and waits for transfers in flight to
// finish or time out.
func (s *TFTPServer) Shutdown() {
	s.srv.Shutdown()
}

// handleRead serves one RRQ. Errors it returns are sent to the client, so
// they are always one of the generic errors above.
func (s *TFTPServer) handleRead(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	log := s.log.With("client", clientAddr(rf), "file", filename)

	f, size, err := s.open(filename)
	if err != nil {
		reply := errAccess
		if errors.Is(err, fs.ErrNotExist) {
			reply = errNotFound
		}
		log.Warn("tftp read refused", "reason", err.Error(), "reply", reply.Error())
		return reply
	}
	defer f.Close()

	// Set tsize explicitly rather than relying on the library seeking the
	// file: the size is the one we stat'ed, for the file we opened.
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		// The library has already sent the client an ERROR packet (or the
		// client went away); returning the error again would be a no-op.
		log.Warn("tftp transfer failed", "bytes", n, "duration", time.Since(start), "err", err)
		return nil
	}
	log.Info("tftp transfer", "bytes", n, "duration", time.Since(start))
	return nil
}

// handleWrite refuses every WRQ: nothing a PXE client needs is uploaded.
func (s *TFTPServer) handleWrite(filename string, wt io.WriterTo) error {
	s.log.Warn("tftp write refused", "client", clientAddr(wt), "file", filename)
	return errReadOnly
}

// open opens filename below the root and returns it with its size. The
// name is checked lexically by cleanName, then opened with os.OpenInRoot,
// which also refuses symbolic links that lead out of the root (links that
// stay inside it, e.g. ipxe.efi -> snponly.efi, are fine).
func (s *TFTPServer) open(filename string) (*os.File, int64, error) {
	name, err := cleanName(filename)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.OpenInRoot(s.root, name)
	if err != nil {
		return nil, 0, fmt.Errorf("open %q in root: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		// Directories and devices are reported as absent: there is nothing
		// to serve and no reason to tell the client what the tree holds.
		return nil, 0, fmt.Errorf("%q is not a regular file: %w", name, fs.ErrNotExist)
	}
	return f, fi.Size(), nil
}

// cleanName turns a TFTP filename into a slash-separated path relative to
// the root, or refuses it. The rule is strict because the name comes
// straight off the network:
//   - empty names, NUL and other control characters, and backslashes are
//     refused (a backslash is a separator to some clients and not to us);
//   - absolute names are refused, as is any ".." element, even one that
//     would stay inside the root after cleaning;
//   - otherwise the name is cleaned ("./a//b" -> "a/b").
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty file name")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("file name contains control character %q", r)
		}
		if r == '\\' {
			return "", errors.New("file name contains a backslash")
		}
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute file name")
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return "", errors.New("file name contains a \"..\" element")
		}
	}
	clean := path.Clean(name)
	if !fs.ValidPath(clean) || clean == "." {
		return "", fmt.Errorf("invalid file name %q", clean)
	}
	return clean, nil
}

// clientAddr returns the peer of a transfer for logging.
func clientAddr(t any) string {
	type remote interface{ RemoteAddr() net.UDPAddr }
	if r, ok := t.(remote); ok {
		a := r.RemoteAddr()
		return a.String()
	}
	return "unknown"
}

// failureHook logs what the library drops without calling a handler
// (malformed or unexpected packets). Failures of transfers that reached a
// handler are logged there, with more context, so they are skipped here.
type failureHook struct{ log *slog.Logger }

func (h failureHook) OnSuccess(tftp.TransferStats) {}

func (h failureHook) OnFailure(stats tftp.TransferStats, err error) {
	if stats.Filename != "" {
		return
	}
	h.log.Debug("tftp packet dropped", "client", stats.RemoteAddr.String(), "err", err)
}
