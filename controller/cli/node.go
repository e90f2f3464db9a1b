package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

var interfaceKinds = []string{"bios", "boot", "console", "deploy", "inspect", "management",
	"network", "power", "raid", "rescue", "storage", "vendor"}

// kvPairs parses repeated KEY=VALUE options into an object.
func kvPairs(opt string, pairs []string) (map[string]any, error) {
	out := map[string]any{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: expected KEY=VALUE", opt, p)
		}
		out[k] = jsonOrString(v)
	}
	return out, nil
}

// jsonOrString decodes v as JSON when it is JSON (cpus=4 -> 4,
// flag=true -> true, caps={"a":1} -> an object), else keeps the string, as
// python-ironicclient does for KEY=VALUE options.
func jsonOrString(v string) any {
	var x any
	dec := json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil || dec.More() {
		return v
	}
	return x
}

func nodePath(ident string) string { return "/v1/nodes/" + url.PathEscape(ident) }

func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Manage bare-metal nodes"}
	cmd.AddCommand(a.nodeCreate(), a.nodeList(), a.nodeShow(), a.nodeSet(), a.nodeUnset(), a.nodeDelete(),
		a.nodeValidate(), a.nodePower(), a.nodeReboot(), a.nodeBoot(), a.nodeMaintenance(), a.nodeBMC(), a.nodeInventory(), a.nodeRAID())
	for _, v := range provisionVerbs {
		cmd.AddCommand(a.nodeProvision(v))
	}
	return cmd
}

func (a *app) nodeCreate() *cobra.Command {
	var (
		o                                             output
		driver, name, uuid, rc, desc, owner, bootMode string
		driverInfo, props, extra, instInfo            []string
		ifaces                                        = map[string]*string{}
		automatedClean, noAutomatedClean              bool
	)
	cmd := &cobra.Command{
		Use:   "create --driver DRIVER [options]",
		Short: "Register a new node",
		Example: `  ironlite node create --driver ipmi --name BM01 \
    --driver-info ipmi_address=10.30.10.3 --driver-info ipmi_port=623 \
    --driver-info ipmi_username=ADMIN --driver-info ipmi_password=ADMIN \
    --property cpus=8 --property memory_mb=16384 --property local_gb=100 --property cpu_arch=x86_64`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			body := map[string]any{"driver": driver}
			for opt, dst := range map[string]string{"name": name, "uuid": uuid, "resource_class": rc, "description": desc, "owner": owner, "boot_mode": bootMode} {
				if dst != "" {
					body[opt] = dst
				}
			}
			for opt, pairs := range map[string][]string{"driver_info": driverInfo, "properties": props, "extra": extra, "instance_info": instInfo} {
				m, err := kvPairs(strings.ReplaceAll(opt, "_", "-"), pairs)
				if err != nil {
					return err
				}
				if len(m) > 0 {
					body[opt] = m
				}
			}
			for kind, v := range ifaces {
				if *v != "" {
					body[kind+"_interface"] = *v
				}
			}
			if automatedClean {
				body["automated_clean"] = true
			}
			if noAutomatedClean {
				body["automated_clean"] = false
			}
			var node map[string]any
			if err := a.client.Do("POST", "/v1/nodes", body, &node); err != nil {
				return err
			}
			return o.printObject(cmd.OutOrStdout(), node)
		},
	}
	f := cmd.Flags()
	f.StringVar(&driver, "driver", "", "hardware type, e.g. ipmi or fake-hardware (required)")
	f.StringVar(&name, "name", "", "unique node name")
	f.StringVar(&uuid, "uuid", "", "node UUID (generated when omitted)")
	f.StringVar(&rc, "resource-class", "", "resource class")
	f.StringVar(&desc, "description", "", "free-form description")
	f.StringVar(&owner, "owner", "", "owner")
	f.StringVar(&bootMode, "boot-mode", "", "bios or uefi")
	f.StringArrayVar(&driverInfo, "driver-info", nil, "driver_info KEY=VALUE (repeatable), e.g. ipmi_address=10.0.0.5")
	f.StringArrayVar(&props, "property", nil, "properties KEY=VALUE (repeatable), e.g. cpus=8")
	f.StringArrayVar(&extra, "extra", nil, "extra KEY=VALUE (repeatable)")
	f.StringArrayVar(&instInfo, "instance-info", nil, "instance_info KEY=VALUE (repeatable)")
	f.BoolVar(&automatedClean, "automated-clean", false, "enable automated cleaning for this node")
	f.BoolVar(&noAutomatedClean, "no-automated-clean", false, "disable automated cleaning for this node")
	for _, kind := range interfaceKinds {
		ifaces[kind] = f.String(kind+"-interface", "", kind+" interface implementation")
	}
	_ = cmd.MarkFlagRequired("driver")
	o.register(cmd)
	return cmd
}

var nodeListColumns = []struct{ header, field string }{
	{"UUID", "uuid"}, {"Name", "name"}, {"Instance UUID", "instance_uuid"},
	{"Power State", "power_state"}, {"Provisioning State", "provision_state"}, {"Maintenance", "maintenance"},
}

var nodeLongColumns = []struct{ header, field string }{
	{"UUID", "uuid"}, {"Name", "name"}, {"Instance UUID", "instance_uuid"}, {"Power State", "power_state"},
	{"Provisioning State", "provision_state"}, {"Target Provision State", "target_provision_state"},
	{"Maintenance", "maintenance"}, {"Maintenance Reason", "maintenance_reason"}, {"Fault", "fault"},
	{"Driver", "driver"}, {"Resource Class", "resource_class"}, {"Last Error", "last_error"},
	{"Reservation", "reservation"}, {"Updated At", "updated_at"},
}

func (a *app) nodeList() *cobra.Command {
	var (
		o                                    output
		long, maint, noMaint, assoc, unassoc bool
		state, driver, rc, sortSpec          string
		limit                                int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			q := url.Values{}
			cols := nodeListColumns
			if long {
				q.Set("detail", "true")
				cols = nodeLongColumns
			}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("provision_state", state)
			set("driver", driver)
			set("resource_class", rc)
			if maint {
				q.Set("maintenance", "true")
			}
			if noMaint {
				q.Set("maintenance", "false")
			}
			if assoc {
				q.Set("associated", "true")
			}
			if unassoc {
				q.Set("associated", "false")
			}
			if sortSpec != "" {
				k, d, _ := strings.Cut(sortSpec, ":")
				q.Set("sort_key", k)
				set("sort_dir", d)
			}
			nodes, err := a.listAll("/v1/nodes", "nodes", q, limit)
			if err != nil {
				return err
			}
			headers := make([]string, len(cols))
			for i, c := range cols {
				headers[i] = c.header
			}
			rows := make([][]any, len(nodes))
			for i, n := range nodes {
				for _, c := range cols {
					rows[i] = append(rows[i], n[c.field])
				}
			}
			return o.printList(cmd.OutOrStdout(), headers, rows)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&long, "long", false, "show detailed information")
	f.StringVar(&state, "provision-state", "", "only nodes in this provision state")
	f.StringVar(&driver, "driver", "", "only nodes with this driver")
	f.StringVar(&rc, "resource-class", "", "only nodes with this resource class")
	f.BoolVar(&maint, "maintenance", false, "only nodes in maintenance")
	f.BoolVar(&noMaint, "no-maintenance", false, "only nodes not in maintenance")
	f.BoolVar(&assoc, "associated", false, "only nodes with an instance")
	f.BoolVar(&unassoc, "unassociated", false, "only nodes without an instance")
	f.StringVar(&sortSpec, "sort", "", "sort by KEY[:asc|desc]")
	f.IntVar(&limit, "limit", 0, "maximum number of nodes (0: all, following pages)")
	o.register(cmd)
	return cmd
}

// listAll follows "next" links until limit items (0 = all) are read.
func (a *app) listAll(path, key string, q url.Values, limit int) ([]map[string]any, error) {
	var all []map[string]any
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	next := path + "?" + q.Encode()
	for next != "" {
		var page map[string]json.RawMessage
		if err := a.client.Do("GET", next, nil, &page); err != nil {
			return nil, err
		}
		var items []map[string]any
		dec := json.NewDecoder(strings.NewReader(string(page[key])))
		dec.UseNumber()
		if err := dec.Decode(&items); err != nil {
			return nil, fmt.Errorf("decode %s list: %w", key, err)
		}
		all = append(all, items...)
		next = ""
		var n string
		if raw, ok := page["next"]; ok && json.Unmarshal(raw, &n) == nil && (limit == 0 || len(all) < limit) {
			if u, err := url.Parse(n); err == nil {
				next = u.RequestURI()
			}
		}
	}
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

func (a *app) nodeShow() *cobra.Command {
	var o output
	var fields []string
	cmd := &cobra.Command{
		Use:   "show NODE",
		Short: "Show a node (by UUID or name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			path := nodePath(args[0])
			if len(fields) > 0 {
				path += "?fields=" + url.QueryEscape(strings.Join(fields, ","))
			}
			var node map[string]any
			if err := a.client.Do("GET", path, nil, &node); err != nil {
				return err
			}
			delete(node, "links")
			delete(node, "ports")
			delete(node, "states")
			delete(node, "portgroups")
			delete(node, "volume")
			return o.printObject(cmd.OutOrStdout(), node)
		},
	}
	cmd.Flags().StringArrayVar(&fields, "fields", nil, "only these fields (repeatable)")
	o.register(cmd)
	return cmd
}

// patchOps builds a JSON patch from set-style options.
type patchOps []map[string]any

func (p *patchOps) add(path string, v any) {
	*p = append(*p, map[string]any{"op": "add", "path": path, "value": v})
}
func (p *patchOps) remove(path string) { *p = append(*p, map[string]any{"op": "remove", "path": path}) }

func (a *app) nodeSet() *cobra.Command {
	var (
		name, driver, rc, desc, owner                 string
		driverInfo, props, extra, instInfo            []string
		ifaces                                        = map[string]*string{}
		resetIfaces, automatedClean, noAutomatedClean bool
	)
	cmd := &cobra.Command{
		Use:   "set NODE [options]",
		Short: "Set node properties",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ops patchOps
			for path, v := range map[string]string{"/name": name, "/driver": driver, "/resource_class": rc, "/description": desc, "/owner": owner} {
				if v != "" {
					ops.add(path, v)
				}
			}
			for base, pairs := range map[string][]string{"/driver_info": driverInfo, "/properties": props, "/extra": extra, "/instance_info": instInfo} {
				m, err := kvPairs(strings.ReplaceAll(base[1:], "_", "-"), pairs)
				if err != nil {
					return err
				}
				for k, v := range m {
					ops.add(base+"/"+k, v)
				}
			}
			for kind, v := range ifaces {
				if *v != "" {
					ops.add("/"+kind+"_interface", *v)
				}
			}
			if automatedClean {
				ops.add("/automated_clean", true)
			}
			if noAutomatedClean {
				ops.add("/automated_clean", false)
			}
			if len(ops) == 0 {
				return fmt.Errorf("nothing to set: give at least one option (see --help)")
			}
			path := nodePath(args[0])
			if resetIfaces {
				path += "?reset_interfaces=true"
			}
			return a.client.Do("PATCH", path, ops, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "new name")
	f.StringVar(&driver, "driver", "", "new hardware type")
	f.BoolVar(&resetIfaces, "reset-interfaces", false, "reset unspecified interfaces to the new driver's defaults")
	f.StringVar(&rc, "resource-class", "", "resource class")
	f.StringVar(&desc, "description", "", "description")
	f.StringVar(&owner, "owner", "", "owner")
	f.StringArrayVar(&driverInfo, "driver-info", nil, "driver_info KEY=VALUE (repeatable)")
	f.StringArrayVar(&props, "property", nil, "properties KEY=VALUE (repeatable)")
	f.StringArrayVar(&extra, "extra", nil, "extra KEY=VALUE (repeatable)")
	f.StringArrayVar(&instInfo, "instance-info", nil, "instance_info KEY=VALUE (repeatable)")
	f.BoolVar(&automatedClean, "automated-clean", false, "enable automated cleaning")
	f.BoolVar(&noAutomatedClean, "no-automated-clean", false, "disable automated cleaning")
	for _, kind := range interfaceKinds {
		ifaces[kind] = f.String(kind+"-interface", "", kind+" interface implementation")
	}
	return cmd
}

func (a *app) nodeUnset() *cobra.Command {
	var (
		name, rc, desc, owner, automatedClean bool
		driverInfo, props, extra, instInfo    []string
	)
	cmd := &cobra.Command{
		Use:   "unset NODE [options]",
		Short: "Unset node properties",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ops patchOps
			for path, on := range map[string]bool{"/name": name, "/resource_class": rc, "/description": desc, "/owner": owner, "/automated_clean": automatedClean} {
				if on {
					ops.remove(path)
				}
			}
			for base, keys := range map[string][]string{"/driver_info": driverInfo, "/properties": props, "/extra": extra, "/instance_info": instInfo} {
				for _, k := range keys {
					ops.remove(base + "/" + k)
				}
			}
			if len(ops) == 0 {
				return fmt.Errorf("nothing to unset: give at least one option (see --help)")
			}
			return a.client.Do("PATCH", nodePath(args[0]), ops, nil)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&name, "name", false, "unset the name")
	f.BoolVar(&rc, "resource-class", false, "unset the resource class")
	f.BoolVar(&desc, "description", false, "unset the description")
	f.BoolVar(&owner, "owner", false, "unset the owner")
	f.BoolVar(&automatedClean, "automated-clean", false, "unset automated_clean (use the controller's default)")
	f.StringArrayVar(&driverInfo, "driver-info", nil, "driver_info KEY to remove (repeatable)")
	f.StringArrayVar(&props, "property", nil, "properties KEY to remove (repeatable)")
	f.StringArrayVar(&extra, "extra", nil, "extra KEY to remove (repeatable)")
	f.StringArrayVar(&instInfo, "instance-info", nil, "instance_info KEY to remove (repeatable)")
	return cmd
}

func (a *app) nodeDelete() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NODE [NODE...]",
		Short: "Unregister nodes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var failed []string
			for _, id := range args {
				if err := a.client.Do("DELETE", nodePath(id), nil, nil); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "Failed to delete node %s: %v\n", id, err)
					failed = append(failed, id)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted node %s\n", id)
			}
			if len(failed) > 0 {
				return fmt.Errorf("failed to delete %d of %d nodes", len(failed), len(args))
			}
			return nil
		},
	}
}

func (a *app) nodeValidate() *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "validate NODE",
		Short: "Validate a node's driver interfaces",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			var res map[string]map[string]any
			if err := a.client.Do("GET", nodePath(args[0])+"/validate", nil, &res); err != nil {
				return err
			}
			var rows [][]any
			for _, k := range sortedKeys(res) {
				rows = append(rows, []any{k, res[k]["result"], res[k]["reason"]})
			}
			return o.printList(cmd.OutOrStdout(), []string{"Interface", "Result", "Reason"}, rows)
		},
	}
	o.register(cmd)
	return cmd
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// provisionVerb is one `ironlite node <verb>` provision command.
type provisionVerb struct {
	cmd, target, short string
	done               string // stable state --wait waits for
}

var provisionVerbs = []provisionVerb{
	{"manage", "manage", "Move a node to manageable (verifies BMC credentials from enroll)", "manageable"},
	{"provide", "provide", "Move a node to available (runs automated cleaning)", "available"},
	{"inspect", "inspect", "Inspect a node's hardware", "manageable"},
	{"clean", "clean", "Run manual cleaning steps (--clean-steps)", "manageable"},
	{"deploy", "active", "Deploy an instance onto a node", "active"},
	{"rebuild", "rebuild", "Redeploy a node's instance", "active"},
	{"undeploy", "deleted", "Tear down a node's instance (then clean it)", "available"},
	{"abort", "abort", "Abort cleaning, inspection or rescue that is waiting on the agent", ""},
	{"adopt", "adopt", "Adopt a node already running an instance", "active"},
	{"rescue", "rescue", "Boot a node into the rescue ramdisk", "rescue"},
	{"unrescue", "unrescue", "Return a node from rescue to active", "active"},
}

func (a *app) nodeProvision(v provisionVerb) *cobra.Command {
	var (
		wait                                    int
		configDrive, cleanSteps, rescuePassword string
		image, imageChecksum                    string
	)
	cmd := &cobra.Command{
		Use:   v.cmd + " NODE [NODE...]",
		Short: v.short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"target": v.target}
			if configDrive != "" {
				cd, err := readConfigDrive(configDrive)
				if err != nil {
					return err
				}
				body["configdrive"] = cd
			}
			if cleanSteps != "" {
				steps, err := readJSONArg("--clean-steps", cleanSteps)
				if err != nil {
					return err
				}
				body["clean_steps"] = steps
			}
			if rescuePassword != "" {
				body["rescue_password"] = rescuePassword
			}
			if image != "" {
				if err := a.setInstanceImage(cmd.ErrOrStderr(), args, image, imageChecksum, cmd.Flags().Changed("wait")); err != nil {
					return err
				}
			}
			for _, id := range args {
				if err := a.client.Do("PUT", nodePath(id)+"/states/provision", body, nil); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("wait") {
				for _, id := range args {
					if err := a.waitProvision(cmd.ErrOrStderr(), id, v.done, time.Duration(wait)*time.Second); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&wait, "wait", 0, "wait until the operation finishes, at most this many seconds (0 or no value: forever)")
	f.Lookup("wait").NoOptDefVal = "0"
	switch v.cmd {
	case "deploy", "rebuild":
		f.StringVar(&configDrive, "config-drive", "", "config drive: a gzip+base64 ISO, a URL, a JSON object or @FILE with JSON")
		f.StringVar(&image, "image", "", "image to deploy, set as instance_info image_source: a catalogue reference (images:centos/9-Stream, ubuntu:24.04; imported first with --wait), an http(s) URL (with --image-checksum) or file:///path")
		f.StringVar(&imageChecksum, "image-checksum", "", "ALGO:HEX checksum of an http(s) --image (sha256, sha384 or sha512)")
	case "clean":
		f.StringVar(&cleanSteps, "clean-steps", "", "clean steps as JSON, @FILE or - for stdin")
		_ = cmd.MarkFlagRequired("clean-steps")
	case "rescue":
		f.StringVar(&rescuePassword, "rescue-password", "", "password of the rescue user")
		_ = cmd.MarkFlagRequired("rescue-password")
	}
	return cmd
}

func readJSONArg(opt, v string) (any, error) {
	var data []byte
	var err error
	switch {
	case v == "-":
		data, err = io.ReadAll(os.Stdin)
	case strings.HasPrefix(v, "@"):
		data, err = os.ReadFile(v[1:])
	default:
		data = []byte(v)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opt, err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %w", opt, err)
	}
	return out, nil
}

func readConfigDrive(v string) (any, error) {
	if strings.HasPrefix(v, "@") || strings.HasPrefix(strings.TrimSpace(v), "{") {
		return readJSONArg("--config-drive", v)
	}
	return v, nil
}

// waitProvision polls the node until it reaches done (or, with done "",
// any stable or failed state), failing on a failure state. Each state
// change is printed with the time since the command started; while the
// agent reports progress (ironlite_progress) it is shown as a bar, redrawn
// in place on a terminal and printed every 10% otherwise; at the end the
// per-phase timings of a deploy or cleaning are printed.
func (a *app) waitProvision(w io.Writer, ident, done string, timeout time.Duration) error {
	start := time.Now()
	last, lastStep := "", ""
	bar := &progressBar{w: w, tty: isTerminal(w)}
	for {
		var n map[string]any
		if err := a.client.Do("GET", nodePath(ident)+"?fields=uuid,provision_state,target_provision_state,last_error,driver_internal_info,deploy_step,clean_step", nil, &n); err != nil {
			bar.end()
			return err
		}
		st, _ := n["provision_state"].(string)
		target, _ := n["target_provision_state"].(string)
		dii, _ := n["driver_internal_info"].(map[string]any)
		step := currentStep(n)
		if st != last || step != lastStep {
			bar.end()
			line := fmt.Sprintf("%s: %s", ident, st)
			if step != "" {
				line += " [" + step + "]"
			}
			fmt.Fprintf(w, "%s (%.1fs)\n", line, time.Since(start).Seconds())
			last, lastStep = st, step
		}
		if p, ok := dii["ironlite_progress"].(map[string]any); ok && target != "" {
			bar.show(p)
		}
		if target == "" {
			bar.end()
			switch {
			case done == "" || st == done:
				printTimings(w, ident, dii)
				return nil
			case strings.HasSuffix(st, "failed") || st == "error" || st == "enroll":
				msg, _ := n["last_error"].(string)
				return fmt.Errorf("node %s ended in %q instead of %q: %s", ident, st, done, msg)
			}
		}
		if strings.HasSuffix(st, "failed") && target == "" {
			msg, _ := n["last_error"].(string)
			return fmt.Errorf("node %s failed: %s", ident, msg)
		}
		if timeout > 0 && time.Since(start) > timeout {
			bar.end()
			return fmt.Errorf("timed out after %s waiting for node %s to reach %q (now %q)", timeout, ident, done, st)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// currentStep names the running deploy or clean step ("deploy.write_image").
func currentStep(n map[string]any) string {
	for _, k := range []string{"deploy_step", "clean_step"} {
		if s, ok := n[k].(map[string]any); ok {
			if name, _ := s["step"].(string); name != "" {
				iface, _ := s["interface"].(string)
				return iface + "." + name
			}
		}
	}
	return ""
}

// printTimings prints the phase timings ironlite records for the last
// deploy or cleaning (driver_internal_info ironlite_deploy/ironlite_clean)
// when that flow just finished.
func printTimings(w io.Writer, ident string, dii map[string]any) {
	for _, k := range []string{"ironlite_deploy", "ironlite_clean"} {
		f, ok := dii[k].(map[string]any)
		if !ok || f["phase"] != "done" {
			continue
		}
		t, _ := f["timings"].(map[string]any)
		var parts []string
		for _, phase := range []string{"boot", "clean", "write", "reboot", "total"} {
			if v, ok := toFloat(t[phase]); ok {
				parts = append(parts, fmt.Sprintf("%s %.1fs", phase, v))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "%s: %s timings: %s\n", ident, strings.TrimPrefix(k, "ironlite_"), strings.Join(parts, ", "))
		}
	}
}

func (a *app) nodeInventory() *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "inventory NODE",
		Short: "Show the hardware inventory the agent reported during inspection",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.format == "table" {
				o.format = "json"
			}
			if err := o.check(); err != nil {
				return err
			}
			var res map[string]any
			if err := a.client.Do("GET", nodePath(args[0])+"/inventory", nil, &res); err != nil {
				return err
			}
			return o.printObject(cmd.OutOrStdout(), res)
		},
	}
	o.register(cmd)
	cmd.Flags().Lookup("format").Usage = "output format: json (default), yaml or value"
	return cmd
}
