package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/store"
)

// env is a controller on a real SQLite file behind a real HTTP server.
type env struct {
	t    *testing.T
	srv  *httptest.Server
	cond *conductor.Conductor
	st   *store.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	fake.Register(reg)
	agent.Register(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(st, reg, conductor.Config{Host: "test-host", LockRetries: 1, LockRetryInterval: time.Millisecond}, log)
	srv := httptest.NewServer(api.New(cond, api.Config{MaxBodyBytes: 64 << 10}, log))
	t.Cleanup(func() {
		srv.Close()
		cond.Stop()
		st.Close()
	})
	return &env{t: t, srv: srv, cond: cond, st: st}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// fault decodes Ironic's error body and returns the faultstring.
func (r resp) fault(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	s, ok := m["error_message"].(string)
	if !ok || len(m) != 1 {
		t.Fatalf("error body is not {\"error_message\": <string>}: %s", r.body)
	}
	var inner map[string]any
	if err := json.Unmarshal([]byte(s), &inner); err != nil {
		t.Fatalf("error_message is not a JSON string: %s", s)
	}
	if inner["faultcode"] != "Client" && inner["faultcode"] != "Server" {
		t.Fatalf("bad faultcode in %s", s)
	}
	if _, ok := inner["debuginfo"]; !ok {
		t.Fatalf("no debuginfo in %s", s)
	}
	fs, _ := inner["faultstring"].(string)
	return fs
}

func (e *env) do(method, path, version string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if version != "" {
		req.Header.Set("X-OpenStack-Ironic-API-Version", version)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, data}
}

const latest = "1.82"

func (e *env) create(body map[string]any) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/v1/nodes", latest, body)
	if r.status != 201 {
		e.t.Fatalf("create node: %d %s", r.status, r.body)
	}
	return r.json(e.t)
}

// waitState polls the node until provision_state is want with no target.
func (e *env) waitState(ident, want string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := e.do("GET", "/v1/nodes/"+ident, latest, nil).json(e.t)
		settled := n["target_provision_state"] == nil || strings.HasSuffix(want, "wait") || strings.HasSuffix(want, "failed")
		if n["provision_state"] == want && settled && n["reservation"] == nil {
			return n
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("node %s: want %q, have %v (target %v, last_error %v)", ident, want, n["provision_state"], n["target_provision_state"], n["last_error"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) provision(ident, target string, extra map[string]any) resp {
	body := map[string]any{"target": target}
	for k, v := range extra {
		body[k] = v
	}
	return e.do("PUT", "/v1/nodes/"+ident+"/states/provision", latest, body)
}

func TestRootAndVersions(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /: %d", r.status)
	}
	dv := r.json(t)["default_version"].(map[string]any)
	if dv["version"] != "1.82" || dv["min_version"] != "1.1" {
		t.Fatalf("default_version = %v", dv)
	}
	r = e.do("GET", "/v1", "", nil)
	if r.status != 200 || r.header.Get("X-OpenStack-Ironic-API-Version") != "1.1" ||
		r.header.Get("X-OpenStack-Ironic-API-Maximum-Version") != "1.82" ||
		r.header.Get("X-OpenStack-Ironic-API-Minimum-Version") != "1.1" {
		t.Fatalf("GET /v1: %d %v", r.status, r.header)
	}
	if !strings.HasPrefix(r.header.Get("Openstack-Request-Id"), "req-") {
		t.Fatalf("no request id: %v", r.header)
	}
	if r := e.do("GET", "/v1/nodes", "latest", nil); r.header.Get("X-OpenStack-Ironic-API-Version") != "1.82" {
		t.Fatalf("latest negotiated to %q", r.header.Get("X-OpenStack-Ironic-API-Version"))
	}
	for _, bad := range []string{"1.99", "1.0", "2.1", "abc", "1.x"} {
		r := e.do("GET", "/v1/nodes", bad, nil)
		if r.status != 406 {
			t.Fatalf("version %s: status %d", bad, r.status)
		}
		s := r.json(t)["error_message"].(string)
		var inner map[string]any
		if err := json.Unmarshal([]byte(s), &inner); err != nil || inner["code"] != float64(406) {
			t.Fatalf("version %s: body %s", bad, r.body)
		}
		if r.header.Get("X-OpenStack-Ironic-API-Version") != "" {
			t.Fatalf("406 carries a version header")
		}
	}
}

func TestMicroversionBehaviour(t *testing.T) {
	e := newEnv(t)
	// Below 1.11 new nodes start in available (shown as null below 1.2).
	r := e.do("POST", "/v1/nodes", "", map[string]any{"driver": "fake-hardware"})
	if r.status != 201 {
		t.Fatalf("create at 1.1: %d %s", r.status, r.body)
	}
	n := r.json(t)
	if n["provision_state"] != nil {
		t.Fatalf("1.1 shows provision_state %v, want null (available)", n["provision_state"])
	}
	if _, ok := n["name"]; ok {
		t.Fatalf("1.1 shows name")
	}
	if _, ok := n["driver_internal_info"]; ok {
		t.Fatalf("1.1 shows driver_internal_info")
	}
	n2 := e.do("GET", "/v1/nodes/"+n["uuid"].(string), "1.10", nil).json(t)
	if n2["provision_state"] != "available" || n2["name"] != nil {
		t.Fatalf("1.10: %v", n2)
	}
	if _, ok := n2["traits"]; ok {
		t.Fatalf("1.10 shows traits (1.37)")
	}
	// From 1.11 they start in enroll.
	n3 := e.create(map[string]any{"driver": "fake-hardware", "name": "n3"})
	if n3["provision_state"] != "enroll" || n3["shard"] != nil {
		t.Fatalf("1.82 create: %v", n3)
	}
	if _, ok := n3["shard"]; !ok {
		t.Fatalf("1.82 lacks shard")
	}
	// A field newer than the request's version is refused on create.
	if r := e.do("POST", "/v1/nodes", "1.4", map[string]any{"driver": "fake-hardware", "name": "x"}); r.status != 406 {
		t.Fatalf("name at 1.4: %d", r.status)
	}
	// A verb newer than the version: deploy needs 1.73.
	if r := e.provision("n3", "manage", nil); r.status != 202 {
		t.Fatalf("manage: %d %s", r.status, r.body)
	}
	e.waitState("n3", "manageable")
	r = e.do("PUT", "/v1/nodes/n3/states/provision", "1.72", map[string]any{"target": "deploy"})
	if r.status != 406 {
		t.Fatalf("deploy verb at 1.72: %d", r.status)
	}
	// fields needs 1.8.
	if r := e.do("GET", "/v1/nodes?fields=uuid", "1.7", nil); r.status != 406 {
		t.Fatalf("fields at 1.7: %d", r.status)
	}
}

func TestNodeCRUDAndMasking(t *testing.T) {
	e := newEnv(t)
	n := e.create(map[string]any{
		"driver": "fake-hardware", "name": "BM01",
		"driver_info":   map[string]any{"ipmi_address": "10.0.0.5", "ipmi_password": "s3cret", "nested": map[string]any{"auth_token": "tok"}},
		"properties":    map[string]any{"cpus": 8, "memory_mb": 16384},
		"instance_info": map[string]any{"configdrive": "H4sI", "image_source": "http://x/y.qcow2"},
	})
	di := n["driver_info"].(map[string]any)
	if di["ipmi_password"] != "******" || di["ipmi_address"] != "10.0.0.5" || di["nested"].(map[string]any)["auth_token"] != "******" {
		t.Fatalf("driver_info not masked: %v", di)
	}
	if n["instance_info"].(map[string]any)["configdrive"] != "******" {
		t.Fatalf("configdrive not masked")
	}
	if n["properties"].(map[string]any)["cpus"] != float64(8) {
		t.Fatalf("properties: %v", n["properties"])
	}
	// Every interface got the hardware type's default.
	if n["deploy_interface"] != "fake" || n["raid_interface"] != "no-raid" || n["network_interface"] != "noop" {
		t.Fatalf("interfaces: %v %v %v", n["deploy_interface"], n["raid_interface"], n["network_interface"])
	}
	if loc := e.do("POST", "/v1/nodes", latest, map[string]any{"driver": "fake-hardware"}).header.Get("Location"); !strings.Contains(loc, "/v1/nodes/") {
		t.Fatalf("no Location: %q", loc)
	}
	// The secret is stored (the conductor needs it) but never shown.
	stored, _ := e.st.GetNode(context.Background(), "BM01")
	if stored.DriverInfo["ipmi_password"] != "s3cret" {
		t.Fatalf("password not stored")
	}
	for _, path := range []string{"/v1/nodes/BM01", "/v1/nodes/detail", "/v1/nodes?detail=true"} {
		if r := e.do("GET", path, latest, nil); bytes.Contains(r.body, []byte("s3cret")) || bytes.Contains(r.body, []byte("H4sI")) {
			t.Fatalf("%s leaks a secret: %s", path, r.body)
		}
	}
	// Show by name and by UUID.
	if r := e.do("GET", "/v1/nodes/"+n["uuid"].(string), latest, nil); r.status != 200 || r.json(t)["name"] != "BM01" {
		t.Fatalf("show by uuid: %d", r.status)
	}
	// Patch add/replace/remove.
	r := e.do("PATCH", "/v1/nodes/BM01", latest, []map[string]any{
		{"op": "add", "path": "/extra/rack", "value": "r1"},
		{"op": "replace", "path": "/driver_info/ipmi_address", "value": "10.0.0.9"},
		{"op": "remove", "path": "/properties/memory_mb"},
		{"op": "add", "path": "/description", "value": "row 3"},
	})
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	p := r.json(t)
	if p["extra"].(map[string]any)["rack"] != "r1" || p["driver_info"].(map[string]any)["ipmi_address"] != "10.0.0.9" ||
		p["properties"].(map[string]any)["memory_mb"] != nil || p["description"] != "row 3" || p["updated_at"] == nil {
		t.Fatalf("patched node: %v", p)
	}
	if p["driver_info"].(map[string]any)["ipmi_password"] != "******" {
		t.Fatalf("patch response leaks or drops the password: %v", p["driver_info"])
	}
	// Duplicate name is 409.
	r = e.do("POST", "/v1/nodes", latest, map[string]any{"driver": "fake-hardware", "name": "BM01"})
	if r.status != 409 || r.fault(t) != "A node with name BM01 already exists." {
		t.Fatalf("duplicate name: %d %s", r.status, r.body)
	}
	// Unknown node is 404 with Ironic's message.
	r = e.do("GET", "/v1/nodes/nope", latest, nil)
	if r.status != 404 || r.fault(t) != "Node nope could not be found." {
		t.Fatalf("404: %d %s", r.status, r.body)
	}
	// Delete.
	if r := e.do("DELETE", "/v1/nodes/BM01", latest, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/nodes/BM01", latest, nil); r.status != 404 {
		t.Fatalf("deleted node still there: %d", r.status)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.create(map[string]any{"driver": "fake-hardware", "name": "n1", "extra": map[string]any{"a": "b"}})
	before := e.do("GET", "/v1/nodes/n1", latest, nil).body
	cases := []struct {
		name, method, path string
		body               any
		status             int
		msg                string
	}{
		{"malformed json", "POST", "/v1/nodes", `{"driver": `, 400, "Malformed JSON"},
		{"not an object", "POST", "/v1/nodes", `[1,2]`, 400, "Malformed JSON"},
		{"unknown field", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "bogus": 1}, 400, "'bogus' was unexpected"},
		{"missing driver", "POST", "/v1/nodes", map[string]any{"name": "x"}, 400, "'driver' is a required property"},
		{"unknown driver", "POST", "/v1/nodes", map[string]any{"driver": "nope"}, 400, "No valid host was found"},
		{"wrong type", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "driver_info": "x"}, 400, "is not of type 'object'"},
		{"bad name", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "name": "a b"}, 400, "invalid name"},
		{"unsupported interface", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "deploy_interface": "iscsi"}, 400, "Valid interfaces are ['fake']"},
		{"patch bad path", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "add", "path": "/extra/a.b", "value": 1}}, 400, "Invalid patch path"},
		{"patch bad op", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "move", "path": "/extra/a", "from": "/x"}}, 400, ""},
		{"patch new root", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "add", "path": "/foo", "value": 1}}, 400, "Adding a new attribute (/foo)"},
		{"patch internal", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "replace", "path": "/provision_state", "value": "active"}}, 400, "internal attribute"},
		{"patch missing member", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "remove", "path": "/extra/zz"}}, 400, "can't remove non-existent"},
		{"patch wrong type", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "replace", "path": "/extra", "value": "str"}}, 400, "is not of type 'object'"},
		{"patch partial failure", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "add", "path": "/extra/c", "value": 1}, {"op": "remove", "path": "/extra/nope"}}, 400, "Couldn't apply patch"},
		{"patch traits", "PATCH", "/v1/nodes/n1", []map[string]any{{"op": "add", "path": "/traits", "value": []string{}}}, 400, "node traits"},
		{"patch not array", "PATCH", "/v1/nodes/n1", map[string]any{"op": "add"}, 400, "Malformed JSON"},
		{"oversize body", "POST", "/v1/nodes", `{"driver":"fake-hardware","extra":{"x":"` + strings.Repeat("a", 70<<10) + `"}}`, 413, "larger than the limit"},
		{"power bad target", "PUT", "/v1/nodes/n1/states/power", map[string]any{"target": "explode"}, 400, "Invalid value for target"},
		{"power bad timeout", "PUT", "/v1/nodes/n1/states/power", map[string]any{"target": "power on", "timeout": 0}, 400, "positive"},
		{"power timeout type", "PUT", "/v1/nodes/n1/states/power", map[string]any{"target": "power on", "timeout": "x"}, 400, "integer"},
		{"provision unknown verb", "PUT", "/v1/nodes/n1/states/provision", map[string]any{"target": "bogus"}, 400, "can not be performed"},
		{"provision extra key", "PUT", "/v1/nodes/n1/states/provision", map[string]any{"target": "manage", "x": 1}, 400, "unexpected"},
		{"clean without steps", "PUT", "/v1/nodes/n1/states/provision", map[string]any{"target": "clean"}, 400, "clean_steps"},
		{"configdrive on manage", "PUT", "/v1/nodes/n1/states/provision", map[string]any{"target": "manage", "configdrive": "x"}, 400, "config drive"},
		{"boot device unknown", "PUT", "/v1/nodes/n1/management/boot_device", map[string]any{"boot_device": "floppy"}, 400, "Invalid boot device"},
		{"list bad limit", "GET", "/v1/nodes?limit=0", nil, 400, "Limit must be positive"},
		{"list bad sort", "GET", "/v1/nodes?sort_key=driver_info", nil, 400, "invalid field for sorting"},
		{"list bad state", "GET", "/v1/nodes?provision_state=flying", nil, 400, "Invalid value for provision_state"},
		{"list bad bool", "GET", "/v1/nodes?maintenance=perhaps", nil, 400, "not a boolean"},
		{"list bad field", "GET", "/v1/nodes?fields=uuid,nope", nil, 400, "are not valid"},
		{"list detail+fields", "GET", "/v1/nodes?detail=true&fields=uuid", nil, 400, "Can not specify"},
		{"unknown path", "GET", "/v1/nothing", nil, 404, "could not be found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, latest, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if msg := r.fault(t); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not contain %q", msg, tc.msg)
			}
		})
	}
	after := e.do("GET", "/v1/nodes/n1", latest, nil).body
	if !bytes.Equal(before, after) {
		t.Fatalf("bad input changed the node:\nbefore %s\nafter  %s", before, after)
	}
	if r := e.do("GET", "/v1/nodes", latest, nil); len(r.json(t)["nodes"].([]any)) != 1 {
		t.Fatalf("bad creates left nodes behind: %s", r.body)
	}
}

func TestLifecycleWithFakeHardware(t *testing.T) {
	e := newEnv(t)
	e.create(map[string]any{"driver": "fake-hardware", "name": "n1"})
	// Invalid transition: deploy from enroll.
	r := e.provision("n1", "active", nil)
	if r.status != 400 || !strings.Contains(r.fault(t), `The requested action "active" can not be performed on node`) ||
		!strings.Contains(r.fault(t), `while it is in state "enroll"`) {
		t.Fatalf("invalid transition: %d %s", r.status, r.body)
	}
	steps := []struct{ verb, want string }{
		{"manage", "manageable"}, {"provide", "available"}, {"active", "active"},
		{"rebuild", "active"}, {"deleted", "available"}, {"manage", "manageable"},
		{"clean", "manageable"}, {"adopt", "active"}, {"undeploy", "available"},
	}
	for _, s := range steps {
		var extra map[string]any
		if s.verb == "clean" {
			extra = map[string]any{"clean_steps": []map[string]any{{"interface": "deploy", "step": "erase_devices_metadata"}}}
		}
		r := e.provision("n1", s.verb, extra)
		if r.status != 202 || !strings.HasSuffix(r.header.Get("Location"), "/v1/nodes/n1/states") {
			t.Fatalf("%s: %d %s", s.verb, r.status, r.body)
		}
		n := e.waitState("n1", s.want)
		if n["last_error"] != nil {
			t.Fatalf("%s: last_error %v", s.verb, n["last_error"])
		}
	}
	// The store agrees, and the lock is free.
	n, _ := e.st.GetNode(context.Background(), "n1")
	if n.ProvisionState != "available" || n.Reservation != "" || n.ProvisionUpdatedAt == nil {
		t.Fatalf("stored node: %+v", n)
	}
	// States endpoint.
	st := e.do("GET", "/v1/nodes/n1/states", latest, nil).json(t)
	if st["provision_state"] != "available" || st["target_provision_state"] != nil {
		t.Fatalf("states: %v", st)
	}
}

func TestPowerBootDeviceMaintenanceValidate(t *testing.T) {
	e := newEnv(t)
	e.create(map[string]any{"driver": "fake-hardware", "name": "n1"})
	for _, target := range []string{"power on", "power off", "rebooting", "soft power off", "soft rebooting"} {
		r := e.do("PUT", "/v1/nodes/n1/states/power", latest, map[string]any{"target": target})
		if r.status != 202 {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
		want := "power on"
		if strings.Contains(target, "off") {
			want = "power off"
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := e.do("GET", "/v1/nodes/n1", latest, nil).json(t)
			if n["power_state"] == want && n["target_power_state"] == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: power_state %v target %v", target, n["power_state"], n["target_power_state"])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// soft power needs 1.27.
	if r := e.do("PUT", "/v1/nodes/n1/states/power", "1.26", map[string]any{"target": "soft power off"}); r.status != 406 {
		t.Fatalf("soft at 1.26: %d", r.status)
	}
	if r := e.do("PUT", "/v1/nodes/n1/management/boot_device", latest, map[string]any{"boot_device": "pxe", "persistent": true}); r.status != 204 {
		t.Fatalf("set boot device: %d %s", r.status, r.body)
	}
	bd := e.do("GET", "/v1/nodes/n1/management/boot_device", latest, nil).json(t)
	if bd["boot_device"] != "pxe" || bd["persistent"] != true {
		t.Fatalf("boot device: %v", bd)
	}
	sup := e.do("GET", "/v1/nodes/n1/management/boot_device/supported", latest, nil).json(t)
	if len(sup["supported_boot_devices"].([]any)) == 0 {
		t.Fatalf("supported: %v", sup)
	}
	if r := e.do("PUT", "/v1/nodes/n1/maintenance", latest, map[string]any{"reason": "disk swap"}); r.status != 202 {
		t.Fatalf("maintenance: %d %s", r.status, r.body)
	}
	n := e.do("GET", "/v1/nodes/n1", latest, nil).json(t)
	if n["maintenance"] != true || n["maintenance_reason"] != "disk swap" {
		t.Fatalf("maintenance not set: %v %v", n["maintenance"], n["maintenance_reason"])
	}
	if r := e.do("GET", "/v1/nodes?maintenance=true", latest, nil); len(r.json(t)["nodes"].([]any)) != 1 {
		t.Fatalf("maintenance filter: %s", r.body)
	}
	// Deploy in maintenance is refused.
	e.provision("n1", "manage", nil)
	e.waitState("n1", "manageable")
	e.provision("n1", "provide", nil)
	e.waitState("n1", "available")
	if r := e.provision("n1", "active", nil); r.status != 400 || !strings.Contains(r.fault(t), "maintenance") {
		t.Fatalf("deploy in maintenance: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/nodes/n1/maintenance", latest, nil); r.status != 202 {
		t.Fatalf("unset maintenance: %d", r.status)
	}
	if n := e.do("GET", "/v1/nodes/n1", latest, nil).json(t); n["maintenance"] != false || n["maintenance_reason"] != nil {
		t.Fatalf("maintenance not cleared: %v", n)
	}
	v := e.do("GET", "/v1/nodes/n1/validate", latest, nil).json(t)
	if v["power"].(map[string]any)["result"] != true || v["deploy"].(map[string]any)["result"] != true {
		t.Fatalf("validate: %v", v)
	}
	if v["raid"].(map[string]any)["result"] != false || !strings.Contains(v["raid"].(map[string]any)["reason"].(string), "does not support raid") {
		t.Fatalf("validate raid: %v", v["raid"])
	}
}

func TestNodeLocked409(t *testing.T) {
	e := newEnv(t)
	n := e.create(map[string]any{"driver": "fake-hardware", "name": "n1"})
	// Another conductor holds the lock.
	stored, _ := e.st.GetNode(context.Background(), "n1")
	if _, err := e.st.Reserve(context.Background(), stored.ID, "other-host"); err != nil {
		t.Fatal(err)
	}
	want := "Node " + n["uuid"].(string) + " is locked by host other-host, please retry after the current operation is completed."
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"PATCH", "/v1/nodes/n1", []map[string]any{{"op": "add", "path": "/extra/x", "value": "y"}}},
		{"PUT", "/v1/nodes/n1/states/power", map[string]any{"target": "power on"}},
		{"PUT", "/v1/nodes/n1/states/provision", map[string]any{"target": "manage"}},
		{"DELETE", "/v1/nodes/n1", nil},
		{"PUT", "/v1/nodes/n1/maintenance", nil},
	} {
		r := e.do(c.method, c.path, latest, c.body)
		if r.status != 409 || r.fault(t) != want {
			t.Fatalf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	// An action invalid in the state while locked is 409 too (the node
	// is busy), as Ironic's API answers.
	if r := e.provision("n1", "active", nil); r.status != 409 {
		t.Fatalf("invalid verb on locked node: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/nodes/n1", latest, nil); r.json(t)["reservation"] != "other-host" {
		t.Fatalf("reservation not shown: %s", r.body)
	}
}

func TestPortsAndDuplicateMAC(t *testing.T) {
	e := newEnv(t)
	n := e.create(map[string]any{"driver": "fake-hardware", "name": "n1"})
	uuid := n["uuid"].(string)
	r := e.do("POST", "/v1/ports", latest, map[string]any{"node_uuid": uuid, "address": "52:54:00:AB:CD:EF"})
	if r.status != 201 {
		t.Fatalf("create port: %d %s", r.status, r.body)
	}
	p := r.json(t)
	if p["address"] != "52:54:00:ab:cd:ef" || p["pxe_enabled"] != true || p["node_uuid"] != uuid {
		t.Fatalf("port: %v", p)
	}
	r = e.do("POST", "/v1/ports", latest, map[string]any{"node_uuid": uuid, "address": "52:54:00:ab:cd:ef"})
	if r.status != 409 || r.fault(t) != "A port with MAC address 52:54:00:ab:cd:ef already exists." {
		t.Fatalf("duplicate MAC: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/ports", latest, map[string]any{"node_uuid": "n1", "address": "52:54:00:00:00:01"})
	if r.status != 400 || r.fault(t) != "Expected UUID for node_uuid: n1" {
		t.Fatalf("node by name: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/ports", latest, map[string]any{"node_uuid": uuid, "address": "zz:zz"}); r.status != 400 {
		t.Fatalf("bad MAC: %d", r.status)
	}
	for _, path := range []string{"/v1/ports?node=n1", "/v1/nodes/n1/ports", "/v1/ports?node_uuid=" + uuid, "/v1/ports/detail", "/v1/ports?address=52:54:00:ab:cd:ef"} {
		list := e.do("GET", path, latest, nil).json(t)["ports"].([]any)
		if len(list) != 1 {
			t.Fatalf("%s: %d ports", path, len(list))
		}
	}
	r = e.do("PATCH", "/v1/ports/"+p["uuid"].(string), latest, []map[string]any{{"op": "add", "path": "/extra/switch", "value": "sw1"}})
	if r.status != 200 || r.json(t)["extra"].(map[string]any)["switch"] != "sw1" {
		t.Fatalf("patch port: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/ports/"+p["uuid"].(string), latest, nil); r.status != 204 {
		t.Fatalf("delete port: %d", r.status)
	}
	if r := e.do("GET", "/v1/ports/"+p["uuid"].(string), latest, nil); r.status != 404 {
		t.Fatalf("port still there: %d", r.status)
	}
}

func TestPaginationSortingFilters(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 25; i++ {
		body := map[string]any{"driver": "fake-hardware", "name": "node-" + string(rune('a'+i))}
		if i%5 == 0 {
			body["resource_class"] = "gold"
		}
		e.create(body)
	}
	var seen []string
	next := "/v1/nodes?limit=10&sort_key=name&sort_dir=desc"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		page := e.do("GET", next, latest, nil).json(t)
		for _, n := range page["nodes"].([]any) {
			seen = append(seen, n.(map[string]any)["name"].(string))
		}
		next = ""
		if nx, ok := page["next"].(string); ok {
			next = nx[strings.Index(nx, "/v1/"):]
			if !strings.Contains(nx, "sort_key=name") || !strings.Contains(nx, "limit=10") {
				t.Fatalf("next link %q", nx)
			}
		}
	}
	if len(seen) != 25 || seen[0] != "node-y" || seen[24] != "node-a" {
		t.Fatalf("paged names: %v", seen)
	}
	gold := e.do("GET", "/v1/nodes?resource_class=gold", latest, nil).json(t)["nodes"].([]any)
	if len(gold) != 5 {
		t.Fatalf("resource_class filter: %d", len(gold))
	}
	list := e.do("GET", "/v1/nodes?fields=uuid,name", latest, nil).json(t)["nodes"].([]any)
	first := list[0].(map[string]any)
	if len(first) != 2 {
		t.Fatalf("fields=uuid,name gave %v", first)
	}
	def := e.do("GET", "/v1/nodes", latest, nil).json(t)["nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance", "links"} {
		if _, ok := def[k]; !ok {
			t.Fatalf("default list lacks %s: %v", k, def)
		}
	}
	if len(def) != 7 {
		t.Fatalf("default list has extra fields: %v", def)
	}
	if r := e.do("GET", "/v1/nodes?provision_state=enroll&driver=fake-hardware&associated=false", latest, nil); len(r.json(t)["nodes"].([]any)) != 25 {
		t.Fatalf("filters: %s", r.body)
	}
	detail := e.do("GET", "/v1/nodes/detail?limit=3", latest, nil).json(t)
	if nx := detail["next"].(string); !strings.Contains(nx, "/v1/nodes/detail?") {
		t.Fatalf("detail next %q", nx)
	}
}

func TestDrivers(t *testing.T) {
	e := newEnv(t)
	list := e.do("GET", "/v1/drivers", latest, nil).json(t)["drivers"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["name"] != "fake-hardware" {
		t.Fatalf("drivers: %v", list)
	}
	d := e.do("GET", "/v1/drivers/fake-hardware", latest, nil).json(t)
	if d["default_deploy_interface"] != "fake" {
		t.Fatalf("driver detail: %v", d)
	}
	if r := e.do("GET", "/v1/drivers/nope", latest, nil); r.status != 404 {
		t.Fatalf("unknown driver: %d", r.status)
	}
	if r := e.do("GET", "/v1/drivers/fake-hardware/properties", latest, nil); r.status != 200 {
		t.Fatalf("properties: %d", r.status)
	}
}

// The list render cache must never serve a stale node.
func TestListReflectsChanges(t *testing.T) {
	e := newEnv(t)
	e.create(map[string]any{"driver": "fake-hardware", "name": "n1"})
	first := func() map[string]any {
		return e.do("GET", "/v1/nodes/detail", latest, nil).json(t)["nodes"].([]any)[0].(map[string]any)
	}
	if n := first(); len(n["extra"].(map[string]any)) != 0 {
		t.Fatalf("extra: %v", n["extra"])
	}
	for i := 0; i < 5; i++ {
		v := fmt.Sprint(i)
		if r := e.do("PATCH", "/v1/nodes/n1", latest, []map[string]any{{"op": "add", "path": "/extra/k", "value": v}}); r.status != 200 {
			t.Fatalf("patch: %d", r.status)
		}
		if n := first(); n["extra"].(map[string]any)["k"] != v {
			t.Fatalf("stale list after patch %d: %v", i, n["extra"])
		}
	}
	stored, _ := e.st.GetNode(context.Background(), "n1")
	e.st.Reserve(context.Background(), stored.ID, "other")
	if n := first(); n["reservation"] != "other" {
		t.Fatalf("stale reservation: %v", n["reservation"])
	}
	// Another microversion renders differently.
	n := e.do("GET", "/v1/nodes/detail", "1.4", nil).json(t)["nodes"].([]any)[0].(map[string]any)
	if _, ok := n["name"]; ok {
		t.Fatalf("1.4 list shows name (cached 1.82 rendering?)")
	}
}
