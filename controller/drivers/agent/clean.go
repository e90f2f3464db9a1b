package agent

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/agentclient"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// interfacePriority breaks ties between steps of equal priority, as
// Ironic's conductor/steps.py does.
var interfacePriority = map[string]int{"power": 5, "management": 4, "deploy": 3, "bios": 2, "raid": 1}

// Clean boots the agent for automated (steps == nil) or manual cleaning.
// The steps themselves run as the agent heartbeats (continueClean).
func (d *Direct) Clean(ctx context.Context, n *model.Node, steps []drivers.CleanStep) (drivers.StepState, error) {
	wipeAgent(n)
	dii := internal(n)
	delete(dii, "ironlite_requested_clean_steps")
	if steps != nil {
		// Refuse what cannot run before booting the agent, as Ironic's
		// early validation of manual clean steps does.
		if err := d.checkRAIDSteps(n, steps); err != nil {
			return drivers.Done, err
		}
		var req []any
		for _, s := range steps {
			m := map[string]any{"interface": s.Interface, "step": s.Step, "args": s.Args}
			if s.Args == nil {
				m["args"] = map[string]any{}
			}
			req = append(req, m)
		}
		dii["ironlite_requested_clean_steps"] = req
	}
	n.CleanStep = model.JSONObject{}
	startFlow(n, cleanKey, phaseBoot)
	if err := d.bootAgent(ctx, n); err != nil {
		return drivers.Done, err
	}
	return drivers.Wait, nil
}

// continueClean runs the next clean step when the previous one is done.
func (d *Direct) continueClean(ctx context.Context, n *model.Node) (drivers.StepState, error) {
	a := agentOf(n)
	dii := internal(n)
	if _, ok := dii["clean_steps"]; !ok {
		// First heartbeat of this boot: ask the agent for its steps and
		// fix the list.
		if err := d.planClean(ctx, n, a); err != nil {
			return drivers.Done, err
		}
		nextPhase(n, cleanKey, phaseClean)
	}
	steps, _ := dii["clean_steps"].([]any)
	idx := index(dii["clean_step_index"])
	if idx >= 0 {
		last, err := d.agents.Last(ctx, a)
		if err != nil {
			d.log.Warn("read the agent's commands; retrying at the next heartbeat", "node", n.UUID, "err", err)
			return drivers.Wait, nil
		}
		switch {
		case last == nil:
			// The agent restarted under the step: run it again.
			idx--
		case last.CommandName != "execute_clean_step":
			return drivers.Wait, nil
		case last.CommandStatus == protocol.StatusRunning:
			drivers.SetProgress(n, last.Progress)
			return drivers.Wait, nil
		case last.CommandStatus != protocol.StatusSucceeded:
			return drivers.Done, fmt.Errorf("Agent returned error for clean step %s on node %s : %s.", stepLabel(n.CleanStep), n.UUID, commandError(last))
		default:
			drivers.SetProgress(n, nil)
			if err := afterCleanStep(n, last); err != nil {
				return drivers.Done, err
			}
			d.log.Info("clean step finished", "node", n.UUID, "step", stepLabel(n.CleanStep))
		}
	}
	idx++
	if idx < len(steps) {
		s, _ := steps[idx].(map[string]any)
		n.CleanStep = s
		dii["clean_step_index"] = idx
		node, err := stepNode(n, s)
		if err != nil {
			return drivers.Done, err
		}
		params := map[string]any{"step": s, "node": node, "ports": []any{}, "clean_version": dii["hardware_manager_version"]}
		res, err := d.agents.Run(ctx, a, "clean.execute_clean_step", params, false)
		if err != nil {
			return drivers.Done, fmt.Errorf("start clean step %s: %w", stepLabel(s), err)
		}
		if res.CommandStatus == protocol.StatusFailed {
			return drivers.Done, fmt.Errorf("Agent returned error for clean step %s on node %s : %s.", stepLabel(s), n.UUID, commandError(res))
		}
		d.log.Info("clean step started", "node", n.UUID, "step", stepLabel(s), "index", idx, "of", len(steps))
		return drivers.Wait, nil
	}
	// All steps done: power off and stop serving the agent
	// (tear_down_cleaning).
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return drivers.Done, err
	}
	if err := setPower(ctx, ifs, n, drivers.PowerOff); err != nil {
		return drivers.Done, fmt.Errorf("power off after cleaning: %w", err)
	}
	if err := ifs.Boot.CleanUpRamdisk(ctx, n); err != nil {
		return drivers.Done, err
	}
	endFlow(n, cleanKey)
	wipeAgent(n)
	delete(dii, "ironlite_requested_clean_steps")
	n.CleanStep = model.JSONObject{}
	return drivers.Done, nil
}

func index(v any) int {
	switch i := v.(type) {
	case int:
		return i
	case float64:
		return int(i)
	case int64:
		return int(i)
	}
	return -1
}

func stepLabel(s map[string]any) string {
	return model.Str(s, "interface") + "." + model.Str(s, "step")
}

// planClean asks the agent for its clean steps and stores the ordered
// list to run: for automated cleaning every step whose (overridden)
// priority is above 0, highest first; for manual cleaning the requested
// steps in order, each of which the agent must offer.
func (d *Direct) planClean(ctx context.Context, n *model.Node, a agentclient.Agent) error {
	res, err := d.agents.Run(ctx, a, "clean.get_clean_steps", map[string]any{"node": nodeParam(n), "ports": []any{}}, true)
	if err != nil {
		return fmt.Errorf("get the clean steps from the agent: %w", err)
	}
	if res.CommandStatus != protocol.StatusSucceeded {
		return fmt.Errorf("the agent failed to list its clean steps: %s", commandError(res))
	}
	var got protocol.GetStepsResult
	if err := decode(res.CommandResult, &got); err != nil {
		return fmt.Errorf("the agent's clean steps: %w", err)
	}
	offered := map[string]protocol.Step{}
	var all []protocol.Step
	for _, list := range got.CleanSteps {
		for _, s := range list {
			offered[s.Interface+"."+s.Step] = s
			all = append(all, s)
		}
	}
	var plan []any
	toMap := func(s protocol.Step, prio int, args map[string]any) map[string]any {
		if args == nil {
			args = map[string]any{}
		}
		return map[string]any{"interface": s.Interface, "step": s.Step, "priority": prio, "args": args,
			"reboot_requested": s.RebootRequested, "abortable": s.Abortable, "argsinfo": s.ArgsInfo, "requires_ramdisk": true}
	}
	dii := internal(n)
	if req, ok := dii["ironlite_requested_clean_steps"].([]any); ok {
		for _, r := range req {
			rm, _ := r.(map[string]any)
			key := stepLabel(rm)
			s, ok := offered[key]
			if !ok {
				return fmt.Errorf("clean step %s is not supported by the agent (it offers: %s)", key, strings.Join(sortedKeys(offered), ", "))
			}
			args, _ := rm["args"].(map[string]any)
			plan = append(plan, toMap(s, 0, maps.Clone(args)))
		}
	} else {
		type ranked struct {
			s    protocol.Step
			prio int
		}
		var run []ranked
		for _, s := range all {
			prio := s.Priority
			if p, ok := d.cfg.CleanStepPriority[s.Interface+"."+s.Step]; ok {
				prio = p
			}
			if prio > 0 {
				run = append(run, ranked{s, prio})
			}
		}
		sort.SliceStable(run, func(i, j int) bool {
			if run[i].prio != run[j].prio {
				return run[i].prio > run[j].prio
			}
			return interfacePriority[run[i].s.Interface] > interfacePriority[run[j].s.Interface]
		})
		for _, r := range run {
			plan = append(plan, toMap(r.s, r.prio, nil))
		}
		var err error
		if plan, err = d.addRAIDSteps(n, plan, offered, toMap); err != nil {
			return err
		}
	}
	if plan == nil {
		plan = []any{}
	}
	assumeClean(plan)
	var cachedMap map[string]any
	_ = decode(got.CleanSteps, &cachedMap)
	dii["agent_cached_clean_steps"] = cachedMap
	dii["hardware_manager_version"] = got.HardwareManagerVersion
	dii["clean_steps"] = plan
	dii["clean_step_index"] = -1
	d.log.Info("clean steps planned", "node", n.UUID, "steps", len(plan))
	return nil
}

// nodeParam is the node as sent to the agent in step commands: what the
// agent's steps read (driver_internal_info erase settings, properties,
// instance_info), with secrets left out.
func nodeParam(n *model.Node) map[string]any {
	di := map[string]any{}
	for k, v := range n.DriverInfo {
		if strings.Contains(k, "password") || strings.Contains(k, "secret") {
			v = "******"
		}
		di[k] = v
	}
	dii := map[string]any{}
	for k, v := range n.DriverInternalInfo {
		if k == "agent_secret_token" {
			continue
		}
		dii[k] = v
	}
	ii := map[string]any{}
	for k, v := range n.InstanceInfo {
		if k == "configdrive" {
			continue
		}
		ii[k] = v
	}
	return map[string]any{"uuid": n.UUID, "name": nilIfEmpty(n.Name), "driver": n.Driver, "driver_info": di,
		"driver_internal_info": dii, "properties": n.Properties, "instance_info": ii,
		"target_raid_config": jsonObject(n.TargetRAIDConfig), "raid_config": jsonObject(n.RAIDConfig)}
}
