// Package extensions implements the agent's built-in IPA command extensions:
// standby (power_off, reboot, run_image, sync), log (collect_system_logs),
// clean and deploy (get_*_steps, execute_*_step). Other packages register
// further commands on the same api.Registry.
package extensions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/steps"
)

// Power performs the machine-level actions of the standby extension; the
// real one uses reboot(2), tests use a fake.
type Power interface {
	Sync()
	PowerOff() error
	Reboot() error
}

// Options configures the built-in extensions.
type Options struct {
	Power Power
	// Logs gathers the files for log.collect_system_logs.
	Logs LogSource
	// ActionDelay is how long power_off/reboot wait before acting, so the
	// HTTP reply (and the command's RUNNING state) reach the conductor first.
	ActionDelay time.Duration
	Log         *slog.Logger
}

// Register adds the built-in commands to reg.
func Register(reg *api.Registry, o Options) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	power := func(what string, act func() error) api.Handler {
		return func(ctx context.Context, _ map[string]any) (any, error) {
			o.Log.Warn("standby: "+what+" requested; syncing disks", "delay", o.ActionDelay)
			o.Power.Sync()
			select {
			case <-time.After(o.ActionDelay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if err := act(); err != nil {
				return nil, &api.Error{Type: "SystemRebootError", Code: 500, Message: "Error rebooting system", Details: fmt.Sprintf("%s failed: %v", what, err)}
			}
			return nil, nil
		}
	}
	reg.Register("standby.power_off", api.Command{Async: true, Run: power("power off", o.Power.PowerOff)})
	reg.Register("standby.reboot", api.Command{Async: true, Run: power("reboot", o.Power.Reboot)})
	// run_image is IPA's legacy name for "reboot into the written image".
	reg.Register("standby.run_image", api.Command{Async: true, Run: power("reboot", o.Power.Reboot)})
	reg.Register("standby.sync", api.Command{Run: func(context.Context, map[string]any) (any, error) {
		o.Power.Sync()
		return nil, nil
	}})

	reg.Register("log.collect_system_logs", api.Command{Run: func(ctx context.Context, _ map[string]any) (any, error) {
		s, err := CollectLogs(ctx, o.Logs)
		if err != nil {
			return nil, api.CommandExecution("collecting system logs: %v", err)
		}
		return protocol.SystemLogsResult{SystemLogs: s}, nil
	}})

	reg.Register("clean.get_clean_steps", api.Command{Run: func(context.Context, map[string]any) (any, error) {
		return protocol.GetStepsResult{
			CleanSteps:             map[string][]protocol.Step{protocol.GenericHardwareManager: steps.List(steps.Clean)},
			HardwareManagerVersion: HardwareManagerVersion(),
		}, nil
	}})
	reg.Register("deploy.get_deploy_steps", api.Command{Run: func(context.Context, map[string]any) (any, error) {
		return protocol.GetStepsResult{
			DeploySteps:            map[string][]protocol.Step{protocol.GenericHardwareManager: steps.List(steps.Deploy)},
			HardwareManagerVersion: HardwareManagerVersion(),
		}, nil
	}})
	reg.Register("clean.execute_clean_step", api.Command{
		Async:    true,
		Validate: validateStep,
		Run: func(ctx context.Context, p map[string]any) (any, error) {
			res, err := executeStep(ctx, steps.Clean, p, "clean_version")
			if err != nil {
				return nil, err
			}
			return protocol.CleanStepResult{CleanResult: res, CleanStep: p["step"].(map[string]any)}, nil
		},
	})
	reg.Register("deploy.execute_deploy_step", api.Command{
		Async:    true,
		Validate: validateStep,
		Run: func(ctx context.Context, p map[string]any) (any, error) {
			res, err := executeStep(ctx, steps.Deploy, p, "deploy_version")
			if err != nil {
				return nil, err
			}
			return protocol.DeployStepResult{DeployResult: res, DeployStep: p["step"].(map[string]any)}, nil
		},
	})
}

// HardwareManagerVersion is what get_*_steps reports and execute_*_step
// compares against.
func HardwareManagerVersion() map[string]string {
	return map[string]string{protocol.GenericHardwareManagerKey: protocol.GenericHardwareManagerVersion}
}

func validateStep(p map[string]any) error {
	s, ok := p["step"].(map[string]any)
	if !ok {
		return api.InvalidCommandParams("step is required and must be an object")
	}
	if name, _ := s["step"].(string); name == "" {
		return api.InvalidCommandParams("step.step is required")
	}
	if iface, _ := s["interface"].(string); iface == "" {
		return api.InvalidCommandParams("step.interface is required")
	}
	return nil
}

// executeStep decodes the step params, checks the hardware manager version
// (IPA's CLEAN_VERSION_MISMATCH) and runs the registered step.
func executeStep(ctx context.Context, kind steps.Kind, p map[string]any, versionKey string) (any, error) {
	var step protocol.Step
	raw, _ := p["step"].(map[string]any)
	step.Step, _ = raw["step"].(string)
	step.Interface, _ = raw["interface"].(string)
	if pr, ok := raw["priority"].(float64); ok {
		step.Priority = int(pr)
	}
	step.RebootRequested, _ = raw["reboot_requested"].(bool)
	step.Args, _ = raw["args"].(map[string]any)
	step.ArgsInfo, _ = raw["argsinfo"].(map[string]any)

	if v, ok := p[versionKey]; ok && v != nil && !versionsMatch(v) {
		return nil, api.VersionMismatch(HardwareManagerVersion(), v)
	}
	def, ok := steps.Lookup(kind, step.Interface, step.Step)
	fail := api.CleaningError
	if kind == steps.Deploy {
		fail = api.DeploymentError
	}
	if !ok {
		return nil, fail("step %s.%s is not known to this agent (%s); it offers: %v",
			step.Interface, step.Step, protocol.Implementation, stepNames(kind))
	}
	if def.Run == nil {
		return nil, fail("step %s.%s is %v (%s)", step.Interface, step.Step, steps.ErrNotImplemented, protocol.Implementation)
	}
	node, _ := p["node"].(map[string]any)
	ports, _ := p["ports"].([]any)
	res, err := def.Run(ctx, steps.Request{Step: step, Node: node, Ports: ports})
	if err != nil {
		var re *api.Error
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, fail("step %s.%s: %v", step.Interface, step.Step, err)
	}
	return res, nil
}

// versionsMatch compares the conductor's copy of hardware_manager_version
// with ours (values decoded from JSON).
func versionsMatch(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	want := HardwareManagerVersion()
	got := map[string]string{}
	for k, x := range m {
		s, _ := x.(string)
		got[k] = s
	}
	return reflect.DeepEqual(got, want)
}

func stepNames(kind steps.Kind) []string {
	var out []string
	for _, s := range steps.List(kind) {
		out = append(out, s.Interface+"."+s.Step)
	}
	return out
}
