package conductor

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// lookupNotFound is deliberately the same whether the node is unknown,
// ambiguous or not in a lookup state, so lookups reveal nothing.
var lookupNotFound = errorf(NotFound, "Resource could not be found.")

// newToken returns a 43-character URL-safe token (Python's
// secrets.token_urlsafe()).
func newToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Lookup finds the node an agent runs on by its MACs (or UUID) and hands
// out the agent token the first time: later lookups get "******". Only
// nodes waiting for an agent can be looked up.
func (c *Conductor) Lookup(ctx context.Context, macs []string, nodeUUID string) (*model.Node, string, error) {
	var n *model.Node
	var err error
	switch {
	case nodeUUID != "":
		if n, err = c.store.GetNode(ctx, nodeUUID); err != nil {
			return nil, "", lookupNotFound
		}
	default:
		var valid []string
		for _, m := range macs {
			if mac, err := NormalizeMAC(m); err == nil {
				valid = append(valid, mac)
			}
		}
		if len(valid) == 0 {
			return nil, "", errorf(Invalid, "Lookup requires either addresses or node_uuid, with at least one valid MAC address.")
		}
		ports, err := c.store.ListPorts(ctx, store.PortFilter{Addresses: valid})
		if err != nil {
			return nil, "", err
		}
		var ids []int64
		for _, p := range ports {
			if !slices.Contains(ids, p.NodeID) {
				ids = append(ids, p.NodeID)
			}
		}
		if len(ids) != 1 {
			return nil, "", lookupNotFound
		}
		if n, err = c.store.GetNodeByID(ctx, ids[0]); err != nil {
			return nil, "", lookupNotFound
		}
	}
	allowed := statemachine.InLookupAllowed(n.ProvisionState) ||
		(c.cfg.FastTrack && statemachine.InFastTrackLookupAllowed(n.ProvisionState))
	if !allowed {
		return nil, "", lookupNotFound
	}
	token := MaskedSecret
	n, err = c.withLock(ctx, n.UUID, func(n *model.Node) error {
		if n.DriverInternalInfo == nil {
			n.DriverInternalInfo = model.JSONObject{}
		}
		if model.Str(n.DriverInternalInfo, "agent_secret_token") == "" {
			token = newToken()
			n.DriverInternalInfo["agent_secret_token"] = token
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	c.log.Info("agent looked up", "node", n.UUID, "state", n.ProvisionState, "token_issued", token != MaskedSecret)
	return n, token, nil
}

// MaskedSecret is how secrets are shown.
const MaskedSecret = "******"

// Heartbeat records an agent's heartbeat and lets the deploy interface
// advance its flow. Validation errors are returned; the flow itself runs
// in a worker, so the agent gets 202 at once.
func (c *Conductor) Heartbeat(ctx context.Context, ident string, hb protocol.HeartbeatRequest) error {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return err
	}
	if hb.AgentToken == "" {
		return errorf(Invalid, "Agent token is required for heartbeat processing.")
	}
	stored := model.Str(n.DriverInternalInfo, "agent_secret_token")
	if stored == "" || !constantTimeEqual(stored, hb.AgentToken) {
		return errorf(Invalid, "Invalid or missing agent token received.")
	}
	if hb.AgentVersion == "" && hb.AgentStatus == "" {
		return errorf(Invalid, "Agent did not transmit a version or status.")
	}
	if prev := model.Str(n.DriverInternalInfo, "agent_url"); prev != "" && hb.CallbackURL != "" && prev != hb.CallbackURL {
		return errorf(Invalid, "Detected change in ramdisk provided \"callback_url\"")
	}
	// The handler takes the lock without retrying: a node that is busy
	// skips this heartbeat, the next one comes soon.
	locked, err := c.store.Reserve(ctx, n.ID, c.cfg.Host)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			c.log.Debug("heartbeat skipped: node busy", "node", n.UUID)
			return nil
		}
		return err
	}
	if err := c.takeWorker(); err != nil {
		c.release(locked)
		return nil // same: the next heartbeat retries
	}
	if locked.DriverInternalInfo == nil {
		locked.DriverInternalInfo = model.JSONObject{}
	}
	dii := locked.DriverInternalInfo
	if hb.CallbackURL != "" {
		dii["agent_url"] = hb.CallbackURL
	}
	dii["agent_version"] = hb.AgentVersion
	dii["agent_last_heartbeat"] = store.Now().Format(time.RFC3339Nano)
	if hb.AgentVerifyCA != "" {
		dii["agent_verify_ca"] = hb.AgentVerifyCA
	}
	if hb.AgentStatus != "" {
		dii["agent_status"] = hb.AgentStatus
		dii["agent_status_message"] = hb.AgentStatusMessage
	}
	if !statemachine.IsStable(locked.ProvisionState) {
		now := store.Now()
		locked.ProvisionUpdatedAt = &now // heartbeats keep wait timeouts away
	}
	if hb.Progress != nil {
		drivers.SetProgress(locked, hb.Progress)
	}
	if err := c.store.UpdateNode(ctx, locked); err != nil {
		<-c.workers
		c.release(locked)
		return err
	}
	c.spawn(locked, "heartbeat", func(ctx context.Context, n *model.Node) { c.advance(ctx, n) })
	return nil
}

// advance lets the deploy interface move a waiting deploy or cleaning on
// after a heartbeat, and applies the outcome to the state machine.
func (c *Conductor) advance(ctx context.Context, n *model.Node) {
	state := n.ProvisionState
	if state != statemachine.DeployWait && state != statemachine.CleanWait {
		return
	}
	ifs, err := c.reg.Interfaces(n)
	if err != nil {
		return
	}
	h, ok := ifs.Deploy.(drivers.HeartbeatHandler)
	if !ok {
		return
	}
	st, err := h.Heartbeat(ctx, n)
	manual := state == statemachine.CleanWait && n.TargetProvisionState == statemachine.Manageable
	switch {
	case err != nil && state == statemachine.DeployWait:
		c.mustFire(n, statemachine.EvFail, "")
		n.LastError = err.Error()
		n.DeployStep = model.JSONObject{}
		c.undo(ctx, n, ifs)
	case err != nil:
		c.cleanFailed(n, err.Error(), manual)
		c.undo(ctx, n, ifs)
	case st == drivers.Done && state == statemachine.DeployWait:
		c.mustFire(n, statemachine.EvResume, "")
		n.DeployStep = model.JSONObject{}
		c.mustFire(n, statemachine.EvDone, "")
	case st == drivers.Done:
		target := ""
		if manual {
			target = statemachine.Manageable
		}
		c.mustFire(n, statemachine.EvResume, target)
		n.CleanStep = model.JSONObject{}
		if manual {
			c.mustFire(n, statemachine.EvManage, "")
		} else {
			c.mustFire(n, statemachine.EvDone, "")
		}
	}
	if err != nil {
		c.log.Warn("flow failed", "node", n.UUID, "state", state, "now", n.ProvisionState, "err", err)
	}
}

// undo lets the deploy interface power off and clean up after a failed,
// aborted or timed-out deploy or cleaning.
func (c *Conductor) undo(ctx context.Context, n *model.Node, ifs *drivers.Set) {
	if a, ok := ifs.Deploy.(drivers.Aborter); ok {
		if err := a.Abort(ctx, n); err != nil {
			c.log.Warn("clean up after failure", "node", n.UUID, "err", err)
		}
	}
}

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// ContinueInspection takes the inventory an agent posts at the end of
// in-band inspection: it finds the node by its NICs, stores the inventory,
// derives properties (cpus, memory_mb, local_gb, cpu_arch), creates ports
// and moves the node from inspect wait to manageable.
func (c *Conductor) ContinueInspection(ctx context.Context, data protocol.InspectionData, raw []byte) (*model.Node, error) {
	pxeMAC := normalizeBootIF(data.Inventory.Boot.PXEInterface)
	if pxeMAC == "" {
		pxeMAC = normalizeBootIF(data.BootInterface)
	}
	var macs []string
	for _, ifc := range data.Inventory.Interfaces {
		if mac, err := NormalizeMAC(ifc.MACAddress); err == nil && ifc.Name != "lo" && mac != "00:00:00:00:00:00" {
			macs = append(macs, mac)
		}
	}
	if pxeMAC != "" && !slices.Contains(macs, pxeMAC) {
		macs = append(macs, pxeMAC)
	}
	if len(macs) == 0 {
		return nil, errorf(Invalid, "The inventory has no usable network interface MAC address to find the node by.")
	}
	ports, err := c.store.ListPorts(ctx, store.PortFilter{Addresses: macs})
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, p := range ports {
		if !slices.Contains(ids, p.NodeID) {
			ids = append(ids, p.NodeID)
		}
	}
	if len(ids) != 1 {
		return nil, errorf(NotFound, "No node matches the MAC addresses %v of the inspected machine (%d candidates); create the node and a port with its PXE MAC first.", macs, len(ids))
	}
	n, err := c.store.GetNodeByID(ctx, ids[0])
	if err != nil {
		return nil, err
	}
	if n.ProvisionState != statemachine.InspectWait {
		return nil, errorf(Conflict, "Node %s is in state %q, not %q: it is not waiting for inspection data.", n.UUID, n.ProvisionState, statemachine.InspectWait)
	}
	if data.Error != nil && *data.Error != "" {
		n, err = c.withLock(ctx, n.UUID, func(n *model.Node) error {
			c.mustFire(n, statemachine.EvFail, "")
			n.LastError = "Inspection failed in the ramdisk: " + *data.Error
			return nil
		})
		return n, err
	}
	inv, _ := json.Marshal(data.Inventory)
	plugin := pluginData(data, raw)
	n, err = c.withLock(ctx, n.UUID, func(n *model.Node) error {
		if n.ProvisionState != statemachine.InspectWait {
			return errorf(Conflict, "Node %s left %q while the inventory arrived.", n.UUID, statemachine.InspectWait)
		}
		if err := c.store.SaveInventory(ctx, n.ID, inv, plugin); err != nil {
			return err
		}
		applyInventory(n, data)
		if err := c.addPorts(ctx, n, data, pxeMAC); err != nil {
			return err
		}
		now := store.Now()
		n.InspectionFinishedAt = &now
		delete(n.DriverInternalInfo, "agent_secret_token")
		delete(n.DriverInternalInfo, "agent_url")
		if ifs, err := c.reg.Interfaces(n); err == nil && ifs.Boot != nil {
			// The node is no longer served the ramdisk.
			if err := ifs.Boot.CleanUpRamdisk(ctx, n); err != nil {
				c.log.Warn("clean up the inspection boot", "node", n.UUID, "err", err)
			}
		}
		c.mustFire(n, statemachine.EvDone, "")
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.log.Info("inspection finished", "node", n.UUID, "cpus", n.Properties["cpus"], "memory_mb", n.Properties["memory_mb"], "local_gb", n.Properties["local_gb"])
	return n, nil
}

// normalizeBootIF turns BOOTIF's "01-aa-bb-cc-dd-ee-ff" into a MAC.
func normalizeBootIF(s string) string {
	if strings.Count(s, "-") == 6 {
		s = strings.ReplaceAll(s[strings.Index(s, "-")+1:], "-", ":")
	}
	mac, err := NormalizeMAC(s)
	if err != nil {
		return ""
	}
	return mac
}

// pluginData is what Ironic keeps beside the inventory: everything the
// agent sent except the inventory itself.
func pluginData(data protocol.InspectionData, raw []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		m = map[string]json.RawMessage{}
	}
	delete(m, "inventory")
	delete(m, "logs")
	if data.RootDisk != nil {
		rd, _ := json.Marshal(data.RootDisk)
		m["root_disk"] = rd
	}
	out, _ := json.Marshal(m)
	return out
}

// applyInventory derives the scheduling properties (reference §7.2).
func applyInventory(n *model.Node, data protocol.InspectionData) {
	if n.Properties == nil {
		n.Properties = model.JSONObject{}
	}
	inv := data.Inventory
	if inv.CPU.Count > 0 {
		n.Properties["cpus"] = inv.CPU.Count
	}
	if inv.CPU.Architecture != "" {
		n.Properties["cpu_arch"] = inv.CPU.Architecture
	}
	if inv.Memory.PhysicalMB > 0 {
		n.Properties["memory_mb"] = inv.Memory.PhysicalMB
	}
	root := data.RootDisk
	if root == nil {
		root = protocol.GuessRootDisk(inv.Disks)
	}
	localGB := int64(0)
	if root != nil {
		// Ironic leaves 1 GiB for partitioning (disk_partitioning_spacing).
		localGB = max(root.Size>>30-1, 0)
	}
	n.Properties["local_gb"] = localGB
	if inv.Boot.CurrentBootMode != "" {
		caps := model.Str(n.Properties, "capabilities")
		n.Properties["capabilities"] = setCapability(caps, "boot_mode", inv.Boot.CurrentBootMode)
	}
}

// setCapability sets key:value in Ironic's "k1:v1,k2:v2" capabilities string.
func setCapability(caps, key, value string) string {
	var out []string
	for _, kv := range strings.Split(caps, ",") {
		if kv == "" || strings.HasPrefix(kv, key+":") {
			continue
		}
		out = append(out, kv)
	}
	return strings.Join(append(out, key+":"+value), ",")
}

// addPorts creates a port for the PXE NIC (Ironic's add_ports=pxe; when
// the PXE MAC is unknown, every NIC with an address) and flips pxe_enabled
// on existing ports to match.
func (c *Conductor) addPorts(ctx context.Context, n *model.Node, data protocol.InspectionData, pxeMAC string) error {
	existing, err := c.store.ListPorts(ctx, store.PortFilter{NodeID: n.ID})
	if err != nil {
		return err
	}
	have := map[string]*model.Port{}
	for _, p := range existing {
		have[p.Address] = p
	}
	for _, ifc := range data.Inventory.Interfaces {
		mac, err := NormalizeMAC(ifc.MACAddress)
		if err != nil || ifc.Name == "lo" {
			continue
		}
		wanted := mac == pxeMAC || (pxeMAC == "" && (ifc.IPv4Address != nil || ifc.IPv6Address != nil))
		if p, ok := have[mac]; ok {
			if pxeMAC != "" && p.PXEEnabled != (mac == pxeMAC) {
				p.PXEEnabled = mac == pxeMAC
				if err := c.store.UpdatePort(ctx, p); err != nil {
					return err
				}
			}
			continue
		}
		if !wanted {
			continue
		}
		p := &model.Port{UUID: uuid.NewString(), Address: mac, NodeID: n.ID, NodeUUID: n.UUID,
			PXEEnabled: true, Extra: model.JSONObject{}, InternalInfo: model.JSONObject{},
			LocalLinkConnection: model.JSONObject{}, CreatedAt: store.Now()}
		if ifc.ClientID != nil {
			p.Extra["client-id"] = *ifc.ClientID
		}
		if err := c.store.CreatePort(ctx, p); err != nil {
			if errors.Is(err, store.ErrDuplicateMAC) {
				c.log.Warn("inspection: MAC already belongs to another node's port", "node", n.UUID, "mac", mac)
				continue
			}
			return fmt.Errorf("create port %s: %w", mac, err)
		}
	}
	return nil
}

// Inventory returns a node's stored inspection data.
func (c *Conductor) Inventory(ctx context.Context, ident string) (inventory, pluginData []byte, err error) {
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return nil, nil, err
	}
	inv, pd, err := c.store.Inventory(ctx, n.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errorf(NotFound, "Node %s has no inventory: it was never inspected.", n.UUID)
	}
	return inv, pd, err
}
