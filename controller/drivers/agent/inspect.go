// Package agent holds the interfaces that work through the ironlite agent
// (or IPA) running in the node's ramdisk. This file is the "agent" inspect
// interface: the node boots the ramdisk, the agent posts its inventory to
// POST /v1/continue_inspection, and the conductor finishes inspection.
package agent

import (
	"context"
	"fmt"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// Inspect is the in-band inspect interface.
type Inspect struct {
	reg *drivers.Registry
}

// Register adds the "agent" inspect and raid implementations.
func Register(r *drivers.Registry) {
	r.AddInterface("inspect", "agent", &Inspect{reg: r})
	r.AddInterface("raid", "agent", &RAID{})
}

// Properties: the agent inspect interface reads no driver_info.
func (*Inspect) Properties() map[string]string { return map[string]string{} }

// Validate accepts any node: a node without a BMC is booted by hand.
func (*Inspect) Validate(*model.Node) error { return nil }

// Inspect boots the node into the ramdisk, when it has a BMC that can do
// so, and waits for the agent's inventory. A fake-hardware node is booted
// by hand (e.g. a machine started with the ramdisk on its kernel command
// line) and only waits.
func (i *Inspect) Inspect(ctx context.Context, n *model.Node) (drivers.StepState, error) {
	ifs, err := i.reg.Interfaces(n)
	if err != nil {
		return drivers.Done, err
	}
	if n.Driver == "fake-hardware" {
		return drivers.Wait, nil
	}
	if ifs.Boot != nil {
		if err := ifs.Boot.PrepareRamdisk(ctx, n); err != nil {
			return drivers.Done, fmt.Errorf("prepare the inspection ramdisk boot: %w", err)
		}
	}
	if ifs.Management != nil {
		if err := ifs.Management.SetBootDevice(ctx, n, drivers.BootPXE, false); err != nil {
			return drivers.Done, fmt.Errorf("set boot device to pxe: %w", err)
		}
	}
	if ifs.Power == nil {
		return drivers.Done, fmt.Errorf("node %s has no power interface to boot the ramdisk", n.UUID)
	}
	if err := ifs.Power.Reboot(ctx, n, false, 0); err != nil {
		return drivers.Done, fmt.Errorf("boot the inspection ramdisk: %w", err)
	}
	n.PowerState = drivers.PowerOn
	return drivers.Wait, nil
}
