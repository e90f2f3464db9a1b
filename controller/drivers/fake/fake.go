// Package fake implements Ironic's fake-hardware hardware type: every
// interface succeeds at once without touching any hardware, so the whole
// node lifecycle can run in tests and demos. Power and boot device are kept
// on the node itself (power_state, driver_internal_info), as Ironic's fake
// interfaces do.
package fake

import (
	"context"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/model"
)

// Register adds the fake implementations and the fake-hardware type.
func Register(r *drivers.Registry) {
	r.AddInterface("power", "fake", Power{})
	r.AddInterface("management", "fake", Management{})
	r.AddInterface("boot", "fake", Boot{})
	r.AddInterface("deploy", "fake", Deploy{})
	r.AddInterface("inspect", "fake", Inspect{})
	r.AddInterface("raid", "fake", RAID{})
	r.AddHardwareType(&drivers.HardwareType{
		Name: "fake-hardware",
		Supported: map[string][]string{
			"bios":       {"no-bios", "fake"},
			"boot":       {"fake"},
			"console":    {"no-console", "fake"},
			"deploy":     {"fake"},
			"inspect":    {"no-inspect", "fake", "agent"},
			"management": {"fake"},
			"network":    {"noop"},
			"power":      {"fake"},
			"raid":       {"no-raid", "fake", "agent"},
			"rescue":     {"no-rescue", "fake"},
			"storage":    {"noop"},
			"vendor":     {"no-vendor", "fake"},
		},
	})
}

type base struct{}

func (base) Properties() map[string]string { return map[string]string{} }
func (base) Validate(*model.Node) error    { return nil }

// Power reports and sets the node's stored power state.
type Power struct{ base }

// PowerState reports the stored state; like Ironic's fake power it stays
// null until the first power action.
func (Power) PowerState(_ context.Context, n *model.Node) (string, error) {
	return n.PowerState, nil
}

func (Power) SetPowerState(_ context.Context, n *model.Node, target string, _ time.Duration) error {
	if target == drivers.SoftPowerOff {
		target = drivers.PowerOff
	}
	n.PowerState = target
	return nil
}

func (Power) Reboot(_ context.Context, n *model.Node, _ bool, _ time.Duration) error {
	n.PowerState = drivers.PowerOn
	return nil
}

func (Power) SupportedPowerStates(*model.Node) []string {
	return []string{drivers.PowerOn, drivers.PowerOff, drivers.Rebooting, drivers.SoftPowerOff, drivers.SoftRebooting}
}

// Management remembers the boot device in driver_internal_info.
type Management struct{ base }

func (Management) SupportedBootDevices(*model.Node) []string {
	return []string{drivers.BootPXE, drivers.BootDisk}
}

func (Management) SetBootDevice(_ context.Context, n *model.Node, device string, persistent bool) error {
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = model.JSONObject{}
	}
	n.DriverInternalInfo["fake_boot_device"] = device
	n.DriverInternalInfo["fake_boot_device_persistent"] = persistent
	return nil
}

func (Management) BootDevice(_ context.Context, n *model.Node) (drivers.BootDevice, error) {
	var bd drivers.BootDevice
	if d, ok := n.DriverInternalInfo["fake_boot_device"].(string); ok {
		bd.Device = &d
		p, _ := n.DriverInternalInfo["fake_boot_device_persistent"].(bool)
		bd.Persistent = &p
	}
	return bd, nil
}

// Boot does nothing.
type Boot struct{ base }

func (Boot) PrepareRamdisk(context.Context, *model.Node) error  { return nil }
func (Boot) CleanUpRamdisk(context.Context, *model.Node) error  { return nil }
func (Boot) PrepareInstance(context.Context, *model.Node) error { return nil }
func (Boot) CleanUpInstance(context.Context, *model.Node) error { return nil }

// Deploy deploys, tears down and cleans instantly.
type Deploy struct{ base }

func (Deploy) Deploy(context.Context, *model.Node) (drivers.StepState, error) {
	return drivers.Done, nil
}
func (Deploy) TearDown(context.Context, *model.Node) error { return nil }
func (Deploy) Clean(context.Context, *model.Node, []drivers.CleanStep) (drivers.StepState, error) {
	return drivers.Done, nil
}

// Inspect finishes at once without changing properties.
type Inspect struct{ base }

func (Inspect) Inspect(context.Context, *model.Node) (drivers.StepState, error) {
	return drivers.Done, nil
}

// RAID builds nothing; like Ironic's FakeRAID it accepts any
// configuration that Ironic's RAID config schema accepts.
type RAID struct{ base }

func (RAID) ValidateRAIDConfig(cfg model.JSONObject) error {
	return agent.ValidateRAIDSchema(cfg, nil)
}

// LogicalDiskProperties are the schema's.
func (RAID) LogicalDiskProperties() map[string]string { return agent.SchemaLogicalDiskProperties() }
