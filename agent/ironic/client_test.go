package ironic

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
)

const tok = "c_nFexNfsqgEhmH4qdIdMRmS3g9Wfzodody7YJKVesg"

// fakeIronic speaks the controller's side of lookup/heartbeat: it answers
// 404 until `readyAfter` lookups have been made, like a node that is not yet
// in wait call-back, then hands out the token once and masks it afterwards.
type fakeIronic struct {
	t          *testing.T
	readyAfter int32
	lookups    atomic.Int32
	mu         sync.Mutex
	heartbeats []protocol.HeartbeatRequest
	headers    []http.Header
	tokenGiven bool
}

func (f *fakeIronic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	fail := func(code int, msg string) {
		inner, _ := json.Marshal(protocol.Fault{FaultCode: "Client", FaultString: msg})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(protocol.IronicError{ErrorMessage: string(inner)})
	}
	switch {
	case r.URL.Path == "/":
		_, _ = io.WriteString(w, `{"name":"OpenStack Ironic API","default_version":{"id":"v1","version":"1.82","min_version":"1.1"}}`)
	case r.URL.Path == "/v1/lookup":
		n := f.lookups.Add(1)
		if r.URL.Query().Get("addresses") != "52:54:00:12:34:56,52:54:00:12:34:57" {
			fail(400, "bad addresses "+r.URL.RawQuery)
			return
		}
		if n <= f.readyAfter {
			fail(404, "Resource could not be found.")
			return
		}
		f.mu.Lock()
		t := tok
		if f.tokenGiven {
			t = protocol.MaskedSecret
		}
		f.tokenGiven = true
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(protocol.LookupResponse{
			Node:   protocol.LookupNode{UUID: "7b24d24c-613f-4c48-8a43-6d83fcd49d4a"},
			Config: protocol.LookupConfig{HeartbeatTimeout: 300, AgentToken: t, AgentTokenRequired: true},
		})
	case strings.HasPrefix(r.URL.Path, "/v1/heartbeat/"):
		var hb protocol.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			fail(400, err.Error())
			return
		}
		if hb.AgentToken == "" {
			fail(400, "Agent token is required for heartbeat processing.")
			return
		}
		if hb.AgentToken != tok {
			fail(400, "Invalid or missing agent token received.")
			return
		}
		f.mu.Lock()
		f.heartbeats = append(f.heartbeats, hb)
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

func noSleep(sleeps *[]time.Duration) Backoff {
	return Backoff{Initial: time.Second, Max: 8 * time.Second, Rand: func() float64 { return 0.999999 },
		Sleep: func(_ context.Context, d time.Duration) error { *sleeps = append(*sleeps, d); return nil }}
}

func TestLookupRetriesUntilReady(t *testing.T) {
	f := &fakeIronic{t: t, readyAfter: 5}
	ts := httptest.NewServer(f)
	defer ts.Close()
	c := New([]string{ts.URL}, false, nil)
	c.GlobalRequestID = "req-abc"
	var sleeps []time.Duration
	lr, err := c.Lookup(context.Background(), []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}, "", noSleep(&sleeps))
	if err != nil {
		t.Fatal(err)
	}
	if lr.Node.UUID != "7b24d24c-613f-4c48-8a43-6d83fcd49d4a" || !lr.Config.TokenIssued() {
		t.Errorf("lookup = %+v", lr)
	}
	if f.lookups.Load() != 6 {
		t.Errorf("lookups = %d, want 6", f.lookups.Load())
	}
	// Exponential backoff, capped at Max.
	want := []time.Duration{1, 2, 4, 8, 8}
	if len(sleeps) != len(want) {
		t.Fatalf("sleeps = %v", sleeps)
	}
	for i, w := range want {
		if d := sleeps[i]; d < w*time.Second*99/100 || d > w*time.Second {
			t.Errorf("sleep %d = %v, want ~%vs", i, d, w)
		}
	}
	// Headers: lookup asks for min(server max, 1.62); request id passed on.
	var sawLookup bool
	for _, h := range f.headers {
		if v := h.Get(protocol.APIVersionHeader); v != "" {
			sawLookup = true
			if v != "1.62" {
				t.Errorf("lookup version header = %q", v)
			}
		}
		if h.Get("X-OpenStack-Request-ID") != "req-abc" {
			t.Errorf("missing request id header")
		}
	}
	if !sawLookup {
		t.Error("no versioned request seen")
	}
}

func TestLookupFailsOverToSecondURL(t *testing.T) {
	f := &fakeIronic{t: t}
	ts := httptest.NewServer(f)
	defer ts.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	c := New([]string{deadURL, ts.URL}, false, nil)
	lr, err := c.LookupOnce(context.Background(), []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}, "")
	if err != nil || lr.Node.UUID == "" {
		t.Fatalf("%v %+v", err, lr)
	}
	if c.ActiveURL() != ts.URL {
		t.Errorf("active = %s", c.ActiveURL())
	}
}

func TestLookupErrorSaysURLAndWhy(t *testing.T) {
	f := &fakeIronic{t: t, readyAfter: 100}
	ts := httptest.NewServer(f)
	defer ts.Close()
	c := New([]string{ts.URL}, false, nil)
	_, err := c.LookupOnce(context.Background(), []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}, "")
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 404 || !strings.Contains(err.Error(), ts.URL+"/v1/lookup?addresses=52:54:00:12:34:56,52:54:00:12:34:57") ||
		!strings.Contains(err.Error(), "Resource could not be found.") {
		t.Errorf("error = %v", err)
	}
	// Connection refused names the URL too.
	c = New([]string{"http://127.0.0.1:1"}, false, nil)
	_, err = c.LookupOnce(context.Background(), []string{"52:54:00:12:34:56"}, "")
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1/") {
		t.Errorf("connection error = %v", err)
	}
}

func TestLookupStopsOnContext(t *testing.T) {
	f := &fakeIronic{t: t, readyAfter: 1 << 30}
	ts := httptest.NewServer(f)
	defer ts.Close()
	c := New([]string{ts.URL}, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Lookup(ctx, []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}, "", Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
	if f.lookups.Load() < 3 {
		t.Errorf("only %d lookups in 300ms", f.lookups.Load())
	}
}

func TestHeartbeat(t *testing.T) {
	f := &fakeIronic{t: t}
	ts := httptest.NewServer(f)
	defer ts.Close()
	c := New([]string{ts.URL}, false, nil)
	hb := protocol.HeartbeatRequest{CallbackURL: "http://10.0.2.15:9999", AgentToken: tok, AgentVersion: protocol.AgentVersion}
	if err := c.Heartbeat(context.Background(), "7b24d24c-613f-4c48-8a43-6d83fcd49d4a", hb); err != nil {
		t.Fatal(err)
	}
	hb.AgentToken = "wrong"
	err := c.Heartbeat(context.Background(), "7b24d24c-613f-4c48-8a43-6d83fcd49d4a", hb)
	if err == nil || !strings.Contains(err.Error(), "Invalid or missing agent token received.") {
		t.Errorf("bad token err = %v", err)
	}
	if len(f.heartbeats) != 1 || f.heartbeats[0].CallbackURL != "http://10.0.2.15:9999" || f.heartbeats[0].AgentVersion != protocol.AgentVersion {
		t.Errorf("heartbeats = %+v", f.heartbeats)
	}
	last := f.headers[len(f.headers)-1]
	if v := last.Get(protocol.APIVersionHeader); v != "1.68" {
		t.Errorf("heartbeat version = %q, want 1.68", v)
	}
}

func TestVersionCapsAndOldServers(t *testing.T) {
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"default_version":{"version":"1.50"}}`)
	}))
	defer old.Close()
	c := New([]string{old.URL}, false, nil)
	v, err := c.Version(context.Background(), old.URL, protocol.HeartbeatAPIVersion)
	if err != nil || v != "1.50" {
		t.Errorf("Version = %q %v", v, err)
	}
	ancient := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"default_version":{"version":"1.9"}}`)
	}))
	defer ancient.Close()
	if _, err := c.Version(context.Background(), ancient.URL, "1.62"); err == nil {
		t.Error("API without lookup accepted")
	}
	if !versionLess("1.9", "1.22") || versionLess("1.62", "1.62") || !versionLess("1.62", "2.0") {
		t.Error("versionLess wrong")
	}
}
