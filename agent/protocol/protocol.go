// Package protocol holds the wire types spoken between the deploy agent and the
// controller, in the exact JSON shapes of OpenStack Ironic and
// ironic-python-agent (IPA), so that real Ironic can drive our agent and our
// controller can drive a real IPA.
//
// It is the only package under agent/ that the controller may import, so it
// must stay free of agent internals: plain structs, constants and tiny helpers.
//
// Sources (see /work/shared/reference/ironic.md §3 and §7 and the captured
// samples in reference/ironic-samples/):
//   - Ironic  ironic/api/controllers/v1/ramdisk.py   lookup + heartbeat API
//   - IPA     ironic_python_agent/ironic_api_client.py  lookup + heartbeat client
//   - IPA     ironic_python_agent/api/app.py         the command API on :9999
//   - IPA     ironic_python_agent/extensions/base.py command results
//   - IPA     ironic_python_agent/errors.py          error objects
//   - IPA     ironic_python_agent/inspector.py, hardware.py  inventory
package protocol

import (
	"encoding/json"
	"strings"
)

// HTTP header and API constants.
const (
	// APIVersionHeader carries the Ironic microversion on every request.
	APIVersionHeader = "X-OpenStack-Ironic-API-Version"

	// LookupAPIVersion is the microversion IPA asks for on lookup:
	// min(server max, 1.62). 1.62 is the first version that hands out agent
	// tokens (ironic_api_client.AGENT_TOKEN_IRONIC_VERSION).
	LookupAPIVersion = "1.62"
	// HeartbeatAPIVersion is the microversion IPA 9.4 uses for heartbeats:
	// min(server max, 1.68); 1.68 adds agent_verify_ca.
	HeartbeatAPIVersion = "1.68"
	// MinLookupAPIVersion is the oldest microversion that has /v1/lookup.
	MinLookupAPIVersion = "1.22"

	// AgentPort is IPA's default listen/advertise port (ipa-listen-port).
	AgentPort = 9999

	// AgentVersion is what the agent reports as agent_version and in
	// GET /v1/status. Ironic stores it in driver_internal_info.agent_version
	// and may gate behaviour on it, so we report the IPA release whose wire
	// behaviour we reproduce rather than our own version.
	AgentVersion = "9.4.3"
	// Implementation names this agent in logs and the inspection payload.
	Implementation = "ironlite-agent"

	// MaskedSecret is what Ironic returns instead of a secret it already
	// handed out (e.g. a second lookup's agent_token).
	MaskedSecret = "******"
	// MinTokenLength: IPA accepts a lookup token only if it is at least this
	// long (agent.process_lookup_data); Ironic's are 43 chars.
	MinTokenLength = 32
)

// Link is an Ironic/IPA hypermedia link.
type Link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
	Type string `json:"type,omitempty"`
}

// ---------------------------------------------------------------------------
// Lookup: GET /v1/lookup?addresses=<mac>,<mac>[&node_uuid=<uuid>]
// (Ironic ramdisk.py LookupController; sample lookup-200-first.json)

// LookupResponse is the 200 body of GET /v1/lookup.
type LookupResponse struct {
	Node   LookupNode   `json:"node"`
	Config LookupConfig `json:"config"`
}

// LookupNode is the restricted node view returned by lookup: Ironic returns
// only these fields (ramdisk.py _LOOKUP_RETURN_FIELDS), secrets masked.
type LookupNode struct {
	UUID               string         `json:"uuid"`
	Properties         map[string]any `json:"properties"`
	InstanceInfo       map[string]any `json:"instance_info"`
	DriverInternalInfo map[string]any `json:"driver_internal_info"`
	// TargetRAIDConfig and RAIDConfig are an ironlite addition to Ironic's
	// lookup node: the deploy writes onto the software RAID root volume
	// they describe.
	TargetRAIDConfig map[string]any `json:"target_raid_config,omitempty"`
	RAIDConfig       map[string]any `json:"raid_config,omitempty"`
	Links            []Link         `json:"links,omitempty"`
}

// LookupConfig is the "config" block of the lookup response: agent settings
// chosen by the conductor (ramdisk.py config()).
type LookupConfig struct {
	Metrics       map[string]any `json:"metrics,omitempty"`
	MetricsStatsd map[string]any `json:"metrics_statsd,omitempty"`
	// HeartbeatTimeout is [api]ramdisk_heartbeat_timeout (default 300 s); the
	// agent heartbeats every HeartbeatTimeout x U(0.3, 0.6).
	HeartbeatTimeout int `json:"heartbeat_timeout"`
	// AgentToken is the one-time secret (43 chars) on the first lookup of a
	// boot, MaskedSecret afterwards.
	AgentToken                  string   `json:"agent_token,omitempty"`
	AgentTokenRequired          bool     `json:"agent_token_required"`
	DisableDeepImageInspection  bool     `json:"disable_deep_image_inspection"`
	PermittedImageFormats       []string `json:"permitted_image_formats,omitempty"`
	EnableBiosBootloaderInstall bool     `json:"enable_bios_bootloader_install"`
	// Present only with auto-TLS; IPA then serves https with this cert.
	AgentVerifyCA string `json:"agent_verify_ca,omitempty"`
	// ReportProgress is an ironlite extension: the controller accepts the
	// agent's progress in heartbeats (HeartbeatRequest.Progress).
	ReportProgress bool `json:"ironlite_report_progress,omitempty"`
}

// TokenIssued reports whether the lookup carried a usable token (not masked,
// long enough), as IPA's process_lookup_data checks it.
func (c LookupConfig) TokenIssued() bool {
	return c.AgentToken != "" && c.AgentToken != MaskedSecret && len(c.AgentToken) >= MinTokenLength
}

// ---------------------------------------------------------------------------
// Heartbeat: POST /v1/heartbeat/{node_uuid_or_name} -> 202, empty body
// (Ironic ramdisk.py HeartbeatController; sample heartbeat-202.json)

// HeartbeatRequest is the body of POST /v1/heartbeat/{node}.
type HeartbeatRequest struct {
	// CallbackURL is the agent's command API, e.g. "http://10.0.2.15:9999".
	// Ironic pins it after the first heartbeat.
	CallbackURL string `json:"callback_url"`
	// AgentToken is the token from lookup (API >= 1.62).
	AgentToken string `json:"agent_token,omitempty"`
	// AgentVersion (API >= 1.36).
	AgentVersion string `json:"agent_version,omitempty"`
	// AgentVerifyCA is a PEM CA for an https callback (API >= 1.68).
	AgentVerifyCA string `json:"agent_verify_ca,omitempty"`
	// AgentStatus is start|end|error (API >= 1.72); IPA does not send it, the
	// anaconda ramdisk does.
	AgentStatus        string `json:"agent_status,omitempty"`
	AgentStatusMessage string `json:"agent_status_message,omitempty"`
	// Progress is an ironlite extension, sent only when the lookup config
	// has ReportProgress (real Ironic rejects unknown heartbeat fields).
	Progress *Progress `json:"ironlite_progress,omitempty"`
}

// ---------------------------------------------------------------------------
// Errors

// IronicError is the body of every Ironic API error: error_message is itself
// a JSON *string* holding a Fault (reference/ironic-observed.md gotcha 7).
type IronicError struct {
	ErrorMessage string `json:"error_message"`
}

// Fault is the WSME-style error object. Ironic nests it as a string inside
// IronicError; IPA's command API returns it directly (api/app.py
// format_exception), with faultcode "Client" for 4xx and "Server" for 5xx.
type Fault struct {
	FaultCode   string  `json:"faultcode"`
	FaultString string  `json:"faultstring"`
	DebugInfo   *string `json:"debuginfo,omitempty"`
}

// FaultMessage extracts a human-readable message from an Ironic or IPA error
// body, falling back to the raw body. It never fails: it is for logs.
func FaultMessage(body []byte) string {
	var ie IronicError
	if json.Unmarshal(body, &ie) == nil && ie.ErrorMessage != "" {
		var f Fault
		if json.Unmarshal([]byte(ie.ErrorMessage), &f) == nil && f.FaultString != "" {
			return f.FaultString
		}
		return ie.ErrorMessage
	}
	var f Fault
	if json.Unmarshal(body, &f) == nil && f.FaultString != "" {
		return f.FaultString
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// ---------------------------------------------------------------------------
// The agent's command API on :9999 (IPA api/app.py)

// Command statuses (extensions/base.py AgentCommandStatus).
const (
	StatusRunning              = "RUNNING"
	StatusSucceeded            = "SUCCEEDED"
	StatusFailed               = "FAILED"
	StatusCleanVersionMismatch = "CLEAN_VERSION_MISMATCH"
)

// CommandRequest is the body of POST /v1/commands/?wait=true|false&agent_token=...
// Name is "<extension>.<command>", e.g. "deploy.execute_deploy_step"; Params
// must be a JSON object (IPA answers 400 otherwise).
type CommandRequest struct {
	Name   string         `json:"name"`
	Params map[string]any `json:"params"`
}

// CommandResult is one command as IPA serialises it (BaseCommandResult).
// CommandName is the part after the dot. Synchronous commands come back
// finished; asynchronous ones RUNNING unless the POST had wait=true.
type CommandResult struct {
	ID            string         `json:"id"`
	CommandName   string         `json:"command_name"`
	CommandParams map[string]any `json:"command_params"`
	CommandStatus string         `json:"command_status"`
	// CommandError is set when CommandStatus is FAILED.
	CommandError *CommandError `json:"command_error"`
	// CommandResult is command specific; a plain string result is wrapped as
	// {"result": "<string>"} (sync) or {"result": "<name>: <string>"} (async).
	CommandResult any `json:"command_result"`
	// Progress is an ironlite extension: where a RUNNING long command
	// (prepare_image, erase_devices) is. Absent for other commands, so
	// IPA clients never see it.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is how far a long-running command has got (ironlite extension,
// carried by command results and, when the controller asks for it in the
// lookup config, by heartbeats).
type Progress struct {
	// Command is the running command, e.g. "standby.prepare_image".
	Command string `json:"command,omitempty"`
	// Phase names the current stage: "download", "write", "verify",
	// "configdrive", "erase".
	Phase string `json:"phase"`
	// BytesDone and BytesTotal measure the phase; BytesTotal is 0 when unknown.
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// Percent is BytesDone/BytesTotal*100, 0 when unknown.
	Percent float64 `json:"percent"`
	// BytesPerSecond is the average rate since the phase started.
	BytesPerSecond float64 `json:"bytes_per_second"`
	// ETASeconds is the estimated time left, 0 when unknown.
	ETASeconds float64 `json:"eta_seconds"`
	// ElapsedSeconds is the time since the phase started.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Devices holds per-disk progress for commands that work on several
	// disks at once (erase_devices), keyed by device path.
	Devices map[string]*Progress `json:"devices,omitempty"`
}

// Done reports whether the command has finished.
func (r CommandResult) Done() bool { return r.CommandStatus != StatusRunning }

// CommandError is IPA's serialised RESTError (errors.py): Type is the error
// class name (e.g. "CommandExecutionError", "ImageDownloadError"), Code the
// HTTP-ish status, Message the class message and Details the specifics. The
// conductor reports details, then message (agent_client.get_command_error).
type CommandError struct {
	Type    string `json:"type"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details string `json:"details"`
}

func (e *CommandError) Error() string {
	if e.Details == "" {
		return e.Message
	}
	return e.Message + ": " + e.Details
}

// CommandList is the body of GET /v1/commands/: every command since agent
// start, oldest first (the conductor looks at the last one).
type CommandList struct {
	Commands []CommandResult `json:"commands"`
}

// AgentStatus is the body of GET /v1/status.
type AgentStatus struct {
	StartedAt float64 `json:"started_at"` // unix time, float seconds
	Version   string  `json:"version"`
}

// Step is a clean/deploy step as returned by get_clean_steps /
// get_deploy_steps and sent back in execute_*_step (hardware.py).
type Step struct {
	Step            string         `json:"step"`
	Priority        int            `json:"priority"`
	Interface       string         `json:"interface"`
	RebootRequested bool           `json:"reboot_requested"`
	Abortable       bool           `json:"abortable,omitempty"`
	ArgsInfo        map[string]any `json:"argsinfo"`
	// Args is only present in execute_*_step requests.
	Args map[string]any `json:"args,omitempty"`
}

// GetStepsResult is command_result of clean.get_clean_steps (CleanSteps set)
// and deploy.get_deploy_steps (DeploySteps set). Steps are keyed by hardware
// manager name; HardwareManagerVersion is echoed back by the conductor as
// clean_version / deploy_version.
type GetStepsResult struct {
	CleanSteps             map[string][]Step `json:"clean_steps,omitempty"`
	DeploySteps            map[string][]Step `json:"deploy_steps,omitempty"`
	HardwareManagerVersion map[string]string `json:"hardware_manager_version"`
}

// CleanStepResult is command_result of clean.execute_clean_step. CleanStep
// echoes the step object exactly as the conductor sent it (IPA returns the
// dict it received; the conductor matches it against the current step).
type CleanStepResult struct {
	CleanResult any            `json:"clean_result"`
	CleanStep   map[string]any `json:"clean_step"`
}

// DeployStepResult is command_result of deploy.execute_deploy_step; see
// CleanStepResult.
type DeployStepResult struct {
	DeployResult any            `json:"deploy_result"`
	DeployStep   map[string]any `json:"deploy_step"`
}

// SystemLogsResult is command_result of log.collect_system_logs: a base64
// gzipped tarball.
type SystemLogsResult struct {
	SystemLogs string `json:"system_logs"`
}
