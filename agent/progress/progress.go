// Package progress tracks how far a long agent command has got, so the
// command API and the heartbeat can say "writing, 41 %, 180 MB/s, 12 s
// left" instead of leaving the operator to guess (IPA reports nothing while
// it writes).
//
// A Tracker travels in the command's context: the code doing the work calls
// From(ctx) and never needs to know whether anyone is watching.
package progress

import (
	"context"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Tracker is safe for concurrent use: parallel writers call Add.
type Tracker struct {
	done  atomic.Int64
	total atomic.Int64

	mu      sync.Mutex
	phase   string
	start   time.Time
	devices map[string]*Tracker
	now     func() time.Time
}

// New returns a tracker in no phase.
func New() *Tracker { return &Tracker{now: time.Now} }

// SetPhase starts a phase with total bytes (0 if unknown) and resets the
// counters and the clock.
func (t *Tracker) SetPhase(phase string, total int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase = phase
	t.start = t.now()
	t.done.Store(0)
	t.total.Store(total)
}

// SetTotal changes the phase's total (learnt after the phase began).
func (t *Tracker) SetTotal(total int64) {
	if t != nil {
		t.total.Store(total)
	}
}

// Add records n more bytes done.
func (t *Tracker) Add(n int64) {
	if t != nil {
		t.done.Add(n)
	}
}

// Complete marks the phase done (bytes done = total), for phases whose
// byte count cannot land exactly on the total (a compressed stream's
// trailer is never read by the decompressor).
func (t *Tracker) Complete() {
	if t != nil {
		t.done.Store(t.total.Load())
	}
}

// Device returns the child tracker for one disk of a multi-disk command,
// creating it in the parent's phase.
func (t *Tracker) Device(name string) *Tracker {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.devices == nil {
		t.devices = map[string]*Tracker{}
	}
	c, ok := t.devices[name]
	if !ok {
		c = &Tracker{now: t.now}
		t.devices[name] = c
	}
	return c
}

// Snapshot reports the current state.
func (t *Tracker) Snapshot() *protocol.Progress {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	phase, start := t.phase, t.start
	devs := maps.Clone(t.devices)
	p := &protocol.Progress{Phase: phase, BytesDone: t.done.Load(), BytesTotal: t.total.Load()}
	t.mu.Unlock()
	if !start.IsZero() {
		el := t.now().Sub(start).Seconds()
		p.ElapsedSeconds = round(el)
		if el > 0 {
			p.BytesPerSecond = round(float64(p.BytesDone) / el)
		}
	}
	if p.BytesTotal > 0 {
		p.Percent = round(100 * float64(p.BytesDone) / float64(p.BytesTotal))
		if p.BytesPerSecond > 0 && p.BytesDone < p.BytesTotal {
			p.ETASeconds = round(float64(p.BytesTotal-p.BytesDone) / p.BytesPerSecond)
		}
	}
	if len(devs) > 0 {
		names := make([]string, 0, len(devs))
		for n := range devs {
			names = append(names, n)
		}
		sort.Strings(names)
		p.Devices = make(map[string]*protocol.Progress, len(names))
		for _, n := range names {
			p.Devices[n] = devs[n].Snapshot()
		}
	}
	return p
}

func round(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

type ctxKey struct{}

// With returns ctx carrying t.
func With(ctx context.Context, t *Tracker) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// From returns the tracker in ctx, or nil; every Tracker method is a no-op
// on nil, so callers need not check.
func From(ctx context.Context) *Tracker {
	t, _ := ctx.Value(ctxKey{}).(*Tracker)
	return t
}
