package imagesource

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// block is one BlockSize-aligned piece of the remote file in the cache.
type block struct {
	idx     int64
	buf     []byte        // the block's bytes; len is the block's length
	done    chan struct{} // closed when the fetch ends
	err     error         // why the fetch failed; set before done is closed
	ready   bool          // fetched; guarded by cache.mu like the fields below
	refs    int           // readers copying from buf, or the fetcher
	lastUse int64         // cache.tick at the last acquire, for LRU
	used    bool          // read by ReadAt (prefetched blocks start unused)
	hashed  bool          // the hash cursor is past it: it can go
}

// use says why a block is wanted.
type use int

const (
	useRead     use = iota // ReadAt: waits for room, marks the block used
	usePrefetch            // readahead: never waits, never evicts useful blocks
	useHash                // the hasher: as usePrefetch, run by the caller
)

// cache holds blocks of a remote file: a fixed budget of buffers, blocks
// de-duplicated by index so that concurrent readers of one block share one
// request, sequential readahead, and the in-order hasher.
//
// Eviction, because hashing needs blocks in file order: blocks already
// hashed and read go first (least recently used first), then hashed blocks
// prefetched but not read yet, then unhashed blocks, which cost a second
// fetch by the hasher. Before evicting an unhashed block a reader waits
// while the block at the hash cursor is in the cache: the hasher is then
// about to free room by itself (this absorbs a hasher that lags behind
// for CPU). If the cursor's block is missing, waiting could be forever
// (nobody may ever read it), so the reader evicts. Readahead and the hasher
// only take free buffers or hashed, already read blocks, so they never push
// out data someone still needs.
type cache struct {
	s         *Source
	bs        int64 // block size
	nblocks   int64
	maxBlocks int
	window    int           // readahead blocks
	sem       chan struct{} // prefetch slots; nil when readahead is off
	kick      chan struct{} // wakes the hasher

	mu      sync.Mutex
	blocks  map[int64]*block
	nbufs   int           // buffers allocated: all in blocks
	tick    int64         // LRU clock
	space   chan struct{} // closed (and replaced) when room may have appeared
	waiting int           // acquirers waiting on space
	seen    []uint64      // bitset: blocks fetched at least once
	closed  bool
	// hashFailed lets readers evict unhashed blocks: the hasher met an
	// error, so waiting for it could be forever.
	hashFailed bool
}

func newCache(s *Source, o Options) *cache {
	bs := o.BlockSize
	nblocks := (s.size + bs - 1) / bs
	c := &cache{
		s:         s,
		bs:        bs,
		nblocks:   nblocks,
		maxBlocks: int(max(o.CacheSize/bs, 1)),
		kick:      make(chan struct{}, 1),
		blocks:    make(map[int64]*block),
		space:     make(chan struct{}),
		seen:      make([]uint64, (nblocks+63)/64),
	}
	if o.Readahead > 0 {
		c.window = o.Readahead
		c.sem = make(chan struct{}, o.Readahead)
	}
	return c
}

func (c *cache) blockLen(idx int64) int64 { return min(c.bs, c.s.size-idx*c.bs) }

// acquire returns block idx with a reference held (drop it with unref), and isNew
// when the caller must fetch it. For useRead it waits for a buffer to
// become free; otherwise it returns nil instead.
func (c *cache) acquire(ctx context.Context, idx int64, u use) (b *block, isNew bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return nil, false, ErrClosed
		}
		c.tick++
		if b := c.blocks[idx]; b != nil {
			b.refs++
			b.lastUse = c.tick
			b.used = b.used || u == useRead
			return b, false, nil
		}
		if buf := c.takeBuf(u); buf != nil {
			b := &block{
				idx:     idx,
				buf:     buf[:c.blockLen(idx)],
				done:    make(chan struct{}),
				refs:    1,
				lastUse: c.tick,
				used:    u == useRead,
			}
			c.blocks[idx] = b
			if u == usePrefetch {
				c.s.wg.Add(1) // under mu, so never after Close's Wait
			}
			return b, true, nil
		}
		if u != useRead {
			return nil, false, nil
		}
		space := c.space
		c.waiting++
		c.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.waiting--
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
	}
}

// takeBuf returns a free buffer, allocating within the budget or evicting a
// block, or nil. c.mu is held.
func (c *cache) takeBuf(u use) []byte {
	if c.nbufs < c.maxBlocks {
		c.nbufs++
		held := c.s.stats.cacheBytes.Add(c.bs)
		for {
			peak := c.s.stats.maxCacheBytes.Load()
			if held <= peak || c.s.stats.maxCacheBytes.CompareAndSwap(peak, held) {
				break
			}
		}
		return make([]byte, c.bs)
	}
	v := c.victim(u)
	if v == nil {
		return nil
	}
	delete(c.blocks, v.idx)
	return v.buf[:cap(v.buf)]
}

// victim picks the block to evict (see cache), or nil. c.mu is held.
func (c *cache) victim(u use) *block {
	var best *block
	bestClass := 0
	upTo := c.s.hash.upToA.Load()
	for _, b := range c.blocks {
		if !b.ready || b.refs > 0 {
			continue
		}
		// A block fetched again while the hasher read it straight from
		// the server is behind the cursor without having been marked.
		hashed := b.hashed || b.idx*c.bs+int64(len(b.buf)) <= upTo
		var class int
		switch {
		case hashed && b.used:
			class = 0
		case hashed:
			class = 1
		case b.used:
			class = 2
		default:
			class = 3
		}
		if u != useRead && class > 0 {
			continue
		}
		if best == nil || class < bestClass || (class == bestClass && b.lastUse < best.lastUse) {
			best, bestClass = b, class
		}
	}
	if bestClass > 1 && c.hashWillFree() {
		return nil // wait for the hasher instead
	}
	return best
}

// hashWillFree reports whether the hasher can make progress without any
// reader's help: the block at its cursor is in the cache or in flight.
// c.mu is held.
func (c *cache) hashWillFree() bool {
	if c.s.hash.h == nil || c.hashFailed {
		return false
	}
	_, ok := c.blocks[c.s.hash.upToA.Load()/c.bs]
	return ok
}

// wake is signal for callers not holding c.mu.
func (c *cache) wake() {
	c.mu.Lock()
	c.signal()
	c.mu.Unlock()
}

// signal wakes acquirers waiting for room. c.mu is held.
func (c *cache) signal() {
	if c.waiting > 0 {
		close(c.space)
		c.space = make(chan struct{})
	}
}

// fetch fills a new block from the server and publishes the result.
func (c *cache) fetch(b *block) {
	err := c.s.rem.fetchInto(c.s.ctx, b.buf, b.idx*c.bs)
	n := int64(len(b.buf))
	c.mu.Lock()
	switch {
	case c.closed:
		if err == nil {
			err = ErrClosed
		}
		b.err = err
	case err != nil:
		b.err = err
		if c.blocks[b.idx] == b {
			delete(c.blocks, b.idx)
		}
		c.nbufs--
		c.s.stats.cacheBytes.Add(-c.bs)
	default:
		if c.wasSeen(b.idx) {
			c.s.stats.refetched.Add(n)
		}
		c.markSeen(b.idx)
		b.ready = true
		b.hashed = c.s.hash.h == nil || b.idx*c.bs+n <= c.s.hash.upToA.Load()
	}
	close(b.done)
	c.signal()
	c.mu.Unlock()
	if err == nil {
		c.kickHasher()
	}
}

// kickHasher wakes the hasher, if there is one.
func (c *cache) kickHasher() {
	if c.s.hash.h == nil {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// wait waits for the fetch of b to end.
func (c *cache) wait(ctx context.Context, b *block) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unref drops a reference taken by acquire.
func (c *cache) unref(b *block) {
	c.mu.Lock()
	b.refs--
	if b.refs == 0 {
		c.signal()
	}
	c.mu.Unlock()
}

// markHashed records that the hash cursor went past b.
func (c *cache) markHashed(b *block) {
	c.mu.Lock()
	b.hashed = true
	c.signal()
	c.mu.Unlock()
}

// release drops every block (Close).
func (c *cache) release() {
	c.mu.Lock()
	c.blocks = map[int64]*block{}
	c.s.stats.cacheBytes.Add(-int64(c.nbufs) * c.bs)
	c.nbufs = 0
	c.mu.Unlock()
}

// readAtRemote serves ReadAt from the cache; p does not go past the end.
func (s *Source) readAtRemote(p []byte, off int64) (int, error) {
	if !s.rem.rangeOK {
		return 0, fmt.Errorf("read %s at offset %d: %w; needed for qcow2 streaming", s.url, off, ErrRangeNotSupported)
	}
	if len(p) == 0 {
		return 0, nil
	}
	c := s.c
	first, last := off/c.bs, (off+int64(len(p))-1)/c.bs
	c.readahead(first, last)
	n := 0
	for idx := first; idx <= last; idx++ {
		b, isNew, err := c.acquire(s.ctx, idx, useRead)
		if err != nil {
			return n, s.closedErr(err)
		}
		if isNew {
			s.stats.misses.Add(1)
			c.fetch(b)
		} else {
			s.stats.hits.Add(1)
		}
		if err := c.wait(s.ctx, b); err != nil {
			c.unref(b)
			if s.ctx.Err() != nil {
				return n, s.closedErr(s.ctx.Err())
			}
			return n, err
		}
		start := idx * c.bs
		from, to := max(off, start)-start, min(off+int64(len(p)), start+int64(len(b.buf)))-start
		n += copy(p[n:], b.buf[from:to])
		c.unref(b)
	}
	return n, nil
}

// readahead prefetches the blocks after last when the read looks
// sequential: the block before first has been read. (8 workers each reading
// its own region look sequential each, which is what a qcow2 convert is.)
func (c *cache) readahead(first, last int64) {
	if c.sem == nil {
		return
	}
	var todo [16]int64
	n := 0
	c.mu.Lock()
	if first > 0 {
		if prev := c.blocks[first-1]; prev == nil || !prev.used {
			c.mu.Unlock()
			return
		}
	}
	for i := last + 1; i <= last+int64(c.window) && i < c.nblocks && n < len(todo); i++ {
		if c.blocks[i] == nil {
			todo[n] = i
			n++
		}
	}
	c.mu.Unlock()
	for _, idx := range todo[:n] {
		select {
		case c.sem <- struct{}{}:
		default:
			return // enough prefetches in flight
		}
		b, isNew, _ := c.acquire(c.s.ctx, idx, usePrefetch)
		if b == nil {
			<-c.sem
			return // no room without evicting something useful
		}
		if !isNew {
			c.unref(b)
			<-c.sem
			continue
		}
		c.s.stats.prefetches.Add(1)
		go func() {
			defer c.s.wg.Done()
			defer func() { <-c.sem }()
			c.fetch(b)
			c.unref(b)
		}()
	}
}

// startHasher runs the goroutine that hashes blocks as they arrive at the
// hash cursor.
func (s *Source) startHasher() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-s.c.kick:
			}
			s.hash.mu.Lock()
			var err error
			if s.hash.sum == nil {
				err = s.advanceHash(s.ctx, false)
			}
			s.hash.mu.Unlock()
			if err != nil && s.ctx.Err() == nil {
				// FinishHash meets it again and reports it. Until then,
				// readers must not wait for a hasher that is stuck.
				s.log.Warn("background hashing of the image stopped; FinishHash reads the rest", "url", s.url, "err", err)
				s.c.mu.Lock()
				s.c.hashFailed = true
				s.c.signal()
				s.c.mu.Unlock()
				return
			}
		}
	}()
}

// advanceHash moves the hash cursor through the file. s.hash.mu is held.
//
// Blocks in the cache are hashed from there. A run of blocks that left the
// cache unhashed is read again straight into the hash, in one request and
// without taking cache buffers: taking them would evict other unhashed
// blocks, which would then need reading again too.
//
// For the background hasher (final false) it stops at a block in flight
// (its fetch kicks the hasher again). A block nobody fetched yet it fetches
// into the cache when there is room without evicting anything unhashed or
// unread (a reader will want it), else it leaves it to the readers. For
// FinishHash (final true) it goes to the end of the file.
func (s *Source) advanceHash(ctx context.Context, final bool) error {
	c := s.c
	// Readers waiting for room wait on the cursor: tell them it moved.
	defer c.wake()
	if s.hash.buf == nil {
		s.hash.buf = make([]byte, 256<<10)
	}
	for s.hash.upTo < s.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		idx := s.hash.upTo / c.bs
		c.mu.Lock()
		b := c.blocks[idx]
		switch {
		case b != nil && !b.ready && !final:
			c.mu.Unlock()
			return nil
		case b != nil:
			b.refs++
			c.mu.Unlock()
		case !final && !c.wasSeen(idx):
			c.mu.Unlock()
			nb, isNew, err := c.acquire(ctx, idx, useHash)
			if err != nil {
				return err
			}
			if nb == nil {
				return nil // no room: a reader will fetch it
			}
			if isNew {
				c.fetch(nb)
			}
			b = nb
		}
		if b != nil {
			err := c.wait(ctx, b)
			if err == nil {
				s.feedLocked(idx*c.bs, b.buf)
				c.markHashed(b)
				c.unref(b)
				continue
			}
			c.unref(b)
			if !final || ctx.Err() != nil || s.ctx.Err() != nil {
				return err
			}
			continue // the failed block left the cache: read it below
		}
		end := idx + 1
		for end < c.nblocks && c.blocks[end] == nil && (final || c.wasSeen(end)) {
			end++
		}
		for j := idx; j < end; j++ {
			if c.wasSeen(j) {
				s.stats.refetched.Add(c.blockLen(j))
			}
			c.markSeen(j)
		}
		c.mu.Unlock()
		if err := s.hashRangeLocked(ctx, s.hash.buf, s.hash.upTo, min(end*c.bs, s.size)); err != nil {
			return err
		}
		c.wake()
	}
	return nil
}

// wasSeen reports whether block idx was fetched before. c.mu is held.
func (c *cache) wasSeen(idx int64) bool { return c.seen[idx/64]&(1<<uint(idx%64)) != 0 }

// markSeen records that block idx was fetched. c.mu is held.
func (c *cache) markSeen(idx int64) { c.seen[idx/64] |= 1 << uint(idx%64) }

// finishRemote hashes the rest of the file. s.hash.mu is held.
func (s *Source) finishRemote(ctx context.Context) error {
	if s.c == nil {
		// No Range (or an empty file): read it all again; feedLocked
		// skips what was hashed.
		if s.hash.buf == nil {
			s.hash.buf = make([]byte, 256<<10)
		}
		return s.hashRangeLocked(ctx, s.hash.buf, 0, s.size)
	}
	return s.advanceHash(ctx, true)
}

// hashRangeLocked streams [start, end) of the remote file into the hash
// (end -1: to EOF). s.hash.mu is held.
func (s *Source) hashRangeLocked(ctx context.Context, buf []byte, start, end int64) error {
	st := s.newStream(ctx, start, end, false)
	defer st.Close()
	for {
		off := st.off
		n, err := st.Read(buf)
		s.feedLocked(off, buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
