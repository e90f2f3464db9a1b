package ipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Sentinel errors, matchable with errors.Is on what the driver returns.
var (
	// ErrAuthentication: the BMC refused the credentials (wrong user or
	// password, privilege level not allowed, no matching cipher suite).
	ErrAuthentication = errors.New("IPMI authentication failed")
	// ErrUnreachable: the BMC did not answer (timeouts, nothing listening).
	ErrUnreachable = errors.New("BMC did not answer")
	// ErrClosed: the driver was closed.
	ErrClosed = errors.New("ipmi driver closed")
	// ErrPowerTimeout: the power state was not reached in time.
	ErrPowerTimeout = errors.New("power state not reached in time")
)

// BMCError is a failed IPMI operation. Its text names the BMC's address,
// never the password.
type BMCError struct {
	Endpoint string // address:port
	Op       string // e.g. "power status", "chassis power on"
	Attempts int
	Err      error
}

func (e *BMCError) Error() string {
	return fmt.Sprintf("IPMI %s on BMC %s failed after %d attempt(s): %v", e.Op, e.Endpoint, e.Attempts, e.Err)
}

func (e *BMCError) Unwrap() error { return e.Err }

// session is one open go-ipmi client. go-ipmi panics on a second Close, so
// closing goes through a sync.Once.
type session struct {
	c         *client.Client
	opened    time.Time
	closeOnce sync.Once
}

func (s *session) close(timeout time.Duration) {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		if timeout <= 0 {
			cancel() // a cancelled context: just release the socket
		}
		defer cancel()
		defer func() { _ = recover() }() // belt and braces: never let a library panic escape
		_ = s.c.Close(ctx)
	})
}

// entry is one BMC (one session key). Holding lock (a 1-slot channel, so
// waiting for it honours contexts) gives exclusive use of the BMC: calls to
// one BMC are serialised, calls to different BMCs are independent.
type entry struct {
	key      string
	endpoint string
	lock     chan struct{}

	// sess is written only while holding both lock and pool.mu; reading it
	// needs either.
	sess *session

	// guarded by pool.mu
	users    int
	lastUsed time.Time
}

func (e *entry) tryLock() bool {
	select {
	case e.lock <- struct{}{}:
		return true
	default:
		return false
	}
}

func (e *entry) unlock() { <-e.lock }

// pool keeps one session per BMC, caps the number of open sessions, closes
// idle ones and re-opens broken ones.
type pool struct {
	o   *Options
	log *slog.Logger

	mu        sync.Mutex
	entries   map[string]*entry
	open      int
	slotFreed chan struct{} // closed (and replaced) whenever a slot frees up
	closed    bool

	stop    chan struct{}
	wg      sync.WaitGroup // janitor and background closes
	closeMu sync.Once
}

func newPool(o *Options, log *slog.Logger) *pool {
	p := &pool{o: o, log: log, entries: map[string]*entry{}, slotFreed: make(chan struct{}), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.janitor()
	return p
}

func (p *pool) get(b *BMCInfo) (*entry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	k := b.sessionKey()
	e := p.entries[k]
	if e == nil {
		e = &entry{key: k, endpoint: b.Endpoint(), lock: make(chan struct{}, 1)}
		p.entries[k] = e
	}
	e.users++
	return e, nil
}

func (p *pool) put(e *entry) {
	p.mu.Lock()
	e.users--
	e.lastUsed = time.Now()
	if e.users == 0 && e.sess != nil {
		p.notifyLocked() // an idle session can now be evicted by a waiter
	}
	p.mu.Unlock()
}

// notifyLocked wakes everyone waiting for a session slot.
func (p *pool) notifyLocked() {
	close(p.slotFreed)
	p.slotFreed = make(chan struct{})
}

// setSess changes e.sess; the caller holds e.lock.
func (p *pool) setSess(e *entry, s *session) {
	p.mu.Lock()
	e.sess = s
	p.mu.Unlock()
}

func (p *pool) freeSlotLocked() {
	p.open--
	p.notifyLocked()
}

// acquireSlot reserves one of MaxSessions; when all are taken it closes the
// least recently used idle session of another BMC, or waits.
func (p *pool) acquireSlot(ctx context.Context, self *entry) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrClosed
		}
		if p.open < p.o.MaxSessions {
			p.open++
			p.mu.Unlock()
			return nil
		}
		var idle []*entry
		for _, e := range p.entries {
			if e != self && e.users == 0 && e.sess != nil {
				idle = append(idle, e)
			}
		}
		sort.Slice(idle, func(i, j int) bool { return idle[i].lastUsed.Before(idle[j].lastUsed) })
		for _, v := range idle {
			if v.tryLock() {
				s := v.sess
				v.sess = nil
				delete(p.entries, v.key)
				v.unlock()
				p.mu.Unlock() // the slot passes from v to us
				p.closeAsync(s, p.o.closeTimeout())
				return nil
			}
		}
		ch := p.slotFreed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a free BMC session (all %d in use): %w", p.o.MaxSessions, ctx.Err())
		}
	}
}

func (p *pool) closeAsync(s *session, timeout time.Duration) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		s.close(timeout)
	}()
}

// dropSession forgets e's session (broken or idle) and frees its slot; the
// caller holds e.lock.
func (p *pool) dropSession(e *entry, timeout time.Duration) {
	p.mu.Lock()
	s := e.sess
	if s != nil {
		e.sess = nil
		p.freeSlotLocked()
	}
	p.mu.Unlock()
	if s != nil {
		p.closeAsync(s, timeout)
	}
}

func (p *pool) connect(ctx context.Context, e *entry, b *BMCInfo, log *slog.Logger) error {
	if err := p.acquireSlot(ctx, e); err != nil {
		return err
	}
	c, err := client.NewClient(b.Address, b.Port, b.Username, b.Password)
	if err != nil {
		p.mu.Lock()
		p.freeSlotLocked()
		p.mu.Unlock()
		return err
	}
	c.WithTimeout(p.o.AttemptTimeout).WithRetry(p.o.UDPRetries).WithMaxPrivilegeLevel(b.privilege())
	if b.ProtocolVersion == "1.5" {
		c.WithInterface(client.InterfaceLan)
	} else {
		c.WithCipherSuiteID(types.CipherSuiteID(b.CipherSuite))
	}
	cctx, cancel := context.WithTimeout(ctx, p.o.CommandTimeout)
	defer cancel()
	start := time.Now()
	if err := c.Connect(cctx); err != nil {
		(&session{c: c}).close(0)
		p.mu.Lock()
		p.freeSlotLocked()
		p.mu.Unlock()
		return classifyConnect(err, b)
	}
	p.setSess(e, &session{c: c, opened: time.Now()})
	log.Debug("ipmi session opened", "elapsed", time.Since(start))
	return nil
}

// classifyConnect turns session-setup failures into errors that say what is
// wrong; authentication problems are not retried.
func classifyConnect(err error, b *BMCInfo) error {
	// go-ipmi's Connect20 flattens the per-cipher errors with %v, so the
	// typed errors are lost: recover the RMCP+ status code from the text.
	code, haveCode := rmcpStatus(err)
	if haveCode {
		switch code {
		case types.RmcpStatusCodeUnauthorizedName, types.RmcpStatusCodeInvalidNameLength:
			return fmt.Errorf("%w: the BMC does not know user %q (%v)", ErrAuthentication, b.Username, err)
		case types.RmcpStatusCodeInvalidRole, types.RmcpStatusCodeUnauthorizedRoleOfPriLevel:
			return fmt.Errorf("%w: user %q may not use privilege level %s (%v)", ErrAuthentication, b.Username, b.PrivLevel, err)
		case types.RmcpStatusCodeNoCipherSuiteMatch, types.RmcpStatusCodeInvalidAuthAlg, types.RmcpStatusCodeInvalidIntegrityAlg, types.RmcpStatusCodeInvalidConfidentAlg:
			return fmt.Errorf("%w: the BMC does not support cipher suite %d (%v)", ErrAuthentication, b.CipherSuite, err)
		case types.RmcpStatusCodeInvalidIntegrityCheckValue:
			return fmt.Errorf("%w: wrong password for user %q (%v)", ErrAuthentication, b.Username, err)
		}
	}
	if errors.Is(err, client.ErrRAKPAuthentication) || strings.Contains(err.Error(), client.ErrRAKPAuthentication.Error()) {
		return fmt.Errorf("%w: wrong password for user %q (the BMC's RAKP authentication code does not match)", ErrAuthentication, b.Username)
	}
	if re, ok := types.IsResponseError(err); ok {
		// The BMC answered but refused (e.g. privilege level, 1.5 auth type).
		return fmt.Errorf("%w: session setup refused: %v", ErrAuthentication, re)
	}
	return transportErr(err)
}

// transportErr marks errors meaning "no (usable) answer".
func transportErr(err error) error {
	if isTransport(err) {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	return err
}

func isTransport(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// go-ipmi prefixes every UDP-level failure with "IPMI LAN: " (its
	// no-match sentinel is unexported, and Connect20 loses error chains).
	msg := err.Error()
	return strings.Contains(msg, "IPMI LAN: ") || strings.Contains(msg, "connection refused")
}

var rmcpStatusRE = regexp.MustCompile(`RMCP\+ status (0x[0-9a-fA-F]{1,2})`)

func rmcpStatus(err error) (types.RmcpStatusCode, bool) {
	var st *types.RmcpStatusError
	if errors.As(err, &st) {
		return st.StatusCode(), true
	}
	m := rmcpStatusRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	v, perr := strconv.ParseUint(m[1], 0, 8)
	if perr != nil {
		return 0, false
	}
	return types.RmcpStatusCode(v), true
}

// retryableCC lists completion codes worth retrying: node busy, timeout,
// out of space, BMC initialising (Ironic's IPMITOOL_RETRYABLE_FAILURES).
func retryableCC(cc types.CompletionCode) bool {
	switch uint8(cc) {
	case 0xc0, 0xc3, 0xc4, 0xd2:
		return true
	}
	return false
}

// do runs fn with the BMC's session: opening it if needed, serialised with
// other calls to the same BMC, retried with backoff after transport errors
// (with a fresh session) and busy answers. fn must be safe to repeat.
func (p *pool) do(ctx context.Context, b *BMCInfo, nodeUUID, op string, fn func(context.Context, *client.Client) error) error {
	log := p.log.With("node", nodeUUID, "bmc", b.Endpoint(), "op", op)
	ctx, cancel := context.WithTimeout(ctx, p.o.CallTimeout)
	defer cancel()
	e, err := p.get(b)
	if err != nil {
		return &BMCError{Endpoint: b.Endpoint(), Op: op, Err: err}
	}
	defer p.put(e)
	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return &BMCError{Endpoint: b.Endpoint(), Op: op, Err: fmt.Errorf("%w: waiting for the previous call to this BMC: %v", ErrUnreachable, ctx.Err())}
	}
	defer e.unlock()

	var lastErr error
	attempts := 0
	backoff := p.o.RetryBackoff
	for attempt := 0; attempt <= p.o.Retries; attempt++ {
		if attempt > 0 {
			log.Warn("ipmi call failed, retrying", "attempt", attempt, "backoff", backoff, "error", lastErr)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			if ctx.Err() != nil {
				break
			}
			backoff *= 2
		}
		attempts++
		if e.sess == nil {
			if err := p.connect(ctx, e, b, log); err != nil {
				lastErr = err
				if errors.Is(err, ErrAuthentication) || errors.Is(err, ErrClosed) {
					break
				}
				continue
			}
		}
		cctx, ccancel := context.WithTimeout(ctx, p.o.CommandTimeout)
		err := fn(cctx, e.sess.c)
		ccancel()
		if err == nil {
			return nil
		}
		if re, ok := types.IsResponseError(err); ok && !isTransport(err) {
			lastErr = err
			if retryableCC(re.CompletionCode()) {
				continue
			}
			break // the BMC answered "no": the session is fine, retrying won't help
		}
		// No usable answer: the session may be dead (BMC rebooted, session
		// timed out on the BMC, lost packets): drop it and start afresh.
		lastErr = transportErr(err)
		p.dropSession(e, 300*time.Millisecond)
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil && !errors.Is(lastErr, context.DeadlineExceeded) && !errors.Is(lastErr, context.Canceled) {
		lastErr = fmt.Errorf("%w (%v)", lastErr, ctx.Err())
	}
	return &BMCError{Endpoint: b.Endpoint(), Op: op, Attempts: attempts, Err: lastErr}
}

func (p *pool) janitor() {
	defer p.wg.Done()
	every := p.o.IdleTimeout / 2
	if every > 5*time.Second {
		every = 5 * time.Second
	}
	if every < 10*time.Millisecond {
		every = 10 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.reapIdle()
		}
	}
}

func (p *pool) reapIdle() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.entries {
		if e.users > 0 || now.Sub(e.lastUsed) < p.o.IdleTimeout {
			continue
		}
		if !e.tryLock() {
			continue
		}
		if s := e.sess; s != nil {
			e.sess = nil
			p.freeSlotLocked()
			p.closeAsync(s, p.o.closeTimeout())
			p.log.Debug("ipmi session closed after idle period", "bmc", e.endpoint)
		}
		delete(p.entries, k)
		e.unlock()
	}
}

// openSessions reports how many sessions are open (for tests and metrics).
func (p *pool) openSessions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// close shuts every session; calls in flight finish or fail with ErrClosed.
func (p *pool) close() {
	p.closeMu.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.stop)
		close(p.slotFreed)
		p.slotFreed = make(chan struct{})
		p.mu.Unlock()
		// Take each BMC's lock (waiting for calls in flight) and close.
		p.mu.Lock()
		entries := make([]*entry, 0, len(p.entries))
		for _, e := range p.entries {
			entries = append(entries, e)
		}
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, e := range entries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTimer(p.o.CallTimeout)
				defer t.Stop()
				select {
				case e.lock <- struct{}{}:
					p.dropSession(e, p.o.closeTimeout())
					e.unlock()
				case <-t.C:
					// A call is stuck: close underneath it (Close is guarded).
					p.mu.Lock()
					s := e.sess
					p.mu.Unlock()
					if s != nil {
						s.close(0)
					}
				}
			}()
		}
		wg.Wait()
		p.wg.Wait()
	})
}
