package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
)

const token = "c_nFexNfsqgEhmH4qdIdMRmS3g9Wfzodody7YJKVesg"

type fixture struct {
	srv     *Server
	ts      *httptest.Server
	release chan struct{}
	done    atomic.Int32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{release: make(chan struct{})}
	reg := NewRegistry()
	reg.Register("test.echo", Command{Run: func(_ context.Context, p map[string]any) (any, error) { return p, nil }})
	reg.Register("test.hello", Command{Run: func(context.Context, map[string]any) (any, error) { return "hi", nil }})
	reg.Register("test.ahello", Command{Async: true, Run: func(context.Context, map[string]any) (any, error) { return "hi", nil }})
	reg.Register("test.fail", Command{Run: func(context.Context, map[string]any) (any, error) { return nil, errors.New("boom") }})
	reg.Register("test.badparams", Command{Run: func(context.Context, map[string]any) (any, error) {
		return nil, InvalidCommandParams("need x")
	}})
	reg.Register("test.block", Command{Async: true, Run: func(ctx context.Context, _ map[string]any) (any, error) {
		select {
		case <-f.release:
			return map[string]any{"ok": true}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.srv = New(ctx, reg, nil)
	f.srv.OnAsyncDone = func() { f.done.Add(1) }
	f.srv.SetToken(token, true)
	f.ts = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.ts.URL+path, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func decodeFault(t *testing.T, b []byte) protocol.Fault {
	t.Helper()
	var f protocol.Fault
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("not a fault: %s", b)
	}
	return f
}

func TestTokenRequired(t *testing.T) {
	f := newFixture(t)
	body := protocol.CommandRequest{Name: "test.hello", Params: map[string]any{}}
	for _, q := range []string{"", "?agent_token=wrong", "?wait=true", "?agent_token=" + token[:10]} {
		code, b := f.do(t, "POST", "/v1/commands/"+q, body)
		if code != http.StatusUnauthorized {
			t.Errorf("POST %q: code %d, want 401", q, code)
		}
		if ft := decodeFault(t, b); ft.FaultCode != "Client" || ft.FaultString != "401 Unauthorized: Token invalid." {
			t.Errorf("POST %q: fault %+v", q, ft)
		}
	}
	code, b := f.do(t, "POST", "/v1/commands/?wait=true&agent_token="+token, body)
	if code != http.StatusOK {
		t.Fatalf("good token: %d %s", code, b)
	}
	// The refused attempts must not have been recorded.
	_, b = f.do(t, "GET", "/v1/commands/", nil)
	var l protocol.CommandList
	_ = json.Unmarshal(b, &l)
	if len(l.Commands) != 1 {
		t.Errorf("commands recorded: %d, want 1", len(l.Commands))
	}
}

func TestTokenNotRequiredAllowsMissing(t *testing.T) {
	f := newFixture(t)
	f.srv.SetToken(token, false)
	body := protocol.CommandRequest{Name: "test.hello", Params: map[string]any{}}
	if code, _ := f.do(t, "POST", "/v1/commands/", body); code != 200 {
		t.Errorf("missing token with agent_token_required=false: %d", code)
	}
	if code, _ := f.do(t, "POST", "/v1/commands/?agent_token=bad", body); code != 401 {
		t.Errorf("wrong token must still be refused: %d", code)
	}
}

func TestGetTokenOnceSeen(t *testing.T) {
	f := newFixture(t)
	if code, _ := f.do(t, "GET", "/v1/commands/", nil); code != 200 {
		t.Fatalf("GET without token before any token seen: %d", code)
	}
	if code, _ := f.do(t, "GET", "/v1/commands/?agent_token="+token, nil); code != 200 {
		t.Fatalf("GET with token: %d", code)
	}
	if code, _ := f.do(t, "GET", "/v1/commands/", nil); code != 401 {
		t.Errorf("GET without token after one was seen: %d, want 401", code)
	}
}

func TestBusyAndWait(t *testing.T) {
	f := newFixture(t)
	q := "?agent_token=" + token
	code, b := f.do(t, "POST", "/v1/commands/"+q+"&wait=false", protocol.CommandRequest{Name: "test.block", Params: map[string]any{"a": 1.0}})
	if code != 200 {
		t.Fatalf("start: %d %s", code, b)
	}
	var started protocol.CommandResult
	_ = json.Unmarshal(b, &started)
	if started.CommandStatus != protocol.StatusRunning || started.CommandName != "block" || started.CommandParams["a"] != 1.0 {
		t.Fatalf("started = %+v", started)
	}

	code, b = f.do(t, "POST", "/v1/commands/"+q, protocol.CommandRequest{Name: "test.hello", Params: map[string]any{}})
	if code != http.StatusConflict {
		t.Fatalf("second command while busy: %d %s", code, b)
	}
	if ft := decodeFault(t, b); ft.FaultCode != "Client" || ft.FaultString != "Agent is busy: executing command block" {
		t.Errorf("busy fault = %+v", ft)
	}

	// GET ?wait=true blocks until the command finishes.
	got := make(chan protocol.CommandResult, 1)
	go func() {
		_, b := f.do(t, "GET", "/v1/commands/"+started.ID+"?wait=true", nil)
		var r protocol.CommandResult
		_ = json.Unmarshal(b, &r)
		got <- r
	}()
	select {
	case r := <-got:
		t.Fatalf("wait=true returned before the command finished: %+v", r)
	case <-time.After(150 * time.Millisecond):
	}
	close(f.release)
	select {
	case r := <-got:
		if r.CommandStatus != protocol.StatusSucceeded || r.CommandResult.(map[string]any)["ok"] != true {
			t.Errorf("after release: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait=true never returned")
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.done.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.done.Load() != 1 {
		t.Errorf("OnAsyncDone called %d times, want 1", f.done.Load())
	}

	// Not busy any more; POST wait=true on an async command returns it finished.
	code, b = f.do(t, "POST", "/v1/commands/"+q+"&wait=true", protocol.CommandRequest{Name: "test.ahello", Params: map[string]any{}})
	var r protocol.CommandResult
	_ = json.Unmarshal(b, &r)
	if code != 200 || r.CommandStatus != protocol.StatusSucceeded {
		t.Fatalf("async wait=true: %d %+v", code, r)
	}
	if res := r.CommandResult.(map[string]any)["result"]; res != "ahello: hi" {
		t.Errorf("async string result = %q, want IPA's 'ahello: hi'", res)
	}

	_, b = f.do(t, "GET", "/v1/commands", nil)
	var l protocol.CommandList
	_ = json.Unmarshal(b, &l)
	if len(l.Commands) != 2 || l.Commands[0].ID != started.ID {
		t.Errorf("list = %+v", l)
	}
}

func TestSyncResultsAndErrors(t *testing.T) {
	f := newFixture(t)
	q := "?wait=true&agent_token=" + token
	code, b := f.do(t, "POST", "/v1/commands/"+q, protocol.CommandRequest{Name: "test.hello", Params: map[string]any{}})
	var r protocol.CommandResult
	_ = json.Unmarshal(b, &r)
	if code != 200 || r.CommandResult.(map[string]any)["result"] != "hi" || r.CommandError != nil {
		t.Errorf("sync string: %d %s", code, b)
	}

	code, b = f.do(t, "POST", "/v1/commands/"+q, protocol.CommandRequest{Name: "test.fail", Params: map[string]any{}})
	r = protocol.CommandResult{}
	_ = json.Unmarshal(b, &r)
	if code != 200 || r.CommandStatus != protocol.StatusFailed || r.CommandError == nil ||
		r.CommandError.Type != "CommandExecutionError" || r.CommandError.Details != "boom" || r.CommandError.Code != 500 {
		t.Errorf("sync failure: %d %s", code, b)
	}

	for _, c := range []struct {
		body      any
		code      int
		faultText string
	}{
		{protocol.CommandRequest{Name: "nope.x", Params: map[string]any{}}, 404, "Not found: Extension with id nope not found."},
		{protocol.CommandRequest{Name: "test.nope", Params: map[string]any{}}, 400, "Invalid command: Unknown command: nope"},
		{protocol.CommandRequest{Name: "nodot", Params: map[string]any{}}, 400, "Invalid command: Command name must be of the form <extension>.<name>"},
		{map[string]any{"name": "test.hello"}, 400, "400 Bad Request: Missing or invalid name or params"},
		{map[string]any{"name": "test.hello", "params": []int{1}}, 400, "400 Bad Request: Missing or invalid name or params"},
		{protocol.CommandRequest{Name: "test.badparams", Params: map[string]any{}}, 400, "Invalid command parameters: need x"},
	} {
		code, b := f.do(t, "POST", "/v1/commands/"+q, c.body)
		if code != c.code {
			t.Errorf("%+v: code %d, want %d (%s)", c.body, code, c.code, b)
			continue
		}
		if ft := decodeFault(t, b); ft.FaultString != c.faultText {
			t.Errorf("%+v: fault %q, want %q", c.body, ft.FaultString, c.faultText)
		}
	}
	code, b = f.do(t, "GET", "/v1/commands/does-not-exist", nil)
	if code != 404 || !strings.Contains(string(b), "Command Result with id does-not-exist not found.") {
		t.Errorf("missing command: %d %s", code, b)
	}
}

func TestStatusAndRoot(t *testing.T) {
	f := newFixture(t)
	code, b := f.do(t, "GET", "/v1/status", nil)
	var st protocol.AgentStatus
	_ = json.Unmarshal(b, &st)
	if code != 200 || st.Version != protocol.AgentVersion || st.StartedAt < 1e9 {
		t.Errorf("status: %d %s", code, b)
	}
	if code, b := f.do(t, "GET", "/", nil); code != 200 || !strings.Contains(string(b), "OpenStack Ironic Python Agent API") {
		t.Errorf("root: %d %s", code, b)
	}
	if code, b := f.do(t, "GET", "/v1/nonsense", nil); code != 404 || decodeFault(t, b).FaultCode != "Client" {
		t.Errorf("unknown route: %d %s", code, b)
	}
}

func TestPanicBecomesFailure(t *testing.T) {
	reg := NewRegistry()
	reg.Register("x.panic", Command{Run: func(context.Context, map[string]any) (any, error) { panic("oops") }})
	s := New(context.Background(), reg, nil)
	r, err := s.Run("x.panic", map[string]any{}, true)
	if err != nil || r.CommandStatus != protocol.StatusFailed || !strings.Contains(r.CommandError.Details, "oops") {
		t.Errorf("panic: %v %+v", err, r)
	}
}
