// Package kparams reads the agent's configuration from the kernel command
// line, using IPA's parameter names (ironic_python_agent/config.py) so that
// Ironic's PXE templates and ours boot the same ramdisk.
//
// Everything arrives this way: the ramdisk has no config files, and the boot
// interface (iPXE script) is the only thing that knows the controller's URL.
package kparams

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Params is the agent configuration derived from the kernel command line.
// Zero values are replaced by IPA's defaults in Parse.
type Params struct {
	// APIURLs are the Ironic API endpoints (ipa-api-url; IPA accepts a
	// comma-separated list and uses the first that answers).
	APIURLs []string
	// InspectionCallbackURL, if set, receives the inventory at start-up
	// (ipa-inspection-callback-url).
	InspectionCallbackURL string
	// InspectionCollectors (ipa-inspection-collectors, default "default,logs").
	InspectionCollectors []string
	// BootIF is the MAC the node PXE-booted from, as given by iPXE/pxelinux
	// (BOOTIF, e.g. "01-52-54-00-12-34-56" or "52:54:00:12:34:56").
	BootIF string
	// Insecure skips TLS verification towards the API (ipa-insecure).
	Insecure bool
	// Debug turns on debug logging (ipa-debug).
	Debug bool
	// GlobalRequestID is sent as X-OpenStack-Request-ID (ipa-global-request-id).
	GlobalRequestID string
	// ListenHost/ListenPort: where the command API listens
	// (ipa-listen-host, default all addresses; ipa-listen-port, 9999).
	ListenHost string
	ListenPort int
	// AdvertiseHost/Port/Protocol build callback_url. Empty host means "the
	// source address of the route to the API" (ipa-advertise-*).
	AdvertiseHost     string
	AdvertisePort     int
	AdvertiseProtocol string
	// NetworkInterface restricts DHCP/IP lookup to one NIC (ipa-network-interface).
	NetworkInterface string
	// LookupTimeout (ipa-lookup-timeout, 300 s) and LookupInterval
	// (ipa-lookup-interval, 1 s): IPA exits after the timeout; our agent only
	// logs and keeps trying, because nothing restarts it.
	LookupTimeout  time.Duration
	LookupInterval time.Duration
	// AgentToken is a pre-generated token (virtual media boots; ipa-agent-token).
	AgentToken string
	// AgentTokenRequired (ipa-agent-token-required).
	AgentTokenRequired bool
	// IronicAPIVersion skips version discovery (ipa-ironic-api-version).
	IronicAPIVersion string
	// Standalone disables lookup and heartbeat (ipa-standalone).
	Standalone bool
	// CollectLLDP (ipa-collect-lldp).
	CollectLLDP bool
	// HardwareInitDelay waits before doing anything
	// (ipa-hardware-initialization-delay, seconds).
	HardwareInitDelay time.Duration
	// DiskWaitAttempts/DiskWaitDelay: wait for at least one disk to appear
	// before lookup (ipa-disk-wait-attempts 10, ipa-disk-wait-delay 3 s).
	DiskWaitAttempts int
	DiskWaitDelay    time.Duration

	// Raw holds every key=value (and bare key) seen, for logging and for
	// extensions that read their own parameters.
	Raw map[string]string
}

// ReadProc parses /proc/cmdline.
func ReadProc() (*Params, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, fmt.Errorf("reading kernel command line: %w", err)
	}
	return Parse(string(b))
}

// Split splits a kernel command line into words the way the kernel does:
// whitespace separates, double quotes group (and are removed).
func Split(cmdline string) []string {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}

// Parse parses a kernel command line. Unknown words are kept in Raw; invalid
// values for known keys are errors, because a typo in ipa-api-url must not
// silently leave the node waiting for nothing.
func Parse(cmdline string) (*Params, error) {
	raw := map[string]string{}
	for _, w := range Split(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		raw[k] = v // later words win, as in IPA (dict assignment)
	}
	p := &Params{
		Raw:                  raw,
		ListenPort:           9999,
		AdvertisePort:        9999,
		AdvertiseProtocol:    "http",
		LookupTimeout:        300 * time.Second,
		LookupInterval:       time.Second,
		InspectionCollectors: []string{"default", "logs"},
		DiskWaitAttempts:     10,
		DiskWaitDelay:        3 * time.Second,
	}
	var errs []string
	bad := func(k string, err error) { errs = append(errs, fmt.Sprintf("%s=%q: %v", k, raw[k], err)) }

	if v := raw["ipa-api-url"]; v != "" {
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimRight(strings.TrimSpace(u), "/")
			if u == "" {
				continue
			}
			if err := checkURL(u); err != nil {
				bad("ipa-api-url", err)
				continue
			}
			p.APIURLs = append(p.APIURLs, u)
		}
	}
	if v := raw["ipa-inspection-callback-url"]; v != "" {
		if err := checkURL(v); err != nil {
			bad("ipa-inspection-callback-url", err)
		} else {
			p.InspectionCallbackURL = v
		}
	}
	if v, ok := raw["ipa-inspection-collectors"]; ok {
		p.InspectionCollectors = nil
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" {
				p.InspectionCollectors = append(p.InspectionCollectors, c)
			}
		}
	}
	p.BootIF = raw["BOOTIF"]
	p.GlobalRequestID = raw["ipa-global-request-id"]
	p.ListenHost = raw["ipa-listen-host"]
	p.AdvertiseHost = raw["ipa-advertise-host"]
	p.NetworkInterface = raw["ipa-network-interface"]
	p.AgentToken = raw["ipa-agent-token"]
	p.IronicAPIVersion = raw["ipa-ironic-api-version"]
	if v := raw["ipa-advertise-protocol"]; v != "" {
		if v != "http" && v != "https" {
			bad("ipa-advertise-protocol", fmt.Errorf("must be http or https"))
		} else {
			p.AdvertiseProtocol = v
		}
	}

	for key, dst := range map[string]*bool{
		"ipa-insecure":             &p.Insecure,
		"ipa-debug":                &p.Debug,
		"ipa-agent-token-required": &p.AgentTokenRequired,
		"ipa-standalone":           &p.Standalone,
		"ipa-collect-lldp":         &p.CollectLLDP,
	} {
		if v, ok := raw[key]; ok {
			b, err := parseBool(v)
			if err != nil {
				bad(key, err)
				continue
			}
			*dst = b
		}
	}
	for key, dst := range map[string]*int{
		"ipa-listen-port":        &p.ListenPort,
		"ipa-advertise-port":     &p.AdvertisePort,
		"ipa-disk-wait-attempts": &p.DiskWaitAttempts,
	} {
		if v, ok := raw[key]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 65535 {
				bad(key, fmt.Errorf("not a valid number"))
				continue
			}
			*dst = n
		}
	}
	for key, dst := range map[string]*time.Duration{
		"ipa-lookup-timeout":                &p.LookupTimeout,
		"ipa-lookup-interval":               &p.LookupInterval,
		"ipa-hardware-initialization-delay": &p.HardwareInitDelay,
		"ipa-disk-wait-delay":               &p.DiskWaitDelay,
	} {
		if v, ok := raw[key]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				bad(key, fmt.Errorf("not a number of seconds"))
				continue
			}
			*dst = time.Duration(f * float64(time.Second))
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("invalid kernel parameters: %s", strings.Join(errs, "; "))
	}
	return p, nil
}

// BootMAC returns BOOTIF as a lower-case colon-separated MAC, dropping the
// ARP hardware type prefix pxelinux/iPXE put in front ("01-aa-bb-..."), or ""
// when BOOTIF is absent or malformed.
func (p *Params) BootMAC() string {
	return NormalizeMAC(p.BootIF)
}

// NormalizeMAC turns "01-52-54-00-12-34-56", "52-54-00-12-34-56" or
// "52:54:00:12:34:56" into "52:54:00:12:34:56"; anything else gives "".
func NormalizeMAC(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return ""
	}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '-' || r == ':' })
	if len(parts) == 7 {
		parts = parts[1:]
	}
	if len(parts) != 6 {
		return ""
	}
	for _, x := range parts {
		if len(x) != 2 {
			return ""
		}
		if _, err := strconv.ParseUint(x, 16, 8); err != nil {
			return ""
		}
	}
	return strings.Join(parts, ":")
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https")
	}
	if u.Host == "" {
		return fmt.Errorf("no host")
	}
	return nil
}

// parseBool accepts oslo.config's spellings; a bare key ("ipa-debug") is true.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "1", "t", "true", "on", "y", "yes":
		return true, nil
	case "0", "f", "false", "off", "n", "no":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}
