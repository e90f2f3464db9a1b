package drivers

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"

	"github.com/ironlite/ironlite/controller/model"
)

// StepState says how a deploy, clean or inspect call ended.
type StepState int

const (
	// Done: the work finished synchronously.
	Done StepState = iota
	// Wait: the node was booted into the agent; the flow continues when the
	// agent calls back (wait call-back, clean wait, inspect wait).
	Wait
)

// CleanStep is one step of manual cleaning, as the API accepts it.
type CleanStep struct {
	Interface string         `json:"interface"`
	Step      string         `json:"step"`
	Args      map[string]any `json:"args,omitempty"`
	Priority  *int           `json:"priority,omitempty"`
}

// Deploy writes an instance onto the node and tears it down again. The
// implementation may change the node's fields (driver_internal_info,
// instance_info, ...); the conductor persists them.
type Deploy interface {
	Interface
	Deploy(ctx context.Context, n *model.Node) (StepState, error)
	TearDown(ctx context.Context, n *model.Node) error
	// Clean runs cleaning: steps is nil for automated cleaning.
	Clean(ctx context.Context, n *model.Node, steps []CleanStep) (StepState, error)
}

// Boot prepares what the node boots from (ramdisk or instance).
type Boot interface {
	Interface
	PrepareRamdisk(ctx context.Context, n *model.Node) error
	CleanUpRamdisk(ctx context.Context, n *model.Node) error
	PrepareInstance(ctx context.Context, n *model.Node) error
	CleanUpInstance(ctx context.Context, n *model.Node) error
}

// Inspect discovers the node's hardware properties.
type Inspect interface {
	Interface
	Inspect(ctx context.Context, n *model.Node) (StepState, error)
}

// RAID validates and applies target RAID configurations.
type RAID interface {
	Interface
	ValidateRAIDConfig(cfg model.JSONObject) error
}

// HeartbeatHandler is implemented by deploy interfaces that advance their
// flow when the agent heartbeats (the direct deploy: wait call-back and
// clean wait). The node is locked and saved around the call. Wait means
// the flow goes on at a later heartbeat; Done means the deploy or the
// cleaning finished and the conductor moves the node on (active,
// available, manageable); an error fails it, with the error as last_error.
type HeartbeatHandler interface {
	Heartbeat(ctx context.Context, n *model.Node) (StepState, error)
}

// InstanceValidator is implemented by deploy interfaces that check a
// node's instance_info before a deploy (image source, checksum, config
// drive, root device hints). Validate alone stays instance-independent,
// because cleaning validates the deploy interface too.
type InstanceValidator interface {
	ValidateInstance(n *model.Node) error
}

// Aborter is implemented by deploy interfaces that must undo something
// when a deploy or cleaning is aborted by an operator, fails or times out
// (power the machine off, stop serving it the agent). The node is locked
// and saved around the call; the state has already moved to the failed
// state.
type Aborter interface {
	Abort(ctx context.Context, n *model.Node) error
}

// Netbooter is implemented by boot interfaces that serve a node network
// boot scripts and files over HTTP (ipxe).
type Netbooter interface {
	// Script returns the iPXE script for the node booting from the NIC
	// with this MAC, or ErrNoBootConfig when the node should not network
	// boot now.
	Script(n *model.Node, mac string) (string, error)
}

// FileServer is implemented by interfaces that serve files to a node over
// the controller's boot HTTP server, under /boot/nodes/<uuid>/<name>: the
// boot interface its deploy kernel and ramdisk, the deploy interface a
// local instance image. ok is false for a name it does not serve (or not
// in the node's current state).
type FileServer interface {
	ServeFile(n *model.Node, name string) (path string, ok bool)
}

// ErrNoBootConfig says a node has no network boot configuration now.
var ErrNoBootConfig = errors.New("no network boot configuration for this node")

// ProgressKey in driver_internal_info holds the running agent command's
// progress (protocol.Progress: phase, bytes, percent, rate, ETA) and when
// it was reported, while there is one (an ironlite extension).
const ProgressKey = "ironlite_progress"

// SetProgress records the agent's progress on the node, from a heartbeat
// or a command result; nil clears it.
func SetProgress(n *model.Node, p *protocol.Progress) {
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = model.JSONObject{}
	}
	if p == nil {
		delete(n.DriverInternalInfo, ProgressKey)
		return
	}
	var m map[string]any
	if raw, err := json.Marshal(p); err == nil && json.Unmarshal(raw, &m) == nil {
		m["updated_at"] = time.Now().UTC().Format(time.RFC3339Nano)
		n.DriverInternalInfo[ProgressKey] = m
	}
}
