// Package statemachine is the provision state machine of OpenStack Ironic
// 21.4 (the 2023.1 "Antelope" release), expressed as plain data plus lookup
// functions.
//
// The states, their FSM "target" states, the named state sets and the
// transition table were transcribed from Ironic 21.4.4's
// ironic/common/states.py (as summarised in sections 1.1-1.6 of the project's
// Ironic reference, /work/shared/reference/ironic.md). The API verbs of
// PUT /v1/nodes/{node}/states/provision and their minimum microversions come
// from VERBS in states.py and MIN_VERB_VERSIONS in
// ironic/api/controllers/v1/utils.py. SYNC_EXCLUDED_STATES comes from
// ironic/conductor/manager.py (reference section 8.1).
//
// Newer Ironic releases add more states and events (deploy hold, clean hold,
// servicing, the unhold and service verbs, abort from wait call-back,
// inspect wait --resume--> inspecting); none of them exists in 21.4 and none
// is present here.
//
// The package is deliberately free of I/O and of dependencies on the rest of
// the module: it only answers "is this transition allowed, and where does it
// lead".
package statemachine

// Provision states, spelled exactly as the Ironic API reports them in
// provision_state and target_provision_state.
const (
	// Enroll is the initial state of nodes created with API >= 1.11.
	Enroll = "enroll"
	// Verifying is the power-credential check after the manage verb from enroll.
	Verifying = "verifying"
	// Manageable is the stable state in which operators inspect, clean and adopt.
	Manageable = "manageable"
	// Inspecting is synchronous (or the start of asynchronous) inspection.
	Inspecting = "inspecting"
	// InspectWait is asynchronous (in-band) inspection; API < 1.39 shows it as inspecting.
	InspectWait = "inspect wait"
	// InspectFail is the failure state of inspection.
	InspectFail = "inspect failed"
	// Cleaning is automated or manual cleaning in progress.
	Cleaning = "cleaning"
	// CleanWait is cleaning waiting for the agent or an asynchronous clean step.
	CleanWait = "clean wait"
	// CleanFail is the failure state of cleaning.
	CleanFail = "clean failed"
	// Available is the stable state in which a node can be deployed
	// (shown as null to API < 1.2).
	Available = "available"
	// Deploying is a deployment in progress.
	Deploying = "deploying"
	// DeployWait is a deployment waiting for the agent or an asynchronous deploy step.
	DeployWait = "wait call-back"
	// DeployFail is the failure state of deployment.
	DeployFail = "deploy failed"
	// Active is the stable state of a deployed node.
	Active = "active"
	// Deleting is tear-down in progress.
	Deleting = "deleting"
	// Error is the stable state reached when tear-down fails.
	Error = "error"
	// Adopting is adoption of an already-deployed node in progress.
	Adopting = "adopting"
	// AdoptFail is the failure state of adoption.
	AdoptFail = "adopt failed"
	// Rescuing is a rescue in progress.
	Rescuing = "rescuing"
	// RescueWait is a rescue waiting for the agent.
	RescueWait = "rescue wait"
	// Rescue is the stable state of a node booted into the rescue ramdisk.
	Rescue = "rescue"
	// RescueFail is the failure state of rescue.
	RescueFail = "rescue failed"
	// Unrescuing is an unrescue in progress.
	Unrescuing = "unrescuing"
	// UnrescueFail is the failure state of unrescue.
	UnrescueFail = "unrescue failed"
)

// Event is an FSM event name as used by Ironic's states.py.
type Event string

// FSM events of Ironic 21.4.
const (
	// EvDeploy starts a deployment (API verbs active and deploy).
	EvDeploy Event = "deploy"
	// EvManage moves a node to manageable (via verifying from enroll).
	EvManage Event = "manage"
	// EvProvide starts automated cleaning towards available.
	EvProvide Event = "provide"
	// EvInspect starts inspection.
	EvInspect Event = "inspect"
	// EvClean starts manual cleaning (from manageable) or cleaning after tear-down (from deleting).
	EvClean Event = "clean"
	// EvRebuild redeploys a node.
	EvRebuild Event = "rebuild"
	// EvDelete starts tear-down (API verbs deleted and undeploy).
	EvDelete Event = "delete"
	// EvAbort aborts a wait state.
	EvAbort Event = "abort"
	// EvAdopt starts adoption.
	EvAdopt Event = "adopt"
	// EvRescue starts a rescue.
	EvRescue Event = "rescue"
	// EvUnrescue starts an unrescue.
	EvUnrescue Event = "unrescue"
	// EvDone is the internal event for successful completion of a transient state.
	EvDone Event = "done"
	// EvFail is the internal event for failure of a transient state.
	EvFail Event = "fail"
	// EvWait is the internal event for entering a wait state.
	EvWait Event = "wait"
	// EvResume is the internal event for leaving a wait state to continue work.
	EvResume Event = "resume"
)

// Transition is one edge of the provision state machine: From --Event--> To.
type Transition struct {
	From  string
	Event Event
	To    string
}

// transitions is Ironic 21.4's table, in the order in which states.py
// registers it (reference section 1.3).
var transitions = []Transition{
	{Available, EvDeploy, Deploying},
	{Deploying, EvFail, DeployFail},
	{DeployFail, EvRebuild, Deploying},
	{DeployFail, EvDeploy, Deploying},
	{Deploying, EvWait, DeployWait},
	{DeployWait, EvResume, Deploying},
	{DeployWait, EvFail, DeployFail},
	{Deploying, EvDone, Active},
	{Active, EvRebuild, Deploying},
	{Active, EvDelete, Deleting},
	{DeployWait, EvDelete, Deleting},
	{DeployFail, EvDelete, Deleting},
	{Deleting, EvFail, Error},
	{Deleting, EvClean, Cleaning},
	{Cleaning, EvDone, Available},
	{Cleaning, EvFail, CleanFail},
	{CleanWait, EvFail, CleanFail},
	{CleanWait, EvAbort, CleanFail},
	{Cleaning, EvWait, CleanWait},
	{CleanWait, EvResume, Cleaning},
	{CleanFail, EvManage, Manageable},
	{Manageable, EvProvide, Cleaning},
	{Manageable, EvClean, Cleaning},
	{Cleaning, EvManage, Manageable}, // end of manual cleaning
	{Available, EvManage, Manageable},
	{Error, EvRebuild, Deploying},
	{Error, EvDelete, Deleting},
	{Manageable, EvInspect, Inspecting},
	{Inspecting, EvDone, Manageable},
	{Inspecting, EvFail, InspectFail},
	{Inspecting, EvWait, InspectWait},
	{InspectWait, EvDone, Manageable},
	{InspectWait, EvFail, InspectFail},
	{InspectWait, EvAbort, InspectFail},
	{InspectFail, EvManage, Manageable},
	{InspectFail, EvInspect, Inspecting},
	{Active, EvRescue, Rescuing},
	{Rescuing, EvDone, Rescue},
	{Rescuing, EvWait, RescueWait},
	{RescueWait, EvResume, Rescuing},
	{Rescue, EvRescue, Rescuing},
	{Rescue, EvDelete, Deleting},
	{RescueWait, EvFail, RescueFail},
	{Rescuing, EvFail, RescueFail},
	{RescueWait, EvAbort, RescueFail},
	{RescueFail, EvRescue, Rescuing},
	{RescueFail, EvUnrescue, Unrescuing},
	{RescueFail, EvDelete, Deleting},
	{RescueWait, EvDelete, Deleting},
	{Rescue, EvUnrescue, Unrescuing},
	{Unrescuing, EvDone, Active},
	{Unrescuing, EvFail, UnrescueFail},
	{UnrescueFail, EvRescue, Rescuing},
	{UnrescueFail, EvUnrescue, Unrescuing},
	{UnrescueFail, EvDelete, Deleting},
	{Enroll, EvManage, Verifying},
	{Verifying, EvDone, Manageable},
	{Verifying, EvFail, Enroll},
	{Manageable, EvAdopt, Adopting},
	{Adopting, EvDone, Active},
	{Adopting, EvFail, AdoptFail},
	{AdoptFail, EvAdopt, Adopting},
	{AdoptFail, EvManage, Manageable},
	// ironlite extension, after the 21.4 table: Ironic 2026.1 (API 1.110)
	// added abort in wait call-back; ironlite allows it at any abort
	// microversion.
	{DeployWait, EvAbort, DeployFail},
}

// stateInfo describes one state: its FSM target ("" for stable states).
type stateInfo struct {
	name   string
	target string
}

// states lists every 21.4 provision state in the order of reference
// section 1.1, with its FSM target state.
var states = []stateInfo{
	{Enroll, ""},
	{Verifying, Manageable},
	{Manageable, ""},
	{Inspecting, Manageable},
	{InspectWait, Manageable},
	{InspectFail, Manageable},
	{Cleaning, Available},
	{CleanWait, Available},
	{CleanFail, Available},
	{Available, ""},
	{Deploying, Active},
	{DeployWait, Active},
	{DeployFail, Active},
	{Active, ""},
	{Deleting, Available},
	{Error, ""},
	{Adopting, Active},
	{AdoptFail, Active},
	{Rescuing, Rescue},
	{RescueWait, Rescue},
	{Rescue, ""},
	{RescueFail, Rescue},
	{Unrescuing, Active},
	{UnrescueFail, Active},
}

type edgeKey struct {
	from string
	ev   Event
}

var (
	edges   = make(map[edgeKey]string, len(transitions))
	targets = make(map[string]string, len(states))
)

func init() {
	for _, s := range states {
		targets[s.name] = s.target
	}
	for _, t := range transitions {
		k := edgeKey{t.From, t.Event}
		if _, dup := edges[k]; dup {
			panic("statemachine: duplicate transition " + t.From + " --" + string(t.Event) + "-->")
		}
		if _, ok := targets[t.From]; !ok {
			panic("statemachine: unknown state " + t.From)
		}
		if _, ok := targets[t.To]; !ok {
			panic("statemachine: unknown state " + t.To)
		}
		edges[k] = t.To
	}
}

// Transitions returns a copy of Ironic 21.4's complete transition table, in
// the order in which states.py registers it.
func Transitions() []Transition {
	out := make([]Transition, len(transitions))
	copy(out, transitions)
	return out
}

// Next returns the state that event ev leads to from state from, and whether
// the event is actionable in that state at all. Unknown states and events
// are never actionable.
func Next(from string, ev Event) (to string, ok bool) {
	to, ok = edges[edgeKey{from, ev}]
	return to, ok
}

// Valid reports whether state is a known Ironic 21.4 provision state name.
// Verb-only names such as "deleted" or "rebuild" and the unused
// "deploy complete" are not states.
func Valid(state string) bool {
	_, ok := targets[state]
	return ok
}

// States returns all provision state names (a fresh slice), in the order of
// the reference's state table.
func States() []string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = s.name
	}
	return out
}

// Target returns the FSM "target" of state: the stable state a node in that
// state is heading for, as written to target_provision_state by
// TaskManager.process_event (e.g. verifying -> manageable, deploying ->
// active, clean wait -> available, rescuing -> rescue). It returns "" for
// stable states and unknown names.
//
// Callers that start manual cleaning must override the target of cleaning,
// clean wait and clean failed with manageable themselves, as Ironic does by
// passing target_state explicitly.
func Target(state string) string {
	return targets[state]
}

// IsStable reports whether s is in STABLE_STATES: enroll, manageable,
// available, active, error, rescue.
func IsStable(s string) bool {
	switch s {
	case Enroll, Manageable, Available, Active, Error, Rescue:
		return true
	}
	return false
}

// IsFailure reports whether s is in FAILURE_STATES: deploy failed,
// clean failed, inspect failed, rescue failed, unrescue failed, adopt failed.
// Note that error is a stable state, not a failure state.
func IsFailure(s string) bool {
	switch s {
	case DeployFail, CleanFail, InspectFail, RescueFail, UnrescueFail, AdoptFail:
		return true
	}
	return false
}

// InUpdateAllowed reports whether s is in UPDATE_ALLOWED_STATES: the states
// in which PATCH of a node is allowed although a target provision state is
// set (deploy failed, inspecting, inspect failed, inspect wait, clean failed,
// error, verifying, adopt failed, rescue failed, unrescue failed).
func InUpdateAllowed(s string) bool {
	switch s {
	case DeployFail, Inspecting, InspectFail, InspectWait, CleanFail,
		Error, Verifying, AdoptFail, RescueFail, UnrescueFail:
		return true
	}
	return false
}

// InDeleteAllowed reports whether a node in state s may be deleted:
// DELETE_ALLOWED_STATES (manageable, enroll, adopt failed) plus available,
// which Ironic allows under its default
// [conductor]allow_deleting_available_nodes=True. Callers that implement that
// option set to false must refuse available themselves; callers must also
// allow any state when the node is in maintenance.
func InDeleteAllowed(s string) bool {
	switch s {
	case Manageable, Enroll, AdoptFail, Available:
		return true
	}
	return false
}

// InLookupAllowed reports whether s is in LOOKUP_ALLOWED_STATES, the states
// in which the agent lookup endpoint finds a node: deploying, wait call-back,
// cleaning, clean wait, inspecting, inspect wait, rescuing, rescue wait.
func InLookupAllowed(s string) bool {
	switch s {
	case Deploying, DeployWait, Cleaning, CleanWait, Inspecting, InspectWait, Rescuing, RescueWait:
		return true
	}
	return false
}

// InFastTrackLookupAllowed reports whether s is in
// FASTTRACK_LOOKUP_ALLOWED_STATES: LOOKUP_ALLOWED_STATES plus enroll,
// manageable and available.
func InFastTrackLookupAllowed(s string) bool {
	switch s {
	case Enroll, Manageable, Available:
		return true
	}
	return InLookupAllowed(s)
}

// InSyncExcluded reports whether s is in SYNC_EXCLUDED_STATES, the states
// skipped by the periodic power state sync: wait call-back, clean wait,
// enroll, adopt failed.
func InSyncExcluded(s string) bool {
	switch s {
	case DeployWait, CleanWait, Enroll, AdoptFail:
		return true
	}
	return false
}

// stuck maps STUCK_STATES_TREATED_AS_FAIL to the state their "fail" event
// leads to.
var stuck = map[string]string{
	Deploying:  DeployFail,
	Cleaning:   CleanFail,
	Verifying:  Enroll,
	Inspecting: InspectFail,
	Adopting:   AdoptFail,
	Rescuing:   RescueFail,
	Unrescuing: UnrescueFail,
	Deleting:   Error,
}

// StuckFailState reports, for a state in STUCK_STATES_TREATED_AS_FAIL
// (deploying, cleaning, verifying, inspecting, adopting, rescuing,
// unrescuing, deleting), the state that a node left there by a dead
// controller is moved to on start-up (the "fail" transition: deploy failed,
// clean failed, enroll, inspect failed, adopt failed, rescue failed,
// unrescue failed, error), and true. For every other state, including the
// wait states (wait call-back, clean wait, inspect wait, rescue wait) which
// survive restarts and are handled by their timeouts, it returns "", false.
func StuckFailState(s string) (string, bool) {
	to, ok := stuck[s]
	return to, ok
}

// Verb is one target accepted by PUT /v1/nodes/{node}/states/provision.
type Verb struct {
	// Target is the value of the "target" field of the request body.
	Target string
	// Event is the FSM event the verb fires.
	Event Event
	// MinMinor is the minimum API microversion minor N (version 1.N) that
	// accepts the verb; older versions get 406.
	MinMinor int
}

// AbortInspectWaitMinMinor is the minimum API microversion minor for the
// abort verb on a node in inspect wait (1.41); abort in clean wait and
// rescue wait needs only 1.13. The API layer checks it.
const AbortInspectWaitMinMinor = 41

// verbs lists the provision verbs of Ironic 21.4 (reference section 1.2).
var verbs = []Verb{
	{"manage", EvManage, 4},
	{"provide", EvProvide, 4},
	{"inspect", EvInspect, 6},
	{"clean", EvClean, 15},
	{"active", EvDeploy, 1},
	{"deploy", EvDeploy, 73},  // alias of active
	{"rebuild", EvRebuild, 1}, // configdrive on rebuild needs 1.35
	{"deleted", EvDelete, 1},
	{"undeploy", EvDelete, 73}, // alias of deleted
	{"abort", EvAbort, 13},     // in inspect wait: AbortInspectWaitMinMinor (1.41)
	{"adopt", EvAdopt, 17},
	{"rescue", EvRescue, 38},
	{"unrescue", EvUnrescue, 38},
}

// LookupVerb returns the provision verb whose API target is target. Note
// that abort on a node in inspect wait needs API 1.41
// (AbortInspectWaitMinMinor), not the 1.13 recorded in MinMinor; the API
// layer must check that.
func LookupVerb(target string) (Verb, bool) {
	for _, v := range verbs {
		if v.Target == target {
			return v, true
		}
	}
	return Verb{}, false
}

// Verbs returns a copy of all provision verbs of Ironic 21.4 in the order
// manage, provide, inspect, clean, active, deploy, rebuild, deleted,
// undeploy, abort, adopt, rescue, unrescue.
func Verbs() []Verb {
	out := make([]Verb, len(verbs))
	copy(out, verbs)
	return out
}
