package cache

import (
	"net/http"
	"os"
	"strings"
)

// Handler serves cached images: GET or HEAD /images/<sha256>, or
// /images/<sha256>/<name> (the name is only decoration, so a URL handed to
// the agent ends in a meaningful file name; it is ignored).
//
// http.ServeContent does the protocol work: single and multiple Range
// requests (multipart/byteranges), 416 for unsatisfiable ranges, and the
// conditional requests driven by ETag (the sha256, which never changes for
// a given URL) and Last-Modified. No lock is held while streaming: the
// handler opens the file and serves from the descriptor, so a concurrent
// Delete unlinks the name but the data lives until this response ends.
func (c *Cache) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /images/{sha}", c.serve)
	mux.HandleFunc("GET /images/{sha}/{name}", c.serve)
	return mux
}

func (c *Cache) serve(w http.ResponseWriter, r *http.Request) {
	sha := r.PathValue("sha")
	if !hexSHA256.MatchString(sha) {
		http.Error(w, "not a sha256", http.StatusNotFound)
		return
	}
	f, err := os.Open(c.blobPath(sha))
	if err != nil {
		http.Error(w, "image not in cache", http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "image not readable", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("ETag", `"`+sha+`"`)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	name := r.PathValue("name")
	if name == "" || strings.ContainsAny(name, "\"\\\r\n") {
		name = sha
	}
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	http.ServeContent(w, r, "", st.ModTime(), f)
}
