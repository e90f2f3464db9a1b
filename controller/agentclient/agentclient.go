// Package agentclient is the conductor's client for the deploy agent's
// command API (IPA's ironic_python_agent/api/app.py on the agent's
// callback_url), behaving like Ironic's AgentClient
// (ironic/drivers/modules/agent_client.py):
//
//   - POST <agent_url>/v1/commands/?wait=true|false&agent_token=<token> with
//     the body {"name": "<extension>.<command>", "params": {...}};
//   - every request is bounded by Options.CommandTimeout (60 s, IPA's
//     [agent]command_timeout);
//   - connection-level failures (refused, reset, DNS, timeout) are retried
//     Options.Attempts times ([agent]max_command_attempts, 3); an HTTP answer
//     from the agent, whatever its status, is never retried;
//   - when a POST may have reached the agent but no answer came back (a
//     timeout or a connection lost after the request was written), the client
//     looks at the agent's last command: if it is the same command and still
//     RUNNING, that result is returned instead of an error
//     (_status_if_last_command_matches). Otherwise the POST is retried like
//     any connection failure, as Ironic does; a command that did run and has
//     already finished may therefore be sent again.
//
// A command that ran and failed is not a Go error: Run returns its
// CommandResult with CommandStatus FAILED (or CLEAN_VERSION_MISMATCH) and
// CommandError set, and a nil error. Go errors are reserved for "no usable
// answer": an *Error for an HTTP error status or an unreadable answer, for an
// unreachable agent (see IsUnreachable), or for a cancelled context.
//
// The agent token travels only in the agent_token query parameter. It never
// appears in errors or log records: they name the agent by its callback URL
// (user info redacted) and any copy of the token in a message is masked.
package agentclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Defaults for Options.
const (
	DefaultCommandTimeout = 60 * time.Second
	DefaultAttempts       = 3
	DefaultRetryInterval  = time.Second
)

// maxResponse bounds a response body; log.collect_system_logs returns a
// base64 tarball, the largest answer the agent gives.
const maxResponse = 256 << 20

// maxTLSClients bounds the per-CA client cache: auto-TLS agents present a new
// self-signed certificate on every boot, so CAs come and go.
const maxTLSClients = 64

// Agent addresses one running agent: the callback_url it heartbeated and its
// token; VerifyCA is a PEM CA for an https callback (empty: system roots /
// plain http).
//
// Printing an Agent with fmt or log/slog shows its URL only, never the token.
type Agent struct {
	URL, Token, VerifyCA string
}

// String names the agent by its URL, without the token.
func (a Agent) String() string { return redactURL(a.URL) }

// GoString is String for %#v, so that the token is not printed either.
func (a Agent) GoString() string {
	return fmt.Sprintf("agentclient.Agent{URL:%q, Token:%q, VerifyCA:%d bytes}", redactURL(a.URL), mask(a.Token), len(a.VerifyCA))
}

// LogValue logs the agent as its URL, without the token.
func (a Agent) LogValue() slog.Value { return slog.StringValue(redactURL(a.URL)) }

// Options configure a Client. Zero values select the defaults.
type Options struct {
	// HTTPClient sends the requests; nil means a client of its own that does
	// not follow redirects. Per-attempt timeouts come from CommandTimeout,
	// not from HTTPClient.Timeout. For agents with a VerifyCA, its Transport
	// is cloned (if it is an *http.Transport; otherwise a clone of
	// http.DefaultTransport is used) with only that CA trusted.
	HTTPClient *http.Client
	// CommandTimeout bounds each HTTP request, including a POST with
	// wait=true; default 60 s.
	CommandTimeout time.Duration
	// Attempts is how many times a request is tried when the agent cannot be
	// reached; default 3.
	Attempts int
	// RetryInterval is the pause between attempts; 0 means 1 s, a negative
	// value no pause.
	RetryInterval time.Duration
	// Logger receives debug records of every request; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Client talks to agents. It is safe for concurrent use.
type Client struct {
	base     *http.Client
	timeout  time.Duration
	attempts int
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	tls      map[string]*http.Client // by VerifyCA PEM
	tlsOrder []string                // insertion order, for eviction
}

// New returns a Client.
func New(o Options) *Client {
	c := &Client{
		base:     o.HTTPClient,
		timeout:  o.CommandTimeout,
		attempts: o.Attempts,
		interval: o.RetryInterval,
		log:      o.Logger,
		tls:      map[string]*http.Client{},
	}
	if c.base == nil {
		c.base = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultCommandTimeout
	}
	if c.attempts <= 0 {
		c.attempts = DefaultAttempts
	}
	if c.interval == 0 {
		c.interval = DefaultRetryInterval
	} else if c.interval < 0 {
		c.interval = 0
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// Error is a request to an agent that got no usable answer. A failed
// command is not an Error: see Run.
type Error struct {
	// Command is the command Run sent ("deploy.get_deploy_steps"); empty
	// for Commands, Last and Status.
	Command string
	// URL is the agent's callback URL (never with the token).
	URL string
	// StatusCode is the agent's HTTP status, 0 when there was no answer.
	StatusCode int
	// Message is the agent's error text (protocol.FaultMessage of the body)
	// or a description of the failure.
	Message string
	// Type is the error class when the body names one ({"type": ...}, as
	// IPA serialises its RESTErrors); IPA's and our agent's HTTP faults
	// ({"faultcode","faultstring"}) do not, so it is usually empty.
	Type string
	// Err is the underlying cause, if any (a network error,
	// context.Canceled, a TLS verification error).
	Err error

	op          string // what was attempted, for Error()
	unreachable bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("agent")
	if e.URL != "" {
		b.WriteString(" ")
		b.WriteString(e.URL)
	}
	b.WriteString(": ")
	if e.Command != "" {
		b.WriteString("command ")
		b.WriteString(e.Command)
	} else if e.op != "" {
		b.WriteString(e.op)
	} else {
		b.WriteString("request")
	}
	b.WriteString(": ")
	if e.StatusCode != 0 {
		b.WriteString("HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// IsUnreachable reports whether err means the agent could not be reached at
// all after every attempt: connection refused or reset, DNS failure, or no
// answer within the command timeout. The conductor treats it as "agent not
// up yet / powered off". An HTTP error status, a TLS certificate that does
// not verify and a cancelled context are not "unreachable".
func IsUnreachable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.unreachable
}

// IsBusy reports whether the agent refused a command because another one is
// still running (409 "Agent is busy"); Ironic maps it to AgentInProgress and
// waits for the next heartbeat.
func IsBusy(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode != 0 &&
		(e.StatusCode == http.StatusConflict || strings.Contains(strings.ToLower(e.Message), "agent is busy"))
}

// Run sends a command. wait=true blocks until the agent finishes it (sync
// commands, or async ones with wait). Returns the agent's CommandResult.
//
// A command that fails on the agent is not a Go error: the result has
// CommandStatus FAILED (or CLEAN_VERSION_MISMATCH) and CommandError set, and
// the caller decides. The result may be RUNNING even with wait=true when the
// POST timed out and the agent's last command is this one, still running.
// params may be nil (sent as {}).
func (c *Client) Run(ctx context.Context, a Agent, name string, params map[string]any, wait bool) (*protocol.CommandResult, error) {
	start := time.Now()
	if params == nil {
		params = map[string]any{}
	}
	body, err := json.Marshal(protocol.CommandRequest{Name: name, Params: params})
	if err != nil {
		return nil, &Error{Command: name, URL: redactURL(a.URL), Message: "encode params: " + err.Error(), Err: err}
	}
	q := url.Values{"wait": {strconv.FormatBool(wait)}}
	if a.Token != "" {
		q.Set("agent_token", a.Token)
	}
	r := request{method: http.MethodPost, path: "/v1/commands/", query: q, body: body, command: name, attempts: c.attempts}
	short := name
	if _, after, ok := strings.Cut(name, "."); ok {
		short = after
	}
	r.recover = func(ctx context.Context) *protocol.CommandResult {
		// IPA's _status_if_last_command_matches: a single look, no retries.
		last, err := c.last(ctx, a, 1)
		switch {
		case err != nil:
			c.log.DebugContext(ctx, "agent: cannot check the last command after a failed POST",
				"command", name, "agent", a, "error", err.Error())
		case last == nil:
			c.log.DebugContext(ctx, "agent: no command recorded after a failed POST", "command", name, "agent", a)
		case last.CommandName != short || last.CommandStatus != protocol.StatusRunning:
			c.log.DebugContext(ctx, "agent: last command is not this one running",
				"command", name, "agent", a, "last", last.CommandName, "last_status", last.CommandStatus)
		default:
			return last
		}
		return nil
	}
	b, status, recovered, err := c.do(ctx, a, r)
	if err != nil {
		return nil, err
	}
	res := recovered
	if res == nil {
		res = new(protocol.CommandResult)
		if err := c.decode(a, r, status, b, res); err != nil {
			return nil, err
		}
		if res.CommandStatus == "" {
			return nil, c.invalid(a, r, status, b, errors.New("no command_status"))
		}
	}
	c.log.DebugContext(ctx, "agent command", "command", name, "agent", a, "wait", wait,
		"command_status", res.CommandStatus, "recovered", recovered != nil, "duration", time.Since(start))
	return res, nil
}

// Commands lists every command the agent has run since it started, oldest
// first (GET /v1/commands/).
func (c *Client) Commands(ctx context.Context, a Agent) ([]protocol.CommandResult, error) {
	return c.commands(ctx, a, c.attempts)
}

// Last returns the agent's last command, or nil if it has run none.
func (c *Client) Last(ctx context.Context, a Agent) (*protocol.CommandResult, error) {
	return c.last(ctx, a, c.attempts)
}

// Status returns the agent's GET /v1/status.
func (c *Client) Status(ctx context.Context, a Agent) (*protocol.AgentStatus, error) {
	r := request{method: http.MethodGet, path: "/v1/status", op: "status", attempts: c.attempts}
	b, status, _, err := c.do(ctx, a, r)
	if err != nil {
		return nil, err
	}
	var s protocol.AgentStatus
	if err := c.decode(a, r, status, b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (c *Client) last(ctx context.Context, a Agent, attempts int) (*protocol.CommandResult, error) {
	l, err := c.commands(ctx, a, attempts)
	if err != nil || len(l) == 0 {
		return nil, err
	}
	return &l[len(l)-1], nil
}

func (c *Client) commands(ctx context.Context, a Agent, attempts int) ([]protocol.CommandResult, error) {
	// The token goes on GETs too: IPA then requires it on every GET
	// (security_get_token_support), which only tightens access.
	var q url.Values
	if a.Token != "" {
		q = url.Values{"agent_token": {a.Token}}
	}
	r := request{method: http.MethodGet, path: "/v1/commands/", query: q, op: "list commands", attempts: attempts}
	b, status, _, err := c.do(ctx, a, r)
	if err != nil {
		return nil, err
	}
	var l struct {
		Commands *[]protocol.CommandResult `json:"commands"`
	}
	if err := c.decode(a, r, status, b, &l); err != nil {
		return nil, err
	}
	if l.Commands == nil {
		return nil, c.invalid(a, r, status, b, errors.New(`no "commands"`))
	}
	return *l.Commands, nil
}

// request is one logical call, possibly sent several times.
type request struct {
	method   string
	path     string // under the callback URL, e.g. "/v1/commands/"
	query    url.Values
	body     []byte
	command  string // Run's command name
	op       string // for errors and logs when command is empty
	attempts int
	// recover, if set, is asked after a failure that may have reached the
	// agent; a non-nil result is returned instead of the error.
	recover func(ctx context.Context) *protocol.CommandResult
}

// logAttrs names the request in log records (never with the token).
func (r request) logAttrs(agent string, attempt int) []any {
	attrs := []any{"method", r.method, "path", r.path}
	if r.command != "" {
		attrs = append(attrs, "command", r.command)
	}
	return append(attrs, "agent", agent, "attempt", attempt)
}

// do sends r until it gets an HTTP answer, the attempts are exhausted or ctx
// ends. It returns the body and status of a 2xx answer, or a result
// recovered by r.recover, or an *Error.
func (c *Client) do(ctx context.Context, a Agent, r request) ([]byte, int, *protocol.CommandResult, error) {
	shown := redactURL(a.URL)
	newErr := func(status int, msg string, cause error) *Error {
		return &Error{Command: r.command, URL: shown, StatusCode: status, Message: scrub(msg, a.Token), Err: cause, op: r.op}
	}
	u, err := endpoint(a.URL, r.path)
	if err != nil {
		return nil, 0, nil, newErr(0, err.Error(), err)
	}
	u.RawQuery = r.query.Encode()
	hc, err := c.httpClient(u.Scheme, a.VerifyCA)
	if err != nil {
		return nil, 0, nil, newErr(0, err.Error(), err)
	}
	var last *Error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, 0, nil, c.canceled(ctx, newErr, attempt-1, last)
		}
		start := time.Now()
		b, status, sent, err := c.once(ctx, hc, u, r)
		dur := time.Since(start)
		if err == nil {
			c.log.DebugContext(ctx, "agent request", append(r.logAttrs(shown, attempt), "status", status, "duration", dur)...)
			if status < 200 || status > 299 {
				e := newErr(status, protocol.FaultMessage(b), nil)
				if e.Message == "" {
					e.Message = http.StatusText(status)
				}
				var typed struct {
					Type string `json:"type"`
				}
				if json.Unmarshal(b, &typed) == nil {
					e.Type = typed.Type
				}
				return nil, status, nil, e
			}
			return b, status, nil, nil
		}
		if ctx.Err() != nil {
			return nil, 0, nil, c.canceled(ctx, newErr, attempt, last)
		}
		var tooBig *tooLargeError
		if errors.As(err, &tooBig) {
			return nil, status, nil, newErr(status, err.Error(), nil)
		}
		if isTLSConfigError(err) {
			// A certificate that does not verify is a configuration
			// problem, not an absent agent: retrying cannot help.
			c.log.DebugContext(ctx, "agent request failed", append(r.logAttrs(shown, attempt),
				"duration", dur, "error", scrub(err.Error(), a.Token))...)
			return nil, 0, nil, newErr(0, "TLS: "+err.Error(), err)
		}
		last = newErr(0, err.Error(), err)
		last.unreachable = true
		c.log.DebugContext(ctx, "agent request failed", append(r.logAttrs(shown, attempt),
			"of", r.attempts, "sent", sent, "duration", dur, "error", last.Message)...)
		if sent && r.recover != nil {
			if res := r.recover(ctx); res != nil {
				c.log.DebugContext(ctx, "agent: command is running, taking its result", "command", r.command,
					"agent", shown, "id", res.ID)
				return nil, 0, res, nil
			}
			if ctx.Err() != nil {
				return nil, 0, nil, c.canceled(ctx, newErr, attempt, last)
			}
		}
		if attempt >= r.attempts {
			if r.attempts > 1 {
				last.Message = fmt.Sprintf("unreachable after %d attempts: %s", attempt, last.Message)
			} else {
				last.Message = "unreachable: " + last.Message
			}
			return nil, 0, nil, last
		}
		if c.interval > 0 {
			t := time.NewTimer(c.interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, 0, nil, c.canceled(ctx, newErr, attempt, last)
			case <-t.C:
			}
		}
	}
}

// canceled builds the error for a ctx that ended; it is not "unreachable".
func (c *Client) canceled(ctx context.Context, newErr func(int, string, error) *Error, attempts int, last *Error) *Error {
	cause := context.Cause(ctx)
	msg := "abandoned: " + cause.Error()
	if attempts > 0 && last != nil {
		msg = fmt.Sprintf("%s after %d attempt(s); last: %s", msg, attempts, last.Message)
	}
	e := newErr(0, msg, cause)
	c.log.DebugContext(ctx, "agent request abandoned", "agent", e.URL, "command", e.Command, "op", e.op, "error", e.Message)
	return e
}

// once sends r once, bounded by the command timeout, and reads the whole
// answer. sent reports whether the request was written to the connection,
// i.e. whether the agent may have acted on it.
func (c *Client) once(ctx context.Context, hc *http.Client, u *url.URL, r request) (body []byte, status int, sent bool, err error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var wrote atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) },
	})
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u.String(), rd)
	if err != nil {
		return nil, 0, false, unwrapURLError(err)
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, wrote.Load(), timeoutText(actx, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, resp.StatusCode, true, timeoutText(actx, fmt.Errorf("reading the answer: %w", err))
	}
	if len(body) > maxResponse {
		return nil, resp.StatusCode, true, &tooLargeError{}
	}
	return body, resp.StatusCode, true, nil
}

type tooLargeError struct{}

func (*tooLargeError) Error() string {
	return fmt.Sprintf("answer larger than %d bytes", maxResponse)
}

// timeoutText makes a per-attempt timeout read as one.
func timeoutText(actx context.Context, err error) error {
	if errors.Is(actx.Err(), context.DeadlineExceeded) && errors.Is(err, context.DeadlineExceeded) {
		return &timeoutError{err}
	}
	return err
}

type timeoutError struct{ err error }

func (e *timeoutError) Error() string {
	return "no answer within the command timeout: " + e.err.Error()
}
func (e *timeoutError) Unwrap() error { return e.err }
func (e *timeoutError) Timeout() bool { return true }

// unwrapURLError drops net/http's *url.Error wrapper: its text holds the
// full request URL, token included.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// isTLSConfigError reports a certificate that does not verify or a TLS
// handshake with something that does not speak TLS.
func isTLSConfigError(err error) bool {
	var (
		cv  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
		rec tls.RecordHeaderError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &rec)
}

func (c *Client) decode(a Agent, r request, status int, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return c.invalid(a, r, status, b, err)
	}
	return nil
}

func (c *Client) invalid(a Agent, r request, status int, b []byte, err error) *Error {
	msg := fmt.Sprintf("invalid answer (%v): %s", err, protocol.FaultMessage(b))
	return &Error{Command: r.command, URL: redactURL(a.URL), StatusCode: status, Message: scrub(msg, a.Token), Err: err, op: r.op}
}

// endpoint validates a callback URL and appends path to it. The callback may
// carry a path prefix and a trailing slash.
func endpoint(callback, path string) (*url.URL, error) {
	if callback == "" {
		return nil, errors.New("invalid agent URL: empty")
	}
	u, err := url.Parse(callback)
	if err != nil {
		return nil, fmt.Errorf("invalid agent URL %q: %w", redactURL(callback), errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("invalid agent URL %q: scheme %q is not http or https", redactURL(callback), u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("invalid agent URL %q: no host", redactURL(callback))
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("invalid agent URL %q: has a query or fragment", redactURL(callback))
	}
	v := *u
	v.Path = strings.TrimRight(u.Path, "/") + path
	v.RawPath = ""
	return &v, nil
}

// redactURL shows a callback URL without any password in it.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery = ""
	return u.Redacted()
}

// scrub masks the token (raw or query-escaped) wherever it appears in msg,
// e.g. in an error page that echoes the request URL.
func scrub(msg, token string) string {
	if token == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, token, "***")
	if esc := url.QueryEscape(token); esc != token {
		msg = strings.ReplaceAll(msg, esc, "***")
	}
	return msg
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// httpClient returns the client for an agent: the base one, or for an https
// agent with a VerifyCA one that trusts only that CA (cached per CA).
func (c *Client) httpClient(scheme, ca string) (*http.Client, error) {
	if ca == "" || scheme != "https" {
		return c.base, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc := c.tls[ca]; hc != nil {
		return hc, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca)) {
		return nil, errors.New("agent VerifyCA holds no PEM certificate")
	}
	tr, ok := c.base.Transport.(*http.Transport)
	if ok {
		tr = tr.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.TLSClientConfig.RootCAs = pool
	hc := *c.base
	hc.Transport = tr
	if len(c.tlsOrder) >= maxTLSClients {
		old := c.tlsOrder[0]
		c.tlsOrder = c.tlsOrder[1:]
		c.tls[old].CloseIdleConnections()
		delete(c.tls, old)
	}
	c.tls[ca] = &hc
	c.tlsOrder = append(c.tlsOrder, ca)
	return &hc, nil
}
