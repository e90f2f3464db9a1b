package conductor

import (
	"context"
	"fmt"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// ProvisionRequest is the body of PUT /v1/nodes/{id}/states/provision.
type ProvisionRequest struct {
	Target         string
	ConfigDrive    any // string (gzip+base64 ISO or URL) or JSON object
	CleanSteps     []drivers.CleanStep
	DeploySteps    []map[string]any
	RescuePassword string
	DisableRamdisk *bool
}

// Provision starts a provision-state change. It returns once the new
// state is committed; the work continues in a worker.
func (c *Conductor) Provision(ctx context.Context, ident string, req ProvisionRequest) error {
	verb, ok := statemachine.LookupVerb(req.Target)
	if !ok {
		return errorf(Invalid, "Invalid value for target: %q", req.Target)
	}
	n, err := c.getNode(ctx, ident)
	if err != nil {
		return err
	}
	if err := checkProvisionArgs(verb, req); err != nil {
		return err
	}
	if n.Maintenance && (verb.Event == statemachine.EvDeploy || verb.Event == statemachine.EvRebuild) {
		return errorf(Invalid, "The %s operation can't be performed on node %s because it's in maintenance mode.", req.Target, n.UUID)
	}
	if n.Protected && (verb.Event == statemachine.EvRebuild || verb.Event == statemachine.EvDelete) {
		return errorf(Forbidden, "Node %s is protected and cannot be undeployed, rebuilt or deleted", n.UUID)
	}
	// Ironic's API checks the transition on its own copy of the state
	// machine first: a busy node answers 409, an idle one 400.
	if !apiActionable(n.ProvisionState, verb.Event) {
		if n.Reservation != "" {
			return errorf(Conflict, "Node %s is locked by host %s, please retry after the current operation is completed.", n.UUID, n.Reservation)
		}
		return invalidState(req.Target, n.UUID, n.ProvisionState)
	}
	n, err = c.acquire(ctx, n)
	if err != nil {
		return err
	}
	spawned := false
	defer func() {
		if !spawned {
			c.release(n)
		}
	}()
	// Re-check under the lock: the state may have moved meanwhile.
	if !apiActionable(n.ProvisionState, verb.Event) {
		return invalidState(req.Target, n.UUID, n.ProvisionState)
	}
	ifs, err := c.interfaces(n)
	if err != nil {
		return err
	}
	// The new state is committed only once a worker is ours: a busy
	// conductor answers 503 and the node stays as it was.
	if err := c.takeWorker(); err != nil {
		return err
	}
	workerUsed := false
	defer func() {
		if !workerUsed {
			<-c.workers
		}
	}()
	start := func(what string, task func(ctx context.Context, n *model.Node)) error {
		if what != "abort" {
			n.LastError = ""
		}
		if err := c.store.UpdateNode(ctx, n); err != nil {
			return err
		}
		spawned, workerUsed = true, true
		c.spawn(n, what, task)
		return nil
	}

	switch verb.Event {
	case statemachine.EvManage:
		if n.ProvisionState != statemachine.Enroll {
			// available / *failed -> manageable happens at once.
			c.mustFire(n, statemachine.EvManage, "")
			return c.store.UpdateNode(ctx, n)
		}
		c.mustFire(n, statemachine.EvManage, "")
		return start("verify", func(ctx context.Context, n *model.Node) { c.doVerify(ctx, n, ifs) })

	case statemachine.EvProvide:
		if c.automatedClean(n) {
			if err := c.checkNetbootPorts(ctx, n, ifs); err != nil {
				return errorf(Invalid, "Cannot clean node %s: %s", n.UUID, err)
			}
		}
		c.mustFire(n, statemachine.EvProvide, "")
		return start("clean", func(ctx context.Context, n *model.Node) { c.doClean(ctx, n, ifs, nil, "") })

	case statemachine.EvClean:
		c.mustFire(n, statemachine.EvClean, statemachine.Manageable)
		steps := req.CleanSteps
		return start("clean", func(ctx context.Context, n *model.Node) {
			c.doClean(ctx, n, ifs, steps, statemachine.Manageable)
		})

	case statemachine.EvInspect:
		if ifs.Inspect == nil {
			return errorf(Invalid, "Driver %s does not support inspect (disabled or not implemented).", n.Driver)
		}
		if err := ifs.Inspect.Validate(n); err != nil {
			return errorf(Invalid, "Failed to validate inspect info for node %s: %s", n.UUID, err)
		}
		c.mustFire(n, statemachine.EvInspect, "")
		now := store.Now()
		n.InspectionStartedAt, n.InspectionFinishedAt = &now, nil
		return start("inspect", func(ctx context.Context, n *model.Node) { c.doInspect(ctx, n, ifs) })

	case statemachine.EvDeploy, statemachine.EvRebuild:
		if err := validateDeploy(n, ifs); err != nil {
			return err
		}
		if err := c.checkNetbootPorts(ctx, n, ifs); err != nil {
			return errorf(Invalid, "Failed to validate deploy or power info for node %s. Error: %s", n.UUID, err)
		}
		if req.ConfigDrive != nil {
			if n.InstanceInfo == nil {
				n.InstanceInfo = model.JSONObject{}
			}
			n.InstanceInfo["configdrive"] = req.ConfigDrive
		}
		c.mustFire(n, verb.Event, "")
		return start("deploy", func(ctx context.Context, n *model.Node) { c.doDeploy(ctx, n, ifs) })

	case statemachine.EvDelete:
		c.mustFire(n, statemachine.EvDelete, "")
		return start("tear down", func(ctx context.Context, n *model.Node) { c.doTearDown(ctx, n, ifs) })

	case statemachine.EvAbort:
		target := ""
		if n.ProvisionState == statemachine.CleanWait && n.TargetProvisionState == statemachine.Manageable {
			target = statemachine.Manageable
		}
		was := n.ProvisionState
		c.mustFire(n, statemachine.EvAbort, target)
		n.LastError = fmt.Sprintf("Operation aborted by the operator in state %q.", was)
		if was == statemachine.DeployWait {
			n.DeployStep = model.JSONObject{}
		} else if was == statemachine.CleanWait {
			n.CleanStep = model.JSONObject{}
		}
		if _, ok := ifs.Deploy.(drivers.Aborter); ok && (was == statemachine.DeployWait || was == statemachine.CleanWait) {
			// Power off and stop serving the agent in a worker; the
			// failed state is committed first.
			return start("abort", func(ctx context.Context, n *model.Node) { c.undo(ctx, n, ifs) })
		}
		return c.store.UpdateNode(ctx, n)

	case statemachine.EvAdopt:
		if err := validateDeploy(n, ifs); err != nil {
			c.mustFire(n, statemachine.EvAdopt, "")
			c.mustFire(n, statemachine.EvFail, "")
			n.LastError = err.Error()
			return c.store.UpdateNode(ctx, n)
		}
		c.mustFire(n, statemachine.EvAdopt, "")
		return start("adopt", func(ctx context.Context, n *model.Node) {
			c.mustFire(n, statemachine.EvDone, "")
		})

	case statemachine.EvRescue, statemachine.EvUnrescue:
		if n.Interfaces["rescue"] == "" || n.Interfaces["rescue"] == "no-rescue" {
			return errorf(Invalid, "Driver %s does not support rescue (disabled or not implemented).", n.Driver)
		}
		if verb.Event == statemachine.EvRescue {
			if n.InstanceInfo == nil {
				n.InstanceInfo = model.JSONObject{}
			}
			n.InstanceInfo["rescue_password"] = req.RescuePassword
		}
		ev := verb.Event
		c.mustFire(n, ev, "")
		return start(string(ev), func(ctx context.Context, n *model.Node) {
			if ev == statemachine.EvUnrescue {
				delete(n.InstanceInfo, "rescue_password")
			}
			c.mustFire(n, statemachine.EvDone, "")
		})
	}
	return errorf(Invalid, "Unsupported provision target %q", req.Target)
}

func checkProvisionArgs(verb statemachine.Verb, req ProvisionRequest) error {
	deployish := verb.Event == statemachine.EvDeploy || verb.Event == statemachine.EvRebuild
	if req.ConfigDrive != nil && !deployish {
		return errorf(Invalid, "Adding a config drive is only supported when setting provision state to active, deploy or rebuild")
	}
	if req.ConfigDrive != nil {
		switch req.ConfigDrive.(type) {
		case string, map[string]any:
		default:
			return errorf(Invalid, "Invalid configdrive format: expected a string or a JSON object")
		}
	}
	if len(req.DeploySteps) > 0 && !deployish {
		return errorf(Invalid, "\"deploy_steps\" is only valid when setting target provision state to active or rebuild")
	}
	if verb.Event == statemachine.EvClean {
		if req.CleanSteps == nil {
			return errorf(Invalid, "\"clean_steps\" is required when setting target provision state to clean")
		}
		for i, s := range req.CleanSteps {
			if s.Interface == "" || s.Step == "" {
				return errorf(Invalid, "Invalid clean step %d: \"interface\" and \"step\" are required", i)
			}
			switch s.Interface {
			case "power", "management", "deploy", "bios", "raid":
			default:
				return errorf(Invalid, "Invalid clean step %d: interface %q is not one of power, management, deploy, bios, raid", i, s.Interface)
			}
		}
	} else if req.CleanSteps != nil {
		return errorf(Invalid, "\"clean_steps\" is only valid when setting target provision state to clean")
	}
	if verb.Event == statemachine.EvRescue && req.RescuePassword == "" {
		return errorf(Invalid, "A non-empty \"rescue_password\" is required when setting target provision state to rescue")
	}
	if verb.Event != statemachine.EvRescue && req.RescuePassword != "" {
		return errorf(Invalid, "\"rescue_password\" is only valid when setting target provision state to rescue")
	}
	if req.DisableRamdisk != nil && verb.Event != statemachine.EvClean {
		return errorf(Invalid, "\"disable_ramdisk\" is only valid when setting target provision state to clean")
	}
	return nil
}

func validateDeploy(n *model.Node, ifs *drivers.Set) error {
	fail := func(err error) error {
		return errorf(Invalid, "Failed to validate deploy or power info for node %s. Error: %s", n.UUID, err)
	}
	if ifs.Power == nil {
		return fail(fmt.Errorf("power interface %q is not available", n.Interfaces["power"]))
	}
	if err := ifs.Power.Validate(n); err != nil {
		return fail(err)
	}
	if ifs.Deploy == nil {
		return fail(fmt.Errorf("deploy interface %q is not available in this build", n.Interfaces["deploy"]))
	}
	if err := ifs.Deploy.Validate(n); err != nil {
		return fail(err)
	}
	if v, ok := ifs.Deploy.(drivers.InstanceValidator); ok {
		if err := v.ValidateInstance(n); err != nil {
			return fail(err)
		}
	}
	if ifs.Boot != nil {
		if err := ifs.Boot.Validate(n); err != nil {
			return fail(err)
		}
	}
	return nil
}

// doVerify is the verifying step of manage: prove the power credentials.
func (c *Conductor) doVerify(ctx context.Context, n *model.Node, ifs *drivers.Set) {
	err := func() error {
		if ifs.Power == nil {
			return fmt.Errorf("power interface %q is not available", n.Interfaces["power"])
		}
		if err := ifs.Power.Validate(n); err != nil {
			return err
		}
		st, err := ifs.Power.PowerState(ctx, n)
		if err != nil {
			return err
		}
		n.PowerState = st
		return nil
	}()
	if err != nil {
		n.LastError = fmt.Sprintf("Failed to get power state for node %s. Error: %s", n.UUID, err)
		c.mustFire(n, statemachine.EvFail, "")
		return
	}
	c.mustFire(n, statemachine.EvDone, "")
}

func (c *Conductor) automatedClean(n *model.Node) bool {
	if n.AutomatedClean != nil {
		return *n.AutomatedClean
	}
	return *c.cfg.AutomatedClean
}

// doClean runs automated (steps == nil) or manual cleaning on a node in
// "cleaning".
func (c *Conductor) doClean(ctx context.Context, n *model.Node, ifs *drivers.Set, steps []drivers.CleanStep, target string) {
	manual := steps != nil
	if !manual && !c.automatedClean(n) {
		c.mustFire(n, statemachine.EvDone, "")
		return
	}
	err := func() error {
		if ifs.Deploy == nil {
			return fmt.Errorf("deploy interface %q is not available in this build", n.Interfaces["deploy"])
		}
		if err := ifs.Deploy.Validate(n); err != nil {
			return err
		}
		st, err := ifs.Deploy.Clean(ctx, n, steps)
		if err != nil {
			return err
		}
		if st == drivers.Wait {
			c.mustFire(n, statemachine.EvWait, target)
			return nil
		}
		n.CleanStep = model.JSONObject{}
		if manual {
			c.mustFire(n, statemachine.EvManage, "")
		} else {
			c.mustFire(n, statemachine.EvDone, "")
		}
		return nil
	}()
	if err != nil {
		c.cleanFailed(n, fmt.Sprintf("Failed to clean node %s: %s", n.UUID, err), manual)
		c.undo(ctx, n, ifs)
	}
}

// cleanFailed moves a node to clean failed. Automated cleaning failures
// also put the node in maintenance with fault "clean failure", as Ironic
// does, so it is not handed out again until someone looks.
func (c *Conductor) cleanFailed(n *model.Node, msg string, manual bool) {
	target := ""
	if manual {
		target = statemachine.Manageable
	}
	c.mustFire(n, statemachine.EvFail, target)
	n.LastError = msg
	n.CleanStep = model.JSONObject{}
	if !manual {
		n.Maintenance = true
		n.Fault = "clean failure"
		n.MaintenanceReason = msg
	}
}

func (c *Conductor) doInspect(ctx context.Context, n *model.Node, ifs *drivers.Set) {
	st, err := ifs.Inspect.Inspect(ctx, n)
	if err != nil {
		n.LastError = fmt.Sprintf("Failed to inspect hardware. Reason: %s", err)
		c.mustFire(n, statemachine.EvFail, "")
		return
	}
	if st == drivers.Wait {
		c.mustFire(n, statemachine.EvWait, "")
		return
	}
	now := store.Now()
	n.InspectionFinishedAt = &now
	c.mustFire(n, statemachine.EvDone, "")
}

func (c *Conductor) doDeploy(ctx context.Context, n *model.Node, ifs *drivers.Set) {
	st, err := ifs.Deploy.Deploy(ctx, n)
	if err != nil {
		n.LastError = fmt.Sprintf("Deploy failed for node %s: %s", n.UUID, err)
		c.mustFire(n, statemachine.EvFail, "")
		n.DeployStep = model.JSONObject{}
		c.undo(ctx, n, ifs)
		return
	}
	if st == drivers.Wait {
		c.mustFire(n, statemachine.EvWait, "")
		return
	}
	n.DeployStep = model.JSONObject{}
	c.mustFire(n, statemachine.EvDone, "")
}

func (c *Conductor) doTearDown(ctx context.Context, n *model.Node, ifs *drivers.Set) {
	if ifs.Deploy != nil {
		if err := ifs.Deploy.TearDown(ctx, n); err != nil {
			n.LastError = fmt.Sprintf("Failed to tear down node %s: %s", n.UUID, err)
			c.mustFire(n, statemachine.EvFail, "")
			return
		}
	}
	// Ironic clears the instance's traces once it is torn down.
	n.InstanceInfo = model.JSONObject{}
	n.InstanceUUID = ""
	delete(n.DriverInternalInfo, "agent_url")
	delete(n.DriverInternalInfo, "agent_secret_token")
	c.mustFire(n, statemachine.EvClean, "")
	c.save(n)
	c.doClean(ctx, n, ifs, nil, "")
}

// waitTimeout is how long a node may sit in a wait state without a
// heartbeat before the periodic check fails it.
func (c *Conductor) waitTimeout(state string) (time.Duration, string) {
	switch state {
	case statemachine.DeployWait:
		return c.cfg.DeployCallbackTimeout, "Timeout reached while waiting for callback for node %s"
	case statemachine.CleanWait:
		return c.cfg.CleanCallbackTimeout, "Timeout reached while cleaning the node %s. Please check if the ramdisk responsible for the cleaning is running on the node."
	case statemachine.InspectWait:
		return c.cfg.InspectWaitTimeout, "Timeout reached while inspecting the node %s"
	case statemachine.RescueWait:
		return c.cfg.RescueCallbackTimeout, "Timeout reached while waiting for rescue ramdisk callback for node %s"
	}
	return 0, ""
}

// apiActionable says whether an operator may fire ev in state. The table
// also holds the conductor's internal moves ("manage" ends manual cleaning,
// "clean" follows tear-down); those are never operator requests.
func apiActionable(state string, ev statemachine.Event) bool {
	if _, ok := statemachine.Next(state, ev); !ok {
		return false
	}
	return !(state == statemachine.Cleaning && ev == statemachine.EvManage) &&
		!(state == statemachine.Deleting && ev == statemachine.EvClean)
}
