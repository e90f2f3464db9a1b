package agentclient_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/agentclient"
)

// token looks like an Ironic agent token (43 URL-safe characters).
const token = "Qm9vdGluZy1pcm9ubGl0ZS1zZWNyZXQtdG9rZW4tX1"

// ---------------------------------------------------------------------------
// Fixtures

// agentFixture is the real agent command server (agent/api) on loopback.
type agentFixture struct {
	srv   *api.Server
	ts    *httptest.Server
	agent agentclient.Agent
	// release lets the blocking commands finish.
	release func()
	// posts and gets count requests to /v1/commands/.
	posts, gets atomic.Int32
	// stallPOST makes POSTs hang (never reaching the agent) until the client
	// gives up, while GETs still reach the real server.
	stallPOST atomic.Bool
}

func newAgent(t *testing.T, useTLS bool) *agentFixture {
	t.Helper()
	f := &agentFixture{}
	rel := make(chan struct{})
	var once sync.Once
	f.release = func() { once.Do(func() { close(rel) }) }
	block := func(ctx context.Context, _ map[string]any) (any, error) {
		select {
		case <-rel:
			return map[string]any{"ok": true}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	reg := api.NewRegistry()
	reg.Register("test.echo", api.Command{Run: func(_ context.Context, p map[string]any) (any, error) { return p, nil }})
	reg.Register("test.hello", api.Command{Run: func(context.Context, map[string]any) (any, error) { return "hi", nil }})
	reg.Register("test.ahello", api.Command{Async: true, Run: func(context.Context, map[string]any) (any, error) { return "hi", nil }})
	reg.Register("test.fail", api.Command{Run: func(context.Context, map[string]any) (any, error) {
		return nil, api.DeploymentError("disk %s on fire", "sda")
	}})
	reg.Register("test.afail", api.Command{Async: true, Run: func(context.Context, map[string]any) (any, error) {
		return nil, errors.New("boom")
	}})
	reg.Register("test.badparams", api.Command{
		Validate: func(p map[string]any) error {
			if _, ok := p["x"]; !ok {
				return api.InvalidCommandParams("need x")
			}
			return nil
		},
		Run: func(context.Context, map[string]any) (any, error) { return "ok", nil },
	})
	reg.Register("test.block", api.Command{Async: true, Run: block})
	reg.Register("test.sblock", api.Command{Run: block})

	ctx, cancel := context.WithCancel(context.Background())
	f.srv = api.New(ctx, reg, slog.New(slog.DiscardHandler))
	f.srv.SetToken(token, true)
	real := f.srv.Handler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/commands") {
			switch r.Method {
			case http.MethodPost:
				f.posts.Add(1)
				if f.stallPOST.Load() {
					_, _ = io.Copy(io.Discard, r.Body)
					<-r.Context().Done()
					return
				}
			case http.MethodGet:
				f.gets.Add(1)
			}
		}
		real.ServeHTTP(w, r)
	})
	if useTLS {
		f.ts = httptest.NewUnstartedServer(h)
		// Failed handshakes are expected; keep them out of the test output.
		f.ts.Config.ErrorLog = log.New(io.Discard, "", 0)
		f.ts.StartTLS()
	} else {
		f.ts = httptest.NewServer(h)
	}
	// Cleanups run last-in first-out: stop the commands before closing the
	// server, which waits for the handlers still running them.
	t.Cleanup(f.ts.Close)
	t.Cleanup(f.release)
	t.Cleanup(cancel)
	f.agent = agentclient.Agent{URL: f.ts.URL, Token: token}
	return f
}

// caPEM is the PEM of the TLS test server's certificate (self-signed: it is
// its own CA).
func (f *agentFixture) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ts.Certificate().Raw}))
}

// logBuf collects a client's log records.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newClient returns a client logging at debug level into a buffer that is
// checked, when the test ends, never to contain the token.
func newClient(t *testing.T, o agentclient.Options) (*agentclient.Client, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = 5 * time.Second
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 10 * time.Millisecond
	}
	t.Cleanup(func() {
		if s := logs.String(); strings.Contains(s, token) {
			t.Errorf("the agent token appears in the client's logs:\n%s", s)
		}
	})
	return agentclient.New(o), logs
}

// dialCounter is an HTTP client whose transport counts connection attempts
// and can make them fail.
type dialCounter struct {
	n    atomic.Int32
	fail error
}

func (d *dialCounter) client() *http.Client {
	var dialer net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.n.Add(1)
			if d.fail != nil {
				return nil, d.fail
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}}
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// asError extracts the *agentclient.Error and checks it does not leak the
// token.
func asError(t *testing.T, err error) *agentclient.Error {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	noToken(t, err)
	var e *agentclient.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not an *agentclient.Error", err, err)
	}
	return e
}

func noToken(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{err.Error(), fmt.Sprintf("%v|%+v|%#v|%s", err, err, err, err)} {
		if strings.Contains(s, token) {
			t.Errorf("error text contains the agent token: %s", s)
		}
	}
	if u := errors.Unwrap(err); u != nil && strings.Contains(u.Error(), token) {
		t.Errorf("wrapped error contains the agent token: %v", u)
	}
}

// genCA returns the PEM of a fresh self-signed CA certificate, unrelated to
// the test server's.
func genCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "not the agent's CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// waitDone polls the agent until its last command is no longer RUNNING.
func waitDone(t *testing.T, c *agentclient.Client, a agentclient.Agent) *protocol.CommandResult {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		last, err := c.Last(context.Background(), a)
		if err != nil {
			t.Fatalf("Last: %v", err)
		}
		if last != nil && last.Done() {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("last command still not finished: %+v", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Commands against the real agent server

func TestRunResults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		command    string
		params     map[string]any
		wait       bool
		wantStatus string
		wantResult any
		wantError  *protocol.CommandError
	}{
		{name: "sync, object result", command: "test.echo", params: map[string]any{"a": 1, "b": "x"}, wait: true,
			wantStatus: protocol.StatusSucceeded, wantResult: map[string]any{"a": 1.0, "b": "x"}},
		{name: "sync, nil params sent as {}", command: "test.echo", wait: true,
			wantStatus: protocol.StatusSucceeded, wantResult: map[string]any{}},
		{name: "sync without wait still finishes", command: "test.hello", wait: false,
			wantStatus: protocol.StatusSucceeded, wantResult: map[string]any{"result": "hi"}},
		{name: "async with wait", command: "test.ahello", wait: true,
			wantStatus: protocol.StatusSucceeded, wantResult: map[string]any{"result": "ahello: hi"}},
		{name: "sync failure is a result, not an error", command: "test.fail", wait: true,
			wantStatus: protocol.StatusFailed,
			wantError:  &protocol.CommandError{Type: "DeploymentError", Code: 500, Message: "Deploy step failed", Details: "disk sda on fire"}},
		{name: "async failure with wait", command: "test.afail", wait: true,
			wantStatus: protocol.StatusFailed,
			wantError:  &protocol.CommandError{Type: "CommandExecutionError", Code: 500, Message: "Command execution failed", Details: "boom"}},
		{name: "validated params", command: "test.badparams", params: map[string]any{"x": true}, wait: true,
			wantStatus: protocol.StatusSucceeded, wantResult: map[string]any{"result": "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAgent(t, false)
			c, _ := newClient(t, agentclient.Options{})
			res, err := c.Run(context.Background(), f.agent, tc.command, tc.params, tc.wait)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			_, short, _ := strings.Cut(tc.command, ".")
			if res.CommandName != short || res.CommandStatus != tc.wantStatus || res.ID == "" {
				t.Fatalf("result = %+v, want %s %s", res, short, tc.wantStatus)
			}
			if !reflect.DeepEqual(res.CommandResult, tc.wantResult) {
				t.Errorf("command_result = %#v, want %#v", res.CommandResult, tc.wantResult)
			}
			if !reflect.DeepEqual(res.CommandError, tc.wantError) {
				t.Errorf("command_error = %+v, want %+v", res.CommandError, tc.wantError)
			}
			last, err := c.Last(context.Background(), f.agent)
			if err != nil || last == nil || last.ID != res.ID {
				t.Errorf("Last = %+v, %v; want the command just run (%s)", last, err, res.ID)
			}
			if n := f.posts.Load(); n != 1 {
				t.Errorf("%d POSTs, want 1", n)
			}
		})
	}
}

func TestRunAsyncNoWait(t *testing.T) {
	f := newAgent(t, false)
	c, _ := newClient(t, agentclient.Options{})
	ctx := context.Background()

	res, err := c.Run(ctx, f.agent, "test.block", map[string]any{"step": "write_image"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.CommandStatus != protocol.StatusRunning || res.CommandName != "block" || res.CommandParams["step"] != "write_image" {
		t.Fatalf("started = %+v, want RUNNING block", res)
	}
	last, err := c.Last(ctx, f.agent)
	if err != nil || last == nil || last.ID != res.ID || last.CommandStatus != protocol.StatusRunning {
		t.Fatalf("Last while running = %+v, %v", last, err)
	}

	f.release()
	done := waitDone(t, c, f.agent)
	if done.ID != res.ID || done.CommandStatus != protocol.StatusSucceeded ||
		!reflect.DeepEqual(done.CommandResult, map[string]any{"ok": true}) {
		t.Fatalf("finished = %+v", done)
	}

	if _, err := c.Run(ctx, f.agent, "test.hello", nil, true); err != nil {
		t.Fatal(err)
	}
	all, err := c.Commands(ctx, f.agent)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != res.ID || all[0].CommandStatus != protocol.StatusSucceeded || all[1].CommandName != "hello" {
		t.Errorf("Commands = %+v, want block then hello, oldest first", all)
	}
}

func TestEmptyAgent(t *testing.T) {
	f := newAgent(t, false)
	c, _ := newClient(t, agentclient.Options{})
	all, err := c.Commands(context.Background(), f.agent)
	if err != nil || len(all) != 0 {
		t.Errorf("Commands = %+v, %v; want none", all, err)
	}
	last, err := c.Last(context.Background(), f.agent)
	if err != nil || last != nil {
		t.Errorf("Last = %+v, %v; want nil, nil", last, err)
	}
}

func TestStatus(t *testing.T) {
	f := newAgent(t, false)
	c, _ := newClient(t, agentclient.Options{})
	st, err := c.Status(context.Background(), f.agent)
	if err != nil {
		t.Fatal(err)
	}
	started := time.Unix(0, int64(st.StartedAt*1e9))
	if st.Version != protocol.AgentVersion || time.Since(started) > time.Minute || time.Since(started) < 0 {
		t.Errorf("status = %+v", st)
	}
}

// The agent's HTTP errors come back as *Error with its message, and are
// never retried.
func TestAgentErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		command  string
		params   map[string]any
		token    string
		busy     bool // run test.block first
		wantCode int
		wantMsg  string
	}{
		{name: "unknown command", command: "test.nope", wantCode: 400, wantMsg: "Invalid command: Unknown command: nope"},
		{name: "unknown extension", command: "nope.run", wantCode: 404, wantMsg: "Not found: Extension with id nope not found."},
		{name: "malformed name", command: "nodot", wantCode: 400,
			wantMsg: "Invalid command: Command name must be of the form <extension>.<name>"},
		{name: "invalid params", command: "test.badparams", wantCode: 400, wantMsg: "Invalid command parameters: need x"},
		{name: "wrong token", command: "test.hello", token: "wrong-" + token[:20], wantCode: 401, wantMsg: "401 Unauthorized: Token invalid."},
		{name: "no token", command: "test.hello", token: "-", wantCode: 401, wantMsg: "401 Unauthorized: Token invalid."},
		{name: "busy", command: "test.hello", busy: true, wantCode: 409, wantMsg: "Agent is busy: executing command block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAgent(t, false)
			c, _ := newClient(t, agentclient.Options{})
			a := f.agent
			switch tc.token {
			case "":
			case "-":
				a.Token = ""
			default:
				a.Token = tc.token
			}
			if tc.busy {
				if _, err := c.Run(context.Background(), f.agent, "test.block", nil, false); err != nil {
					t.Fatal(err)
				}
				f.posts.Store(0)
			}
			res, err := c.Run(context.Background(), a, tc.command, tc.params, true)
			if res != nil {
				t.Errorf("result %+v returned with an error", res)
			}
			e := asError(t, err)
			if e.StatusCode != tc.wantCode || e.Message != tc.wantMsg || e.Command != tc.command {
				t.Errorf("error = %+v, want %d %q for %s", e, tc.wantCode, tc.wantMsg, tc.command)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) || !strings.Contains(err.Error(), f.ts.URL) {
				t.Errorf("error text %q lacks the message or the agent URL", err)
			}
			if agentclient.IsUnreachable(err) {
				t.Error("an HTTP answer is not 'unreachable'")
			}
			if got := agentclient.IsBusy(err); got != (tc.wantCode == 409) {
				t.Errorf("IsBusy = %v", got)
			}
			if n := f.posts.Load(); n != 1 {
				t.Errorf("%d POSTs, want 1 (no retry of an HTTP error)", n)
			}
			if a.Token != "" && a.Token != token && strings.Contains(err.Error(), a.Token) {
				t.Errorf("error shows the (wrong) token: %v", err)
			}
		})
	}
}

// agent/api checks the token on GETs once any GET carried one (IPA's
// security_get_token_support); the client always sends it.
func TestGetWithWrongToken(t *testing.T) {
	f := newAgent(t, false)
	c, _ := newClient(t, agentclient.Options{})
	bad := f.agent
	bad.Token = "not-the-token-but-long-enough-0123456789"
	_, err := c.Commands(context.Background(), bad)
	e := asError(t, err)
	if e.StatusCode != 401 || e.Command != "" || !strings.Contains(err.Error(), "list commands") {
		t.Errorf("error = %+v (%v)", e, err)
	}
	if strings.Contains(err.Error(), bad.Token) {
		t.Errorf("error shows the token: %v", err)
	}
	if _, err := c.Commands(context.Background(), f.agent); err != nil {
		t.Errorf("right token: %v", err)
	}
	if n := f.gets.Load(); n != 2 {
		t.Errorf("%d GETs, want 2", n)
	}
}

func TestCallbackURLs(t *testing.T) {
	f := newAgent(t, false)
	for _, u := range []string{f.ts.URL, f.ts.URL + "/", f.ts.URL + "//", strings.Replace(f.ts.URL, "http://", "HTTP://", 1)} {
		t.Run("ok "+u, func(t *testing.T) {
			c, _ := newClient(t, agentclient.Options{})
			a := agentclient.Agent{URL: u, Token: token}
			if _, err := c.Run(context.Background(), a, "test.hello", nil, true); err != nil {
				t.Errorf("Run: %v", err)
			}
			if _, err := c.Status(context.Background(), a); err != nil {
				t.Errorf("Status: %v", err)
			}
		})
	}
	for _, tc := range []struct{ url, want string }{
		{"", "empty"},
		{"ftp://10.0.0.1:9999", `scheme "ftp" is not http or https`},
		{"unix:///run/agent.sock", `scheme "unix" is not http or https`},
		{"10.0.0.1:9999", "invalid agent URL"},
		{"//10.0.0.1:9999", `scheme "" is not http or https`},
		{"http://", "no host"},
		{"http://:9999", "no host"},
		{"http://10.0.0.1:9999/?x=1", "query"},
		{"http://10.0.0.1:9999/#frag", "fragment"},
		{"http://[::1", "invalid agent URL"},
	} {
		t.Run("bad "+tc.url, func(t *testing.T) {
			d := &dialCounter{}
			c, _ := newClient(t, agentclient.Options{HTTPClient: d.client()})
			_, err := c.Run(context.Background(), agentclient.Agent{URL: tc.url, Token: token}, "test.hello", nil, true)
			e := asError(t, err)
			if !strings.Contains(e.Message, "invalid agent URL") || !strings.Contains(e.Message, tc.want) {
				t.Errorf("error = %v, want it to mention %q", err, tc.want)
			}
			if agentclient.IsUnreachable(err) || d.n.Load() != 0 {
				t.Errorf("bad URL: unreachable=%v dials=%d", agentclient.IsUnreachable(err), d.n.Load())
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Unreachable agents and retries

func TestUnreachableRetried(t *testing.T) {
	addr := closedPort(t)
	a := agentclient.Agent{URL: "http://" + addr, Token: token}
	for _, tc := range []struct {
		name string
		call func(*agentclient.Client) error
	}{
		{"Run", func(c *agentclient.Client) error {
			_, err := c.Run(context.Background(), a, "deploy.get_deploy_steps", nil, true)
			return err
		}},
		{"Commands", func(c *agentclient.Client) error { _, err := c.Commands(context.Background(), a); return err }},
		{"Last", func(c *agentclient.Client) error { _, err := c.Last(context.Background(), a); return err }},
		{"Status", func(c *agentclient.Client) error { _, err := c.Status(context.Background(), a); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &dialCounter{}
			c, _ := newClient(t, agentclient.Options{HTTPClient: d.client(), Attempts: 3, RetryInterval: 30 * time.Millisecond})
			start := time.Now()
			err := tc.call(c)
			e := asError(t, err)
			if !agentclient.IsUnreachable(err) || e.StatusCode != 0 {
				t.Errorf("err = %v, want unreachable", err)
			}
			if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "after 3 attempts") {
				t.Errorf("err = %v", err)
			}
			// A refused connection never carried the POST: no check of the
			// last command, so exactly one dial per attempt.
			if n := d.n.Load(); n != 3 {
				t.Errorf("%d connection attempts, want 3", n)
			}
			if el := time.Since(start); el < 60*time.Millisecond {
				t.Errorf("3 attempts took %v, want >= 2 retry intervals", el)
			}
		})
	}
}

func TestDNSFailureIsUnreachable(t *testing.T) {
	d := &dialCounter{fail: &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "agent.example", IsNotFound: true}}}
	c, _ := newClient(t, agentclient.Options{HTTPClient: d.client(), Attempts: 2})
	_, err := c.Run(context.Background(), agentclient.Agent{URL: "http://agent.example:9999", Token: token}, "test.hello", nil, true)
	asError(t, err)
	var dns *net.DNSError
	if !agentclient.IsUnreachable(err) || !errors.As(err, &dns) || d.n.Load() != 2 {
		t.Errorf("err = %v (unreachable=%v), %d dials", err, agentclient.IsUnreachable(err), d.n.Load())
	}
}

func TestAttemptsOne(t *testing.T) {
	d := &dialCounter{}
	c, _ := newClient(t, agentclient.Options{HTTPClient: d.client(), Attempts: 1})
	_, err := c.Status(context.Background(), agentclient.Agent{URL: "http://" + closedPort(t)})
	if !agentclient.IsUnreachable(err) || d.n.Load() != 1 {
		t.Errorf("err = %v, %d dials", err, d.n.Load())
	}
}

// A POST that times out while the agent runs the command returns the
// agent's RUNNING result (IPA's _status_if_last_command_matches).
func TestPostTimeoutCommandRunning(t *testing.T) {
	for _, command := range []string{"test.sblock", "test.block"} {
		t.Run(command, func(t *testing.T) {
			f := newAgent(t, false)
			c, logs := newClient(t, agentclient.Options{CommandTimeout: 300 * time.Millisecond, Attempts: 3})
			res, err := c.Run(context.Background(), f.agent, command, map[string]any{"n": 1}, true)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			_, short, _ := strings.Cut(command, ".")
			if res.CommandName != short || res.CommandStatus != protocol.StatusRunning {
				t.Fatalf("result = %+v, want RUNNING %s", res, short)
			}
			if p, g := f.posts.Load(), f.gets.Load(); p != 1 || g != 1 {
				t.Errorf("%d POSTs and %d GETs, want 1 and 1 (no retry)", p, g)
			}
			if !strings.Contains(logs.String(), "command is running") {
				t.Errorf("no log of the recovery:\n%s", logs)
			}
			f.release()
			if done := waitDone(t, c, f.agent); done.ID != res.ID || done.CommandStatus != protocol.StatusSucceeded {
				t.Errorf("finished = %+v", done)
			}
		})
	}
}

// A POST that times out when the agent's last command is not that command
// running is retried, then reported unreachable.
func TestPostTimeoutNotRunning(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first string // run (not stalled) before
	}{
		{"no command yet", ""},
		{"last command finished", "test.hello"},
		{"same command, finished", "test.echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAgent(t, false)
			c, _ := newClient(t, agentclient.Options{CommandTimeout: 200 * time.Millisecond, Attempts: 2})
			if tc.first != "" {
				if _, err := c.Run(context.Background(), f.agent, tc.first, nil, true); err != nil {
					t.Fatal(err)
				}
			}
			f.posts.Store(0)
			f.gets.Store(0)
			f.stallPOST.Store(true)
			res, err := c.Run(context.Background(), f.agent, "test.echo", nil, true)
			e := asError(t, err)
			if res != nil || !agentclient.IsUnreachable(err) || e.StatusCode != 0 || !strings.Contains(e.Message, "timeout") {
				t.Errorf("result %+v, err %v; want unreachable (timeout)", res, err)
			}
			if p, g := f.posts.Load(), f.gets.Load(); p != 2 || g != 2 {
				t.Errorf("%d POSTs and %d GETs, want 2 and 2 (last command checked after each)", p, g)
			}
		})
	}
}

// An agent that accepts connections and drops them: connection-level,
// retried, unreachable.
func TestConnectionDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var accepts atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_, _ = conn.Read(make([]byte, 1))
			_ = conn.Close()
		}
	}()
	c, _ := newClient(t, agentclient.Options{Attempts: 3})
	_, err = c.Run(context.Background(), agentclient.Agent{URL: "http://" + ln.Addr().String(), Token: token}, "test.hello", nil, true)
	asError(t, err)
	if !agentclient.IsUnreachable(err) {
		t.Errorf("err = %v, want unreachable", err)
	}
	// Each attempt is a POST plus, since the POST was written, a GET of the
	// last command.
	if n := accepts.Load(); n < 3 {
		t.Errorf("%d connections, want >= 3", n)
	}
}

func TestContextCancel(t *testing.T) {
	t.Run("stops retries", func(t *testing.T) {
		d := &dialCounter{}
		c, _ := newClient(t, agentclient.Options{HTTPClient: d.client(), Attempts: 100, RetryInterval: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.Run(ctx, agentclient.Agent{URL: "http://" + closedPort(t), Token: token}, "test.hello", nil, true)
		asError(t, err)
		if !errors.Is(err, context.Canceled) || agentclient.IsUnreachable(err) {
			t.Errorf("err = %v, want canceled, not unreachable", err)
		}
		if d.n.Load() != 1 || time.Since(start) > 5*time.Second {
			t.Errorf("%d dials in %v", d.n.Load(), time.Since(start))
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		d := &dialCounter{}
		c, _ := newClient(t, agentclient.Options{HTTPClient: d.client()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Status(ctx, agentclient.Agent{URL: "http://" + closedPort(t)})
		if !errors.Is(err, context.Canceled) || d.n.Load() != 0 {
			t.Errorf("err = %v, %d dials", err, d.n.Load())
		}
	})
	t.Run("during a POST", func(t *testing.T) {
		f := newAgent(t, false)
		f.stallPOST.Store(true)
		c, _ := newClient(t, agentclient.Options{Attempts: 3})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Run(ctx, f.agent, "test.hello", nil, true)
		asError(t, err)
		if !errors.Is(err, context.DeadlineExceeded) || agentclient.IsUnreachable(err) {
			t.Errorf("err = %v, want the caller's deadline, not unreachable", err)
		}
		if p, g := f.posts.Load(), f.gets.Load(); p != 1 || g != 0 {
			t.Errorf("%d POSTs, %d GETs after the caller gave up; want 1, 0", p, g)
		}
	})
}

// ---------------------------------------------------------------------------
// Answers the real agent never gives (hand-written servers)

func TestBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		body     string
		call     string // run, commands, status
		wantType string
		wantMsg  string
	}{
		{name: "200 not JSON", status: 200, body: "<html>hello</html>", call: "run", wantMsg: "invalid answer"},
		{name: "200 without command_status", status: 200, body: "{}", call: "run", wantMsg: "no command_status"},
		{name: "200 without commands", status: 200, body: `{"foo": 1}`, call: "commands", wantMsg: `no "commands"`},
		{name: "200 commands not a list", status: 200, body: `{"commands": 3}`, call: "commands", wantMsg: "invalid answer"},
		{name: "200 status not JSON", status: 200, body: "ok", call: "status", wantMsg: "invalid answer"},
		{name: "502 from a proxy", status: 502, body: "<html><body>Bad Gateway</body></html>", call: "run", wantMsg: "<html><body>Bad Gateway</body></html>"},
		{name: "500 IPA fault", status: 500, body: `{"faultcode": "Server", "faultstring": "Internal error"}`, call: "run", wantMsg: "Internal error"},
		{name: "500 typed error", status: 500, body: `{"type": "ImageDownloadError", "code": 500, "faultstring": "Error downloading image"}`,
			call: "run", wantType: "ImageDownloadError", wantMsg: "Error downloading image"},
		{name: "empty 503", status: 503, body: "", call: "status", wantMsg: "Service Unavailable"},
		{name: "redirect not followed", status: 307, body: "", call: "commands", wantMsg: "Temporary Redirect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if tc.status == 307 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			t.Cleanup(ts.Close)
			c, _ := newClient(t, agentclient.Options{Attempts: 3})
			a := agentclient.Agent{URL: ts.URL, Token: token}
			var err error
			switch tc.call {
			case "run":
				_, err = c.Run(context.Background(), a, "test.hello", nil, true)
			case "commands":
				_, err = c.Commands(context.Background(), a)
			case "status":
				_, err = c.Status(context.Background(), a)
			}
			e := asError(t, err)
			if e.StatusCode != tc.status || e.Type != tc.wantType || !strings.Contains(e.Message, tc.wantMsg) {
				t.Errorf("error = %+v, want %d %q type %q", e, tc.status, tc.wantMsg, tc.wantType)
			}
			if agentclient.IsUnreachable(err) || agentclient.IsBusy(err) {
				t.Errorf("err %v: unreachable=%v busy=%v", err, agentclient.IsUnreachable(err), agentclient.IsBusy(err))
			}
			if n := hits.Load(); n != 1 {
				t.Errorf("%d requests, want 1 (never retried)", n)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// The token stays secret

func TestTokenNeverLeaks(t *testing.T) {
	// A broken agent that echoes the request URL, token included, in its
	// error page and in a garbage 200.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusBadRequest)
		}
		_, _ = fmt.Fprintf(w, `{"faultcode": "Client", "faultstring": "bad request %s (raw query %s)"}`, r.URL, r.URL.RawQuery)
	}))
	t.Cleanup(echo.Close)
	f := newAgent(t, false)
	tf := newAgent(t, true)

	d := &dialCounter{}
	c, logs := newClient(t, agentclient.Options{HTTPClient: d.client(), CommandTimeout: 200 * time.Millisecond, Attempts: 2})
	ctx := context.Background()
	scenarios := map[string]agentclient.Agent{
		"ok":           f.agent,
		"refused":      {URL: "http://" + closedPort(t), Token: token},
		"echo":         {URL: echo.URL, Token: token},
		"tls wrong CA": {URL: tf.ts.URL, Token: token, VerifyCA: genCA(t)},
		"tls no CA":    {URL: tf.ts.URL, Token: token},
		"user info":    {URL: strings.Replace(f.ts.URL, "http://", "http://admin:"+token+"@", 1), Token: token},
	}
	for name, a := range scenarios {
		_, err := c.Run(ctx, a, "test.hello", map[string]any{"k": "v"}, true)
		if err != nil {
			noToken(t, err)
		} else if name != "ok" && name != "user info" {
			t.Errorf("%s: no error", name)
		}
		if _, err := c.Commands(ctx, a); err != nil {
			noToken(t, err)
		}
	}
	f.stallPOST.Store(true)
	_, err := c.Run(ctx, f.agent, "test.hello", nil, true)
	if !agentclient.IsUnreachable(err) {
		t.Errorf("stalled POST: %v", err)
	}
	noToken(t, err)

	// The Agent itself prints without its token.
	a := f.agent
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "agent", a, "ptr", &a)
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, &a), sb.String()} {
		if strings.Contains(s, token) || !strings.Contains(s, f.ts.URL) {
			t.Errorf("Agent printed as %q", s)
		}
	}
	if s := logs.String(); !strings.Contains(s, "level=DEBUG") {
		t.Errorf("expected debug logs, got:\n%s", s)
	}
}

func TestLogging(t *testing.T) {
	f := newAgent(t, false)
	c, logs := newClient(t, agentclient.Options{})
	if _, err := c.Run(context.Background(), f.agent, "test.hello", nil, true); err != nil {
		t.Fatal(err)
	}
	s := logs.String()
	for _, want := range []string{"level=DEBUG", "command=test.hello", "agent=" + f.ts.URL, "status=200",
		"command_status=SUCCEEDED", "duration="} {
		if !strings.Contains(s, want) {
			t.Errorf("logs lack %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "level=INFO") || strings.Contains(s, "level=WARN") {
		t.Errorf("a successful command should log at debug only:\n%s", s)
	}
}

// ---------------------------------------------------------------------------
// https with a per-agent CA

func TestTLS(t *testing.T) {
	f := newAgent(t, true)
	ca := f.caPEM()
	ctx := context.Background()

	t.Run("VerifyCA trusted", func(t *testing.T) {
		c, _ := newClient(t, agentclient.Options{})
		a := agentclient.Agent{URL: f.ts.URL, Token: token, VerifyCA: ca}
		res, err := c.Run(ctx, a, "test.hello", nil, true)
		if err != nil || res.CommandStatus != protocol.StatusSucceeded {
			t.Fatalf("Run over https = %+v, %v", res, err)
		}
		if _, err := c.Status(ctx, a); err != nil {
			t.Errorf("Status: %v", err)
		}
		if _, err := c.Last(ctx, a); err != nil {
			t.Errorf("Last: %v", err)
		}
		if n := c.TLSClients(); n != 1 {
			t.Errorf("%d cached TLS clients, want 1 for one CA", n)
		}
	})

	for _, tc := range []struct {
		name, ca string
	}{
		{"wrong CA", genCA(t)},
		{"no CA: system roots", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &dialCounter{}
			c, _ := newClient(t, agentclient.Options{HTTPClient: d.client(), Attempts: 3})
			posts := f.posts.Load()
			_, err := c.Run(ctx, agentclient.Agent{URL: f.ts.URL, Token: token, VerifyCA: tc.ca}, "test.hello", nil, true)
			e := asError(t, err)
			var ua x509.UnknownAuthorityError
			var cv *tls.CertificateVerificationError
			if !errors.As(err, &ua) && !errors.As(err, &cv) {
				t.Errorf("err = %v, want a certificate verification error", err)
			}
			if agentclient.IsUnreachable(err) || e.StatusCode != 0 {
				t.Errorf("a certificate that does not verify is not 'unreachable': %v", err)
			}
			if n := d.n.Load(); n != 1 {
				t.Errorf("%d connection attempts, want 1 (not retried)", n)
			}
			if f.posts.Load() != posts {
				t.Error("the command reached the agent over an unverified connection")
			}
		})
	}

	t.Run("VerifyCA not PEM", func(t *testing.T) {
		d := &dialCounter{}
		c, _ := newClient(t, agentclient.Options{HTTPClient: d.client()})
		_, err := c.Status(ctx, agentclient.Agent{URL: f.ts.URL, VerifyCA: "not a certificate"})
		e := asError(t, err)
		if !strings.Contains(e.Message, "PEM") || agentclient.IsUnreachable(err) || d.n.Load() != 0 {
			t.Errorf("err = %v, %d dials", err, d.n.Load())
		}
	})

	t.Run("VerifyCA ignored for http", func(t *testing.T) {
		plain := newAgent(t, false)
		c, _ := newClient(t, agentclient.Options{})
		if _, err := c.Status(ctx, agentclient.Agent{URL: plain.ts.URL, VerifyCA: "not a certificate"}); err != nil {
			t.Errorf("http agent with a VerifyCA: %v", err)
		}
	})

	t.Run("cache is bounded", func(t *testing.T) {
		c, _ := newClient(t, agentclient.Options{Attempts: 1})
		for range 70 {
			_, _ = c.Status(ctx, agentclient.Agent{URL: f.ts.URL, VerifyCA: genCA(t)})
		}
		if _, err := c.Status(ctx, agentclient.Agent{URL: f.ts.URL, VerifyCA: ca}); err != nil {
			t.Errorf("Status: %v", err)
		}
		if n := c.TLSClients(); n != 64 {
			t.Errorf("%d cached TLS clients, want the cap of 64", n)
		}
	})
}
