package api

import (
	"strings"
	"sync"

	"github.com/ironlite/ironlite/controller/store"
)

// renderCache keeps the JSON of recently rendered nodes. Dashboards and
// scripts poll node lists; a node's JSON only changes when the node is
// saved (which stamps updated_at) or locked/unlocked (reservation), so
// those are part of the key together with everything that shapes the
// output (microversion, field selection, base URL).
type renderCache struct {
	mu      sync.Mutex
	entries map[renderKey][]byte
	bytes   int
	limit   int
}

type renderKey struct {
	id          int64
	stamp       string // updated_at, or created_at for a never-updated node
	reservation string
	minor       int
	fields      string
	base        string
}

func newRenderCache(limit int) *renderCache {
	return &renderCache{entries: map[renderKey][]byte{}, limit: limit}
}

func keyFor(r *store.NodeRow, minor int, fields []string, base string) renderKey {
	stamp := r.UpdatedAt
	if stamp == "" {
		stamp = "c" + r.CreatedAt
	}
	return renderKey{id: r.ID, stamp: stamp, reservation: r.Reservation, minor: minor,
		fields: strings.Join(fields, ","), base: base}
}

func (rc *renderCache) get(k renderKey) ([]byte, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b, ok := rc.entries[k]
	return b, ok
}

// put stores b; when the cache is over its byte budget it starts afresh,
// which bounds memory without per-entry bookkeeping.
func (rc *renderCache) put(k renderKey, b []byte) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.bytes+len(b) > rc.limit {
		rc.entries = map[renderKey][]byte{}
		rc.bytes = 0
	}
	if old, ok := rc.entries[k]; ok {
		rc.bytes -= len(old)
	}
	rc.entries[k] = b
	rc.bytes += len(b)
}
