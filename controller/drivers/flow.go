package drivers

import (
	"context"

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
// clean wait). The node is locked and saved around the call.
type HeartbeatHandler interface {
	Heartbeat(ctx context.Context, n *model.Node) error
}
