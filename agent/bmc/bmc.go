// Package bmc reads the in-band BMC's network identity (bmc_address,
// bmc_mac in the inventory) through the OpenIPMI device, as IPA does with
// `ipmitool lan print`. Ironic uses these to match an inspected machine to
// its node and to fill driver_info.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlite/ironlite/agent/inventory"
)

// DevicePath is the OpenIPMI character device (ipmi_si + ipmi_devintf).
const DevicePath = "/dev/ipmi0"

// ErrNoBMC means there is no in-band IPMI device.
var ErrNoBMC = errors.New("no in-band BMC (" + DevicePath + " absent)")

// Probe returns the BMC's LAN address and MAC. Like IPA it walks LAN
// channels 1..11 and takes the first with a non-zero address; the whole
// probe is bounded because some BMCs answer slowly or not at all.
func Probe(ctx context.Context) (inventory.BMCInfo, error) {
	if _, err := os.Stat(DevicePath); err != nil {
		return inventory.BMCInfo{}, ErrNoBMC
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := client.NewOpenClient()
	if err != nil {
		return inventory.BMCInfo{}, fmt.Errorf("ipmi open client: %w", err)
	}
	if err := c.Connect(ctx); err != nil {
		return inventory.BMCInfo{}, fmt.Errorf("ipmi connect to %s: %w", DevicePath, err)
	}
	defer c.Close(context.Background())
	var lastErr error
	for ch := uint8(1); ch <= 11; ch++ {
		ip := &types.LanConfigParam_IP{}
		if err := c.GetLanConfigParamFor(ctx, ch, ip); err != nil {
			lastErr = err
			continue
		}
		if ip.IP == nil || ip.IP.IsUnspecified() {
			continue
		}
		info := inventory.BMCInfo{Address: ip.IP.String()}
		mac := &types.LanConfigParam_MAC{}
		if err := c.GetLanConfigParamFor(ctx, ch, mac); err == nil && len(mac.MAC) == 6 && mac.MAC.String() != (net.HardwareAddr{0, 0, 0, 0, 0, 0}).String() {
			info.MAC = mac.MAC.String()
		}
		return info, nil
	}
	if lastErr != nil {
		return inventory.BMCInfo{}, fmt.Errorf("no LAN channel with an address: %w", lastErr)
	}
	return inventory.BMCInfo{}, errors.New("BMC has no LAN address on channels 1-11")
}
