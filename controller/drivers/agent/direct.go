package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/agentclient"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/images/configdrive"
)

// DirectConfig tunes the direct deploy interface; zero values take the
// defaults in brackets.
type DirectConfig struct {
	// BootURL is the controller's boot HTTP base URL as machines reach it;
	// file:// instance images are served below it.
	BootURL string
	// PowerOffChecks and PowerOffInterval bound the wait for the agent's
	// in-band power off before the BMC powers the machine off hard
	// ([agent]post_deploy_get_power_state_retries + 1, ..._interval). [7, 5s]
	PowerOffChecks   int
	PowerOffInterval time.Duration
	// CleanStepPriority overrides the agent's clean step priorities for
	// automated cleaning, keyed "interface.step" (Ironic's
	// [conductor]clean_step_priority_override). [deploy.erase_devices: 0,
	// so automated cleaning erases metadata only; set it to 10 for a full
	// erase]
	CleanStepPriority map[string]int
	// Images resolves catalogue references in image_source; nil: only
	// URLs and file:// paths are accepted.
	Images Images
	Log    *slog.Logger
}

// Direct is Ironic's "direct" deploy interface: the node boots the agent,
// which writes the image straight onto its disk; every step after the boot
// is driven by the agent's heartbeats (reference §3.8, §4.2).
type Direct struct {
	reg    *drivers.Registry
	agents *agentclient.Client
	cfg    DirectConfig
	log    *slog.Logger
}

// RegisterDirect adds the "direct" deploy interface.
func RegisterDirect(r *drivers.Registry, agents *agentclient.Client, cfg DirectConfig) *Direct {
	if cfg.PowerOffChecks <= 0 {
		cfg.PowerOffChecks = 7
	}
	if cfg.PowerOffInterval <= 0 {
		cfg.PowerOffInterval = 5 * time.Second
	}
	if cfg.CleanStepPriority == nil {
		cfg.CleanStepPriority = map[string]int{"deploy.erase_devices": 0}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.BootURL = strings.TrimRight(cfg.BootURL, "/")
	d := &Direct{reg: r, agents: agents, cfg: cfg, log: cfg.Log}
	r.AddInterface("deploy", "direct", d)
	return d
}

// Properties: the direct deploy reads the image proxies from driver_info.
func (d *Direct) Properties() map[string]string {
	return map[string]string{
		"image_http_proxy":  "URL of a proxy for HTTP image downloads by the agent. Optional.",
		"image_https_proxy": "URL of a proxy for HTTPS image downloads by the agent. Optional.",
		"image_no_proxy":    "Comma-separated hosts the agent reaches without the proxies. Optional.",
	}
}

// Validate checks what deploying and cleaning both need: a way to power
// the machine and to boot it into the agent.
func (d *Direct) Validate(n *model.Node) error {
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return err
	}
	if ifs.Power == nil {
		return fmt.Errorf("the direct deploy needs a power interface to boot the agent")
	}
	if ifs.Boot == nil {
		return fmt.Errorf("the direct deploy needs a boot interface (ipxe) to boot the agent")
	}
	return nil
}

func internal(n *model.Node) model.JSONObject {
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = model.JSONObject{}
	}
	return n.DriverInternalInfo
}

// agentKeys are the driver_internal_info entries of one agent boot; they
// are dropped before the next boot and after the flow ends (Ironic's
// wipe_deploy_internal_info / wipe_cleaning_internal_info).
var agentKeys = []string{"agent_url", "agent_secret_token", "agent_version", "agent_last_heartbeat",
	"agent_verify_ca", "agent_cached_clean_steps", "hardware_manager_version", "clean_steps",
	"clean_step_index", drivers.ProgressKey}

func wipeAgent(n *model.Node) {
	dii := internal(n)
	for _, k := range agentKeys {
		delete(dii, k)
	}
}

func agentOf(n *model.Node) agentclient.Agent {
	return agentclient.Agent{
		URL:      model.Str(n.DriverInternalInfo, "agent_url"),
		Token:    model.Str(n.DriverInternalInfo, "agent_secret_token"),
		VerifyCA: model.Str(n.DriverInternalInfo, "agent_verify_ca"),
	}
}

func deploying(n *model.Node) bool {
	return n.ProvisionState == statemachine.Deploying || n.ProvisionState == statemachine.DeployWait
}

// setPower drives the machine to state and records it on the node.
func setPower(ctx context.Context, ifs *drivers.Set, n *model.Node, state string) error {
	if err := ifs.Power.SetPowerState(ctx, n, state, 0); err != nil {
		return err
	}
	n.PowerState = state
	return nil
}

// bootAgent powers the machine off, makes its next boot a network boot
// into the agent and powers it on.
func (d *Direct) bootAgent(ctx context.Context, n *model.Node) error {
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return err
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOff); err != nil {
		return fmt.Errorf("power off before booting the agent: %w", err)
	}
	if err := ifs.Boot.PrepareRamdisk(ctx, n); err != nil {
		return fmt.Errorf("prepare the agent boot: %w", err)
	}
	if ifs.Management != nil {
		if err := ifs.Management.SetBootDevice(ctx, n, drivers.BootPXE, false); err != nil {
			return fmt.Errorf("set boot device to pxe: %w", err)
		}
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOn); err != nil {
		return fmt.Errorf("power on into the agent: %w", err)
	}
	return nil
}

// powerOff is the best-effort hard power off after a failure or abort;
// its own failure is logged, the original error is what the node shows.
func (d *Direct) powerOff(ctx context.Context, n *model.Node) {
	ifs, err := d.reg.Interfaces(n)
	if err != nil || ifs.Power == nil {
		return
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOff); err != nil {
		d.log.Warn("power off after failure", "node", n.UUID, "err", err)
	}
}

func step(iface, name string, priority int) model.JSONObject {
	return model.JSONObject{"interface": iface, "step": name, "priority": priority, "args": map[string]any{}}
}

// Deploy starts a deploy: it resolves the image, boots the agent and
// waits for its heartbeat (wait call-back).
func (d *Direct) Deploy(ctx context.Context, n *model.Node) (drivers.StepState, error) {
	if err := d.ValidateInstance(n); err != nil {
		return drivers.Done, err
	}
	wipeAgent(n)
	if n.InstanceInfo == nil {
		n.InstanceInfo = model.JSONObject{}
	}
	n.InstanceInfo["image_type"] = "whole-disk"
	internal(n)["is_whole_disk_image"] = true
	startFlow(n, deployKey, phaseBoot)
	if err := d.resolveImage(ctx, n); err != nil {
		return drivers.Done, fmt.Errorf("Failed to prepare to deploy: %w", err)
	}
	n.DeployStep = step("deploy", "deploy", 100)
	if err := d.bootAgent(ctx, n); err != nil {
		return drivers.Done, err
	}
	return drivers.Wait, nil
}

// Heartbeat advances the deploy or the cleaning by one move.
func (d *Direct) Heartbeat(ctx context.Context, n *model.Node) (drivers.StepState, error) {
	switch n.ProvisionState {
	case statemachine.DeployWait:
		return d.continueDeploy(ctx, n)
	case statemachine.CleanWait:
		return d.continueClean(ctx, n)
	}
	return drivers.Wait, nil
}

func stepName(s model.JSONObject) string { return model.Str(s, "step") }

func (d *Direct) continueDeploy(ctx context.Context, n *model.Node) (drivers.StepState, error) {
	a := agentOf(n)
	log := d.log.With("node", n.UUID, "step", stepName(n.DeployStep))
	switch stepName(n.DeployStep) {
	case "deploy":
		// The agent is up: the boot is over, the write begins.
		return drivers.Wait, d.startWrite(ctx, n, a)
	case "write_image":
		last, err := d.agents.Last(ctx, a)
		if err != nil {
			log.Warn("read the agent's commands; retrying at the next heartbeat", "err", err)
			return drivers.Wait, nil
		}
		if last == nil {
			// A fresh agent: the machine rebooted under the write.
			log.Warn("the agent has no commands (it restarted); writing the image again")
			return drivers.Wait, d.startWrite(ctx, n, a)
		}
		if last.CommandName != "prepare_image" {
			return drivers.Wait, nil
		}
		switch last.CommandStatus {
		case protocol.StatusRunning:
			drivers.SetProgress(n, last.Progress)
			return drivers.Wait, nil
		case protocol.StatusSucceeded:
			return d.finishDeploy(ctx, n, a)
		default:
			return drivers.Done, fmt.Errorf("Deploy step deploy.write_image failed on node %s. %s", n.UUID, commandError(last))
		}
	}
	return drivers.Done, fmt.Errorf("deploy of node %s is at an unknown step %q; undeploy and deploy again", n.UUID, stepName(n.DeployStep))
}

func commandError(r *protocol.CommandResult) string {
	if r.CommandError == nil {
		return "The agent reported " + r.CommandStatus + " without an error."
	}
	if r.CommandError.Details != "" {
		return r.CommandError.Details
	}
	return r.CommandError.Message
}

// startWrite sends standby.prepare_image (IPA's image_info + configdrive).
func (d *Direct) startWrite(ctx context.Context, n *model.Node, a agentclient.Agent) error {
	info := imageInfo(n)
	params := map[string]any{"image_info": info}
	if cd, ok := n.InstanceInfo["configdrive"]; ok && cd != nil {
		s, isString := cd.(string)
		if !isString {
			built, err := configdrive.Build(cd, configdrive.NodeInfo{UUID: n.UUID, Name: n.Name})
			if err != nil {
				return fmt.Errorf("build the config drive: %w", err)
			}
			s = built
		}
		params["configdrive"] = s
	}
	n.DeployStep = step("deploy", "write_image", 80)
	nextPhase(n, deployKey, phaseWrite)
	res, err := d.agents.Run(ctx, a, "standby.prepare_image", params, false)
	if err != nil {
		return fmt.Errorf("start writing the image: %w", err)
	}
	if res.CommandStatus == protocol.StatusFailed {
		return fmt.Errorf("Deploy step deploy.write_image failed on node %s. %s", n.UUID, commandError(res))
	}
	d.log.Info("image write started", "node", n.UUID, "url", info["urls"])
	return nil
}

// finishDeploy runs prepare_instance_boot, tear_down_agent and
// boot_instance (reference §4.2 steps 12-15).
func (d *Direct) finishDeploy(ctx context.Context, n *model.Node, a agentclient.Agent) (drivers.StepState, error) {
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return drivers.Done, err
	}
	delete(internal(n), drivers.ProgressKey)
	nextPhase(n, deployKey, phaseReboot)

	n.DeployStep = step("deploy", "prepare_instance_boot", 60)
	res, err := d.agents.Run(ctx, a, "standby.get_partition_uuids", map[string]any{}, true)
	if err != nil {
		return drivers.Done, fmt.Errorf("read the partition UUIDs from the agent: %w", err)
	}
	if res.CommandStatus == protocol.StatusSucceeded {
		var uuids map[string]any
		if decode(res.CommandResult, &uuids) == nil {
			if id, ok := uuids["root uuid"].(string); ok {
				internal(n)["root_uuid_or_disk_id"] = id
			}
		}
	}
	if err := ifs.Boot.PrepareInstance(ctx, n); err != nil {
		return drivers.Done, err
	}
	if ifs.Management != nil {
		if err := ifs.Management.SetBootDevice(ctx, n, drivers.BootDisk, true); err != nil {
			return drivers.Done, fmt.Errorf("set boot device to disk: %w", err)
		}
	}

	n.DeployStep = step("deploy", "tear_down_agent", 40)
	if err := d.shutDownAgent(ctx, ifs, n, a); err != nil {
		return drivers.Done, err
	}

	n.DeployStep = step("deploy", "boot_instance", 20)
	if err := setPower(ctx, ifs, n, drivers.PowerOn); err != nil {
		return drivers.Done, fmt.Errorf("power on the instance: %w", err)
	}
	endFlow(n, deployKey)
	wipeAgent(n)
	d.log.Info("deployed", "node", n.UUID, "timings", internal(n)[deployKey])
	return drivers.Done, nil
}

// shutDownAgent asks the agent to power the machine off (it syncs its
// disks first) and checks with the BMC; a machine still on after the
// checks is powered off hard.
func (d *Direct) shutDownAgent(ctx context.Context, ifs *drivers.Set, n *model.Node, a agentclient.Agent) error {
	if _, err := d.agents.Run(ctx, a, "standby.power_off", map[string]any{}, false); err != nil {
		d.log.Warn("in-band power off failed; powering off through the BMC", "node", n.UUID, "err", err)
	} else {
		for i := 0; i < d.cfg.PowerOffChecks; i++ {
			st, err := ifs.Power.PowerState(ctx, n)
			if err == nil && st == drivers.PowerOff {
				n.PowerState = drivers.PowerOff
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d.cfg.PowerOffInterval):
			}
		}
		d.log.Warn("the agent did not power the machine off; powering off through the BMC", "node", n.UUID)
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOff); err != nil {
		return fmt.Errorf("power off after the deploy: %w", err)
	}
	return nil
}

// TearDown powers the instance off and stops serving it a boot script;
// cleaning follows.
func (d *Direct) TearDown(ctx context.Context, n *model.Node) error {
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return err
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOff); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	if err := ifs.Boot.CleanUpInstance(ctx, n); err != nil {
		return err
	}
	wipeAgent(n)
	delete(internal(n), imageKey)
	delete(internal(n), "root_uuid_or_disk_id")
	delete(internal(n), "is_whole_disk_image")
	n.DeployStep = model.JSONObject{}
	return nil
}

// Abort undoes a deploy or cleaning that was aborted, failed or timed out:
// the machine is powered off ([deploy]power_off_after_deploy_failure) and
// no longer served the agent.
func (d *Direct) Abort(ctx context.Context, n *model.Node) error {
	d.cleanUpAfterFailure(ctx, n)
	return nil
}

func (d *Direct) cleanUpAfterFailure(ctx context.Context, n *model.Node) {
	d.powerOff(ctx, n)
	if ifs, err := d.reg.Interfaces(n); err == nil && ifs.Boot != nil {
		_ = ifs.Boot.CleanUpRamdisk(ctx, n)
	}
	wipeAgent(n)
	n.DeployStep = model.JSONObject{}
	n.CleanStep = model.JSONObject{}
	abandonFlow(n)
}

// decode re-reads a command_result (decoded as any) into v.
func decode(in any, v any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
