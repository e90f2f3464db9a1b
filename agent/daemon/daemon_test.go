package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/inventory"
	"github.com/ironlite/ironlite/agent/kparams"
	"github.com/ironlite/ironlite/agent/protocol"
)

const token = "c_nFexNfsqgEhmH4qdIdMRmS3g9Wfzodody7YJKVesg"

type conductor struct {
	mu         sync.Mutex
	lookups    int
	heartbeats []protocol.HeartbeatRequest
	inspected  *protocol.InspectionData
	hbCh       chan protocol.HeartbeatRequest
}

func (c *conductor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case r.URL.Path == "/":
		_, _ = io.WriteString(w, `{"default_version":{"version":"1.82"}}`)
	case r.URL.Path == "/v1/continue_inspection":
		var d protocol.InspectionData
		_ = json.NewDecoder(r.Body).Decode(&d)
		c.inspected = &d
		_, _ = io.WriteString(w, `{"uuid":"1be26c0b-03f2-4d2e-ae87-c02d7f33c123"}`)
	case r.URL.Path == "/v1/lookup":
		c.lookups++
		if c.lookups < 3 || r.URL.Query().Get("node_uuid") != "1be26c0b-03f2-4d2e-ae87-c02d7f33c123" {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Resource could not be found.\", \"debuginfo\": null}"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(protocol.LookupResponse{
			Node:   protocol.LookupNode{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"},
			Config: protocol.LookupConfig{HeartbeatTimeout: 300, AgentToken: token, AgentTokenRequired: true},
		})
	case strings.HasPrefix(r.URL.Path, "/v1/heartbeat/"):
		var hb protocol.HeartbeatRequest
		_ = json.NewDecoder(r.Body).Decode(&hb)
		c.heartbeats = append(c.heartbeats, hb)
		select {
		case c.hbCh <- hb:
		default:
		}
		w.WriteHeader(202)
	default:
		http.NotFound(w, r)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type nopPower struct{}

func (nopPower) Sync()           {}
func (nopPower) PowerOff() error { return nil }
func (nopPower) Reboot() error   { return nil }

// TestAgentAgainstConductor runs the whole agent (minus modules and DHCP)
// against a stand-in controller: inspection, lookup retried through 404s,
// the first heartbeat, then the conductor driving a command through the
// advertised callback URL, and a forced heartbeat after an async command.
func TestAgentAgainstConductor(t *testing.T) {
	c := &conductor{hbCh: make(chan protocol.HeartbeatRequest, 10)}
	ts := httptest.NewServer(c)
	defer ts.Close()
	port := freePort(t)
	p, err := kparams.Parse("ipa-api-url=" + ts.URL + " ipa-inspection-callback-url=" + ts.URL + "/v1/continue_inspection" +
		" ipa-lookup-interval=0.05 ipa-listen-host=127.0.0.1 ipa-listen-port=" + strconv.Itoa(port) +
		" ipa-advertise-port=" + strconv.Itoa(port) + " BOOTIF=01-52-54-00-12-34-56")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(b)
	}), nil))
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Params: p, Log: log, Power: nopPower{}, MinForcedInterval: 200 * time.Millisecond,
			Collector: &inventory.Collector{Addrs: func(string) (string, string) { return "", "" }}})
	}()

	var hb protocol.HeartbeatRequest
	select {
	case hb = <-c.hbCh:
	case <-time.After(20 * time.Second):
		logMu.Lock()
		t.Fatalf("no heartbeat; agent log:\n%s", logBuf.String())
	}
	want := "http://127.0.0.1:" + strconv.Itoa(port)
	if hb.CallbackURL != want || hb.AgentToken != token || hb.AgentVersion != protocol.AgentVersion {
		t.Errorf("heartbeat = %+v, want callback %s", hb, want)
	}
	c.mu.Lock()
	if c.inspected == nil || c.inspected.Inventory.CPU.Count < 1 || c.inspected.BootInterface != "01-52-54-00-12-34-56" ||
		c.inspected.Logs == "" || len(c.inspected.Configuration.Collectors) != 2 {
		t.Errorf("inspection data = %+v", c.inspected)
	}
	c.mu.Unlock()

	// The conductor now drives the agent through the callback URL.
	post := func(q string, body any) (int, []byte) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(hb.CallbackURL+"/v1/commands/"+q, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	if code, _ := post("?wait=true", protocol.CommandRequest{Name: "deploy.get_deploy_steps", Params: map[string]any{}}); code != 401 {
		t.Errorf("command without token: %d, want 401", code)
	}
	code, b := post("?wait=true&agent_token="+token, protocol.CommandRequest{Name: "deploy.get_deploy_steps", Params: map[string]any{}})
	if code != 200 || !strings.Contains(string(b), `"write_image"`) {
		t.Errorf("get_deploy_steps: %d %s", code, b)
	}
	// An async command finishing forces a heartbeat long before the 90-180 s interval.
	code, b = post("?wait=false&agent_token="+token, protocol.CommandRequest{Name: "deploy.execute_deploy_step",
		Params: map[string]any{"step": map[string]any{"interface": "deploy", "step": "write_image"}}})
	if code != 200 {
		t.Fatalf("execute_deploy_step: %d %s", code, b)
	}
	select {
	case <-c.hbCh:
	case <-time.After(5 * time.Second):
		t.Error("no forced heartbeat after the async command finished")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("agent did not stop on cancel")
	}
	logMu.Lock()
	if !strings.Contains(logBuf.String(), "Resource could not be found.") {
		t.Errorf("lookup failures were not logged with their reason:\n%s", logBuf.String())
	}
	logMu.Unlock()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestRouteSource(t *testing.T) {
	ip, err := routeSource("http://127.0.0.1:6385")
	if err != nil || ip != "127.0.0.1" {
		t.Errorf("routeSource = %q %v", ip, err)
	}
	if _, err := routeSource("http://[::1"); err == nil {
		t.Error("bad URL accepted")
	}
}
