package ipmi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// Power is the "ipmitool" power interface.
type Power struct{ base }

// SupportedPowerStates lists what PUT .../states/power accepts.
func (*Power) SupportedPowerStates(*model.Node) []string {
	return []string{drivers.PowerOn, drivers.PowerOff, drivers.Rebooting, drivers.SoftRebooting, drivers.SoftPowerOff}
}

// PowerState reads the chassis power state (Get Chassis Status).
func (p *Power) PowerState(ctx context.Context, n *model.Node) (string, error) {
	b, err := p.info(n)
	if err != nil {
		return drivers.PowerError, err
	}
	return p.status(ctx, n, b)
}

func (p *Power) status(ctx context.Context, n *model.Node, b *BMCInfo) (string, error) {
	var on bool
	err := p.d.pool.do(ctx, b, n.UUID, "power status", func(ctx context.Context, c *client.Client) error {
		st, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		on = st.PowerIsOn
		return nil
	})
	if err != nil {
		return drivers.PowerError, err
	}
	if on {
		return drivers.PowerOn, nil
	}
	return drivers.PowerOff, nil
}

// SetPowerState drives the machine to target and waits until the BMC
// reports it. SoftPowerOff asks the OS (ACPI) and powers off hard when the
// OS has not finished within the timeout (default Options.SoftPowerTimeout).
// Rebooting and SoftRebooting are accepted too, as Ironic's
// set_power_state does.
func (p *Power) SetPowerState(ctx context.Context, n *model.Node, target string, timeout time.Duration) error {
	b, err := p.info(n)
	if err != nil {
		return err
	}
	switch target {
	case drivers.PowerOn:
		if err := p.d.Management.ensureNextBootDevice(ctx, n, b); err != nil {
			return err
		}
		return p.setAndWait(ctx, n, b, chassis.ChassisControlPowerUp, "chassis power on", drivers.PowerOn, p.timeout(timeout))
	case drivers.PowerOff:
		return p.setAndWait(ctx, n, b, chassis.ChassisControlPowerDown, "chassis power off", drivers.PowerOff, p.timeout(timeout))
	case drivers.SoftPowerOff:
		return p.softOff(ctx, n, b, timeout)
	case drivers.Rebooting:
		return p.reboot(ctx, n, b, false, timeout)
	case drivers.SoftRebooting:
		return p.reboot(ctx, n, b, true, timeout)
	}
	return invalid("set_power_state called with invalid power state %s.", target)
}

// Reboot power-cycles the machine as Ironic's ipmitool driver does: power
// off (unless already off) and wait, then power on and wait — a hard cycle,
// not "power reset". soft first asks the OS to shut down (ACPI) and falls
// back to a hard power off after timeout (default Options.SoftPowerTimeout).
func (p *Power) Reboot(ctx context.Context, n *model.Node, soft bool, timeout time.Duration) error {
	b, err := p.info(n)
	if err != nil {
		return err
	}
	return p.reboot(ctx, n, b, soft, timeout)
}

func (p *Power) reboot(ctx context.Context, n *model.Node, b *BMCInfo, soft bool, timeout time.Duration) error {
	cur, err := p.status(ctx, n, b)
	if err != nil {
		return err
	}
	if cur != drivers.PowerOff {
		if soft {
			err = p.softOff(ctx, n, b, timeout)
		} else {
			err = p.setAndWait(ctx, n, b, chassis.ChassisControlPowerDown, "chassis power off", drivers.PowerOff, p.timeout(timeout))
		}
		if err != nil {
			return err
		}
	}
	if err := p.d.Management.ensureNextBootDevice(ctx, n, b); err != nil {
		return err
	}
	return p.setAndWait(ctx, n, b, chassis.ChassisControlPowerUp, "chassis power on", drivers.PowerOn, p.timeout(timeout))
}

func (p *Power) timeout(t time.Duration) time.Duration {
	if t > 0 {
		return t
	}
	return p.d.opts.PowerTimeout
}

func (p *Power) softOff(ctx context.Context, n *model.Node, b *BMCInfo, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = p.d.opts.SoftPowerTimeout
	}
	err := p.setAndWait(ctx, n, b, chassis.ChassisControlSoftShutdown, "chassis power soft", drivers.PowerOff, timeout)
	if err == nil || !errors.Is(err, ErrPowerTimeout) || ctx.Err() != nil {
		return err
	}
	p.logger(n, b).Warn("soft power off timed out; powering off hard", "timeout", timeout)
	return p.setAndWait(ctx, n, b, chassis.ChassisControlPowerDown, "chassis power off", drivers.PowerOff, p.d.opts.PowerTimeout)
}

// setAndWait sends a chassis control and polls the power status, with
// exponential backoff, until it shows target or timeout passes.
func (p *Power) setAndWait(ctx context.Context, n *model.Node, b *BMCInfo, ctl chassis.ChassisControl, op, target string, timeout time.Duration) error {
	log := p.logger(n, b)
	start := time.Now()
	deadline := start.Add(timeout)
	err := p.d.pool.do(ctx, b, n.UUID, op, func(ctx context.Context, c *client.Client) error {
		_, err := c.ChassisControl(ctx, ctl)
		return err
	})
	if err != nil {
		log.Error("ipmi power action failed", "op", op, "error", err)
		return err
	}
	interval := p.d.opts.PollInterval
	var last string
	var lastErr error
	for {
		wait := min(interval, time.Until(deadline))
		if wait > 0 {
			if err := sleepCtx(ctx, wait); err != nil {
				return fmt.Errorf("Failed to set node power state to %s: %w", target, err)
			}
		}
		pctx := ctx
		var cancel context.CancelFunc = func() {}
		if rem := time.Until(deadline); rem > 0 && rem < p.d.opts.CallTimeout {
			// Let the last poll use a full attempt even near the deadline.
			pctx, cancel = context.WithTimeout(ctx, max(rem, p.d.opts.CommandTimeout))
		}
		st, err := p.status(pctx, n, b)
		cancel()
		if err == nil && st == target {
			log.Info("power state reached", "state", target, "op", op, "elapsed", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrAuthentication) || errors.Is(err, ErrClosed) {
				return err
			}
			lastErr = err
		} else {
			last, lastErr = st, nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("Failed to set node power state to %s: %w", target, ctx.Err())
		}
		if !time.Now().Before(deadline) {
			if lastErr != nil {
				return fmt.Errorf("Failed to set node power state to %s: %w: BMC %s: %w", target, ErrPowerTimeout, b.Endpoint(), lastErr)
			}
			return fmt.Errorf("Failed to set node power state to %s: %w: BMC %s still reports %q after %s", target, ErrPowerTimeout, b.Endpoint(), last, timeout)
		}
		interval = min(interval*2, p.d.opts.PollMaxInterval)
	}
}
