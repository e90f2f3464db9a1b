// Package ironic is the agent's client of the controller's ramdisk API:
// version discovery, lookup, heartbeat and the inspection callback, as IPA's
// ironic_api_client.py and inspector.py speak them.
//
// Every failure says which URL was tried and why, because "the agent never
// reached the controller" is the most common bare-metal failure and the
// console is often the only place to see it (reference/peers.md §"failures").
package ironic

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Client talks to one or more Ironic API endpoints (ipa-api-url may list
// several; the first that answers is used from then on).
type Client struct {
	URLs            []string
	HTTP            *http.Client
	Log             *slog.Logger
	GlobalRequestID string
	// ForcedVersion skips discovery (ipa-ironic-api-version).
	ForcedVersion string

	mu       sync.Mutex
	active   string            // URL that last answered
	versions map[string]string // discovered max microversion per URL
}

// New returns a client with sane timeouts. insecure disables TLS
// verification (ipa-insecure).
func New(urls []string, insecure bool, log *slog.Logger) *Client {
	if log == nil {
		log = slog.Default()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // operator asked for it
	}
	return &Client{
		URLs:     urls,
		HTTP:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		Log:      log,
		versions: map[string]string{},
	}
}

// HTTPError is a non-success answer from the API.
type HTTPError struct {
	Method, URL string
	Status      int
	Message     string // faultstring or body excerpt
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.URL, e.Status, e.Message)
}

// ErrConflict is wrapped by heartbeat errors for HTTP 409 (node locked);
// IPA logs these as warnings and tries again at the next interval.
var ErrConflict = errors.New("conflict")

// ActiveURL returns the API URL that last answered (or the first one).
func (c *Client) ActiveURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != "" {
		return c.active
	}
	if len(c.URLs) > 0 {
		return c.URLs[0]
	}
	return ""
}

func (c *Client) setActive(u string) {
	c.mu.Lock()
	c.active = u
	c.mu.Unlock()
}

func (c *Client) do(ctx context.Context, method, u, version string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("encoding request for %s: %w", u, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if version != "" {
		req.Header.Set(protocol.APIVersionHeader, version)
	}
	if c.GlobalRequestID != "" {
		req.Header.Set("X-OpenStack-Request-ID", c.GlobalRequestID)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: reading response: %w", method, u, err)
	}
	return resp.StatusCode, b, nil
}

// Version returns the microversion to use with base, capped at want: the
// server's maximum (GET /) unless ForcedVersion is set.
func (c *Client) Version(ctx context.Context, base, want string) (string, error) {
	max := c.ForcedVersion
	if max == "" {
		c.mu.Lock()
		max = c.versions[base]
		c.mu.Unlock()
	}
	if max == "" {
		code, b, err := c.do(ctx, http.MethodGet, base+"/", "", nil)
		if err != nil {
			return "", fmt.Errorf("API version discovery: %w", err)
		}
		if code != http.StatusOK {
			return "", &HTTPError{Method: "GET", URL: base + "/", Status: code, Message: protocol.FaultMessage(b)}
		}
		var root struct {
			DefaultVersion struct {
				Version string `json:"version"`
			} `json:"default_version"`
		}
		if err := json.Unmarshal(b, &root); err != nil || root.DefaultVersion.Version == "" {
			return "", fmt.Errorf("GET %s/: no default_version.version in answer (is this an Ironic API?): %.200s", base, b)
		}
		max = root.DefaultVersion.Version
		c.mu.Lock()
		c.versions[base] = max
		c.mu.Unlock()
	}
	if versionLess(max, protocol.MinLookupAPIVersion) {
		return "", fmt.Errorf("API at %s supports only up to %s; lookup needs %s", base, max, protocol.MinLookupAPIVersion)
	}
	if versionLess(want, max) {
		return want, nil
	}
	return max, nil
}

// versionLess compares "1.62"-style microversions.
func versionLess(a, b string) bool {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	num := func(p []string, i int) int {
		if i >= len(p) {
			return 0
		}
		n, _ := strconv.Atoi(p[i])
		return n
	}
	if num(pa, 0) != num(pb, 0) {
		return num(pa, 0) < num(pb, 0)
	}
	return num(pa, 1) < num(pb, 1)
}

// LookupOnce tries each API URL once and returns the first good answer.
func (c *Client) LookupOnce(ctx context.Context, macs []string, nodeUUID string) (*protocol.LookupResponse, error) {
	// Built by hand so that the query reads like IPA's in logs
	// (addresses=52:54:00:..,..); MACs and UUIDs need no escaping.
	var parts []string
	if len(macs) > 0 {
		esc := make([]string, len(macs))
		for i, m := range macs {
			esc[i] = strings.ReplaceAll(url.QueryEscape(m), "%3A", ":")
		}
		parts = append(parts, "addresses="+strings.Join(esc, ","))
	}
	if nodeUUID != "" {
		parts = append(parts, "node_uuid="+url.QueryEscape(nodeUUID))
	}
	q := strings.Join(parts, "&")
	var errs []error
	for _, base := range c.URLs {
		lr, err := c.lookupAt(ctx, base, q)
		if err == nil {
			c.setActive(base)
			return lr, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("no API URL configured (kernel parameter ipa-api-url)")
	}
	return nil, errors.Join(errs...)
}

func (c *Client) lookupAt(ctx context.Context, base string, q string) (*protocol.LookupResponse, error) {
	ver, err := c.Version(ctx, base, protocol.LookupAPIVersion)
	if err != nil {
		return nil, err
	}
	u := base + "/v1/lookup?" + q
	code, b, err := c.do(ctx, http.MethodGet, u, ver, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		e := &HTTPError{Method: "GET", URL: u, Status: code, Message: protocol.FaultMessage(b)}
		if code == http.StatusNotFound {
			e.Message += " (no node with these MACs is waiting for an agent: unknown MAC, or the node is not in a lookup state yet)"
		}
		return nil, e
	}
	var lr protocol.LookupResponse
	if err := json.Unmarshal(b, &lr); err != nil {
		return nil, fmt.Errorf("GET %s: decoding lookup answer: %w", u, err)
	}
	if lr.Node.UUID == "" {
		return nil, fmt.Errorf("GET %s: lookup answer has no node.uuid: %.200s", u, b)
	}
	return &lr, nil
}

// Backoff is the retry policy for lookup: exponential from Initial, capped
// at Max, each wait scaled by a random factor in [0.5, 1) so a rack of
// machines booted together does not hammer the API in lock-step.
type Backoff struct {
	Initial, Max time.Duration
	// Sleep waits (tests replace it); nil means a context-aware timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a value in [0, 1); nil means math/rand.
	Rand func() float64
}

func (b Backoff) next(prev time.Duration) time.Duration {
	if prev <= 0 {
		prev = b.Initial
	} else {
		prev *= 2
	}
	if prev > b.Max {
		prev = b.Max
	}
	return prev
}

func (b Backoff) wait(ctx context.Context, d time.Duration) error {
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	d = time.Duration(float64(d) * (0.5 + r()/2))
	if b.Sleep != nil {
		return b.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

// Sleep waits d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lookup retries LookupOnce until it succeeds or ctx ends, logging every
// failure with the URL and the reason. It never gives up on its own: in the
// ramdisk there is nothing better to do than keep asking.
func (c *Client) Lookup(ctx context.Context, macs []string, nodeUUID string, bo Backoff) (*protocol.LookupResponse, error) {
	var delay time.Duration
	for attempt := 1; ; attempt++ {
		lr, err := c.LookupOnce(ctx, macs, nodeUUID)
		if err == nil {
			c.Log.Info("lookup succeeded", "url", c.ActiveURL(), "node", lr.Node.UUID, "attempt", attempt,
				"heartbeat_timeout", lr.Config.HeartbeatTimeout)
			return lr, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		delay = bo.next(delay)
		c.Log.Warn("lookup failed, will retry", "attempt", attempt, "macs", strings.Join(macs, ","),
			"error", err.Error(), "retry_in", delay.Round(time.Millisecond).String())
		if err := bo.wait(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// Heartbeat posts one heartbeat. It returns nil only on 202.
func (c *Client) Heartbeat(ctx context.Context, nodeUUID string, hb protocol.HeartbeatRequest) error {
	base := c.ActiveURL()
	ver, err := c.Version(ctx, base, protocol.HeartbeatAPIVersion)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	// Older APIs reject fields they do not know (ironic.md §3.4).
	if versionLess(ver, "1.62") {
		hb.AgentToken = ""
	}
	if versionLess(ver, "1.36") {
		hb.AgentVersion = ""
	}
	if versionLess(ver, "1.68") {
		hb.AgentVerifyCA = ""
	}
	u := base + "/v1/heartbeat/" + url.PathEscape(nodeUUID)
	code, b, err := c.do(ctx, http.MethodPost, u, ver, hb)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	switch code {
	case http.StatusAccepted:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("heartbeat: %w: %w", ErrConflict, &HTTPError{Method: "POST", URL: u, Status: code, Message: protocol.FaultMessage(b)})
	default:
		return fmt.Errorf("heartbeat: %w", &HTTPError{Method: "POST", URL: u, Status: code, Message: protocol.FaultMessage(b)})
	}
}

// PostInspection sends inspection data to the callback URL (ironic-inspector
// /v1/continue or Ironic /v1/continue_inspection) and returns its answer.
func (c *Client) PostInspection(ctx context.Context, callback string, data *protocol.InspectionData) (*protocol.InspectionResponse, error) {
	code, b, err := c.do(ctx, http.MethodPost, callback, "1.84", data)
	if err != nil {
		return nil, fmt.Errorf("inspection: %w", err)
	}
	if code < 200 || code > 299 {
		return nil, fmt.Errorf("inspection: %w", &HTTPError{Method: "POST", URL: callback, Status: code, Message: protocol.FaultMessage(b)})
	}
	var ir protocol.InspectionResponse
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &ir); err != nil {
			return nil, fmt.Errorf("inspection: decoding answer of %s: %w", callback, err)
		}
	}
	return &ir, nil
}
