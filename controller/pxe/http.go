package pxe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// ErrNotFound is what a Resolver returns when it has nothing to serve.
var ErrNotFound = errors.New("not found")

// Resolver answers the boot HTTP server's questions; the conductor
// implements it.
type Resolver interface {
	// BootScript returns the iPXE script for the machine booting from the
	// NIC with this MAC ("aa:bb:cc:dd:ee:ff"), or an error wrapping
	// ErrNotFound.
	BootScript(ctx context.Context, mac string) (string, error)
	// BootFile returns the local path of the file served at /boot/<name>,
	// or an error wrapping ErrNotFound.
	BootFile(ctx context.Context, name string) (string, error)
}

// HTTPHandler serves the network boot over HTTP:
//
//	GET /boot.ipxe              the generic script (BootScript) DHCP hands iPXE
//	GET /ipxe/aa-bb-cc-dd-ee-ff the per-node script for that MAC (404: none)
//	GET /boot/<name>            kernels, ramdisks, local instance images, with
//	                            Range, If-Modified-Since and HEAD (http.ServeContent)
//
// Files are opened afresh per request and streamed; serving never holds a
// node lock, so a slow download never blocks the API.
type HTTPHandler struct {
	boot     string
	resolver Resolver
	log      *slog.Logger
	mux      *http.ServeMux
}

// NewHTTPHandler returns the boot HTTP handler for baseURL (the URL the
// machines reach it at, used in boot.ipxe).
func NewHTTPHandler(baseURL string, r Resolver, log *slog.Logger) (*HTTPHandler, error) {
	script, err := BootScript(baseURL)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	h := &HTTPHandler{boot: script, resolver: r, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /boot.ipxe", h.bootScript)
	h.mux.HandleFunc("GET /ipxe/{mac}", h.nodeScript)
	h.mux.HandleFunc("GET /boot/{name...}", h.file)
	return h, nil
}

// Routes are the path patterns the handler serves, for mounting it beside
// the API on one listener.
func Routes() []string { return []string{"/boot.ipxe", "/ipxe/", "/boot/"} }

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *HTTPHandler) bootScript(w http.ResponseWriter, r *http.Request) {
	h.log.Debug("boot.ipxe served", "client", r.RemoteAddr)
	writeScript(w, h.boot)
}

func writeScript(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(s))
}

func (h *HTTPHandler) nodeScript(w http.ResponseWriter, r *http.Request) {
	hw, err := net.ParseMAC(strings.ReplaceAll(r.PathValue("mac"), "-", ":"))
	if err != nil || len(hw) != 6 {
		http.Error(w, "not a MAC address (want aa-bb-cc-dd-ee-ff)", http.StatusBadRequest)
		return
	}
	script, err := h.resolver.BootScript(r.Context(), hw.String())
	if errors.Is(err, ErrNotFound) {
		// iPXE's chain fails on 404 and boot.ipxe tries the next NIC.
		h.log.Debug("no boot script", "mac", hw.String(), "client", r.RemoteAddr)
		http.Error(w, "no boot configuration for "+hw.String(), http.StatusNotFound)
		return
	}
	if err != nil {
		h.log.Error("boot script", "mac", hw.String(), "err", err)
		http.Error(w, "cannot render the boot script; see the controller log", http.StatusInternalServerError)
		return
	}
	writeScript(w, script)
}

func (h *HTTPHandler) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, err := h.resolver.BootFile(r.Context(), name)
	if errors.Is(err, ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		h.log.Error("boot file", "name", name, "err", err)
		http.Error(w, "cannot serve the file; see the controller log", http.StatusInternalServerError)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		h.log.Error("open boot file", "name", name, "err", err)
		http.Error(w, "cannot open the file; see the controller log", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, "not a regular file", http.StatusInternalServerError)
		return
	}
	start := time.Now()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", st.ModTime(), f)
	h.log.Debug("boot file served", "name", name, "client", r.RemoteAddr, "range", r.Header.Get("Range"),
		"duration", time.Since(start).Round(time.Millisecond))
}
