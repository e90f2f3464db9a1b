package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/drivers/ipmi"
	"github.com/ironlite/ironlite/controller/drivers/ipmi/ipmisim"
	"github.com/ironlite/ironlite/controller/store"
)

// newIPMIEnv is a controller with the real ipmi hardware type; BMCs are
// OpenIPMI ipmi_sim instances the tests start.
func newIPMIEnv(t *testing.T, cfg conductor.Config) *env {
	t.Helper()
	ipmisim.RequireTools(t)
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	fake.Register(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := ipmi.Register(reg, ipmi.Options{Logger: log, PowerTimeout: 20 * time.Second, SoftPowerTimeout: 5 * time.Second})
	if cfg.Host == "" {
		cfg.Host = "test-host"
	}
	if cfg.LockRetries == 0 {
		cfg.LockRetries, cfg.LockRetryInterval = 1, time.Millisecond
	}
	cond := conductor.New(st, reg, cfg, log)
	srv := httptest.NewServer(api.New(cond, api.Config{}, log))
	t.Cleanup(func() {
		srv.Close()
		cond.Stop()
		d.Close()
		st.Close()
	})
	return &env{t: t, srv: srv, cond: cond, st: st}
}

func (e *env) waitPower(ident, want string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := e.do("GET", "/v1/nodes/"+ident, latest, nil).json(e.t)
		if n["target_power_state"] == nil && n["reservation"] == nil && n["power_state"] == want {
			return n
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("node %s: power_state %v (target %v), want %q; last_error %v", ident, n["power_state"], n["target_power_state"], want, n["last_error"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ipmitoolPower(t *testing.T, sim *ipmisim.Sim) string {
	t.Helper()
	out, err := sim.IPMITool("chassis", "power", "status")
	if err != nil {
		t.Fatalf("ipmitool: %v: %s", err, out)
	}
	return strings.TrimSpace(out)
}

func TestIPMINodeLifecycle(t *testing.T) {
	e := newIPMIEnv(t, conductor.Config{})
	sim := ipmisim.Start(t, ipmisim.Options{
		Sensors: []ipmisim.Sensor{{Number: 1, Name: "CPU Temp", Type: 0x01, Unit: 1, Raw: 45}},
		SEL:     []ipmisim.SELEntry{{Time: time.Now(), SensorType: 0x01, SensorNumber: 1, EventType: 0x01, Data: [3]byte{0x59, 95, 90}}},
	})
	n := e.create(map[string]any{"driver": "ipmi", "name": "bm01", "driver_info": sim.DriverInfo()})
	if n["driver_info"].(map[string]any)["ipmi_password"] != "******" {
		t.Fatalf("password not masked: %v", n["driver_info"])
	}
	if n["power_interface"] != "ipmitool" || n["boot_interface"] != "ipxe" {
		t.Fatalf("ipmi defaults: %v %v", n["power_interface"], n["boot_interface"])
	}
	// manage proves the credentials with a real BMC call.
	if r := e.provision("bm01", "manage", nil); r.status != 202 {
		t.Fatalf("manage: %d %s", r.status, r.body)
	}
	got := e.waitState("bm01", "manageable")
	if got["power_state"] != "power off" {
		t.Fatalf("verify did not record the BMC's power state: %v", got["power_state"])
	}
	steps := []struct {
		target, want, ipmitool string
		simOn                  bool
	}{
		{"power on", "power on", "Chassis Power is on", true},
		{"rebooting", "power on", "Chassis Power is on", true},
		{"power off", "power off", "Chassis Power is off", false},
		{"power on", "power on", "Chassis Power is on", true},
		{"soft power off", "power off", "Chassis Power is off", false},
		{"soft rebooting", "power on", "Chassis Power is on", true},
	}
	for _, s := range steps {
		if r := e.do("PUT", "/v1/nodes/bm01/states/power", latest, map[string]any{"target": s.target}); r.status != 202 {
			t.Fatalf("%s: %d %s", s.target, r.status, r.body)
		}
		n := e.waitPower("bm01", s.want)
		if n["last_error"] != nil {
			t.Fatalf("%s: last_error %v", s.target, n["last_error"])
		}
		if got := ipmitoolPower(t, sim); got != s.ipmitool {
			t.Fatalf("%s: ipmitool says %q", s.target, got)
		}
		if sim.Power() != s.simOn {
			t.Fatalf("%s: chassis program recorded power=%v", s.target, sim.Power())
		}
	}
	for _, dev := range []struct{ api, sim string }{{"pxe", "pxe"}, {"disk", "default"}} {
		if r := e.do("PUT", "/v1/nodes/bm01/management/boot_device", latest, map[string]any{"boot_device": dev.api, "persistent": true}); r.status != 204 {
			t.Fatalf("boot device %s: %d %s", dev.api, r.status, r.body)
		}
		if sim.BootDevice() != dev.sim {
			t.Fatalf("boot device %s: simulator has %q", dev.api, sim.BootDevice())
		}
		out, err := sim.IPMITool("chassis", "bootparam", "get", "5")
		if err != nil {
			t.Fatal(err)
		}
		bd := e.do("GET", "/v1/nodes/bm01/management/boot_device", latest, nil).json(t)
		if bd["boot_device"] != dev.api {
			t.Fatalf("GET boot_device = %v after setting %s (ipmitool: %s)", bd, dev.api, out)
		}
	}
	sup := e.do("GET", "/v1/nodes/bm01/management/boot_device/supported", latest, nil).json(t)
	if len(sup["supported_boot_devices"].([]any)) != 5 {
		t.Fatalf("supported: %v", sup)
	}
	// ironlite extensions: identify LED, sensors, SEL.
	if r := e.do("PUT", "/v1/nodes/bm01/management/indicators/identify@system", latest, map[string]any{"state": "on"}); r.status != 204 {
		t.Fatalf("identify on: %d %s", r.status, r.body)
	}
	if sim.Identify() == "" || sim.Identify() == "off" {
		t.Fatalf("identify not recorded by the BMC: %q", sim.Identify())
	}
	ind := e.do("GET", "/v1/nodes/bm01/management/indicators", latest, nil).json(t)
	if len(ind["indicators"].([]any)) == 0 {
		t.Fatalf("indicators: %v", ind)
	}
	sensors := e.do("GET", "/v1/nodes/bm01/bmc/sensors", latest, nil).json(t)["sensors"].([]any)
	if len(sensors) != 1 {
		t.Fatalf("sensors: %v", sensors)
	}
	if s := sensors[0].(map[string]any); s["name"] != "CPU Temp" || s["reading"] != float64(45) {
		t.Fatalf("sensor: %v", s)
	}
	if sel := e.do("GET", "/v1/nodes/bm01/bmc/sel", latest, nil).json(t)["entries"].([]any); len(sel) != 1 {
		t.Fatalf("sel: %v", sel)
	}
	if r := e.do("DELETE", "/v1/nodes/bm01/bmc/sel", latest, nil); r.status != 204 {
		t.Fatalf("clear sel: %d %s", r.status, r.body)
	}
	if sel := e.do("GET", "/v1/nodes/bm01/bmc/sel", latest, nil).json(t)["entries"].([]any); len(sel) != 0 {
		t.Fatalf("sel not cleared: %v", sel)
	}
	v := e.do("GET", "/v1/nodes/bm01/validate", latest, nil).json(t)
	if v["power"].(map[string]any)["result"] != true || v["management"].(map[string]any)["result"] != true {
		t.Fatalf("validate: %v", v)
	}
}

func TestIPMIWrongPasswordDoesNotStick(t *testing.T) {
	e := newIPMIEnv(t, conductor.Config{})
	sim := ipmisim.Start(t, ipmisim.Options{})
	di := sim.DriverInfo()
	di["ipmi_password"] = "not-the-password"
	e.create(map[string]any{"driver": "ipmi", "name": "bm", "driver_info": di})
	e.provision("bm", "manage", nil)
	n := e.waitState("bm", "enroll")
	le, _ := n["last_error"].(string)
	if !strings.Contains(le, "Failed to get power state") || strings.Contains(le, "not-the-password") {
		t.Fatalf("last_error %q", le)
	}
	// Fix the password: manage now works.
	r := e.do("PATCH", "/v1/nodes/bm", latest, []map[string]any{{"op": "replace", "path": "/driver_info/ipmi_password", "value": sim.DriverInfo()["ipmi_password"]}})
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	e.provision("bm", "manage", nil)
	if n := e.waitState("bm", "manageable"); n["last_error"] != nil {
		t.Fatalf("last_error after fix: %v", n["last_error"])
	}
	// Missing address: a clear validation error, 400, nothing changes.
	r = e.do("POST", "/v1/nodes", latest, map[string]any{"driver": "ipmi", "name": "noaddr"})
	if r.status != 201 {
		t.Fatalf("create without address: %d", r.status)
	}
	r = e.do("PUT", "/v1/nodes/noaddr/states/power", latest, map[string]any{"target": "power on"})
	if r.status != 400 || !strings.Contains(r.fault(t), "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']") {
		t.Fatalf("power without address: %d %s", r.status, r.body)
	}
}

func TestIPMIUnreachableBMCMaintenanceAndRecovery(t *testing.T) {
	e := newIPMIEnv(t, conductor.Config{PowerStateSyncMaxRetries: 2})
	port, err := ipmisim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sim := ipmisim.Start(t, ipmisim.Options{Port: port})
	e.create(map[string]any{"driver": "ipmi", "name": "bm", "driver_info": sim.DriverInfo()})
	e.provision("bm", "manage", nil)
	e.waitState("bm", "manageable")
	if err := sim.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		start := time.Now()
		e.cond.SyncPowerStates(ctx)
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("sync round against a dead BMC took %s", d)
		}
	}
	n := e.do("GET", "/v1/nodes/bm", latest, nil).json(t)
	if n["maintenance"] != true || n["fault"] != "power failure" {
		t.Fatalf("dead BMC: maintenance %v fault %v", n["maintenance"], n["fault"])
	}
	// The BMC comes back on the same port: recovery clears the fault.
	ipmisim.Start(t, ipmisim.Options{Port: port})
	e.cond.PowerFailureRecovery(ctx)
	n = e.do("GET", "/v1/nodes/bm", latest, nil).json(t)
	if n["maintenance"] != false || n["fault"] != nil || n["power_state"] != "power off" {
		t.Fatalf("not recovered: maintenance %v fault %v power %v", n["maintenance"], n["fault"], n["power_state"])
	}
}

func TestIPMIConcurrency(t *testing.T) {
	e := newIPMIEnv(t, conductor.Config{})
	slow := ipmisim.Start(t, ipmisim.Options{})
	e.create(map[string]any{"driver": "ipmi", "name": "slow", "driver_info": slow.DriverInfo()})
	if err := slow.SetDelay(1500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Concurrent power requests on one node: the second is 409 NodeLocked.
	if r := e.do("PUT", "/v1/nodes/slow/states/power", latest, map[string]any{"target": "power on"}); r.status != 202 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	r := e.do("PUT", "/v1/nodes/slow/states/power", latest, map[string]any{"target": "power off"})
	if r.status != 409 || !strings.Contains(r.fault(t), "is locked by host test-host") {
		t.Fatalf("second: %d %s", r.status, r.body)
	}
	// Many nodes: a dead BMC and a slow one do not hold up a live one.
	deadPort, _ := ipmisim.FreePort()
	e.create(map[string]any{"driver": "ipmi", "name": "dead", "driver_info": map[string]any{
		"ipmi_address": "127.0.0.1", "ipmi_port": deadPort, "ipmi_username": "admin", "ipmi_password": "x"}})
	live := ipmisim.Start(t, ipmisim.Options{})
	e.create(map[string]any{"driver": "ipmi", "name": "live", "driver_info": live.DriverInfo()})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.do("PUT", "/v1/nodes/dead/states/power", latest, map[string]any{"target": "power on"})
	}()
	start := time.Now()
	if r := e.do("PUT", "/v1/nodes/live/states/power", latest, map[string]any{"target": "power on"}); r.status != 202 {
		t.Fatalf("live: %d %s", r.status, r.body)
	}
	e.waitPower("live", "power on")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("live BMC took %s beside a dead and a slow one", d)
	}
	wg.Wait()
	e.waitPower("slow", "power on")
	if !slow.Power() {
		t.Fatalf("slow BMC not powered on")
	}
	// The dead BMC's action fails with a clear error and frees the node.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := e.do("GET", "/v1/nodes/dead", latest, nil).json(t)
		if n["target_power_state"] == nil && n["reservation"] == nil {
			if le, _ := n["last_error"].(string); !strings.Contains(le, "Failed to change power state") {
				t.Fatalf("dead BMC last_error %q", le)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead BMC action never finished: %v", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
