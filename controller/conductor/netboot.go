package conductor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/store"
)

// ErrNoBootConfig is returned by BootScript and BootFile when there is
// nothing to serve (unknown MAC, node not network-booting, unknown file).
var ErrNoBootConfig = drivers.ErrNoBootConfig

// BootScript returns the iPXE script for the machine booting from the NIC
// with this MAC: the script of the node owning the port, from its boot
// interface. It reads the node without locking it; boot scripts are
// rendered from committed state only.
func (c *Conductor) BootScript(ctx context.Context, mac string) (string, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return "", ErrNoBootConfig
	}
	n, err := c.nodeByMAC(ctx, mac)
	if err != nil {
		return "", err
	}
	ifs, err := c.reg.Interfaces(n)
	if err != nil {
		return "", ErrNoBootConfig
	}
	nb, ok := ifs.Boot.(drivers.Netbooter)
	if !ok {
		return "", ErrNoBootConfig
	}
	script, err := nb.Script(n, mac)
	if err != nil && !errors.Is(err, ErrNoBootConfig) {
		c.log.Error("render boot script", "node", n.UUID, "mac", mac, "err", err)
	}
	if err == nil {
		c.log.Info("boot script served", "node", n.UUID, "mac", mac, "provision_state", n.ProvisionState)
	}
	return script, err
}

func (c *Conductor) nodeByMAC(ctx context.Context, mac string) (*model.Node, error) {
	ports, err := c.store.ListPorts(ctx, store.PortFilter{Address: mac})
	if err != nil {
		return nil, err
	}
	if len(ports) != 1 {
		return nil, ErrNoBootConfig
	}
	n, err := c.store.GetNodeByID(ctx, ports[0].NodeID)
	if err != nil {
		return nil, ErrNoBootConfig
	}
	return n, nil
}

// BootFile returns the local path of a file served to machines at
// /boot/<name>: "nodes/<uuid>/<file>", where the node's boot or deploy
// interface decides what <file> is (deploy kernel and ramdisk, a file://
// instance image while deploying).
func (c *Conductor) BootFile(ctx context.Context, name string) (string, error) {
	rest, ok := strings.CutPrefix(name, "nodes/")
	if !ok {
		return "", ErrNoBootConfig
	}
	uuid, file, ok := strings.Cut(rest, "/")
	if !ok || file == "" {
		return "", ErrNoBootConfig
	}
	n, err := c.store.GetNode(ctx, uuid)
	if err != nil || n.UUID != uuid {
		return "", ErrNoBootConfig
	}
	ifs, err := c.reg.Interfaces(n)
	if err != nil {
		return "", ErrNoBootConfig
	}
	for _, impl := range []any{ifs.Boot, ifs.Deploy} {
		if fs, ok := impl.(drivers.FileServer); ok {
			if p, ok := fs.ServeFile(n, file); ok {
				return p, nil
			}
		}
	}
	return "", ErrNoBootConfig
}

// IsKnownMAC says whether a port with this MAC exists: the built-in DHCP
// server answers only those machines.
func (c *Conductor) IsKnownMAC(ctx context.Context, mac string) bool {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return false
	}
	// Asked for every DHCP packet: the port alone answers it (a port's MAC
	// is unique and its node exists).
	ports, err := c.store.ListPorts(ctx, store.PortFilter{Address: mac})
	return err == nil && len(ports) > 0
}

// checkNetbootPorts refuses to network-boot a node without a PXE-enabled
// port: its boot script is found by MAC.
func (c *Conductor) checkNetbootPorts(ctx context.Context, n *model.Node, ifs *drivers.Set) error {
	if _, ok := ifs.Boot.(drivers.Netbooter); !ok {
		return nil
	}
	ports, err := c.store.ListPorts(ctx, store.PortFilter{NodeID: n.ID})
	if err != nil {
		return err
	}
	for _, p := range ports {
		if p.PXEEnabled {
			return nil
		}
	}
	return fmt.Errorf("node %s has no port with pxe_enabled=true: create one with the MAC it network-boots from (ironlite port create --node %s <MAC>)", n.UUID, n.UUID)
}
