package agent

import (
	"math"
	"time"

	"github.com/ironlite/ironlite/controller/model"
)

// driver_internal_info keys of ironlite's additive deploy and cleaning
// records (documented in the README's extensions table).
const (
	// deployKey / cleanKey: {"phase", "phase_started_at", "started_at",
	// "timings": {"boot": s, "write": s, "reboot": s, "total": s}}. Kept
	// after the flow ends, so an operator sees how long each phase took.
	deployKey = "ironlite_deploy"
	cleanKey  = "ironlite_clean"
)

// Phases of a flow, as recorded in timings.
const (
	phaseBoot   = "boot"   // power on to the agent's first heartbeat
	phaseWrite  = "write"  // prepare_image: download, write, verify, config drive
	phaseClean  = "clean"  // the clean steps
	phaseReboot = "reboot" // partition UUIDs, boot device, power off and on
	phaseDone   = "done"
)

func now() time.Time { return time.Now().UTC() }

func stamp(t time.Time) string { return t.Format(time.RFC3339Nano) }

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*100) / 100 }

// startFlow resets the record under key and starts its first phase.
func startFlow(n *model.Node, key, phase string) {
	t := stamp(now())
	internal(n)[key] = map[string]any{"phase": phase, "phase_started_at": t, "started_at": t, "timings": map[string]any{}}
}

func flowOf(n *model.Node, key string) map[string]any {
	f, ok := internal(n)[key].(map[string]any)
	if !ok {
		startFlow(n, key, "")
		f = internal(n)[key].(map[string]any)
	}
	if _, ok := f["timings"].(map[string]any); !ok {
		f["timings"] = map[string]any{}
	}
	return f
}

// nextPhase records how long the current phase took and starts phase.
func nextPhase(n *model.Node, key, phase string) {
	f := flowOf(n, key)
	t := now()
	if cur, _ := f["phase"].(string); cur != "" && cur != phase {
		if started, err := time.Parse(time.RFC3339Nano, model.Str(f, "phase_started_at")); err == nil {
			f["timings"].(map[string]any)[cur] = seconds(t.Sub(started))
		}
	}
	f["phase"], f["phase_started_at"] = phase, stamp(t)
}

// endFlow closes the last phase and records the total.
func endFlow(n *model.Node, key string) {
	nextPhase(n, key, phaseDone)
	f := flowOf(n, key)
	if started, err := time.Parse(time.RFC3339Nano, model.Str(f, "started_at")); err == nil {
		f["timings"].(map[string]any)["total"] = seconds(now().Sub(started))
	}
	delete(f, "phase_started_at")
}

// abandonFlow marks a failed or aborted flow's record.
func abandonFlow(n *model.Node) {
	for _, key := range []string{deployKey, cleanKey} {
		if f, ok := internal(n)[key].(map[string]any); ok && f["phase"] != phaseDone {
			f["phase"] = "failed"
			delete(f, "phase_started_at")
		}
	}
}
