package ipmi

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// Management is the "ipmitool" management interface: boot device, plus the
// ironlite extensions Indicators (chassis identify) and BMCReader (sensors,
// system event log).
type Management struct{ base }

// bootDeviceCodes are the boot device selector byte values (data 2 of boot
// option parameter 5) Ironic sends: the selector sits in bits 5:2.
var bootDeviceCodes = map[string]byte{
	drivers.BootPXE:   0x04,
	drivers.BootDisk:  0x08,
	drivers.BootSafe:  0x0c,
	drivers.BootCDROM: 0x14,
	drivers.BootBIOS:  0x18,
}

// SupportedBootDevices returns Ironic's list for ipmitool.
func (*Management) SupportedBootDevices(*model.Node) []string {
	return []string{drivers.BootPXE, drivers.BootDisk, drivers.BootCDROM, drivers.BootBIOS, drivers.BootSafe}
}

// IsUEFI reports whether the node boots in UEFI mode: node.BootMode, else
// properties.capabilities boot_mode ("boot_mode:uefi,..." or an object).
func IsUEFI(n *model.Node) bool {
	if n.BootMode != "" {
		return strings.EqualFold(n.BootMode, "uefi")
	}
	switch caps := n.Properties["capabilities"].(type) {
	case string:
		for _, kv := range strings.Split(caps, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), ":")
			if ok && strings.TrimSpace(k) == "boot_mode" {
				return strings.EqualFold(strings.TrimSpace(v), "uefi")
			}
		}
	case map[string]any:
		if v, ok := caps["boot_mode"].(string); ok {
			return strings.EqualFold(v, "uefi")
		}
	}
	return false
}

// SetBootDevice sets the boot device for the next boot (or all boots when
// persistent), with the EFI flag in UEFI mode. As Ironic, it first disables
// the BMC's 60 s boot-flag timeout unless ipmi_disable_boot_timeout is
// false, and with ipmi_force_boot_device it remembers the device in
// driver_internal_info and re-sends it before every power on.
func (m *Management) SetBootDevice(ctx context.Context, n *model.Node, device string, persistent bool) error {
	if _, ok := bootDeviceCodes[device]; !ok {
		return invalid("Invalid boot device %s specified.", device)
	}
	b, err := m.info(n)
	if err != nil {
		return err
	}
	if b.ForceBootDevice {
		if n.DriverInternalInfo == nil {
			n.DriverInternalInfo = model.JSONObject{}
		}
		if persistent {
			delete(n.DriverInternalInfo, "is_next_boot_persistent")
			n.DriverInternalInfo["persistent_boot_device"] = device
		} else {
			n.DriverInternalInfo["is_next_boot_persistent"] = false
		}
		persistent = false
	}
	return m.sendBootDevice(ctx, n, b, device, persistent)
}

func (m *Management) sendBootDevice(ctx context.Context, n *model.Node, b *BMCInfo, device string, persistent bool) error {
	log := m.logger(n, b)
	disable := *m.d.opts.DisableBootTimeout
	if b.DisableBootTimeout != nil {
		disable = *b.DisableBootTimeout
	}
	if disable {
		// raw 0x00 0x08 0x03 0x08: boot option parameter 3 (boot flag valid
		// bit clearing), "don't clear on the 60 s timeout". go-ipmi's
		// SetBootDevice does not send it. Optional, as in Ironic.
		err := m.d.pool.do(ctx, b, n.UUID, "raw 0x00 0x08 0x03 0x08", func(ctx context.Context, c *client.Client) error {
			_, err := c.SetSystemBootOptionsParam(ctx, &chassis.SetSystemBootOptionsParamRequest{
				ParamSelector: types.BootOptionParamSelector_BMCBootFlagValidBitClear,
				ParamData:     []byte{0x08},
			})
			return err
		})
		if err != nil {
			if _, answered := types.IsResponseError(err); !answered {
				return err
			}
			log.Warn("optional disabling of the boot-flag timeout failed; continuing", "error", err)
		}
	}
	// Data 1: bit 7 flags valid, bit 6 persistent, bit 5 EFI — the bytes
	// of "chassis bootdev" (legacy) and of Ironic's UEFI raw 0x00 0x08 0x05
	// 0xe0|0xa0 <dev> 0x00 0x00 0x00. Sent whole so the valid bit is set
	// whatever go-ipmi's struct defaults are.
	flags := byte(0x80)
	if persistent {
		flags |= 0x40
	}
	uefi := IsUEFI(n)
	if uefi {
		flags |= 0x20
	}
	op := "chassis bootdev " + device
	err := m.d.pool.do(ctx, b, n.UUID, op, func(ctx context.Context, c *client.Client) error {
		_, err := c.SetSystemBootOptionsParam(ctx, &chassis.SetSystemBootOptionsParamRequest{
			ParamSelector: types.BootOptionParamSelector_BootFlags,
			ParamData:     []byte{flags, bootDeviceCodes[device], 0, 0, 0},
		})
		return err
	})
	if err != nil {
		return err
	}
	log.Info("boot device set", "device", device, "persistent", persistent, "uefi", uefi)
	return nil
}

// BootDevice reads boot option parameter 5. The valid bit is ignored (as
// Ironic's parsing of "chassis bootparam get 5" does): many BMCs, ipmi_sim
// included, clear it while keeping the selector.
func (m *Management) BootDevice(ctx context.Context, n *model.Node) (drivers.BootDevice, error) {
	var bd drivers.BootDevice
	b, err := m.info(n)
	if err != nil {
		return bd, err
	}
	dii := n.DriverInternalInfo
	if b.ForceBootDevice {
		if dev, ok := dii["persistent_boot_device"].(string); ok && dev != "" && dii["is_next_boot_persistent"] != false {
			t := true
			bd.Device, bd.Persistent = &dev, &t
			return bd, nil
		}
	}
	var data []byte
	err = m.d.pool.do(ctx, b, n.UUID, "chassis bootparam get 5", func(ctx context.Context, c *client.Client) error {
		r, err := c.GetSystemBootOptionsParam(ctx, types.BootOptionParamSelector_BootFlags, 0, 0)
		if err != nil {
			return err
		}
		data = r.ParamData
		return nil
	})
	if err != nil {
		return bd, err
	}
	if len(data) < 2 {
		return bd, fmt.Errorf("BMC %s returned %d bytes for boot option parameter 5, want 5", b.Endpoint(), len(data))
	}
	persistent := data[0]&0x40 != 0
	bd.Persistent = &persistent
	code := data[1] & 0x3c
	for name, c := range bootDeviceCodes {
		if c == code {
			d := name
			bd.Device = &d
		}
	}
	return bd, nil
}

// ensureNextBootDevice re-sends the remembered boot device before a power
// on when ipmi_force_boot_device is set (Ironic's ensure_next_boot_device).
func (m *Management) ensureNextBootDevice(ctx context.Context, n *model.Node, b *BMCInfo) error {
	if !b.ForceBootDevice {
		return nil
	}
	dii := n.DriverInternalInfo
	if v, ok := dii["is_next_boot_persistent"]; ok && v == false {
		delete(dii, "is_next_boot_persistent")
		return nil
	}
	dev, _ := dii["persistent_boot_device"].(string)
	if dev == "" || !slices.Contains(m.SupportedBootDevices(n), dev) {
		return nil
	}
	return m.sendBootDevice(ctx, n, b, dev, false)
}
