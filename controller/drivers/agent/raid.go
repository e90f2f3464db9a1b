package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ironlite/ironlite/agent/filesystem"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// RAID is Ironic's "agent" raid interface (AgentRAID): the agent in the
// ramdisk builds software RAID (Linux md) from the node's
// target_raid_config in the clean steps raid.delete_configuration and
// raid.create_configuration, and the result becomes the node's
// raid_config. Validation happens here, when the target is set, so a
// malformed configuration is refused with a 400 instead of failing a
// cleaning half an hour later. The steps themselves are run by the direct
// deploy's cleaning (clean.go).
type RAID struct{}

// Properties: the agent raid interface reads no driver_info.
func (*RAID) Properties() map[string]string { return map[string]string{} }

// Validate checks the node's stored target_raid_config, if any.
func (r *RAID) Validate(n *model.Node) error {
	if len(n.TargetRAIDConfig) == 0 {
		return nil
	}
	return r.ValidateRAIDConfig(n.TargetRAIDConfig)
}

// ValidateRAIDConfig checks cfg against Ironic's RAID config schema
// (raid_config_schema.json, plus "at most one root volume") and then
// against what the agent's software RAID builds.
func (*RAID) ValidateRAIDConfig(cfg model.JSONObject) error {
	if err := ValidateRAIDSchema(cfg, extensionKeys); err != nil {
		return err
	}
	return validateSoftwareRAID(cfg)
}

// LogicalDiskProperties is what GET /v1/drivers/{driver}/raid/
// logical_disk_properties shows: the schema's properties with their
// descriptions, plus ironlite's extension keys.
func (*RAID) LogicalDiskProperties() map[string]string {
	out := SchemaLogicalDiskProperties()
	out["filesystem"] = `ironlite extension: create this filesystem on the volume after building it: "ext4", "xfs" or "vfat". Data volumes only (the root volume receives the instance image). Optional.`
	out["label"] = "ironlite extension: label of the filesystem (ext4: up to 16 bytes, xfs: 12, vfat: 11). Requires filesystem. Optional."
	return out
}

// extensionKeys are the logical disk keys ironlite accepts beyond
// Ironic's schema (data volume filesystems).
var extensionKeys = []string{"filesystem", "label"}

// RAID levels of Ironic's schema, in its order (the messages list them).
var schemaLevels = []string{"JBOD", "0", "1", "2", "5", "6", "1+0", "5+0", "6+0"}

// schemaProperties are the logical disk properties of Ironic's schema with
// its descriptions.
var schemaProperties = map[string]string{
	"raid_level":               "RAID level for the logical disk. Valid values are 'JBOD', '0', '1', '2', '5', '6', '1+0', '5+0' and '6+0'. Required.",
	"size_gb":                  "Size in GiB (Integer) for the logical disk. Use 'MAX' as size_gb if this logical disk is supposed to use the rest of the space available. Required.",
	"volume_name":              "Name of the volume to be created. If this is not specified, it will be auto-generated. Optional.",
	"is_root_volume":           "Specifies whether this disk is a root volume. By default, this is False. Optional.",
	"share_physical_disks":     "Specifies whether other logical disks can share physical disks with this logical disk. By default, this is False. Optional.",
	"disk_type":                "The type of disk preferred. Valid values are 'hdd' and 'ssd'. If this is not specified, disk type will not be a selection criterion for choosing backing physical disks. Optional.",
	"interface_type":           "The interface type of disk. Valid values are 'sata', 'scsi' and 'sas'. If this is not specified, interface type will not be a selection criterion for choosing backing physical disks. Optional.",
	"number_of_physical_disks": "Number of physical disks to use for this logical disk. By default, the driver uses the minimum number of disks required for that RAID level. Optional.",
	"controller":               "Controller to use for this logical disk. If not specified, the driver will choose a suitable RAID controller on the bare metal node. Optional.",
	"physical_disks":           "The physical disks to use for this logical disk. If not specified, the driver will choose suitable physical disks to use. Optional.",
}

// SchemaLogicalDiskProperties returns the logical disk properties of
// Ironic's RAID config schema (raid.get_logical_disk_properties).
func SchemaLogicalDiskProperties() map[string]string {
	out := make(map[string]string, len(schemaProperties)+2)
	for k, v := range schemaProperties {
		out[k] = v
	}
	return out
}

// schemaError is Ironic's InvalidParameterValue text for a schema
// violation ("RAID config validation error: <jsonschema message>"), with
// the logical disk it is about.
func schemaError(where, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if where != "" {
		msg = where + ": " + msg
	}
	return fmt.Errorf("RAID config validation error: %s", msg)
}

// ValidateRAIDSchema is Ironic's raid.validate_configuration: the JSON
// schema (messages worded as jsonschema's) and at most one root volume.
// extra names logical disk keys allowed beyond the schema.
func ValidateRAIDSchema(cfg model.JSONObject, extra []string) error {
	for _, k := range sortedKeys(cfg) {
		if k != "logical_disks" {
			return schemaError("", "Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	raw, ok := cfg["logical_disks"]
	if !ok {
		return schemaError("", "'logical_disks' is a required property")
	}
	list, ok := raw.([]any)
	if !ok {
		return schemaError("", "%s is not of type 'array'", display(raw))
	}
	if len(list) == 0 {
		return schemaError("", "[] is too short")
	}
	roots := 0
	for i, item := range list {
		where := fmt.Sprintf("logical_disks[%d]", i)
		ld, ok := item.(map[string]any)
		if !ok {
			return schemaError(where, "%s is not of type 'object'", display(item))
		}
		if err := validateLogicalDiskSchema(where, ld, extra); err != nil {
			return err
		}
		if b, _ := ld["is_root_volume"].(bool); b {
			roots++
		}
	}
	if roots > 1 {
		return fmt.Errorf("Raid config cannot have more than one root volume. %d root volumes were specified", roots)
	}
	return nil
}

func validateLogicalDiskSchema(where string, ld map[string]any, extra []string) error {
	for _, k := range sortedKeys(ld) {
		if _, known := schemaProperties[k]; !known && !slices.Contains(extra, k) {
			return schemaError(where, "Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	for _, k := range []string{"raid_level", "size_gb"} {
		if _, ok := ld[k]; !ok {
			return schemaError(where, "'%s' is a required property", k)
		}
	}
	if _, ok := ld["physical_disks"]; ok {
		if _, ok := ld["controller"]; !ok {
			return schemaError(where, "'controller' is a dependency of 'physical_disks'")
		}
	}
	if lvl, ok := ld["raid_level"].(string); !ok || !slices.Contains(schemaLevels, lvl) {
		return schemaError(where, "%s is not one of ['%s']", display(ld["raid_level"]), strings.Join(schemaLevels, "', '"))
	}
	if s, isString := ld["size_gb"].(string); isString && s != "MAX" || !isString && !isInteger(ld["size_gb"], 0) {
		return schemaError(where, "%s is not valid under any of the given schemas", display(ld["size_gb"]))
	}
	for _, k := range []string{"volume_name", "controller"} {
		if v, ok := ld[k]; ok {
			if _, isString := v.(string); !isString {
				return schemaError(where, "%s is not of type 'string'", display(v))
			}
		}
	}
	for _, k := range []string{"is_root_volume", "share_physical_disks"} {
		if v, ok := ld[k]; ok {
			if _, isBool := v.(bool); !isBool {
				return schemaError(where, "%s is not of type 'boolean'", display(v))
			}
		}
	}
	for k, allowed := range map[string][]string{"disk_type": {"hdd", "ssd"}, "interface_type": {"sata", "scsi", "sas"}} {
		if v, ok := ld[k]; ok {
			if s, _ := v.(string); !slices.Contains(allowed, s) {
				return schemaError(where, "%s is not one of ['%s']", display(v), strings.Join(allowed, "', '"))
			}
		}
	}
	if v, ok := ld["number_of_physical_disks"]; ok {
		if _, ok := asInt(v); !ok {
			return schemaError(where, "%s is not of type 'integer'", display(v))
		}
		if !isInteger(v, 1) {
			return schemaError(where, "%s is less than or equal to the minimum of 0", display(v))
		}
	}
	if v, ok := ld["physical_disks"]; ok {
		if !physicalDisksValid(v) {
			return schemaError(where, "%s is not valid under any of the given schemas", display(v))
		}
	}
	return nil
}

// physicalDisksValid is the schema's anyOf: a list of strings, or a list
// of at least two objects.
func physicalDisksValid(v any) bool {
	list, ok := v.([]any)
	if !ok {
		return false
	}
	strs, objs := 0, 0
	for _, p := range list {
		switch p.(type) {
		case string:
			strs++
		case map[string]any:
			objs++
		}
	}
	return strs == len(list) || objs == len(list) && objs >= 2
}

// Software RAID levels the agent builds and the members each needs.
var softwareLevels = map[string]int{"0": 2, "1": 2, "5": 3, "6": 4, "1+0": 4}

// mdNameRE is what mdadm accepts as an array name (the agent's rule).
var mdNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$`)

// hintNames are the device hints a physical_disks object may use (Ironic's
// root device hints).
var hintNames = []string{"name", "model", "vendor", "serial", "size", "wwn", "wwn_with_extension",
	"wwn_vendor_extension", "rotational", "hctl", "by_path"}

// labelMax is the longest filesystem label each filesystem takes.
var labelMax = map[string]int{"ext4": 16, "xfs": 12, "vfat": 11}

// validateSoftwareRAID applies what the agent's software RAID builds, on a
// config that passed the schema. IPA allows one or two logical disks with
// a RAID-1 first; ironlite allows any number, in any order, as long as the
// root volume (if any) is RAID-1 (each mirror member is then a bootable
// disk on its own) and only the last one takes the rest of the disks.
func validateSoftwareRAID(cfg model.JSONObject) error {
	list := cfg["logical_disks"].([]any)
	names := map[string]int{}
	for i, item := range list {
		ld := item.(map[string]any)
		where := fmt.Sprintf("logical_disks[%d]", i)
		if n, _ := ld["volume_name"].(string); n != "" {
			where += fmt.Sprintf(" (%q)", n)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("RAID config validation error: %s: %s", where, fmt.Sprintf(format, args...))
		}
		if ld["controller"] != "software" {
			return fail(`Software RAID configuration requires all logical disks to have 'controller'='software' (the agent raid interface builds Linux software RAID only; got %s)`, display(ld["controller"]))
		}
		lvl := ld["raid_level"].(string)
		need, ok := softwareLevels[lvl]
		if !ok {
			return fail("RAID level %q is not supported by software RAID (supported: 0, 1, 5, 6, 1+0)", lvl)
		}
		if ld["size_gb"] == "MAX" {
			if i != len(list)-1 {
				return fail(`size_gb "MAX" is only allowed on the last logical disk (it takes the rest of the member disks)`)
			}
		} else if !isInteger(ld["size_gb"], 1) {
			return fail(`size_gb must be a positive integer (GiB) or "MAX", not %s`, display(ld["size_gb"]))
		}
		root, _ := ld["is_root_volume"].(bool)
		if root && lvl != "1" {
			return fail(`the root volume must be RAID-1 (raid_level "1"), not %q: each member of a mirror is a whole copy that the firmware boots on its own`, lvl)
		}
		if v, ok := ld["volume_name"]; ok {
			name := v.(string)
			if !mdNameRE.MatchString(name) {
				return fail("volume_name %q is not usable as an md array name (1-32 letters, digits, '_', '.', '-', not starting with '.' or '-')", name)
			}
			if j, dup := names[name]; dup {
				return fail("Duplicate software RAID device name %s detected (also logical_disks[%d])", name, j)
			}
			names[name] = i
		}
		members := 0
		if v, ok := ld["physical_disks"]; ok {
			pds := v.([]any)
			for j, p := range pds {
				if err := checkPhysicalDisk(p); err != nil {
					return fail("physical_disks[%d]: %v", j, err)
				}
			}
			members = len(pds)
		}
		if v, ok := ld["number_of_physical_disks"]; ok {
			n, _ := asInt(v)
			if members > 0 && int(n) != members {
				return fail("number_of_physical_disks is %d but physical_disks lists %d disks", n, members)
			}
			members = int(n)
		}
		if members > 0 && members < need {
			return fail("RAID-%s needs at least %d member disks, got %d", lvl, need, members)
		}
		if lvl == "1+0" && members%2 != 0 {
			return fail("RAID-1+0 needs an even number of member disks, got %d", members)
		}
		if err := checkFilesystem(ld, root); err != nil {
			return fail("%v", err)
		}
	}
	return nil
}

// checkPhysicalDisk accepts a device name ("/dev/sda") or an object of
// device hints.
func checkPhysicalDisk(p any) error {
	switch x := p.(type) {
	case string:
		if x == "" {
			return fmt.Errorf("empty device name")
		}
	case map[string]any:
		if len(x) == 0 {
			return fmt.Errorf("empty device hints")
		}
		for _, k := range sortedKeys(x) {
			if !slices.Contains(hintNames, k) {
				return fmt.Errorf("unknown device hint %q (known: %s)", k, strings.Join(hintNames, ", "))
			}
		}
	}
	return nil
}

// checkFilesystem validates the ironlite extension keys of one logical
// disk.
func checkFilesystem(ld map[string]any, root bool) error {
	fsRaw, hasFS := ld["filesystem"]
	labelRaw, hasLabel := ld["label"]
	if !hasFS {
		if hasLabel {
			return fmt.Errorf("label needs filesystem (ext4, xfs or vfat)")
		}
		return nil
	}
	fs, _ := fsRaw.(string)
	limit, ok := labelMax[fs]
	if !ok {
		return fmt.Errorf("filesystem %s is not supported (ext4, xfs or vfat)", display(fsRaw))
	}
	if root {
		return fmt.Errorf("filesystem is for data volumes: the root volume receives the instance image")
	}
	if hasLabel {
		label, isString := labelRaw.(string)
		switch {
		case !isString || label == "":
			return fmt.Errorf("label must be a non-empty string, not %s", display(labelRaw))
		case len(label) > limit:
			return fmt.Errorf("label %q is longer than %s allows (%d bytes)", label, fs, limit)
		}
		// The agent formats with these rules; refuse here what it would
		// refuse in the middle of cleaning.
		if err := filesystem.ValidateLabel(fs, label); err != nil {
			return err
		}
	}
	return nil
}

// asInt returns v (as decoded from JSON, numbers as float64 or
// json.Number) as an integer; ok is false for anything else, fractions
// included.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case int:
		return int64(x), true
	case int64:
		return x, true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
	}
	return 0, false
}

// isInteger says whether v is an integer >= min.
func isInteger(v any, min int64) bool {
	i, ok := asInt(v)
	return ok && i >= min
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// display renders a JSON value the way it was given, for messages.
func display(v any) string {
	if s, ok := v.(string); ok {
		return "'" + s + "'"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// --- the raid clean steps ------------------------------------------------
//
// The direct deploy's cleaning runs raid.delete_configuration and
// raid.create_configuration in the agent like any in-band step; what is
// RAID-specific is here: which nodes get them in automated cleaning, what
// the agent is sent, and what the results do to the node.

const (
	stepRAIDDelete = "raid.delete_configuration"
	stepRAIDCreate = "raid.create_configuration"
	stepFullErase  = "deploy.erase_devices"
)

// agentRAID says whether the node's raid interface is this package's.
func (d *Direct) agentRAID(n *model.Node) bool {
	ifs, err := d.reg.Interfaces(n)
	if err != nil {
		return false
	}
	_, ok := ifs.RAID.(*RAID)
	return ok
}

// checkRAIDSteps refuses requested raid steps the node cannot run: every
// raid step needs raid_interface "agent", and create_configuration a
// target_raid_config (what is left of it after its arguments).
func (d *Direct) checkRAIDSteps(n *model.Node, steps []drivers.CleanStep) error {
	for _, s := range steps {
		if s.Interface != "raid" {
			continue
		}
		if !d.agentRAID(n) {
			return fmt.Errorf("node does not support this clean step: raid.%s (its raid_interface is %q; the raid clean steps need \"agent\")", s.Step, n.Interfaces["raid"])
		}
		if s.Interface+"."+s.Step == stepRAIDCreate {
			if _, err := filterTargetRAIDConfig(n, s.Args); err != nil {
				return err
			}
		}
	}
	return nil
}

// filterTargetRAIDConfig is Ironic's raid.filter_target_raid_config: the
// node's target_raid_config without the root volume when
// create_root_volume is false, and without the others when
// create_nonroot_volumes is false.
func filterTargetRAIDConfig(n *model.Node, args map[string]any) (map[string]any, error) {
	if len(n.TargetRAIDConfig) == 0 {
		return nil, fmt.Errorf("Node %s has no target RAID configuration.", n.UUID)
	}
	root, err := boolArg(args, "create_root_volume")
	if err != nil {
		return nil, err
	}
	nonRoot, err := boolArg(args, "create_nonroot_volumes")
	if err != nil {
		return nil, err
	}
	list, _ := n.TargetRAIDConfig["logical_disks"].([]any)
	var kept []any
	for _, ld := range list {
		m, _ := ld.(map[string]any)
		isRoot, _ := m["is_root_volume"].(bool)
		if isRoot && root || !isRoot && nonRoot {
			kept = append(kept, ld)
		}
	}
	if len(kept) == 0 {
		var skipped []string
		if !root {
			skipped = append(skipped, "skipping root volume")
		}
		if !nonRoot {
			skipped = append(skipped, "skipping non-root volumes")
		}
		return nil, fmt.Errorf("Node %s has empty target RAID configuration after %s.", n.UUID, strings.Join(skipped, " and "))
	}
	out := maps.Clone(map[string]any(n.TargetRAIDConfig))
	out["logical_disks"] = kept
	return out, nil
}

// boolArg reads an optional Boolean step argument (default true).
func boolArg(args map[string]any, key string) (bool, error) {
	switch v := args[key].(type) {
	case nil:
		return true, nil
	case bool:
		return v, nil
	case string:
		if b, err := strconv.ParseBool(v); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("the %s argument must be a Boolean, not %s", key, display(args[key]))
}

// addRAIDSteps puts the raid steps into an automated cleaning plan. A
// node with raid_interface "agent" and a target_raid_config gets
// raid.delete_configuration first and raid.create_configuration last, so
// every automated cleaning (provide, undeploy) leaves the target built on
// freshly erased disks; a node whose arrays are recorded but whose target
// was cleared gets the delete only. This is an ironlite default: Ironic
// runs them only with [deploy]delete/create_configuration_priority set.
// A priority override for a step (CleanStepPriority) takes precedence:
// the step is then placed by its priority like any other.
func (d *Direct) addRAIDSteps(n *model.Node, plan []any, offered map[string]protocol.Step,
	toMap func(protocol.Step, int, map[string]any) map[string]any) ([]any, error) {
	if !d.agentRAID(n) {
		return plan, nil
	}
	want := func(label string) (map[string]any, error) {
		s, ok := offered[label]
		if !ok {
			return nil, fmt.Errorf("clean step %s is not supported by the agent (it offers: %s); the node's RAID configuration needs it", label, strings.Join(sortedKeys(offered), ", "))
		}
		return toMap(s, s.Priority, nil), nil
	}
	if _, set := d.cfg.CleanStepPriority[stepRAIDDelete]; !set && (len(n.TargetRAIDConfig) > 0 || len(n.RAIDConfig) > 0) {
		del, err := want(stepRAIDDelete)
		if err != nil {
			return nil, err
		}
		plan = append([]any{del}, plan...)
	}
	if _, set := d.cfg.CleanStepPriority[stepRAIDCreate]; !set && len(n.TargetRAIDConfig) > 0 {
		create, err := want(stepRAIDCreate)
		if err != nil {
			return nil, err
		}
		plan = append(plan, create)
	}
	return plan, nil
}

// keepZeroed are the steps that leave disks zeroed by a full erase as they
// were: after them, arrays may still skip their initial resync.
var keepZeroed = map[string]bool{"deploy.erase_devices_metadata": true, "deploy.erase_pstore": true,
	stepRAIDDelete: true, "deploy.burnin_cpu": true, "deploy.burnin_memory": true, "deploy.burnin_network": true}

// assumeClean sets assume_clean=true on raid.create_configuration steps
// that follow a full erase (deploy.erase_devices) with nothing writing
// to the disks in between, unless the step's arguments say otherwise: the
// members are all zeros, so mirrors agree and parity is right, and the
// initial resync would only rewrite zeros (an ironlite default; Ironic
// has no such argument).
func assumeClean(plan []any) {
	erased := false
	for _, p := range plan {
		m, _ := p.(map[string]any)
		switch label := stepLabel(m); {
		case label == stepFullErase:
			erased = true
		case label == stepRAIDCreate:
			args, _ := m["args"].(map[string]any)
			if args == nil {
				args = map[string]any{}
				m["args"] = args
			}
			if _, set := args["assume_clean"]; !set && erased {
				args["assume_clean"] = true
			}
			erased = false
		case !keepZeroed[label]:
			erased = false
		}
	}
}

// stepNode is the node dict sent with a clean step: for
// raid.create_configuration, target_raid_config is the one its arguments
// select (checked again here: it may have been cleared since cleaning
// began).
func stepNode(n *model.Node, s map[string]any) (map[string]any, error) {
	node := nodeParam(n)
	if stepLabel(s) == stepRAIDCreate {
		args, _ := s["args"].(map[string]any)
		target, err := filterTargetRAIDConfig(n, args)
		if err != nil {
			return nil, fmt.Errorf("Node %s failed step %s: %w", n.UUID, stepRAIDCreate, err)
		}
		node["target_raid_config"] = target
	}
	return node, nil
}

// afterCleanStep records what a finished step changed, as Ironic's post
// clean step hooks do: create_configuration's result becomes raid_config
// (update_raid_info), delete_configuration empties it.
func afterCleanStep(n *model.Node, last *protocol.CommandResult) error {
	switch stepLabel(n.CleanStep) {
	case stepRAIDCreate:
		var res protocol.CleanStepResult
		_ = decode(last.CommandResult, &res)
		cfg, _ := res.CleanResult.(map[string]any)
		if len(cfg) == 0 {
			return fmt.Errorf("Agent ramdisk didn't return a proper command result while building RAID on %s. It returned '%s' after command execution.", n.UUID, display(last.CommandResult))
		}
		updateRAIDInfo(n, cfg)
	case stepRAIDDelete:
		delete(n.Properties, "root_device")
		n.RAIDConfig = model.JSONObject{}
	}
	return nil
}

// updateRAIDInfo is Ironic's raid.update_raid_info: the node's raid_config
// (with last_updated), and for the root volume properties.local_gb, the
// root device hint the agent reported if any, and the raid_level
// capability.
func updateRAIDInfo(n *model.Node, cfg map[string]any) {
	cur := model.JSONObject(maps.Clone(cfg))
	cur["last_updated"] = time.Now().UTC().Format("2006-01-02 15:04:05.000000")
	n.RAIDConfig = cur
	list, _ := cfg["logical_disks"].([]any)
	for _, ld := range list {
		m, _ := ld.(map[string]any)
		if root, _ := m["is_root_volume"].(bool); !root {
			continue
		}
		if n.Properties == nil {
			n.Properties = model.JSONObject{}
		}
		if size, ok := asInt(m["size_gb"]); ok {
			n.Properties["local_gb"] = size
		}
		if hint, ok := m["root_device_hint"]; ok {
			n.Properties["root_device"] = hint
		}
		lvl, _ := m["raid_level"].(string)
		n.Properties["capabilities"] = updatedCapabilities(n.Properties["capabilities"], "raid_level", lvl)
		return
	}
}

// updatedCapabilities sets key in properties.capabilities, which Ironic
// keeps as "k1:v1,k2:v2" (a dict is accepted too).
func updatedCapabilities(caps any, key, value string) any {
	if m, ok := caps.(map[string]any); ok {
		m = maps.Clone(m)
		m[key] = value
		return m
	}
	s, _ := caps.(string)
	var out []string
	found := false
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		k, _, _ := strings.Cut(kv, ":")
		if k == key {
			kv, found = key+":"+value, true
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, key+":"+value)
	}
	return strings.Join(out, ",")
}

// jsonObject is obj, or {} for nil, as the API shows empty objects.
func jsonObject(o model.JSONObject) map[string]any {
	if o == nil {
		return map[string]any{}
	}
	return o
}
