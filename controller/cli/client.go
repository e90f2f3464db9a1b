// Package cli is the `ironlite` command line: the controller's client,
// shaped like `openstack baremetal` (same verbs, options and output
// formats), so operators can swap one for the other.
package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// APIVersion is the microversion the CLI speaks.
const APIVersion = "1.82"

// Client calls the Ironic-compatible API.
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// apiError is an error answer from the API, with Ironic's message unwrapped.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// faultString extracts the human message from Ironic's error body
// {"error_message": "{\"faultstring\": ...}"}.
func faultString(body []byte) string {
	var outer map[string]any
	if json.Unmarshal(body, &outer) != nil {
		return strings.TrimSpace(string(body))
	}
	em, ok := outer["error_message"]
	if !ok {
		return strings.TrimSpace(string(body))
	}
	s, ok := em.(string)
	if !ok {
		b, _ := json.Marshal(em)
		return string(b)
	}
	var inner map[string]any
	if json.Unmarshal([]byte(s), &inner) == nil {
		if fs, ok := inner["faultstring"].(string); ok {
			return fs
		}
		if d, ok := inner["description"].(string); ok {
			return d
		}
	}
	return s
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil). It retries 409 NodeLocked answers for a while,
// as python-ironicclient does.
func (c *Client) Do(method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, err := http.NewRequest(method, strings.TrimRight(c.BaseURL, "/")+path, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("X-OpenStack-Ironic-API-Version", APIVersion)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return fmt.Errorf("cannot reach the ironlite API at %s: %w (is `ironlite serve` running? set --url or IRONLITE_URL)", c.BaseURL, err)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read response of %s %s: %w", method, path, err)
		}
		if resp.StatusCode == http.StatusConflict && strings.Contains(string(data), "is locked by host") && time.Now().Before(deadline) {
			time.Sleep(time.Second)
			continue
		}
		if resp.StatusCode >= 400 {
			return &apiError{Status: resp.StatusCode, Message: faultString(data)}
		}
		if out != nil && len(data) > 0 {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber()
			if err := dec.Decode(out); err != nil {
				return fmt.Errorf("decode response of %s %s: %w", method, path, err)
			}
		}
		return nil
	}
}

// defaultURL picks the API endpoint: IRONLITE_URL, then OS_ENDPOINT (as
// the OpenStack client uses it with --os-auth-type none), then loopback.
func defaultURL() string {
	for _, env := range []string{"IRONLITE_URL", "OS_ENDPOINT"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	return "http://127.0.0.1:6385"
}
