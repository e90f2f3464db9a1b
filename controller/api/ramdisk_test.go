package api_test

import (
	"strings"
	"testing"
)

func TestLookupHeartbeatInspection(t *testing.T) {
	e := newEnv(t)
	n := e.create(map[string]any{"driver": "fake-hardware", "name": "n1", "inspect_interface": "agent",
		"properties": map[string]any{"capabilities": "foo:bar"}})
	uuid := n["uuid"].(string)
	if r := e.do("POST", "/v1/ports", latest, map[string]any{"node_uuid": uuid, "address": "52:54:00:12:34:56"}); r.status != 201 {
		t.Fatalf("port: %d %s", r.status, r.body)
	}
	// Not waiting for an agent: lookup says 404 like an unknown MAC.
	r := e.do("GET", "/v1/lookup?addresses=52:54:00:12:34:56", "1.22", nil)
	if r.status != 404 || r.fault(t) != "Resource could not be found." {
		t.Fatalf("lookup in enroll: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/lookup", "1.22", nil); r.status != 400 {
		t.Fatalf("lookup without args: %d", r.status)
	}
	if r := e.do("GET", "/v1/lookup?addresses=52:54:00:12:34:56", "1.21", nil); r.status != 404 {
		t.Fatalf("lookup at 1.21: %d", r.status)
	}
	e.provision("n1", "manage", nil)
	e.waitState("n1", "manageable")
	if r := e.provision("n1", "inspect", nil); r.status != 202 {
		t.Fatalf("inspect: %d %s", r.status, r.body)
	}
	e.waitState("n1", "inspect wait")
	if r := e.do("GET", "/v1/lookup?addresses=00:00:00:00:00:01", "1.22", nil); r.status != 404 {
		t.Fatalf("unknown MAC: %d", r.status)
	}
	// First lookup hands out the token, later ones mask it.
	lk := e.do("GET", "/v1/lookup?addresses=aa:bb,52:54:00:12:34:56", "1.62", nil)
	if lk.status != 200 {
		t.Fatalf("lookup: %d %s", lk.status, lk.body)
	}
	cfg := lk.json(t)["config"].(map[string]any)
	token, _ := cfg["agent_token"].(string)
	if len(token) != 43 || cfg["agent_token_required"] != true || cfg["heartbeat_timeout"] != float64(300) {
		t.Fatalf("lookup config: %v", cfg)
	}
	if lk.json(t)["node"].(map[string]any)["uuid"] != uuid {
		t.Fatalf("lookup node: %s", lk.body)
	}
	lk2 := e.do("GET", "/v1/lookup?addresses=52:54:00:12:34:56", "1.62", nil).json(t)
	if lk2["config"].(map[string]any)["agent_token"] != "******" ||
		lk2["node"].(map[string]any)["driver_internal_info"].(map[string]any)["agent_secret_token"] != "******" {
		t.Fatalf("second lookup reveals the token: %v", lk2)
	}
	if r := e.do("GET", "/v1/nodes/n1", latest, nil); strings.Contains(string(r.body), token) {
		t.Fatalf("node API leaks the token")
	}
	hb := func(body map[string]any) resp { return e.do("POST", "/v1/heartbeat/"+uuid, "1.68", body) }
	cases := []struct {
		body   map[string]any
		status int
		msg    string
	}{
		{map[string]any{"callback_url": "http://10.0.2.15:9999", "agent_version": "x"}, 400, "Agent token is required for heartbeat processing."},
		{map[string]any{"callback_url": "http://10.0.2.15:9999", "agent_version": "x", "agent_token": "wrong"}, 400, "Invalid or missing agent token received."},
		{map[string]any{"callback_url": "http://10.0.2.15:9999", "agent_token": token}, 400, "Agent did not transmit a version"},
		{map[string]any{"agent_version": "x", "agent_token": token}, 400, "'callback_url' is a required property"},
	}
	for _, c := range cases {
		r := hb(c.body)
		if r.status != c.status || !strings.Contains(r.fault(t), c.msg) {
			t.Fatalf("heartbeat %v: %d %s", c.body, r.status, r.body)
		}
	}
	if r := e.do("POST", "/v1/heartbeat/nope", "1.68", map[string]any{"callback_url": "http://x:9999", "agent_token": token, "agent_version": "1"}); r.status != 404 {
		t.Fatalf("heartbeat unknown node: %d", r.status)
	}
	if r := hb(map[string]any{"callback_url": "http://10.0.2.15:9999", "agent_token": token, "agent_version": "ironlite-0.1"}); r.status != 202 || len(r.body) != 0 {
		t.Fatalf("heartbeat: %d %s", r.status, r.body)
	}
	e.cond.Wait()
	dii := e.do("GET", "/v1/nodes/n1", latest, nil).json(t)["driver_internal_info"].(map[string]any)
	if dii["agent_url"] != "http://10.0.2.15:9999" || dii["agent_version"] != "ironlite-0.1" || dii["agent_last_heartbeat"] == nil {
		t.Fatalf("heartbeat not recorded: %v", dii)
	}
	if r := hb(map[string]any{"callback_url": "http://10.0.2.99:9999", "agent_token": token, "agent_version": "x"}); r.status != 400 ||
		!strings.Contains(r.fault(t), "Detected change in ramdisk provided \"callback_url\"") {
		t.Fatalf("callback change: %d %s", r.status, r.body)
	}
	// The agent posts its inventory: properties, ports, manageable.
	inv := map[string]any{
		"inventory": map[string]any{
			"interfaces": []any{
				map[string]any{"name": "eth0", "mac_address": "52:54:00:12:34:56", "ipv4_address": "10.0.2.15", "has_carrier": true},
				map[string]any{"name": "eth1", "mac_address": "52:54:00:12:34:57", "ipv4_address": nil, "has_carrier": false},
				map[string]any{"name": "lo", "mac_address": "00:00:00:00:00:00"},
			},
			"cpu":    map[string]any{"model_name": "QEMU", "count": 2, "architecture": "x86_64", "flags": []string{"fpu"}},
			"memory": map[string]any{"total": 500000000, "physical_mb": 512},
			"disks": []any{
				map[string]any{"name": "/dev/vda", "size": 10 << 30, "rotational": true},
				map[string]any{"name": "/dev/vdb", "size": 1 << 30, "rotational": true},
			},
			"boot":          map[string]any{"current_boot_mode": "bios", "pxe_interface": "01-52-54-00-12-34-56"},
			"system_vendor": map[string]any{"manufacturer": "QEMU"},
		},
		"configuration": map[string]any{"collectors": []string{"default"}},
	}
	r = e.do("POST", "/v1/continue_inspection", "", inv)
	if r.status != 202 || r.json(t)["uuid"] != uuid {
		t.Fatalf("continue_inspection: %d %s", r.status, r.body)
	}
	node := e.waitState("n1", "manageable")
	props := node["properties"].(map[string]any)
	if props["cpus"] != float64(2) || props["memory_mb"] != float64(512) || props["local_gb"] != float64(9) ||
		props["cpu_arch"] != "x86_64" || props["capabilities"] != "foo:bar,boot_mode:bios" {
		t.Fatalf("properties: %v", props)
	}
	if node["inspection_finished_at"] == nil {
		t.Fatalf("inspection_finished_at not set")
	}
	ports := e.do("GET", "/v1/nodes/n1/ports/detail", latest, nil).json(t)["ports"].([]any)
	if len(ports) != 1 || ports[0].(map[string]any)["pxe_enabled"] != true {
		t.Fatalf("ports after inspection: %v", ports)
	}
	got := e.do("GET", "/v1/nodes/n1/inventory", latest, nil).json(t)
	if got["inventory"].(map[string]any)["cpu"].(map[string]any)["count"] != float64(2) {
		t.Fatalf("inventory: %v", got)
	}
	if _, ok := got["plugin_data"].(map[string]any)["configuration"]; !ok {
		t.Fatalf("plugin_data: %v", got["plugin_data"])
	}
	// Data for a node that is not inspecting is refused and changes nothing.
	if r := e.do("POST", "/v1/continue_inspection", "", inv); r.status != 409 {
		t.Fatalf("second continue_inspection: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/continue_inspection", "", `{"inventory": 5}`); r.status != 400 {
		t.Fatalf("malformed: %d", r.status)
	}
	// Abort during inspect wait (1.41).
	e.provision("n1", "inspect", nil)
	e.waitState("n1", "inspect wait")
	if r := e.do("PUT", "/v1/nodes/n1/states/provision", "1.40", map[string]any{"target": "abort"}); r.status != 406 {
		t.Fatalf("abort at 1.40: %d", r.status)
	}
	if r := e.provision("n1", "abort", nil); r.status != 202 {
		t.Fatalf("abort: %d %s", r.status, r.body)
	}
	e.waitState("n1", "inspect failed")
}
