package conductor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// PowerTargets are the targets PUT .../states/power accepts.
var PowerTargets = []string{drivers.PowerOn, drivers.PowerOff, drivers.Rebooting, drivers.SoftPowerOff, drivers.SoftRebooting}

// ChangePower starts a power action; it returns once target_power_state is
// committed, the action runs in a worker.
func (c *Conductor) ChangePower(ctx context.Context, ident, target string, timeout time.Duration) error {
	if !slices.Contains(PowerTargets, target) {
		return errorf(Invalid, "Invalid value for target: %q. Valid values are: %v", target, PowerTargets)
	}
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return err
	}
	if n.ProvisionState == statemachine.Cleaning || n.ProvisionState == statemachine.CleanWait {
		return invalidState(target, n.UUID, n.ProvisionState)
	}
	n, err = c.acquire(ctx, n)
	if err != nil {
		return err
	}
	spawned := false
	defer func() {
		if !spawned {
			c.release(n)
		}
	}()
	ifs, err := c.interfaces(n)
	if err != nil {
		return err
	}
	if ifs.Power == nil {
		return errorf(Invalid, "Node %s has no power interface", n.UUID)
	}
	if err := ifs.Power.Validate(n); err != nil {
		return errorf(Invalid, "Failed to validate power driver interface for node %s. Error: %s", n.UUID, err)
	}
	if !slices.Contains(ifs.Power.SupportedPowerStates(n), target) {
		return errorf(Invalid, "The driver %s does not support the power state %q", n.Driver, target)
	}
	n.TargetPowerState = endState(target)
	if !statemachine.IsFailure(n.ProvisionState) {
		n.LastError = ""
	}
	if err := c.takeWorker(); err != nil {
		return err
	}
	if err := c.store.UpdateNode(ctx, n); err != nil {
		<-c.workers
		return err
	}
	spawned = true
	c.spawn(n, "power "+target, func(ctx context.Context, n *model.Node) {
		if err := c.powerAction(ctx, n, ifs.Power, target, timeout); err != nil {
			n.LastError = fmt.Sprintf("Failed to change power state to '%s' by '%s': %s", n.TargetPowerState, target, err)
		}
		n.TargetPowerState = ""
	})
	return nil
}

// powerAction performs target on the node and records the outcome in
// power_state (Ironic's node_power_action, minus the locking).
func (c *Conductor) powerAction(ctx context.Context, n *model.Node, p drivers.Power, target string, timeout time.Duration) error {
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = model.JSONObject{}
	}
	n.DriverInternalInfo["last_power_state_change"] = store.Now().Format(time.RFC3339Nano)
	if target != drivers.PowerOn {
		// An agent's URL and token die with the machine's power.
		delete(n.DriverInternalInfo, "agent_url")
		delete(n.DriverInternalInfo, "agent_secret_token")
	}
	if timeout == 0 {
		timeout = c.cfg.PowerStateChangeTimeout
		if target == drivers.SoftPowerOff || target == drivers.SoftRebooting {
			timeout = c.cfg.SoftPowerOffTimeout
		}
	}
	var err error
	switch target {
	case drivers.Rebooting:
		err = p.Reboot(ctx, n, false, timeout)
	case drivers.SoftRebooting:
		err = p.Reboot(ctx, n, true, timeout)
	case drivers.PowerOn, drivers.PowerOff:
		// Skip a change that is already true, as Ironic does, but only
		// after asking the hardware.
		if cur, e := p.PowerState(ctx, n); e == nil && cur == target {
			n.PowerState = cur
			return nil
		}
		err = p.SetPowerState(ctx, n, target, timeout)
	default:
		err = p.SetPowerState(ctx, n, target, timeout)
	}
	if err != nil {
		if st, e := p.PowerState(ctx, n); e == nil {
			n.PowerState = st
		} else {
			n.PowerState = drivers.PowerError
		}
		return err
	}
	n.PowerState = endState(target)
	return nil
}

// endState is the power state a power target leaves the machine in.
func endState(target string) string {
	switch target {
	case drivers.PowerOn, drivers.Rebooting, drivers.SoftRebooting:
		return drivers.PowerOn
	}
	return drivers.PowerOff
}

// SetBootDevice sets the node's boot device (synchronous, 204 in the API).
func (c *Conductor) SetBootDevice(ctx context.Context, ident, device string, persistent bool) error {
	_, err := c.withLock(ctx, ident, func(n *model.Node) error {
		m, err := c.management(n)
		if err != nil {
			return err
		}
		if !slices.Contains(m.SupportedBootDevices(n), device) {
			return errorf(Invalid, "Invalid boot device %s specified. Supported devices: %v", device, m.SupportedBootDevices(n))
		}
		if err := m.SetBootDevice(ctx, n, device, persistent); err != nil {
			return errorf(Internal, "Failed to set boot device for node %s: %s", n.UUID, err)
		}
		return nil
	})
	return err
}

// BootDevice reads the node's boot device from the hardware.
func (c *Conductor) BootDevice(ctx context.Context, ident string) (drivers.BootDevice, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return drivers.BootDevice{}, err
	}
	m, err := c.management(n)
	if err != nil {
		return drivers.BootDevice{}, err
	}
	bd, err := m.BootDevice(ctx, n)
	if err != nil {
		return bd, errorf(Internal, "Failed to get boot device for node %s: %s", n.UUID, err)
	}
	return bd, nil
}

// SupportedBootDevices lists the devices the node's management interface
// can set.
func (c *Conductor) SupportedBootDevices(ctx context.Context, ident string) ([]string, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	m, err := c.management(n)
	if err != nil {
		return nil, err
	}
	return m.SupportedBootDevices(n), nil
}

func (c *Conductor) management(n *model.Node) (drivers.Management, error) {
	ifs, err := c.interfaces(n)
	if err != nil {
		return nil, err
	}
	if ifs.Management == nil {
		return nil, errorf(Invalid, "Driver %s does not support management (disabled or not implemented).", n.Driver)
	}
	if err := ifs.Management.Validate(n); err != nil {
		return nil, errorf(Invalid, "Failed to validate management interface for node %s: %s", n.UUID, err)
	}
	return ifs.Management, nil
}

// Management returns the node's management interface, validated, for the
// extension endpoints (indicators, sensors, SEL) that type-assert it.
func (c *Conductor) Management(ctx context.Context, ident string) (*model.Node, drivers.Management, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, nil, err
	}
	m, err := c.management(n)
	return n, m, err
}
