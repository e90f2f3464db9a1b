package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	agentapi "github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/model"
)

// The RAID tests run the conductor, the direct deploy's cleaning and the
// agent raid interface against the real agent command server; the agent's
// raid steps answer as agent/raid does (a logical_disks result per target
// logical disk) without touching disks: agent/raid's own tests build
// arrays, controller/e2e/raid_test.go does it end to end.

// newRAIDAgent is the agent side, offering IPA's generic clean steps
// including the two raid steps.
func newRAIDAgent(t *testing.T) *testAgent {
	return newAgent(t, registerRAIDCommands)
}

func registerRAIDCommands(reg *agentapi.Registry, _ *testAgent, record func(string, map[string]any)) {
	reg.Register("clean.get_clean_steps", agentapi.Command{Run: func(_ context.Context, p map[string]any) (any, error) {
		record("clean.get_clean_steps", p)
		step := func(iface, name string, prio int) protocol.Step {
			return protocol.Step{Interface: iface, Step: name, Priority: prio, Abortable: true}
		}
		return protocol.GetStepsResult{
			CleanSteps: map[string][]protocol.Step{"GenericHardwareManager": {
				step("deploy", "erase_devices", 10), step("deploy", "erase_devices_metadata", 99),
				step("raid", "delete_configuration", 0), step("raid", "create_configuration", 0),
			}},
			HardwareManagerVersion: map[string]string{"generic_hardware_manager": "1.1"},
		}, nil
	}})
	reg.Register("clean.execute_clean_step", agentapi.Command{Async: true, Run: func(_ context.Context, p map[string]any) (any, error) {
		s, _ := p["step"].(map[string]any)
		record("clean.execute_clean_step:"+s["step"].(string), p)
		var result any
		if args, _ := s["args"].(map[string]any); args["test_empty_result"] == true {
			// An agent that built nothing (IPA without a target).
		} else if s["step"] == "create_configuration" {
			node, _ := p["node"].(map[string]any)
			target, _ := node["target_raid_config"].(map[string]any)
			list, _ := target["logical_disks"].([]any)
			var built []any
			for i, ld := range list {
				m := map[string]any{}
				for k, v := range ld.(map[string]any) {
					m[k] = v
				}
				m["name"] = "/dev/md" + string(rune('0'+i))
				m["members"] = []any{"/dev/vda" + string(rune('1'+i)), "/dev/vdb" + string(rune('1'+i))}
				built = append(built, m)
			}
			result = map[string]any{"logical_disks": built}
		}
		return protocol.CleanStepResult{CleanResult: result, CleanStep: s}, nil
	}})
}

// newRAIDEnv is newEnv with the node on test-raid (raid interfaces
// "agent", then "no-raid") and the RAID agent; priorities overrides the
// clean step priorities (nil: the default).
func newRAIDEnv(t *testing.T, priorities map[string]int) *env {
	t.Helper()
	return newEnvWith(t, envConfig{
		direct: func(dc *agent.DirectConfig) { dc.CleanStepPriority = priorities },
		agent:  newRAIDAgent,
		node:   &model.Node{Driver: "test-raid", Name: "r1", Properties: model.JSONObject{"capabilities": "boot_mode:bios"}},
	})
}

// raid1Root is a RAID-1 root over two disks and a RAID-0 data volume.
func raid1Root() model.JSONObject {
	return model.JSONObject{"logical_disks": []any{
		map[string]any{"size_gb": 10.0, "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "root"},
		map[string]any{"size_gb": "MAX", "raid_level": "0", "controller": "software", "volume_name": "data",
			"filesystem": "xfs", "label": "scratch"},
	}}
}

func (e *env) setTarget(cfg model.JSONObject) {
	e.t.Helper()
	if err := e.c.SetTargetRAIDConfig(context.Background(), e.node.UUID, cfg); err != nil {
		e.t.Fatalf("set target_raid_config: %v", err)
	}
}

// cleanToEnd plays the agent through a whole cleaning: it boots, then
// heartbeats until the node leaves clean wait.
func (e *env) cleanToEnd() *model.Node {
	e.t.Helper()
	e.boot()
	for i := 0; i < 1000; i++ {
		n := e.get()
		if n.ProvisionState != "clean wait" {
			return n
		}
		time.Sleep(5 * time.Millisecond)
		e.heartbeat()
	}
	e.t.Fatal("cleaning did not end")
	return nil
}

func (e *env) stepCalls() []string {
	var out []string
	for _, c := range e.agent.called() {
		if name, ok := strings.CutPrefix(c, "clean.execute_clean_step:"); ok {
			out = append(out, name)
		}
	}
	return out
}

func TestRAIDValidation(t *testing.T) {
	e := newRAIDEnv(t, nil)
	ctx := context.Background()
	sw := func(kv ...any) map[string]any {
		m := map[string]any{"controller": "software"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	disks := func(lds ...any) model.JSONObject { return model.JSONObject{"logical_disks": lds} }
	good := []model.JSONObject{
		raid1Root(),
		disks(sw("size_gb", 100.0, "raid_level", "1", "physical_disks", []any{map[string]any{"name": "/dev/sda"}, map[string]any{"name": "/dev/sdb"}})),
		disks(sw("size_gb", 5.0, "raid_level", "0"), sw("size_gb", 5.0, "raid_level", "5"), sw("size_gb", 5.0, "raid_level", "6"),
			sw("size_gb", json.Number("5"), "raid_level", "1+0", "number_of_physical_disks", 4.0), sw("size_gb", "MAX", "raid_level", "1", "is_root_volume", true)),
		disks(sw("size_gb", 1.0, "raid_level", "1", "physical_disks", []any{"/dev/vda", "/dev/vdb"}, "share_physical_disks", true,
			"disk_type", "ssd", "interface_type", "sata", "volume_name", "os_1.a")),
		disks(sw("size_gb", 1.0, "raid_level", "0", "filesystem", "vfat", "label", "EFIDATA")),
	}
	for i, cfg := range good {
		if err := e.c.SetTargetRAIDConfig(ctx, e.node.UUID, cfg); err != nil {
			t.Errorf("good config %d refused: %v", i, err)
		}
	}
	e.setTarget(raid1Root())
	stored := e.get().TargetRAIDConfig

	for _, c := range []struct {
		name string
		cfg  model.JSONObject
		want string
	}{
		{"unknown top-level key", model.JSONObject{"logical_disks": []any{sw("size_gb", 1.0, "raid_level", "1")}, "foo": 1.0}, "RAID config validation error: Additional properties are not allowed ('foo' was unexpected)"},
		{"no logical_disks", model.JSONObject{"logicaldisks": []any{}}, "Additional properties are not allowed ('logicaldisks' was unexpected)"},
		{"logical_disks not a list", model.JSONObject{"logical_disks": "root"}, "'root' is not of type 'array'"},
		{"empty list", disks(), "RAID config validation error: [] is too short"},
		{"disk not an object", disks("root"), "logical_disks[0]: 'root' is not of type 'object'"},
		{"missing raid_level", disks(sw("size_gb", 1.0)), "logical_disks[0]: 'raid_level' is a required property"},
		{"missing size_gb", disks(sw("raid_level", "1")), "'size_gb' is a required property"},
		{"unknown level", disks(sw("size_gb", 1.0, "raid_level", "10")), "'10' is not one of ['JBOD', '0', '1', '2', '5', '6', '1+0', '5+0', '6+0']"},
		{"level as a number", disks(sw("size_gb", 1.0, "raid_level", 1.0)), "1 is not one of"},
		{"size_gb a word", disks(sw("size_gb", "ALL", "raid_level", "1")), "'ALL' is not valid under any of the given schemas"},
		{"size_gb negative", disks(sw("size_gb", -1.0, "raid_level", "1")), "-1 is not valid under any of the given schemas"},
		{"size_gb fraction", disks(sw("size_gb", 1.5, "raid_level", "1")), "1.5 is not valid under any of the given schemas"},
		{"size_gb zero", disks(sw("size_gb", 0.0, "raid_level", "1")), `size_gb must be a positive integer (GiB) or "MAX", not 0`},
		{"unknown disk key", disks(sw("size_gb", 1.0, "raid_level", "1", "colour", "red")), "logical_disks[0]: Additional properties are not allowed ('colour' was unexpected)"},
		{"is_root_volume a string", disks(sw("size_gb", 1.0, "raid_level", "1", "is_root_volume", "yes")), "'yes' is not of type 'boolean'"},
		{"disk_type", disks(sw("size_gb", 1.0, "raid_level", "1", "disk_type", "nvme")), "'nvme' is not one of ['hdd', 'ssd']"},
		{"number_of_physical_disks 0", disks(sw("size_gb", 1.0, "raid_level", "1", "number_of_physical_disks", 0.0)), "0 is less than or equal to the minimum of 0"},
		{"one hint object", disks(sw("size_gb", 1.0, "raid_level", "1", "physical_disks", []any{map[string]any{"name": "/dev/sda"}})), "is not valid under any of the given schemas"},
		{"physical_disks without controller", disks(map[string]any{"size_gb": 1.0, "raid_level": "1", "physical_disks": []any{"/dev/sda", "/dev/sdb"}}), "'controller' is a dependency of 'physical_disks'"},
		{"two root volumes", disks(sw("size_gb", 1.0, "raid_level", "1", "is_root_volume", true), sw("size_gb", 1.0, "raid_level", "1", "is_root_volume", true)), "Raid config cannot have more than one root volume. 2 root volumes were specified"},
		{"no controller", disks(map[string]any{"size_gb": 1.0, "raid_level": "1"}), "Software RAID configuration requires all logical disks to have 'controller'='software'"},
		{"hardware controller", disks(sw("size_gb", 1.0, "raid_level", "1", "controller", "RAID.Integrated.1-1")), "'controller'='software'"},
		{"JBOD", disks(sw("size_gb", 1.0, "raid_level", "JBOD")), `RAID level "JBOD" is not supported by software RAID (supported: 0, 1, 5, 6, 1+0)`},
		{"5+0", disks(sw("size_gb", 1.0, "raid_level", "5+0")), `RAID level "5+0" is not supported`},
		{"root not RAID-1", disks(sw("size_gb", 1.0, "raid_level", "5", "is_root_volume", true, "volume_name", "os")), `logical_disks[0] ("os"): the root volume must be RAID-1`},
		{"MAX not last", disks(sw("size_gb", "MAX", "raid_level", "1"), sw("size_gb", 1.0, "raid_level", "0")), `size_gb "MAX" is only allowed on the last logical disk`},
		{"duplicate volume names", disks(sw("size_gb", 1.0, "raid_level", "1", "volume_name", "a"), sw("size_gb", 1.0, "raid_level", "0", "volume_name", "a")), "Duplicate software RAID device name a detected (also logical_disks[0])"},
		{"volume name with a slash", disks(sw("size_gb", 1.0, "raid_level", "1", "volume_name", "a/b")), `volume_name "a/b" is not usable as an md array name`},
		{"RAID-5 on two disks", disks(sw("size_gb", 1.0, "raid_level", "5", "physical_disks", []any{"/dev/sda", "/dev/sdb"})), "RAID-5 needs at least 3 member disks, got 2"},
		{"RAID-6 on three", disks(sw("size_gb", 1.0, "raid_level", "6", "number_of_physical_disks", 3.0)), "RAID-6 needs at least 4 member disks, got 3"},
		{"RAID-1+0 on five", disks(sw("size_gb", 1.0, "raid_level", "1+0", "number_of_physical_disks", 5.0)), "RAID-1+0 needs an even number of member disks, got 5"},
		{"count disagrees", disks(sw("size_gb", 1.0, "raid_level", "1", "number_of_physical_disks", 3.0, "physical_disks", []any{"/dev/sda", "/dev/sdb"})), "number_of_physical_disks is 3 but physical_disks lists 2 disks"},
		{"unknown hint", disks(sw("size_gb", 1.0, "raid_level", "1", "physical_disks", []any{map[string]any{"colour": "blue"}, map[string]any{"name": "/dev/sdb"}})), `physical_disks[0]: unknown device hint "colour"`},
		{"filesystem unknown", disks(sw("size_gb", 1.0, "raid_level", "0", "filesystem", "btrfs")), "filesystem 'btrfs' is not supported (ext4, xfs or vfat)"},
		{"filesystem on root", disks(sw("size_gb", 1.0, "raid_level", "1", "is_root_volume", true, "filesystem", "ext4")), "the root volume receives the instance image"},
		{"label without filesystem", disks(sw("size_gb", 1.0, "raid_level", "0", "label", "data")), "label needs filesystem"},
		{"label too long", disks(sw("size_gb", 1.0, "raid_level", "0", "filesystem", "xfs", "label", "thirteen-char")), `label "thirteen-char" is longer than xfs allows (12 bytes)`},
	} {
		err := e.c.SetTargetRAIDConfig(ctx, e.node.UUID, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
			continue
		}
		if conductor.KindOf(err) != conductor.Invalid {
			t.Errorf("%s: kind %v, want Invalid (400)", c.name, conductor.KindOf(err))
		}
		if got := e.get().TargetRAIDConfig; !equalJSON(got, stored) {
			t.Errorf("%s: a refused config changed target_raid_config to %v", c.name, got)
		}
	}

	// {} clears; a node without a RAID interface is a 404.
	e.setTarget(model.JSONObject{})
	if got := e.get().TargetRAIDConfig; len(got) != 0 {
		t.Errorf("after {}: target_raid_config = %v", got)
	}
	if _, err := e.c.UpdateNode(ctx, e.node.UUID, setInterface("raid", "no-raid")); err != nil {
		t.Fatal(err)
	}
	err := e.c.SetTargetRAIDConfig(ctx, e.node.UUID, raid1Root())
	if conductor.KindOf(err) != conductor.NotFound || !strings.Contains(err.Error(), "Driver test-raid does not support raid (disabled or not implemented).") {
		t.Errorf("no-raid node: %v (kind %v)", err, conductor.KindOf(err))
	}
}

func setInterface(kind, name string) func(*model.Node) error {
	return func(n *model.Node) error {
		if n.Interfaces == nil {
			n.Interfaces = map[string]string{}
		}
		n.Interfaces[kind] = name
		return nil
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestRAIDAutomatedClean(t *testing.T) {
	for _, c := range []struct {
		name        string
		priorities  map[string]int
		target      bool
		wantSteps   string
		assumeClean any
	}{
		{"no target", nil, false, "erase_devices_metadata", nil},
		{"target, metadata erase", nil, true, "delete_configuration,erase_devices_metadata,create_configuration", nil},
		{"target, full erase", map[string]int{"deploy.erase_devices": 10}, true,
			"delete_configuration,erase_devices_metadata,erase_devices,create_configuration", true},
		{"target, overridden", map[string]int{"deploy.erase_devices": 0, "raid.create_configuration": 0, "raid.delete_configuration": 100}, true,
			"delete_configuration,erase_devices_metadata", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newRAIDEnv(t, c.priorities)
			if c.target {
				e.setTarget(raid1Root())
			}
			e.provision("provide")
			e.want("clean wait")
			n := e.cleanToEnd()
			if n.ProvisionState != "available" {
				t.Fatalf("provision_state %q, last_error %q", n.ProvisionState, n.LastError)
			}
			if got := strings.Join(e.stepCalls(), ","); got != c.wantSteps {
				t.Errorf("clean steps run = %s, want %s", got, c.wantSteps)
			}
			plan, _ := e.agent.params["clean.get_clean_steps"]["node"].(map[string]any)
			if _, ok := plan["target_raid_config"]; !ok {
				t.Errorf("the node dict sent to the agent has no target_raid_config: %v", plan)
			}
			create, ran := e.agent.params["clean.execute_clean_step:create_configuration"]
			if !ran {
				if len(n.RAIDConfig) != 0 {
					t.Errorf("raid_config = %v without a create", n.RAIDConfig)
				}
				return
			}
			step := create["step"].(map[string]any)
			args, _ := step["args"].(map[string]any)
			if args["assume_clean"] != c.assumeClean {
				t.Errorf("create_configuration args = %v, want assume_clean %v", args, c.assumeClean)
			}
			sent := create["node"].(map[string]any)["target_raid_config"]
			if !equalJSON(sent, raid1Root()) {
				t.Errorf("create_configuration was sent target_raid_config %v", sent)
			}
			lds, _ := n.RAIDConfig["logical_disks"].([]any)
			if len(lds) != 2 || lds[0].(map[string]any)["name"] != "/dev/md0" || n.RAIDConfig["last_updated"] == nil {
				t.Fatalf("raid_config = %v", n.RAIDConfig)
			}
			if n.Properties["local_gb"] != 10.0 || n.Properties["capabilities"] != "boot_mode:bios,raid_level:1" {
				t.Errorf("properties after create = %v", n.Properties)
			}
		})
	}
}

// A node whose arrays are recorded but whose target was cleared gets them
// deleted: raid_config becomes {}.
func TestRAIDClearedTargetDeletes(t *testing.T) {
	e := newRAIDEnv(t, nil)
	e.setTarget(raid1Root())
	e.provision("provide")
	if n := e.cleanToEnd(); len(n.RAIDConfig) == 0 {
		t.Fatalf("no raid_config after cleaning: %v (%s)", n.ProvisionState, n.LastError)
	}
	e.setTarget(model.JSONObject{})
	e.provision("manage")
	e.agent.mu.Lock()
	e.agent.calls = nil
	e.agent.mu.Unlock()
	e.provision("provide")
	n := e.cleanToEnd()
	if got := strings.Join(e.stepCalls(), ","); got != "delete_configuration,erase_devices_metadata" {
		t.Errorf("clean steps = %s", got)
	}
	if n.ProvisionState != "available" || n.RAIDConfig == nil || len(n.RAIDConfig) != 0 {
		t.Errorf("after delete: state %q, raid_config %v", n.ProvisionState, n.RAIDConfig)
	}
}

func TestRAIDManualClean(t *testing.T) {
	e := newRAIDEnv(t, nil)

	// create_configuration without a target: refused before the agent boots.
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "create_configuration"})
	n := e.want("clean failed")
	if want := "Failed to clean node " + n.UUID + ": Node " + n.UUID + " has no target RAID configuration."; n.LastError != want {
		t.Errorf("last_error = %q, want %q", n.LastError, want)
	}
	if n.PowerState == "power on" {
		t.Errorf("the agent was booted for a cleaning that cannot run")
	}
	e.provision("manage")

	// delete + create of the data volume only, as in Ironic's raid docs.
	e.setTarget(raid1Root())
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "delete_configuration"},
		drivers.CleanStep{Interface: "raid", Step: "create_configuration", Args: map[string]any{"create_root_volume": false}})
	e.want("clean wait")
	n = e.cleanToEnd()
	if n.ProvisionState != "manageable" {
		t.Fatalf("manual cleaning ended in %q: %s", n.ProvisionState, n.LastError)
	}
	if got := strings.Join(e.stepCalls(), ","); got != "delete_configuration,create_configuration" {
		t.Errorf("steps = %s", got)
	}
	sent := e.agent.params["clean.execute_clean_step:create_configuration"]["node"].(map[string]any)["target_raid_config"].(map[string]any)
	if lds := sent["logical_disks"].([]any); len(lds) != 1 || lds[0].(map[string]any)["volume_name"] != "data" {
		t.Errorf("create_root_volume=false sent %v", sent)
	}
	if lds, _ := n.RAIDConfig["logical_disks"].([]any); len(lds) != 1 {
		t.Errorf("raid_config = %v", n.RAIDConfig)
	}
	if _, ok := n.Properties["local_gb"]; ok {
		t.Errorf("no root volume was built, yet local_gb = %v", n.Properties["local_gb"])
	}

	// Only the delete: raid_config emptied.
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "delete_configuration"})
	if n = e.cleanToEnd(); n.ProvisionState != "manageable" || len(n.RAIDConfig) != 0 {
		t.Errorf("after delete: %q %v (%s)", n.ProvisionState, n.RAIDConfig, n.LastError)
	}

	// Arguments that filter everything out.
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "create_configuration",
		Args: map[string]any{"create_root_volume": false, "create_nonroot_volumes": false}})
	n = e.want("clean failed")
	if !strings.Contains(n.LastError, "has empty target RAID configuration after skipping root volume and skipping non-root volumes.") {
		t.Errorf("last_error = %q", n.LastError)
	}
	e.provision("manage")

	// A node whose raid interface is not the agent's has no raid steps.
	if _, err := e.c.UpdateNode(context.Background(), e.node.UUID, setInterface("raid", "no-raid")); err != nil {
		t.Fatal(err)
	}
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "delete_configuration"})
	if n = e.want("clean failed"); !strings.Contains(n.LastError, `node does not support this clean step: raid.delete_configuration (its raid_interface is "no-raid"`) {
		t.Errorf("last_error = %q", n.LastError)
	}
}

// A create whose agent result is empty fails the cleaning with Ironic's
// message instead of recording an empty raid_config; a target cleared
// while the cleaning runs fails the step before the agent is asked.
func TestRAIDCreateFailures(t *testing.T) {
	e := newRAIDEnv(t, nil)
	e.setTarget(raid1Root())
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "create_configuration", Args: map[string]any{"test_empty_result": true}})
	n := e.cleanToEnd()
	if n.ProvisionState != "clean failed" || !strings.Contains(n.LastError, "Agent ramdisk didn't return a proper command result while building RAID on "+n.UUID) {
		t.Errorf("state %q, last_error %q", n.ProvisionState, n.LastError)
	}
	if len(n.RAIDConfig) != 0 {
		t.Errorf("raid_config = %v", n.RAIDConfig)
	}

	e.provision("manage")
	e.provision("clean", drivers.CleanStep{Interface: "raid", Step: "create_configuration"})
	e.setTarget(model.JSONObject{})
	n = e.cleanToEnd()
	if n.ProvisionState != "clean failed" || !strings.Contains(n.LastError, "failed step raid.create_configuration: Node "+n.UUID+" has no target RAID configuration.") {
		t.Errorf("state %q, last_error %q", n.ProvisionState, n.LastError)
	}
}

func TestRAIDAPI(t *testing.T) {
	e := newRAIDEnv(t, nil)
	srv := httptest.NewServer(api.New(e.c, api.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	do := func(method, path, version string, body any) (int, map[string]any) {
		t.Helper()
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, srv.URL+path, r)
		req.Header.Set("X-OpenStack-Ironic-API-Version", version)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	fault := func(m map[string]any) string {
		var inner map[string]any
		s, _ := m["error_message"].(string)
		_ = json.Unmarshal([]byte(s), &inner)
		f, _ := inner["faultstring"].(string)
		return f
	}
	raidPath := "/v1/nodes/r1/states/raid"

	if st, m := do("PUT", raidPath, "1.82", raid1Root()); st != 204 {
		t.Fatalf("PUT good config: %d %v", st, m)
	}
	_, node := do("GET", "/v1/nodes/r1?fields=target_raid_config,raid_config", "1.82", nil)
	if !equalJSON(node["target_raid_config"], raid1Root()) || !equalJSON(node["raid_config"], map[string]any{}) {
		t.Errorf("node shows %v", node)
	}
	bad := model.JSONObject{"logical_disks": []any{map[string]any{"size_gb": 10, "raid_level": "5", "controller": "software", "is_root_volume": true}}}
	if st, m := do("PUT", raidPath, "1.82", bad); st != 400 || !strings.Contains(fault(m), "the root volume must be RAID-1") {
		t.Errorf("PUT bad config: %d %q", st, fault(m))
	}
	if st, _ := do("PUT", raidPath, "1.11", raid1Root()); st != 406 {
		t.Errorf("PUT at 1.11: %d, want 406", st)
	}

	// The lookup the agent does during a deploy carries the target.
	e.provision("provide")
	if st, m := do("GET", "/v1/lookup?addresses="+mac, "1.82", nil); st != 200 || !equalJSON(m["node"].(map[string]any)["target_raid_config"], raid1Root()) {
		t.Errorf("lookup: %d %v", st, m["node"])
	}

	props := "/v1/drivers/test-raid/raid/logical_disk_properties"
	st, m := do("GET", props, "1.82", nil)
	if st != 200 || m["raid_level"] == nil || m["size_gb"] == nil || m["physical_disks"] == nil || m["filesystem"] == nil {
		t.Errorf("logical_disk_properties: %d %v", st, m)
	}
	if st, m := do("GET", "/v1/drivers/fake-hardware/raid/logical_disk_properties", "1.82", nil); st != 200 || m["raid_level"] == nil || m["filesystem"] != nil {
		t.Errorf("fake-hardware logical_disk_properties: %d %v", st, m)
	}
	if st, m := do("GET", "/v1/drivers/test-noraid/raid/logical_disk_properties", "1.82", nil); st != 404 || !strings.Contains(fault(m), "does not support raid") {
		t.Errorf("no-raid driver: %d %v", st, m)
	}
	if st, _ := do("GET", "/v1/drivers/nope/raid/logical_disk_properties", "1.82", nil); st != 404 {
		t.Errorf("unknown driver: %d", st)
	}
	if st, _ := do("GET", props, "1.11", nil); st != 406 {
		t.Errorf("at 1.11: %d, want 406", st)
	}

	// A node without a RAID interface: 404 as Ironic.
	n := &model.Node{Driver: "test-noraid", Name: "plain", ProvisionState: "enroll"}
	if err := e.c.CreateNode(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if st, m := do("PUT", "/v1/nodes/plain/states/raid", "1.82", raid1Root()); st != 404 || fault(m) != "Driver test-noraid does not support raid (disabled or not implemented)." {
		t.Errorf("PUT on a no-raid node: %d %q", st, fault(m))
	}
}
