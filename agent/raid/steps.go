package raid

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/rootdevice"
	"github.com/ironlite/ironlite/agent/steps"
)

// RegisterSteps installs IPA's software RAID steps: the clean steps
// raid.delete_configuration and raid.create_configuration (priority 0:
// run only when asked for, as in IPA) and the deploy step
// raid.apply_configuration (args raid_config, delete_existing).
//
// create_configuration builds the node's target_raid_config, which the
// conductor sends in the node dict. Optional arguments of both building
// steps: assume_clean (default false) skips the initial resync and is
// meant for members that were just zeroed (erase_devices before it);
// resync_speed_limit_kb caps the initial resync instead (KiB/s per array,
// /sys/block/mdX/md/sync_speed_max).
func RegisterSteps(o Options) {
	s := &stepSet{o: o}
	resync := map[string]any{"description": "cap the initial resync of each array at this many KiB/s (md sync_speed_max); default: the kernel's limit", "required": false}
	steps.Register(steps.Clean, steps.Definition{
		Step: protocol.Step{Step: "delete_configuration", Interface: "raid", Priority: 0},
		Run:  s.delete,
	})
	steps.Register(steps.Clean, steps.Definition{
		Step: protocol.Step{Step: "create_configuration", Interface: "raid", Priority: 0,
			ArgsInfo: map[string]any{
				"assume_clean":          map[string]any{"description": "skip the initial resync (--assume-clean); only for members that were just zeroed", "required": false},
				"resync_speed_limit_kb": resync,
			}},
		Run: s.create,
	})
	steps.Register(steps.Deploy, steps.Definition{
		Step: protocol.Step{Step: "apply_configuration", Interface: "raid", Priority: 0,
			ArgsInfo: map[string]any{
				"raid_config":           map[string]any{"description": "the RAID configuration to apply (target_raid_config's shape)", "required": true},
				"delete_existing":       map[string]any{"description": "delete the existing software RAID first (default true)", "required": false},
				"assume_clean":          map[string]any{"description": "skip the initial resync (--assume-clean); only for members that were just zeroed", "required": false},
				"resync_speed_limit_kb": resync,
			}},
		Run: s.apply,
	})
}

type stepSet struct{ o Options }

func (s *stepSet) delete(ctx context.Context, _ steps.Request) (any, error) {
	return Delete(ctx, s.o)
}

func (s *stepSet) create(ctx context.Context, req steps.Request) (any, error) {
	raw, present := req.Node["target_raid_config"]
	m, ok := raw.(map[string]any)
	if !present || raw == nil || ok && len(m) == 0 {
		s.o.log().Info("raid: the node has no target_raid_config, nothing to create")
		return map[string]any{}, nil
	}
	if !ok {
		return nil, fmt.Errorf("%w: target_raid_config is not an object", ErrInvalid)
	}
	return s.build(ctx, req, m)
}

func (s *stepSet) apply(ctx context.Context, req steps.Request) (any, error) {
	m, ok := req.Step.Args["raid_config"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the raid_config argument is required and must be an object", ErrInvalid)
	}
	del, err := boolArg(req.Step.Args, "delete_existing", true)
	if err != nil {
		return nil, err
	}
	// Everything is checked before anything is deleted.
	if _, err := ParseConfig(m); err != nil {
		return nil, err
	}
	if _, err := s.options(req); err != nil {
		return nil, err
	}
	if del {
		if _, err := Delete(ctx, s.o); err != nil {
			return nil, err
		}
	}
	return s.build(ctx, req, m)
}

// options are the step set's options with the step's arguments applied.
func (s *stepSet) options(req steps.Request) (Options, error) {
	o := s.o
	var err error
	if o.AssumeClean, err = boolArg(req.Step.Args, "assume_clean", o.AssumeClean); err != nil {
		return o, err
	}
	if o.ResyncSpeedLimitKB, err = intArg(req.Step.Args, "resync_speed_limit_kb", o.ResyncSpeedLimitKB); err != nil {
		return o, err
	}
	return o, nil
}

func (s *stepSet) build(ctx context.Context, req steps.Request, raw map[string]any) (any, error) {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	o, err := s.options(req)
	if err != nil {
		return nil, err
	}
	disks, err := candidateDisks(ctx, o)
	if err != nil {
		return nil, err
	}
	skip, err := rootdevice.NodeSkipList(req.Node)
	if err != nil {
		return nil, err
	}
	disks, _ = skip.Apply(disks)
	res, err := Create(ctx, cfg, disks, o)
	if err != nil {
		return nil, err
	}
	return map[string]any{"logical_disks": res.LogicalDisks}, nil
}

func boolArg(args map[string]any, key string, def bool) (bool, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(x); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("argument %s is %v, not a Boolean", key, v)
}

func intArg(args map[string]any, key string, def int) (int, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return def, nil
	}
	n, err := integer(v)
	if s, isString := v.(string); isString {
		n, err = strconv.ParseInt(s, 10, 64)
	}
	if err != nil || n < 0 || n > 1<<31-1 {
		return 0, fmt.Errorf("argument %s is %v, not a number of KiB/s (a non-negative integer)", key, display(v))
	}
	return int(n), nil
}
