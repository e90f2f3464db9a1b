//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// raidRootOverTwo is a RAID-1 root volume over both disks of the node.
var raidRootOverTwo = map[string]any{"logical_disks": []any{
	map[string]any{"size_gb": 1, "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "root"},
}}

// TestRAIDBIOS is issue 8's proof: a BIOS machine with two disks gets a
// software RAID-1 root from its target_raid_config during automated
// cleaning, the image is written onto the array and boots; with the first
// disk gone the machine still boots from the second one (SeaBIOS boots
// only the first disk present, hence the detach); undeploy's cleaning
// deletes the arrays and builds the target again.
func TestRAIDBIOS(t *testing.T) {
	e := newDeployEnv(t, "bios", []string{"--disks", "2"},
		"--deploy-callback-timeout", "180s", "--clean-callback-timeout", "300s")
	e.enroll()

	if st, m := e.api("PATCH", "/v1/nodes/"+e.nodeName, []map[string]any{{"op": "add", "path": "/raid_interface", "value": "agent"}}); st != 200 {
		t.Fatalf("raid_interface agent: %d %v", st, m)
	}
	// A malformed target is refused with the validator's message.
	bad := map[string]any{"logical_disks": []any{map[string]any{"size_gb": 1, "raid_level": "0", "controller": "software", "is_root_volume": true}}}
	if st, m := e.api("PUT", "/v1/nodes/"+e.nodeName+"/states/raid", bad); st != 400 || !strings.Contains(faultOf(m), "the root volume must be RAID-1") {
		t.Fatalf("PUT a RAID-0 root: %d %v", st, m)
	}
	if st, m := e.api("PUT", "/v1/nodes/"+e.nodeName+"/states/raid", raidRootOverTwo); st != 204 {
		t.Fatalf("PUT target_raid_config: %d %v", st, m)
	}

	start := time.Now()
	e.provision(map[string]any{"target": "provide"})
	n := e.waitState("available", 5*time.Minute)
	e.timings.mark("provide: cleaning builds the RAID-1 root", start)
	built := checkRAIDConfig(t, n)
	t.Logf("raid_config after provide: %v", n["raid_config"])

	e.setImage(nil)
	serialAt := len(e.node.serial())
	start = time.Now()
	e.provision(map[string]any{"target": "active", "configdrive": map[string]any{
		"meta_data": map[string]any{"hostname": "e2e-raid"}}})
	e.waitState("active", 5*time.Minute)
	e.timings.mark("deploy onto the md root: available -> active", start)
	start = time.Now()
	e.node.waitSerial(t, serialAt, 3*time.Minute, markerBooted, markerHostname+"e2e-raid")
	e.timings.mark("instance boot from disk 0 (serial marker)", start)

	// The first disk fails: the second one boots the instance on its own.
	e.power("power off")
	e.lab.run("node", "disk", "detach", e.nodeName, "0", "--lab", e.lab.name)
	serialAt = len(e.node.serial())
	start = time.Now()
	e.power("power on")
	e.node.waitSerial(t, serialAt, 3*time.Minute, markerBooted, markerHostname+"e2e-raid")
	e.timings.mark("instance boot from disk 1 alone (serial marker)", start)
	e.power("power off")
	e.lab.run("node", "disk", "attach", e.nodeName, "0", "--lab", e.lab.name)

	// Undeploy: cleaning deletes the arrays and, the target being still
	// set, builds it again on the wiped disks.
	start = time.Now()
	e.provision(map[string]any{"target": "deleted"})
	n = e.waitState("available", 5*time.Minute)
	e.timings.mark("undeploy: cleaning deletes and rebuilds the arrays", start)
	rebuilt := checkRAIDConfig(t, n)
	if rebuilt == built {
		t.Errorf("raid_config.last_updated unchanged (%s): the arrays were not rebuilt", rebuilt)
	}

	// Without a target, the next cleaning only deletes: raid_config {}.
	if st, m := e.api("PUT", "/v1/nodes/"+e.nodeName+"/states/raid", map[string]any{}); st != 204 {
		t.Fatalf("clear target_raid_config: %d %v", st, m)
	}
	e.provision(map[string]any{"target": "manage"})
	e.waitState("manageable", time.Minute)
	start = time.Now()
	e.provision(map[string]any{"target": "provide"})
	n = e.waitState("available", 5*time.Minute)
	e.timings.mark("provide without a target: arrays deleted", start)
	if rc, _ := n["raid_config"].(map[string]any); len(rc) != 0 {
		t.Errorf("raid_config after deleting = %v, want {}", rc)
	}
}

// checkRAIDConfig checks the node's raid_config: one RAID-1 root volume
// built over both disks. It returns last_updated.
func checkRAIDConfig(t *testing.T, n map[string]any) string {
	t.Helper()
	rc, _ := n["raid_config"].(map[string]any)
	lds, _ := rc["logical_disks"].([]any)
	if len(lds) != 1 {
		t.Fatalf("raid_config = %v, want one logical disk", rc)
	}
	ld, _ := lds[0].(map[string]any)
	if ld["raid_level"] != "1" || ld["is_root_volume"] != true || ld["controller"] != "software" {
		t.Errorf("raid_config logical disk = %v", ld)
	}
	members, _ := ld["physical_disks"].([]any)
	if len(members) != 2 {
		t.Errorf("the root volume's physical_disks = %v, want both disks", ld["physical_disks"])
	}
	props, _ := n["properties"].(map[string]any)
	if caps, _ := props["capabilities"].(string); !strings.Contains(caps, "raid_level:1") {
		t.Errorf("properties.capabilities = %v, want raid_level:1", props["capabilities"])
	}
	last, _ := rc["last_updated"].(string)
	if last == "" {
		t.Errorf("raid_config has no last_updated: %v", rc)
	}
	return last
}

// power sets the node's power state through the API and waits for it.
func (e *deployEnv) power(target string) {
	e.t.Helper()
	if st, m := e.api("PUT", "/v1/nodes/"+e.nodeName+"/states/power", map[string]any{"target": target}); st != 202 {
		e.t.Fatalf("power %s: %d %v", target, st, m)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, n := e.api("GET", "/v1/nodes/"+e.nodeName, nil)
		if n["power_state"] == target && n["target_power_state"] == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("power %s: node at %v (target %v)", target, n["power_state"], n["target_power_state"])
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// faultOf is the faultstring inside Ironic's error body.
func faultOf(m map[string]any) string {
	s, _ := m["error_message"].(string)
	return s
}
