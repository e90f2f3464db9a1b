package extensions

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/steps"
)

type fakePower struct{ syncs, offs, reboots atomic.Int32 }

func (f *fakePower) Sync()           { f.syncs.Add(1) }
func (f *fakePower) PowerOff() error { f.offs.Add(1); return nil }
func (f *fakePower) Reboot() error   { f.reboots.Add(1); return nil }

func setup(t *testing.T) (*api.Server, *fakePower) {
	t.Helper()
	dir := t.TempDir()
	cmdline := filepath.Join(dir, "cmdline")
	_ = os.WriteFile(cmdline, []byte("console=ttyS0 ipa-api-url=http://x\n"), 0o644)
	p := &fakePower{}
	reg := api.NewRegistry()
	Register(reg, Options{Power: p, Logs: LogSource{
		Files:     map[string]string{"cmdline": cmdline, "missing": filepath.Join(dir, "nope")},
		Generated: map[string]func() ([]byte, error){"agent.log": func() ([]byte, error) { return []byte("hello log"), nil }},
	}})
	return api.New(context.Background(), reg, nil), p
}

// roundTrip re-decodes a result as the conductor would see it on the wire.
func roundTrip(t *testing.T, r protocol.CommandResult) protocol.CommandResult {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var out protocol.CommandResult
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStandby(t *testing.T) {
	s, p := setup(t)
	r, err := s.Run("standby.power_off", map[string]any{}, true)
	if err != nil || r.CommandStatus != protocol.StatusSucceeded || p.offs.Load() != 1 || p.syncs.Load() == 0 {
		t.Errorf("power_off: %v %+v offs=%d", err, r, p.offs.Load())
	}
	r, err = s.Run("standby.reboot", map[string]any{}, true)
	if err != nil || r.CommandStatus != protocol.StatusSucceeded || p.reboots.Load() != 1 {
		t.Errorf("reboot: %v %+v", err, r)
	}
	r, err = s.Run("standby.sync", map[string]any{}, false)
	if err != nil || r.CommandStatus != protocol.StatusSucceeded {
		t.Errorf("sync: %v %+v", err, r)
	}
}

func TestCollectSystemLogs(t *testing.T) {
	s, _ := setup(t)
	r, err := s.Run("log.collect_system_logs", map[string]any{}, true)
	if err != nil || r.CommandStatus != protocol.StatusSucceeded {
		t.Fatalf("%v %+v", err, r)
	}
	r = roundTrip(t, r)
	b64 := r.CommandResult.(map[string]any)["system_logs"].(string)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	if !strings.Contains(files["cmdline"], "ipa-api-url") || files["agent.log"] != "hello log" {
		t.Errorf("archive = %v", files)
	}
	if _, ok := files["missing"]; ok {
		t.Errorf("missing file should be skipped")
	}
}

func TestSteps(t *testing.T) {
	s, _ := setup(t)
	r, _ := s.Run("deploy.get_deploy_steps", map[string]any{"node": map[string]any{}, "ports": []any{}}, true)
	r = roundTrip(t, r)
	res := r.CommandResult.(map[string]any)
	ds := res["deploy_steps"].(map[string]any)[protocol.GenericHardwareManager].([]any)
	if len(ds) == 0 || ds[0].(map[string]any)["step"] != "write_image" {
		t.Errorf("deploy steps = %v", ds)
	}
	if res["hardware_manager_version"].(map[string]any)["generic_hardware_manager"] != "1.1" {
		t.Errorf("hardware_manager_version = %v", res["hardware_manager_version"])
	}

	// A listed but unimplemented step fails clearly, never succeeds.
	step := map[string]any{"interface": "deploy", "step": "write_image", "args": map[string]any{"image_info": map[string]any{}}}
	r, err := s.Run("deploy.execute_deploy_step", map[string]any{"step": step, "node": map[string]any{}, "ports": []any{},
		"deploy_version": map[string]any{"generic_hardware_manager": "1.1"}}, true)
	if err != nil || r.CommandStatus != protocol.StatusFailed || r.CommandError.Type != "DeploymentError" ||
		!strings.Contains(r.CommandError.Details, "not implemented") {
		t.Errorf("unimplemented step: %v %+v %+v", err, r, r.CommandError)
	}

	// An implemented step runs and echoes the step back.
	steps.Register(steps.Clean, steps.Definition{
		Step: protocol.Step{Step: "test_step", Interface: "deploy"},
		Run: func(_ context.Context, req steps.Request) (any, error) {
			return map[string]any{"got": req.Step.Args["x"]}, nil
		},
	})
	step = map[string]any{"interface": "deploy", "step": "test_step", "args": map[string]any{"x": "y"}, "priority": 5.0}
	r, _ = s.Run("clean.execute_clean_step", map[string]any{"step": step, "node": map[string]any{}, "ports": []any{},
		"clean_version": map[string]any{"generic_hardware_manager": "1.1"}}, true)
	r = roundTrip(t, r)
	cr := r.CommandResult.(map[string]any)
	if r.CommandStatus != protocol.StatusSucceeded || cr["clean_result"].(map[string]any)["got"] != "y" ||
		cr["clean_step"].(map[string]any)["step"] != "test_step" || cr["clean_step"].(map[string]any)["priority"] != 5.0 {
		t.Errorf("clean step: %+v", r)
	}

	// Version mismatch.
	r, _ = s.Run("clean.execute_clean_step", map[string]any{"step": step, "clean_version": map[string]any{"generic_hardware_manager": "9.9"}}, true)
	if r.CommandStatus != protocol.StatusCleanVersionMismatch {
		t.Errorf("version mismatch: %+v", r)
	}

	// Unknown step.
	r, _ = s.Run("clean.execute_clean_step", map[string]any{"step": map[string]any{"interface": "raid", "step": "nope"}}, true)
	if r.CommandStatus != protocol.StatusFailed || !strings.Contains(r.CommandError.Details, "not known") {
		t.Errorf("unknown step: %+v", r)
	}

	// Missing step -> 400, not recorded.
	if _, err := s.Run("clean.execute_clean_step", map[string]any{}, true); err == nil {
		t.Errorf("missing step accepted")
	}
}
