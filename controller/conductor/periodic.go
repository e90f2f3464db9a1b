package conductor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// Recover puts the nodes a previous process left behind into a defined
// state: its locks are released, nodes stuck mid-transition go to their
// failure state with last_error saying why, and half-done power actions
// are cleared. Wait states (wait call-back, clean wait, ...) survive: the
// agent may still call back, and their timeouts still apply.
func (c *Conductor) Recover(ctx context.Context) error {
	released, err := c.store.ReleaseAll(ctx, c.cfg.Host)
	if err != nil {
		return err
	}
	if released > 0 {
		c.log.Warn("released locks held by a previous run of this controller", "count", released)
	}
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{})
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, n := range nodes {
		if n.Reservation != "" {
			continue // another live controller's (future multi-controller setups)
		}
		changed := false
		if fail, ok := statemachine.StuckFailState(n.ProvisionState); ok {
			was := n.ProvisionState
			c.mustFire(n, statemachine.EvFail, "")
			if n.ProvisionState != fail {
				c.log.Error("recovery moved node to an unexpected state", "node", n.UUID, "state", n.ProvisionState, "want", fail)
			}
			n.LastError = fmt.Sprintf("The controller restarted while the node was in state %q; the operation was interrupted and must be retried.", was)
			if was == statemachine.Cleaning {
				n.Maintenance, n.Fault, n.MaintenanceReason = true, "clean failure", n.LastError
			}
			changed = true
		}
		if n.TargetPowerState != "" {
			n.LastError = fmt.Sprintf("The controller restarted during a power action to %q; check the node's power state and retry.", n.TargetPowerState)
			n.TargetPowerState = ""
			changed = true
		}
		if changed {
			c.log.Warn("recovered node", "node", n.UUID, "provision_state", n.ProvisionState, "last_error", n.LastError)
			if err := c.store.UpdateNode(ctx, n); err != nil {
				return fmt.Errorf("recover node %s: %w", n.UUID, err)
			}
		}
	}
	return nil
}

// Start runs the periodic tasks until Stop.
func (c *Conductor) Start() {
	c.every(c.cfg.CheckStateInterval, c.checkWaitTimeouts)
	c.every(c.cfg.SyncPowerStateInterval, c.syncPowerStates)
	c.every(c.cfg.PowerFailureRecoveryInterval, c.powerFailureRecovery)
}

func (c *Conductor) every(d time.Duration, fn func(context.Context)) {
	if d <= 0 {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
				fn(c.ctx)
			}
		}
	}()
}

// checkWaitTimeouts fails nodes that waited for the agent too long.
func (c *Conductor) checkWaitTimeouts(ctx context.Context) {
	for _, state := range []string{statemachine.DeployWait, statemachine.CleanWait, statemachine.InspectWait, statemachine.RescueWait} {
		timeout, msg := c.waitTimeout(state)
		f := false
		nodes, err := c.store.ListNodes(ctx, store.NodeFilter{ProvisionState: state, Reserved: &f, Maintenance: &f})
		if err != nil {
			c.log.Error("check wait timeouts", "err", err)
			return
		}
		for _, n := range nodes {
			since := n.ProvisionUpdatedAt
			if state == statemachine.InspectWait && n.InspectionStartedAt != nil {
				since = n.InspectionStartedAt
			}
			if since == nil || time.Since(*since) < timeout {
				continue
			}
			c.timeoutNode(ctx, n, state, fmt.Sprintf(msg, n.UUID))
		}
	}
}

func (c *Conductor) timeoutNode(ctx context.Context, n *model.Node, state, msg string) {
	locked, err := c.store.Reserve(ctx, n.ID, c.cfg.Host)
	if err != nil {
		return // busy: a heartbeat is being handled; try next round
	}
	defer c.release(locked)
	if locked.ProvisionState != state {
		return
	}
	manual := state == statemachine.CleanWait && locked.TargetProvisionState == statemachine.Manageable
	if state == statemachine.CleanWait {
		c.cleanFailed(locked, msg, manual)
	} else {
		c.mustFire(locked, statemachine.EvFail, "")
		locked.LastError = msg
	}
	if ifs, err := c.reg.Interfaces(locked); err == nil && (state == statemachine.DeployWait || state == statemachine.CleanWait) {
		c.undo(ctx, locked, ifs)
	}
	delete(locked.DriverInternalInfo, "agent_secret_token")
	c.log.Warn("wait timed out", "node", locked.UUID, "state", state, "now", locked.ProvisionState)
	c.save(locked)
}

// SyncPowerStates runs one power-sync round now (tests and the CLI use it;
// the periodic task calls the same code).
func (c *Conductor) SyncPowerStates(ctx context.Context) { c.syncPowerStates(ctx) }

// syncPowerStates reads every eligible node's power state from its BMC and
// reconciles it with the database (Ironic's _sync_power_states).
func (c *Conductor) syncPowerStates(ctx context.Context) {
	f := false
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{Maintenance: &f, Reserved: &f})
	if err != nil {
		c.log.Error("power sync: list nodes", "err", err)
		return
	}
	work := make(chan *model.Node)
	var wg sync.WaitGroup
	for i := 0; i < c.cfg.SyncPowerStateWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				c.syncNode(ctx, n)
			}
		}()
	}
	for _, n := range nodes {
		if statemachine.InSyncExcluded(n.ProvisionState) || n.TargetPowerState != "" {
			continue
		}
		work <- n
	}
	close(work)
	wg.Wait()
}

func (c *Conductor) syncNode(ctx context.Context, n *model.Node) {
	ifs, err := c.reg.Interfaces(n)
	if err != nil || ifs.Power == nil {
		return
	}
	if err := ifs.Power.Validate(n); err != nil {
		return
	}
	st, readErr := ifs.Power.PowerState(ctx, n)
	if readErr == nil && (n.PowerState == "" || st == n.PowerState) {
		c.resetSyncFailures(n.ID)
		if n.PowerState == "" && st != "" {
			c.updateUnlocked(ctx, n, func(l *model.Node) { l.PowerState = st })
		}
		return
	}
	log := c.log.With("node", n.UUID)
	if readErr != nil {
		failures := c.countSyncFailure(n.ID)
		log.Warn("power sync: cannot read power state", "failures", failures, "err", readErr)
		if failures > c.cfg.PowerStateSyncMaxRetries {
			c.updateUnlocked(ctx, n, func(l *model.Node) {
				l.Maintenance = true
				l.Fault = "power failure"
				l.MaintenanceReason = fmt.Sprintf("During sync_power_state, max retries exceeded for node %s, node state %s does not match expected state 'None'. Updating DB state to 'None' Switching node to maintenance mode. Error: %s", l.UUID, l.PowerState, readErr)
				l.PowerState = ""
			})
			c.resetSyncFailures(n.ID)
		}
		return
	}
	// Mismatch between the database and the hardware.
	if *c.cfg.ForcePowerStateDuringSync {
		failures := c.countSyncFailure(n.ID)
		if failures > c.cfg.PowerStateSyncMaxRetries {
			c.updateUnlocked(ctx, n, func(l *model.Node) {
				l.Maintenance = true
				l.Fault = "power failure"
				l.MaintenanceReason = fmt.Sprintf("During sync_power_state, max retries exceeded for node %s, node state %s does not match expected state '%s'. Updating DB state to '%s' Switching node to maintenance mode.", l.UUID, st, l.PowerState, st)
				l.PowerState = st
			})
			c.resetSyncFailures(n.ID)
			return
		}
		log.Warn("power sync: hardware differs from the database; forcing the stored state back", "hardware", st, "stored", n.PowerState)
		want := n.PowerState
		c.updateUnlocked(ctx, n, func(l *model.Node) {
			if err := ifs.Power.SetPowerState(ctx, l, want, c.cfg.PowerStateChangeTimeout); err != nil {
				log.Warn("power sync: forcing power state failed", "err", err)
			}
		})
		return
	}
	log.Info("power sync: recording out-of-band power change", "hardware", st, "stored", n.PowerState)
	c.updateUnlocked(ctx, n, func(l *model.Node) { l.PowerState = st })
	c.resetSyncFailures(n.ID)
}

// updateUnlocked reserves the node, applies fn when nothing changed in the
// meantime and saves it. A busy node is skipped: the next round retries.
func (c *Conductor) updateUnlocked(ctx context.Context, n *model.Node, fn func(l *model.Node)) {
	l, err := c.store.Reserve(ctx, n.ID, c.cfg.Host)
	if err != nil {
		return
	}
	defer c.release(l)
	if l.TargetPowerState != "" || l.ProvisionState != n.ProvisionState {
		return
	}
	fn(l)
	c.save(l)
}

func (c *Conductor) countSyncFailure(id int64) int {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	c.syncFailures[id]++
	return c.syncFailures[id]
}

func (c *Conductor) resetSyncFailures(id int64) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	delete(c.syncFailures, id)
}

// PowerFailureRecovery runs one recovery round now.
func (c *Conductor) PowerFailureRecovery(ctx context.Context) { c.powerFailureRecovery(ctx) }

// powerFailureRecovery takes nodes out of the maintenance the power sync
// put them in once their BMC answers again. Manual maintenance is never
// touched.
func (c *Conductor) powerFailureRecovery(ctx context.Context) {
	t := true
	nodes, err := c.store.ListNodes(ctx, store.NodeFilter{Maintenance: &t, Fault: "power failure"})
	if err != nil {
		c.log.Error("power failure recovery", "err", err)
		return
	}
	for _, n := range nodes {
		ifs, err := c.reg.Interfaces(n)
		if err != nil || ifs.Power == nil {
			continue
		}
		st, err := ifs.Power.PowerState(ctx, n)
		if err != nil {
			continue
		}
		l, err := c.store.Reserve(ctx, n.ID, c.cfg.Host)
		if err != nil {
			continue
		}
		if l.Fault == "power failure" {
			l.Maintenance, l.Fault, l.MaintenanceReason = false, "", ""
			l.PowerState = st
			c.log.Info("power failure recovered", "node", l.UUID, "power_state", st)
			c.save(l)
		}
		c.release(l)
	}
}
