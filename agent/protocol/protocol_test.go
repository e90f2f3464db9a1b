package protocol

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const samples = "/work/shared/reference/ironic-samples"

// sample loads a captured exchange; tests skip when the reference tree is not
// present (e.g. on CI machines without the shared directory).
func sample(t *testing.T, name string) map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samples, name))
	if err != nil {
		t.Skipf("reference sample not available: %v", err)
	}
	var m struct {
		Request  map[string]json.RawMessage `json:"request"`
		Response map[string]json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Response
}

func TestLookupSample(t *testing.T) {
	resp := sample(t, "lookup-200-first.json")
	var lr LookupResponse
	if err := json.Unmarshal(resp["body"], &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Node.UUID != "7b24d24c-613f-4c48-8a43-6d83fcd49d4a" {
		t.Errorf("uuid = %q", lr.Node.UUID)
	}
	if lr.Config.HeartbeatTimeout != 300 || !lr.Config.AgentTokenRequired {
		t.Errorf("config = %+v", lr.Config)
	}
	if !lr.Config.TokenIssued() {
		t.Errorf("first lookup token should be usable: %q", lr.Config.AgentToken)
	}

	resp = sample(t, "lookup-200-second-token-masked.json")
	if err := json.Unmarshal(resp["body"], &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Config.TokenIssued() {
		t.Errorf("masked token must not count as issued")
	}
}

func TestFaultMessage(t *testing.T) {
	resp := sample(t, "lookup-error-404-unknown-mac.json")
	if got := FaultMessage(resp["body"]); got != "Resource could not be found." {
		t.Errorf("FaultMessage = %q", got)
	}
	ipa := []byte(`{"faultcode": "Client", "faultstring": "Agent is busy: executing command x"}`)
	if got := FaultMessage(ipa); got != "Agent is busy: executing command x" {
		t.Errorf("FaultMessage(ipa) = %q", got)
	}
	if got := FaultMessage([]byte("<html>bad gateway</html>")); got != "<html>bad gateway</html>" {
		t.Errorf("FaultMessage(raw) = %q", got)
	}
}

// TestAgentExchange decodes every command result the real conductor saw from
// a stand-in agent and checks they survive a round trip through our types.
func TestAgentExchange(t *testing.T) {
	f, err := os.Open(filepath.Join(samples, "agent-exchange.jsonl"))
	if err != nil {
		t.Skipf("reference sample not available: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	n := 0
	for sc.Scan() {
		var ex struct {
			Dir      string          `json:"dir"`
			Method   string          `json:"method"`
			Path     string          `json:"path"`
			Body     json.RawMessage `json:"body"`
			Response json.RawMessage `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ex); err != nil {
			t.Fatal(err)
		}
		switch {
		case ex.Dir == "ironic->agent" && ex.Method == "POST" && strings.HasPrefix(ex.Path, "/v1/commands"):
			var req CommandRequest
			if err := json.Unmarshal(ex.Body, &req); err != nil || !strings.Contains(req.Name, ".") {
				t.Errorf("command request %s: %v %q", ex.Body[:40], err, req.Name)
			}
			var res CommandResult
			if err := json.Unmarshal(ex.Response, &res); err != nil || res.ID == "" || !res.Done() {
				t.Errorf("command result: %v %+v", err, res)
			}
			n++
		case ex.Dir == "ironic->agent" && ex.Method == "GET" && strings.HasPrefix(ex.Path, "/v1/commands"):
			var l CommandList
			if err := json.Unmarshal(ex.Response, &l); err != nil || len(l.Commands) == 0 {
				t.Errorf("command list: %v", err)
			}
			n++
		case ex.Dir == "agent->ironic" && strings.HasPrefix(ex.Path, "/v1/heartbeat/"):
			var hb HeartbeatRequest
			if err := json.Unmarshal(ex.Body, &hb); err != nil || hb.AgentToken == "" || hb.CallbackURL == "" {
				t.Errorf("heartbeat: %v %+v", err, hb)
			}
			out, _ := json.Marshal(hb)
			var back map[string]any
			_ = json.Unmarshal(out, &back)
			if len(back) != 3 {
				t.Errorf("heartbeat re-encoded with extra keys: %s", out)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no exchanges decoded")
	}
}

func TestGetStepsResultShape(t *testing.T) {
	r := GetStepsResult{
		DeploySteps: map[string][]Step{GenericHardwareManager: {{Step: "write_image", Interface: "deploy"}}},
		HardwareManagerVersion: map[string]string{
			GenericHardwareManagerKey: GenericHardwareManagerVersion,
		},
	}
	b, _ := json.Marshal(r)
	want := `{"deploy_steps":{"GenericHardwareManager":[{"step":"write_image","priority":0,"interface":"deploy","reboot_requested":false,"argsinfo":null}]},"hardware_manager_version":{"generic_hardware_manager":"1.1"}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestGuessRootDisk(t *testing.T) {
	disks := []BlockDevice{{Name: "/dev/sda", Size: 1 << 30}, {Name: "/dev/sdb", Size: 100 << 30}, {Name: "/dev/sdc", Size: 8 << 30}}
	if d := GuessRootDisk(disks); d == nil || d.Name != "/dev/sdc" {
		t.Errorf("GuessRootDisk = %+v", d)
	}
	if d := GuessRootDisk(disks[:1]); d != nil {
		t.Errorf("small disk chosen: %+v", d)
	}
}
