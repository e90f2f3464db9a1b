package conductor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/google/uuid"

	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// CreateNode checks the driver and interfaces, fills defaults and stores
// the node.
func (c *Conductor) CreateNode(ctx context.Context, n *model.Node) error {
	if n.UUID == "" {
		n.UUID = uuid.NewString()
	}
	if err := c.checkDriver(n); err != nil {
		return err
	}
	n.CreatedAt = store.Now()
	initMaps(n)
	if err := c.store.CreateNode(ctx, n); err != nil {
		return c.conflict(err, n)
	}
	c.log.Info("node created", "node", n.UUID, "name", n.Name, "driver", n.Driver)
	return nil
}

func initMaps(n *model.Node) {
	for _, m := range []*model.JSONObject{&n.DriverInfo, &n.DriverInternalInfo, &n.Properties, &n.InstanceInfo,
		&n.Extra, &n.CleanStep, &n.DeployStep, &n.RAIDConfig, &n.TargetRAIDConfig, &n.NetworkData} {
		if *m == nil {
			*m = model.JSONObject{}
		}
	}
	if n.Traits == nil {
		n.Traits = []string{}
	}
	if n.Interfaces == nil {
		n.Interfaces = map[string]string{}
	}
}

// checkDriver validates the hardware type and fills unset interfaces with
// its defaults.
func (c *Conductor) checkDriver(n *model.Node) error {
	ht, ok := c.reg.HardwareType(n.Driver)
	if !ok {
		return errorf(Invalid, "No valid host was found. Reason: No conductor service registered which supports driver %s for conductor group \"%s\".", n.Driver, n.ConductorGroup)
	}
	if n.Interfaces == nil {
		n.Interfaces = map[string]string{}
	}
	for _, kind := range model.InterfaceKinds {
		name := n.Interfaces[kind]
		if name == "" {
			n.Interfaces[kind] = ht.Default(kind)
			continue
		}
		if !ht.Supports(kind, name) {
			return errorf(Invalid, "Could not find the following interface in the 'ironic.hardware.interfaces.%s' entrypoint: %s. Valid interfaces are %s.", kind, name, pyList(ht.Supported[kind]))
		}
	}
	return nil
}

func pyList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = "'" + s + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (c *Conductor) conflict(err error, n *model.Node) error {
	switch {
	case errors.Is(err, store.ErrDuplicateName):
		return &Error{Kind: Conflict, Msg: fmt.Sprintf("A node with name %s already exists.", n.Name), Err: err}
	case errors.Is(err, store.ErrDuplicateUUID):
		return &Error{Kind: Conflict, Msg: fmt.Sprintf("A node with UUID %s already exists.", n.UUID), Err: err}
	case errors.Is(err, store.ErrDuplicateInst):
		return &Error{Kind: Conflict, Msg: fmt.Sprintf("Instance %s is already associated with a node.", n.InstanceUUID), Err: err}
	}
	return err
}

// UpdateNode applies a change (the API's JSON patch) to the node under its
// lock, re-validates the driver and saves it. The change must not touch
// read-only fields; the API enforces which paths are patchable.
func (c *Conductor) UpdateNode(ctx context.Context, ident string, change func(n *model.Node) error) (*model.Node, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	if err := checkUpdatable(n); err != nil {
		return nil, err
	}
	n, err = c.withLock(ctx, ident, func(n *model.Node) error {
		if err := checkUpdatable(n); err != nil {
			return err
		}
		if err := change(n); err != nil {
			return err
		}
		return c.checkDriver(n)
	})
	if err != nil {
		return nil, c.conflict(err, n)
	}
	return n, nil
}

func checkUpdatable(n *model.Node) error {
	if n.TargetProvisionState != "" && !statemachine.InUpdateAllowed(n.ProvisionState) {
		return errorf(Conflict, "Node %s can not be updated while a state transition is in progress.", n.UUID)
	}
	if n.ProvisionState == statemachine.Inspecting {
		return errorf(Conflict, "Node %s can not be updated while a state transition is in progress.", n.UUID)
	}
	return nil
}

// DeleteNode removes a node (and its ports) when its state allows.
func (c *Conductor) DeleteNode(ctx context.Context, ident string) error {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return err
	}
	n, err = c.acquire(ctx, n)
	if err != nil {
		return err
	}
	defer c.release(n)
	if n.InstanceUUID != "" && !n.Maintenance {
		return errorf(Conflict, "Node %s is associated with instance %s.", n.UUID, n.InstanceUUID)
	}
	if n.Protected {
		return errorf(Forbidden, "Node %s is protected and cannot be undeployed, rebuilt or deleted", n.UUID)
	}
	if !statemachine.InDeleteAllowed(n.ProvisionState) && !n.Maintenance {
		return errorf(Conflict, "Can not delete node \"%s\" while it is in provision state \"%s\". Valid provision states to start deletion are: ['enroll', 'manageable', 'available', 'adopt failed'], or set the node into maintenance mode", n.UUID, n.ProvisionState)
	}
	if err := c.store.DeleteNode(ctx, n.ID); err != nil {
		return err
	}
	c.log.Info("node deleted", "node", n.UUID)
	return nil
}

// SetMaintenance turns maintenance on (with a reason) or off.
func (c *Conductor) SetMaintenance(ctx context.Context, ident string, on bool, reason string) error {
	_, err := c.withLock(ctx, ident, func(n *model.Node) error {
		n.Maintenance = on
		n.MaintenanceReason = ""
		n.Fault = ""
		if on {
			n.MaintenanceReason = reason
		}
		return nil
	})
	return err
}

// InterfaceResult is one line of GET .../validate.
type InterfaceResult struct {
	Result *bool   `json:"result"`
	Reason *string `json:"reason,omitempty"`
}

// Validate runs every interface's Validate, as GET .../validate does.
func (c *Conductor) Validate(ctx context.Context, ident string) (map[string]InterfaceResult, error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, err
	}
	ifs, err := c.interfaces(n)
	if err != nil {
		return nil, err
	}
	out := map[string]InterfaceResult{}
	t, f := true, false
	for _, kind := range []string{"bios", "boot", "console", "deploy", "inspect", "management", "network", "power", "raid", "rescue", "storage"} {
		impl, name := ifs.ByKind[kind], n.Interfaces[kind]
		switch {
		case impl == nil && name == "noop":
			out[kind] = InterfaceResult{Result: &t}
			continue
		case impl == nil && (name == "" || strings.HasPrefix(name, "no-")):
			reason := fmt.Sprintf("Driver %s does not support %s (disabled or not implemented).", n.Driver, kind)
			out[kind] = InterfaceResult{Result: &f, Reason: &reason}
			continue
		case impl == nil:
			reason := fmt.Sprintf("%s interface %q is not available in this build of ironlite.", kind, name)
			out[kind] = InterfaceResult{Result: &f, Reason: &reason}
			continue
		}
		if err := impl.Validate(n); err != nil {
			reason := err.Error()
			out[kind] = InterfaceResult{Result: &f, Reason: &reason}
			continue
		}
		out[kind] = InterfaceResult{Result: &t}
	}
	return out, nil
}

// NormalizeMAC returns mac in Ironic's canonical lower-case colon form.
func NormalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", errorf(Invalid, "Expected a MAC address but received %s.", mac)
	}
	return hw.String(), nil
}

// CreatePort stores a port of an existing node.
func (c *Conductor) CreatePort(ctx context.Context, p *model.Port) error {
	if _, err := uuid.Parse(p.NodeUUID); err != nil {
		return errorf(Invalid, "Expected UUID for node_uuid: %s", p.NodeUUID)
	}
	n, err := c.store.GetNode(ctx, p.NodeUUID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errorf(Invalid, "Node %s could not be found.", p.NodeUUID)
		}
		return err
	}
	p.NodeID = n.ID
	if p.UUID == "" {
		p.UUID = uuid.NewString()
	}
	p.CreatedAt = store.Now()
	if err := c.store.CreatePort(ctx, p); err != nil {
		return c.portConflict(err, p)
	}
	return nil
}

func (c *Conductor) portConflict(err error, p *model.Port) error {
	switch {
	case errors.Is(err, store.ErrDuplicateMAC):
		return &Error{Kind: Conflict, Msg: fmt.Sprintf("A port with MAC address %s already exists.", p.Address), Err: err}
	case errors.Is(err, store.ErrDuplicateUUID):
		return &Error{Kind: Conflict, Msg: fmt.Sprintf("A port with UUID %s already exists.", p.UUID), Err: err}
	}
	return err
}

// UpdatePort saves a changed port, applying Ironic's rules on which node
// states allow which changes.
func (c *Conductor) UpdatePort(ctx context.Context, old, p *model.Port) error {
	n, err := c.store.GetNodeByID(ctx, old.NodeID)
	if err != nil {
		return err
	}
	if p.NodeUUID != old.NodeUUID {
		if _, err := uuid.Parse(p.NodeUUID); err != nil {
			return errorf(Invalid, "Expected UUID for node_uuid: %s", p.NodeUUID)
		}
		nn, err := c.store.GetNode(ctx, p.NodeUUID)
		if err != nil {
			return errorf(Invalid, "Node %s could not be found.", p.NodeUUID)
		}
		p.NodeID = nn.ID
	}
	if p.Address != old.Address && !n.Maintenance && (n.InstanceUUID != "" || n.ProvisionState == statemachine.Active) {
		return errorf(Conflict, "Cannot update hardware address for port %s as node %s is active or in use.", p.UUID, n.UUID)
	}
	configChanged := p.PXEEnabled != old.PXEEnabled || p.PhysicalNetwork != old.PhysicalNetwork ||
		fmt.Sprint(p.LocalLinkConnection) != fmt.Sprint(old.LocalLinkConnection)
	if configChanged && !n.Maintenance {
		switch n.ProvisionState {
		case statemachine.Enroll, statemachine.Inspecting, statemachine.InspectWait, statemachine.Manageable:
		default:
			return errorf(Conflict, "Cannot update port %s: node %s must be in enroll, inspecting, inspect wait or manageable state, or in maintenance, to change pxe_enabled, local_link_connection or physical_network.", p.UUID, n.UUID)
		}
	}
	if err := c.store.UpdatePort(ctx, p); err != nil {
		return c.portConflict(err, p)
	}
	return nil
}

// SetTargetRAIDConfig validates and stores a node's target RAID
// configuration ({} clears it), as Ironic's set_target_raid_config: a
// node without a RAID interface is a 404 (UnsupportedDriverExtension), a
// configuration its RAID interface refuses a 400 with the interface's
// message, and nothing is stored then.
func (c *Conductor) SetTargetRAIDConfig(ctx context.Context, ident string, cfg model.JSONObject) error {
	_, err := c.withLock(ctx, ident, func(n *model.Node) error {
		ifs, err := c.interfaces(n)
		if err != nil {
			return err
		}
		if ifs.RAID == nil {
			return errorf(NotFound, "Driver %s does not support raid (disabled or not implemented).", n.Driver)
		}
		if len(cfg) > 0 {
			if err := ifs.RAID.ValidateRAIDConfig(cfg); err != nil {
				return &Error{Kind: Invalid, Msg: err.Error(), Err: err}
			}
		}
		n.TargetRAIDConfig = cfg
		c.log.Info("target RAID configuration set", "node", n.UUID, "logical_disks", logicalDisks(cfg))
		return nil
	})
	return err
}

// logicalDisks counts a RAID configuration's logical disks, for logs.
func logicalDisks(cfg model.JSONObject) int {
	list, _ := cfg["logical_disks"].([]any)
	return len(list)
}
