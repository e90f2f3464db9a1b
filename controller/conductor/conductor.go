// Package conductor runs the work on nodes: provision-state transitions,
// power actions, boot device changes and the periodic tasks (callback
// timeouts, power-state sync). It is Ironic's ironic-conductor in one
// process.
//
// Every task follows one discipline, so a controller restart never loses
// or wedges a node:
//
//  1. reserve the node (the store's reservation column is the lock; a held
//     lock is a 409 NodeLocked to the caller),
//  2. commit the new state to the store before any side effect,
//  3. run the side effects in a worker goroutine,
//  4. commit the outcome and release the lock.
//
// On start-up, Recover releases the locks the previous process held and
// moves nodes left in transient states to their failure state.
package conductor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// Config tunes the conductor. Zero values take the defaults documented on
// each field (Ironic's defaults).
type Config struct {
	Host              string        // name in node.reservation and node.conductor; default os.Hostname()
	Workers           int           // concurrent tasks; default 100 ([conductor]workers_pool_size)
	LockRetries       int           // attempts to reserve a busy node; default 3
	LockRetryInterval time.Duration // default 1 s
	// AutomatedClean runs cleaning on provide and undeploy; default true.
	// A node's automated_clean field overrides it when set.
	AutomatedClean *bool

	DeployCallbackTimeout time.Duration // default 1800 s
	CleanCallbackTimeout  time.Duration // default 1800 s
	InspectWaitTimeout    time.Duration // default 1800 s
	RescueCallbackTimeout time.Duration // default 1800 s
	CheckStateInterval    time.Duration // default 60 s

	PowerStateChangeTimeout time.Duration // default 60 s
	SoftPowerOffTimeout     time.Duration // default 600 s

	SyncPowerStateInterval       time.Duration // default 60 s; negative disables
	SyncPowerStateWorkers        int           // default 8
	PowerStateSyncMaxRetries     int           // default 3
	ForcePowerStateDuringSync    *bool         // default true
	PowerFailureRecoveryInterval time.Duration // default 300 s; negative disables

	// FastTrack lets an agent that is still running (e.g. after
	// inspection) look up and heartbeat while the node is enroll,
	// manageable or available, so the next deploy or clean skips a reboot
	// ([deploy]fast_track in Ironic; off by default there too).
	FastTrack bool
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host, _ = os.Hostname()
		if c.Host == "" {
			c.Host = "localhost"
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Workers <= 0 {
		c.Workers = 100
	}
	if c.LockRetries <= 0 {
		c.LockRetries = 3
	}
	def(&c.LockRetryInterval, time.Second)
	if c.AutomatedClean == nil {
		t := true
		c.AutomatedClean = &t
	}
	def(&c.DeployCallbackTimeout, 1800*time.Second)
	def(&c.CleanCallbackTimeout, 1800*time.Second)
	def(&c.InspectWaitTimeout, 1800*time.Second)
	def(&c.RescueCallbackTimeout, 1800*time.Second)
	def(&c.CheckStateInterval, 60*time.Second)
	def(&c.PowerStateChangeTimeout, 60*time.Second)
	def(&c.SoftPowerOffTimeout, 600*time.Second)
	def(&c.SyncPowerStateInterval, 60*time.Second)
	if c.SyncPowerStateWorkers <= 0 {
		c.SyncPowerStateWorkers = 8
	}
	if c.PowerStateSyncMaxRetries <= 0 {
		c.PowerStateSyncMaxRetries = 3
	}
	if c.ForcePowerStateDuringSync == nil {
		t := true
		c.ForcePowerStateDuringSync = &t
	}
	def(&c.PowerFailureRecoveryInterval, 300*time.Second)
}

// Conductor executes node tasks.
type Conductor struct {
	store *store.Store
	reg   *drivers.Registry
	cfg   Config
	log   *slog.Logger

	workers chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context // cancelled by Stop; parent of every task
	cancel  context.CancelFunc

	syncMu       sync.Mutex
	syncFailures map[int64]int // consecutive power-sync failures per node id
}

// New returns a conductor. Call Recover, then Start.
func New(st *store.Store, reg *drivers.Registry, cfg Config, log *slog.Logger) *Conductor {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Conductor{
		store: st, reg: reg, cfg: cfg, log: log,
		workers: make(chan struct{}, cfg.Workers),
		ctx:     ctx, cancel: cancel,
		syncFailures: map[int64]int{},
	}
}

// Host is the name this conductor reserves nodes under.
func (c *Conductor) Host() string { return c.cfg.Host }

// Registry returns the driver registry.
func (c *Conductor) Registry() *drivers.Registry { return c.reg }

// Store returns the store (read access for the API).
func (c *Conductor) Store() *store.Store { return c.store }

// Stop cancels running tasks' contexts and waits for them to finish.
func (c *Conductor) Stop() {
	c.cancel()
	c.wg.Wait()
}

// Wait blocks until no task is running (tests use it).
func (c *Conductor) Wait() { c.wg.Wait() }

// getNode loads a node by UUID or name with an API-ready error.
func (c *Conductor) getNode(ctx context.Context, ident string) (*model.Node, error) {
	n, err := c.store.GetNode(ctx, ident)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nodeNotFound(ident)
	}
	return n, err
}

// acquire reserves the node, retrying a busy lock a few times as Ironic's
// task manager does before answering 409 NodeLocked.
func (c *Conductor) acquire(ctx context.Context, n *model.Node) (*model.Node, error) {
	var err error
	for i := 0; i < c.cfg.LockRetries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(c.cfg.LockRetryInterval):
			}
		}
		var locked *model.Node
		locked, err = c.store.Reserve(ctx, n.ID, c.cfg.Host)
		if err == nil {
			return locked, nil
		}
		if !errors.Is(err, store.ErrLocked) {
			break
		}
	}
	var le *store.LockedError
	if errors.As(err, &le) {
		return nil, &Error{Kind: Conflict, Msg: le.Error(), Err: err}
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, nodeNotFound(n.UUID)
	}
	return nil, err
}

func (c *Conductor) release(n *model.Node) {
	// Use a fresh context: the lock must be dropped even when the request
	// that took it was cancelled.
	if err := c.store.Release(context.Background(), n.ID, c.cfg.Host); err != nil {
		c.log.Error("release node lock", "node", n.UUID, "err", err)
	}
}

// withLock runs fn on the reserved node and saves it when fn succeeds.
func (c *Conductor) withLock(ctx context.Context, ident string, fn func(n *model.Node) error) (*model.Node, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	n, err = c.acquire(ctx, n)
	if err != nil {
		return nil, err
	}
	defer c.release(n)
	if err := fn(n); err != nil {
		return nil, err
	}
	if err := c.store.UpdateNode(ctx, n); err != nil {
		return nil, err
	}
	return n, nil
}

// errNoWorker is Ironic's NoFreeConductorWorker.
var errNoWorker = errorf(Unavailable, "Requested action cannot be performed due to lack of free conductor workers.")

// takeWorker claims a worker slot. Callers claim it before committing a new
// state, so a busy conductor refuses (503) without leaving the node in a
// transient state nobody works on.
func (c *Conductor) takeWorker() error {
	select {
	case c.workers <- struct{}{}:
		return nil
	default:
		return errNoWorker
	}
}

// spawn runs task on the (already reserved and saved) node in the worker
// slot the caller claimed with takeWorker. The worker saves the node
// afterwards and releases the lock.
func (c *Conductor) spawn(n *model.Node, what string, task func(ctx context.Context, n *model.Node)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.workers }()
		defer c.release(n)
		log := c.log.With("node", n.UUID, "task", what)
		defer func() {
			if r := recover(); r != nil {
				log.Error("task panicked", "panic", r)
				n.LastError = fmt.Sprintf("internal error during %s: %v", what, r)
				c.save(n)
			}
		}()
		start := time.Now()
		task(c.ctx, n)
		c.save(n)
		log.Info("task finished", "provision_state", n.ProvisionState, "power_state", n.PowerState,
			"duration", time.Since(start).Round(time.Millisecond), "last_error", n.LastError)
	}()
}

func (c *Conductor) save(n *model.Node) {
	if err := c.store.UpdateNode(context.Background(), n); err != nil {
		c.log.Error("save node", "node", n.UUID, "err", err)
	}
}

// fire applies a state-machine event to the node: provision_state moves,
// target_provision_state follows the new state's target (or an explicit
// one), provision_updated_at is stamped.
func (c *Conductor) fire(n *model.Node, ev statemachine.Event, explicitTarget string) error {
	to, ok := statemachine.Next(n.ProvisionState, ev)
	if !ok {
		return fmt.Errorf("state machine: no %q transition from %q", ev, n.ProvisionState)
	}
	n.ProvisionState = to
	switch {
	case explicitTarget != "" && !statemachine.IsStable(to):
		n.TargetProvisionState = explicitTarget
	default:
		n.TargetProvisionState = statemachine.Target(to)
	}
	now := store.Now()
	n.ProvisionUpdatedAt = &now
	return nil
}

// mustFire is fire for transitions the flow guarantees; a failure is a bug,
// recorded on the node rather than crashing the controller.
func (c *Conductor) mustFire(n *model.Node, ev statemachine.Event, explicitTarget string) {
	if err := c.fire(n, ev, explicitTarget); err != nil {
		c.log.Error("impossible transition", "node", n.UUID, "err", err)
		n.LastError = err.Error()
	}
}

// interfaces resolves the node's driver interfaces with an API-ready error.
func (c *Conductor) interfaces(n *model.Node) (*drivers.Set, error) {
	s, err := c.reg.Interfaces(n)
	if err != nil {
		return nil, errorf(Invalid, "%s", err)
	}
	return s, nil
}
