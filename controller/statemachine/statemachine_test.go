package statemachine

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// referenceTable is section 1.3 of the Ironic reference, copied verbatim
// (two transitions per line, left column first). The tests parse it instead
// of reusing the package's table, so a typo in either shows up.
const referenceTable = `
available   --deploy--> deploying        deploying  --fail--> deploy failed
deploy failed --rebuild--> deploying     deploy failed --deploy--> deploying
deploying   --wait--> wait call-back     wait call-back --resume--> deploying
wait call-back --fail--> deploy failed   deploying  --done--> active
active      --rebuild--> deploying       active     --delete--> deleting
wait call-back --delete--> deleting      deploy failed --delete--> deleting
deleting    --fail--> error              deleting   --clean--> cleaning
cleaning    --done--> available          cleaning   --fail--> clean failed
clean wait  --fail--> clean failed       clean wait --abort--> clean failed
cleaning    --wait--> clean wait         clean wait --resume--> cleaning
clean failed --manage--> manageable      manageable --provide--> cleaning
manageable  --clean--> cleaning          cleaning   --manage--> manageable   (end of manual clean)
available   --manage--> manageable
error       --rebuild--> deploying       error      --delete--> deleting
manageable  --inspect--> inspecting      inspecting --done--> manageable
inspecting  --fail--> inspect failed     inspecting --wait--> inspect wait
inspect wait --done--> manageable        inspect wait --fail--> inspect failed
inspect wait --abort--> inspect failed   inspect failed --manage--> manageable
inspect failed --inspect--> inspecting
active      --rescue--> rescuing         rescuing   --done--> rescue
rescuing    --wait--> rescue wait        rescue wait --resume--> rescuing
rescue      --rescue--> rescuing         rescue     --delete--> deleting
rescue wait --fail--> rescue failed      rescuing   --fail--> rescue failed
rescue wait --abort--> rescue failed     rescue failed --rescue--> rescuing
rescue failed --unrescue--> unrescuing   rescue failed --delete--> deleting
rescue wait --delete--> deleting         rescue     --unrescue--> unrescuing
unrescuing  --done--> active             unrescuing --fail--> unrescue failed
unrescue failed --rescue--> rescuing     unrescue failed --unrescue--> unrescuing
unrescue failed --delete--> deleting
enroll      --manage--> verifying        verifying  --done--> manageable
verifying   --fail--> enroll
manageable  --adopt--> adopting          adopting   --done--> active
adopting    --fail--> adopt failed       adopt failed --adopt--> adopting
adopt failed --manage--> manageable
`

// allStates is the state column of reference section 1.1 (21.4 only).
var allStates = []string{
	"enroll", "verifying", "manageable", "inspecting", "inspect wait", "inspect failed",
	"cleaning", "clean wait", "clean failed", "available",
	"deploying", "wait call-back", "deploy failed", "active", "deleting", "error",
	"adopting", "adopt failed", "rescuing", "rescue wait", "rescue", "rescue failed",
	"unrescuing", "unrescue failed",
}

// allEvents are all FSM events of 21.4, spelled by hand.
var allEvents = []Event{
	"deploy", "manage", "provide", "inspect", "clean", "rebuild", "delete", "abort",
	"adopt", "rescue", "unrescue", "done", "fail", "wait", "resume",
}

// parseReference turns referenceTable into transitions, left column first.
func parseReference(t *testing.T) []Transition {
	t.Helper()
	re := regexp.MustCompile(`([a-z][a-z -]*?)\s*--([a-z]+)-->\s*([a-z][a-z-]*(?: (?:wait|failed|call-back))?)`)
	var out []Transition
	for _, line := range strings.Split(referenceTable, "\n") {
		for _, m := range re.FindAllStringSubmatch(line, -1) {
			out = append(out, Transition{From: strings.TrimSpace(m[1]), Event: Event(m[2]), To: m[3]})
		}
	}
	if len(out) != 63 {
		t.Fatalf("parsed %d transitions from the reference text, want 63", len(out))
	}
	return out
}

func TestConstantSpelling(t *testing.T) {
	got := []string{
		Enroll, Verifying, Manageable, Inspecting, InspectWait, InspectFail,
		Cleaning, CleanWait, CleanFail, Available,
		Deploying, DeployWait, DeployFail, Active, Deleting, Error,
		Adopting, AdoptFail, Rescuing, RescueWait, Rescue, RescueFail,
		Unrescuing, UnrescueFail,
	}
	if !reflect.DeepEqual(got, allStates) {
		t.Errorf("state constants = %q, want %q", got, allStates)
	}
	gotEv := []Event{
		EvDeploy, EvManage, EvProvide, EvInspect, EvClean, EvRebuild, EvDelete, EvAbort,
		EvAdopt, EvRescue, EvUnrescue, EvDone, EvFail, EvWait, EvResume,
	}
	if !reflect.DeepEqual(gotEv, allEvents) {
		t.Errorf("event constants = %q, want %q", gotEv, allEvents)
	}
}

func TestStates(t *testing.T) {
	if got := States(); !reflect.DeepEqual(got, allStates) {
		t.Errorf("States() = %q, want %q", got, allStates)
	}
	s := States()
	s[0] = "mutated"
	if States()[0] != "enroll" {
		t.Error("States() does not return a copy")
	}
	for _, st := range allStates {
		if !Valid(st) {
			t.Errorf("Valid(%q) = false", st)
		}
	}
	for _, st := range []string{
		"", "Enroll", "ACTIVE", " active", "deploy complete", "deleted", "rebuild", "undeploy",
		"deploy hold", "clean hold", "servicing", "service wait", "service failed", "nostate",
		"inspect", "wait callback",
	} {
		if Valid(st) {
			t.Errorf("Valid(%q) = true, want false", st)
		}
	}
}

// extensions are the transitions ironlite adds after the 21.4 table.
var extensions = []Transition{{DeployWait, EvAbort, DeployFail}}

func expected(t *testing.T) []Transition { return append(parseReference(t), extensions...) }

func TestTransitionsMatchReference(t *testing.T) {
	want := expected(t)
	got := Transitions()
	if len(got) != len(want) {
		t.Fatalf("len(Transitions()) = %d, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Transitions()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	got[0] = Transition{"x", "y", "z"}
	if Transitions()[0] != want[0] {
		t.Error("Transitions() does not return a copy")
	}
}

func TestNextAllowed(t *testing.T) {
	for _, tr := range expected(t) {
		t.Run(tr.From+"/"+string(tr.Event), func(t *testing.T) {
			to, ok := Next(tr.From, tr.Event)
			if !ok || to != tr.To {
				t.Errorf("Next(%q, %q) = %q, %v; want %q, true", tr.From, tr.Event, to, ok, tr.To)
			}
		})
	}
}

func TestNextRefused(t *testing.T) {
	allowed := map[[2]string]bool{}
	for _, tr := range expected(t) {
		allowed[[2]string{tr.From, string(tr.Event)}] = true
	}
	refused := 0
	for _, s := range allStates {
		for _, ev := range allEvents {
			if allowed[[2]string{s, string(ev)}] {
				continue
			}
			refused++
			if to, ok := Next(s, ev); ok || to != "" {
				t.Errorf("Next(%q, %q) = %q, %v; want refused", s, ev, to, ok)
			}
		}
	}
	if want := len(allStates)*len(allEvents) - 63 - len(extensions); refused != want {
		t.Errorf("checked %d refused pairs, want %d", refused, want)
	}
	// Unknown states and events, and events of newer releases.
	for _, c := range []struct {
		s  string
		ev Event
	}{
		{"", EvManage}, {"Enroll", EvManage}, {"deploy complete", EvDone},
		{Available, ""}, {Available, "Deploy"}, {Available, "active"},
		{Active, "deleted"}, {Active, "undeploy"}, {Active, "service"},
		{Deploying, "hold"}, {InspectWait, "resume"},
		{"deploy hold", "unhold"},
	} {
		if to, ok := Next(c.s, c.ev); ok {
			t.Errorf("Next(%q, %q) = %q, true; want refused", c.s, c.ev, to)
		}
	}
}

func TestTarget(t *testing.T) {
	want := map[string]string{
		"enroll":          "",
		"verifying":       "manageable",
		"manageable":      "",
		"inspecting":      "manageable",
		"inspect wait":    "manageable",
		"inspect failed":  "manageable",
		"cleaning":        "available",
		"clean wait":      "available",
		"clean failed":    "available",
		"available":       "",
		"deploying":       "active",
		"wait call-back":  "active",
		"deploy failed":   "active",
		"active":          "",
		"deleting":        "available",
		"error":           "",
		"adopting":        "active",
		"adopt failed":    "active",
		"rescuing":        "rescue",
		"rescue wait":     "rescue",
		"rescue":          "",
		"rescue failed":   "rescue",
		"unrescuing":      "active",
		"unrescue failed": "active",
	}
	if len(want) != len(allStates) {
		t.Fatalf("test table covers %d states, want %d", len(want), len(allStates))
	}
	for _, s := range allStates {
		if got := Target(s); got != want[s] {
			t.Errorf("Target(%q) = %q, want %q", s, got, want[s])
		}
		// A state has no target exactly when it is stable.
		if (Target(s) == "") != IsStable(s) {
			t.Errorf("Target(%q) = %q but IsStable = %v", s, Target(s), IsStable(s))
		}
	}
	for _, s := range []string{"", "bogus", "deleted", "deploy hold"} {
		if got := Target(s); got != "" {
			t.Errorf("Target(%q) = %q, want \"\"", s, got)
		}
	}
}

func TestSets(t *testing.T) {
	sets := []struct {
		name    string
		fn      func(string) bool
		members []string
	}{
		{"IsStable", IsStable, []string{"enroll", "manageable", "available", "active", "error", "rescue"}},
		{"IsFailure", IsFailure, []string{"deploy failed", "clean failed", "inspect failed", "rescue failed", "unrescue failed", "adopt failed"}},
		{"InUpdateAllowed", InUpdateAllowed, []string{"deploy failed", "inspecting", "inspect failed", "inspect wait", "clean failed", "error", "verifying", "adopt failed", "rescue failed", "unrescue failed"}},
		{"InDeleteAllowed", InDeleteAllowed, []string{"manageable", "enroll", "adopt failed", "available"}},
		{"InLookupAllowed", InLookupAllowed, []string{"deploying", "wait call-back", "cleaning", "clean wait", "inspecting", "inspect wait", "rescuing", "rescue wait"}},
		{"InFastTrackLookupAllowed", InFastTrackLookupAllowed, []string{"deploying", "wait call-back", "cleaning", "clean wait", "inspecting", "inspect wait", "rescuing", "rescue wait", "enroll", "manageable", "available"}},
		{"InSyncExcluded", InSyncExcluded, []string{"wait call-back", "clean wait", "enroll", "adopt failed"}},
	}
	for _, set := range sets {
		t.Run(set.name, func(t *testing.T) {
			for _, m := range set.members {
				if !slices.Contains(allStates, m) {
					t.Fatalf("test bug: %q is not a state", m)
				}
			}
			for _, s := range allStates {
				want := slices.Contains(set.members, s)
				if got := set.fn(s); got != want {
					t.Errorf("%s(%q) = %v, want %v", set.name, s, got, want)
				}
			}
			for _, s := range []string{"", "bogus", "deleted", "ACTIVE"} {
				if set.fn(s) {
					t.Errorf("%s(%q) = true, want false", set.name, s)
				}
			}
		})
	}

	// STABLE_STATES, UNSTABLE_STATES and FAILURE_STATES partition the states.
	unstable := []string{"deploying", "wait call-back", "cleaning", "clean wait", "verifying", "deleting",
		"inspecting", "inspect wait", "adopting", "rescuing", "rescue wait", "unrescuing"}
	for _, s := range allStates {
		n := 0
		if IsStable(s) {
			n++
		}
		if IsFailure(s) {
			n++
		}
		if slices.Contains(unstable, s) {
			n++
		}
		if n != 1 {
			t.Errorf("state %q is in %d of stable/unstable/failure, want exactly 1", s, n)
		}
	}
}

func TestStuckFailState(t *testing.T) {
	want := map[string]string{
		"deploying":  "deploy failed",
		"cleaning":   "clean failed",
		"verifying":  "enroll",
		"inspecting": "inspect failed",
		"adopting":   "adopt failed",
		"rescuing":   "rescue failed",
		"unrescuing": "unrescue failed",
		"deleting":   "error",
	}
	for _, s := range allStates {
		got, ok := StuckFailState(s)
		w, stuck := want[s]
		if ok != stuck || got != w {
			t.Errorf("StuckFailState(%q) = %q, %v; want %q, %v", s, got, ok, w, stuck)
		}
		if stuck {
			// Ironic moves stuck nodes with the "fail" event.
			if to, ok := Next(s, EvFail); !ok || to != w {
				t.Errorf("Next(%q, fail) = %q, %v; want %q (same as StuckFailState)", s, to, ok, w)
			}
		}
	}
	for _, s := range []string{"wait call-back", "clean wait", "inspect wait", "rescue wait", "", "bogus"} {
		if got, ok := StuckFailState(s); ok || got != "" {
			t.Errorf("StuckFailState(%q) = %q, %v; want \"\", false", s, got, ok)
		}
	}
}

// wantVerbs is reference section 1.2: target, event, min microversion minor,
// and the states the verb is allowed from ("Allowed from" column).
var wantVerbs = []struct {
	target string
	event  Event
	minor  int
	from   []string
}{
	{"manage", "manage", 4, []string{"enroll", "available", "clean failed", "inspect failed", "adopt failed"}},
	{"provide", "provide", 4, []string{"manageable"}},
	{"inspect", "inspect", 6, []string{"manageable", "inspect failed"}},
	{"clean", "clean", 15, []string{"manageable"}},
	{"active", "deploy", 1, []string{"available", "deploy failed"}},
	{"deploy", "deploy", 73, []string{"available", "deploy failed"}},
	{"rebuild", "rebuild", 1, []string{"active", "deploy failed", "error"}},
	{"deleted", "delete", 1, []string{"active", "wait call-back", "deploy failed", "error", "rescue", "rescue wait", "rescue failed", "unrescue failed"}},
	{"undeploy", "delete", 73, []string{"active", "wait call-back", "deploy failed", "error", "rescue", "rescue wait", "rescue failed", "unrescue failed"}},
	{"abort", "abort", 13, []string{"clean wait", "rescue wait", "inspect wait"}},
	{"adopt", "adopt", 17, []string{"manageable", "adopt failed"}},
	{"rescue", "rescue", 38, []string{"active", "rescue", "rescue failed", "unrescue failed"}},
	{"unrescue", "unrescue", 38, []string{"rescue", "rescue failed", "unrescue failed"}},
}

// internalUses are states where a verb's event is also actionable in the FSM
// but only used internally by the conductor (not listed under "Allowed from").
var internalUses = map[Event][]string{
	"manage": {"cleaning"}, // end of manual cleaning
	"clean":  {"deleting"}, // cleaning after tear-down
}

func TestVerbs(t *testing.T) {
	got := Verbs()
	if len(got) != len(wantVerbs) {
		t.Fatalf("len(Verbs()) = %d, want %d", len(got), len(wantVerbs))
	}
	for i, w := range wantVerbs {
		want := Verb{Target: w.target, Event: w.event, MinMinor: w.minor}
		if got[i] != want {
			t.Errorf("Verbs()[%d] = %+v, want %+v", i, got[i], want)
		}
		v, ok := LookupVerb(w.target)
		if !ok || v != want {
			t.Errorf("LookupVerb(%q) = %+v, %v; want %+v, true", w.target, v, ok, want)
		}
	}
	got[0].MinMinor = 99
	if Verbs()[0].MinMinor != 4 {
		t.Error("Verbs() does not return a copy")
	}
	if AbortInspectWaitMinMinor != 41 {
		t.Errorf("AbortInspectWaitMinMinor = %d, want 41", AbortInspectWaitMinMinor)
	}
	for _, target := range []string{
		"", "Manage", "ACTIVE", "delete", "done", "fail", "wait", "resume",
		"unhold", "service", "hold", "deploy complete", "available", "manageable",
	} {
		if v, ok := LookupVerb(target); ok {
			t.Errorf("LookupVerb(%q) = %+v, true; want refused", target, v)
		}
	}
}

// TestVerbsAllowedFrom cross-checks the "Allowed from" column of §1.2 with
// the transition table of §1.3.
func TestVerbsAllowedFrom(t *testing.T) {
	for _, w := range wantVerbs {
		v, ok := LookupVerb(w.target)
		if !ok {
			t.Errorf("LookupVerb(%q) refused", w.target)
			continue
		}
		wantFrom := append(slices.Clone(w.from), internalUses[v.Event]...)
		for _, e := range extensions {
			if e.Event == v.Event {
				wantFrom = append(wantFrom, e.From)
			}
		}
		for _, s := range allStates {
			_, got := Next(s, v.Event)
			if want := slices.Contains(wantFrom, s); got != want {
				t.Errorf("verb %q (event %q) actionable from %q = %v, want %v", w.target, v.Event, s, got, want)
			}
		}
	}
}

// reachable returns the set of states reachable from start via Next over
// all events of the hand-written event list.
func reachable(start string) map[string]bool {
	seen := map[string]bool{start: true}
	queue := []string{start}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, ev := range allEvents {
			if to, ok := Next(s, ev); ok && !seen[to] {
				seen[to] = true
				queue = append(queue, to)
			}
		}
	}
	return seen
}

func TestReachability(t *testing.T) {
	fromEnroll := reachable(Enroll)
	for _, s := range allStates {
		if !fromEnroll[s] {
			t.Errorf("state %q is not reachable from enroll", s)
		}
	}
	if len(fromEnroll) != len(allStates) {
		t.Errorf("reachable from enroll: %d states, want %d", len(fromEnroll), len(allStates))
	}
	// enroll is left for good: no state other than verifying (failure of the
	// credential check) leads back to it.
	for _, s := range allStates {
		if s == Enroll || s == Verifying {
			continue
		}
		if reachable(s)[Enroll] {
			t.Errorf("enroll reachable from %q", s)
		}
	}
	for _, s := range allStates {
		r := reachable(s)
		// No dead ends: every state has a way out.
		out := 0
		for _, ev := range allEvents {
			if _, ok := Next(s, ev); ok {
				out++
			}
		}
		if out == 0 {
			t.Errorf("state %q has no outgoing transition", s)
		}
		// Every non-stable state can reach the state it is heading for.
		if tgt := Target(s); tgt != "" && !r[tgt] {
			t.Errorf("state %q cannot reach its target %q", s, tgt)
		}
		// Every state can get back to available (no traps).
		if !r[Available] {
			t.Errorf("available not reachable from %q", s)
		}
		// Every transient (unstable) state finishes on done or fails on fail,
		// or is a wait state that resumes, fails or is aborted.
		if !IsStable(s) && !IsFailure(s) {
			_, done := Next(s, EvDone)
			_, fail := Next(s, EvFail)
			if !fail {
				t.Errorf("transient state %q has no fail transition", s)
			}
			_, resume := Next(s, EvResume)
			if !done && !resume && !slices.Contains([]string{"deleting"}, s) {
				t.Errorf("transient state %q has neither done nor resume", s)
			}
		}
	}
}
