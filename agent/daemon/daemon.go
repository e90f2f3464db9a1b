// Package daemon is the agent's main loop, IPA's IronicPythonAgent.run:
// hardware up (modules, network), inventory, optional inspection callback,
// lookup, then the command API and the heartbeat loop.
//
// It runs as the uinit of the ramdisk: nothing supervises or restarts it,
// so it never returns on its own. Every stage retries until it works and
// says on the console what it tried and why that failed.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/bmc"
	"github.com/ironlite/ironlite/agent/coldplug"
	"github.com/ironlite/ironlite/agent/extensions"
	"github.com/ironlite/ironlite/agent/inventory"
	"github.com/ironlite/ironlite/agent/ironic"
	"github.com/ironlite/ironlite/agent/kparams"
	"github.com/ironlite/ironlite/agent/netup"
	"github.com/ironlite/ironlite/agent/protocol"
)

// alwaysModules are loaded at boot although no device asks for them (they
// have no modalias): the in-band BMC's device node, and md with its RAID
// personalities, which mdadm needs before it can create or assemble an
// array (the kernel does not autoload them for /dev/md* opens here).
var alwaysModules = []string{"ipmi_devintf", "md_mod", "raid0", "raid1", "raid10", "raid456"}

// Config wires the daemon.
type Config struct {
	Params *kparams.Params
	Log    *slog.Logger
	// Ramdisk enables the steps that only make sense as the machine's
	// init: module coldplug and DHCP.
	Ramdisk bool
	// Registry receives the built-in commands; other packages may already
	// have added theirs.
	Registry *api.Registry
	// Power and Logs configure the standby and log extensions.
	Power extensions.Power
	Logs  extensions.LogSource
	// Collector gathers the inventory (default: the running machine).
	Collector *inventory.Collector
	// Retry is the pause between attempts of a failed start-up stage.
	Retry time.Duration
	// LookupMax caps the lookup backoff (default 30 s).
	LookupMax time.Duration
	// HeartbeatErrorRetry bounds the wait after a failed heartbeat
	// (default 10 s); IPA waits a full interval, which delays a deploy by
	// minutes after one dropped packet.
	HeartbeatErrorRetry time.Duration
	// MinForcedInterval is the minimum gap between forced heartbeats (IPA: 5 s).
	MinForcedInterval time.Duration
	// ProgressInterval is the heartbeat period while a command with
	// progress runs and the controller asked for progress (default 5 s).
	ProgressInterval time.Duration
	// OnLookup receives the node and config once lookup succeeds (IPA's
	// hardware.cache_node): the image commands read root device hints
	// from it.
	OnLookup func(*protocol.LookupResponse)
}

// Agent is a running agent.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	client    *ironic.Client
	api       *api.Server
	force     chan struct{}
	node      *protocol.LookupResponse
	callback  string
	startedAt time.Time
}

// Run runs the agent until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	a := &Agent{cfg: cfg, log: cfg.Log, force: make(chan struct{}, 1), startedAt: time.Now()}
	if a.log == nil {
		a.log = slog.Default()
		a.cfg.Log = a.log
	}
	if a.cfg.Retry == 0 {
		a.cfg.Retry = 5 * time.Second
	}
	if a.cfg.LookupMax == 0 {
		a.cfg.LookupMax = 30 * time.Second
	}
	if a.cfg.HeartbeatErrorRetry == 0 {
		a.cfg.HeartbeatErrorRetry = 10 * time.Second
	}
	if a.cfg.ProgressInterval == 0 {
		a.cfg.ProgressInterval = 5 * time.Second
	}
	if a.cfg.MinForcedInterval == 0 {
		a.cfg.MinForcedInterval = 5 * time.Second
	}
	if a.cfg.Registry == nil {
		a.cfg.Registry = api.NewRegistry()
	}
	if a.cfg.Collector == nil {
		a.cfg.Collector = &inventory.Collector{BMC: bmc.Probe}
	}
	a.cfg.Collector.BootIF = cfg.Params.BootIF
	if a.cfg.Collector.Log == nil {
		a.cfg.Collector.Log = a.log
	}
	return a.run(ctx)
}

func (a *Agent) run(ctx context.Context) error {
	p := a.cfg.Params
	a.log.Info("ironlite-agent starting", "version", protocol.AgentVersion, "implementation", protocol.Implementation,
		"api_urls", p.APIURLs, "inspection_callback", p.InspectionCallbackURL, "bootif", p.BootIF, "ramdisk", a.cfg.Ramdisk)
	if p.HardwareInitDelay > 0 {
		a.log.Info("waiting for hardware to initialise", "delay", p.HardwareInitDelay)
		if err := ironic.Sleep(ctx, p.HardwareInitDelay); err != nil {
			return err
		}
	}
	if a.cfg.Ramdisk {
		a.hardwareUp(ctx)
	}
	if len(p.APIURLs) == 0 && !p.Standalone {
		a.log.Error("no ipa-api-url on the kernel command line: cannot look up the node; the command API will still start, standalone")
		p.Standalone = true
	}

	inv := a.collectInventory(ctx)
	if inv == nil {
		return ctx.Err()
	}

	a.client = ironic.New(p.APIURLs, p.Insecure, a.log)
	a.client.GlobalRequestID = p.GlobalRequestID
	a.client.ForcedVersion = p.IronicAPIVersion

	nodeUUID := ""
	if p.InspectionCallbackURL != "" {
		nodeUUID = a.inspect(ctx, inv)
	}

	extensions.Register(a.cfg.Registry, extensions.Options{Power: a.cfg.Power, Logs: a.cfg.Logs, ActionDelay: time.Second, Log: a.log})
	a.api = api.New(ctx, a.cfg.Registry, a.log)
	a.api.OnAsyncDone = a.forceHeartbeat

	if p.Standalone {
		a.api.SetToken(p.AgentToken, p.AgentTokenRequired)
		a.serveAPI(ctx)
		<-ctx.Done()
		return ctx.Err()
	}

	macs := make([]string, 0, len(inv.Interfaces))
	for _, i := range inv.Interfaces {
		if i.MACAddress != "" {
			macs = append(macs, i.MACAddress)
		}
	}
	token, err := a.lookup(ctx, macs, nodeUUID)
	if err != nil {
		return err
	}
	a.api.SetToken(token, a.node.Config.AgentTokenRequired || p.AgentTokenRequired)
	a.serveAPI(ctx)
	a.callback = a.callbackURL(ctx)
	a.heartbeatLoop(ctx)
	return ctx.Err()
}

// hardwareUp loads drivers and configures the network, retrying DHCP until
// at least one interface has an address.
func (a *Agent) hardwareUp(ctx context.Context) {
	start := time.Now()
	mods, err := coldplug.Run(ctx, coldplug.Options{Log: a.log, Always: alwaysModules})
	if err != nil {
		a.log.Error("coldplug failed; continuing with built-in drivers", "error", err)
	}
	a.log.Info("kernel modules loaded", "count", len(mods), "modules", mods, "took", time.Since(start).Round(time.Millisecond))
	a.checkTools(ctx)
	for attempt := 1; ctx.Err() == nil; attempt++ {
		t := time.Now()
		leases, err := netup.Up(ctx, netup.Options{Only: a.cfg.Params.NetworkInterface, Log: a.log})
		if err == nil {
			a.log.Info("network up", "interfaces", len(leases), "took", time.Since(t).Round(time.Millisecond))
			return
		}
		a.log.Error("network not configured, retrying", "attempt", attempt, "error", err, "retry_in", a.cfg.Retry)
		_ = ironic.Sleep(ctx, a.cfg.Retry)
	}
}

// checkTools logs the versions of the external tools the ramdisk ships, so
// a broken build (missing library, wrong loader) shows at boot rather than
// in the middle of a RAID step.
func (a *Agent) checkTools(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/sbin/mdadm", "--version").CombinedOutput()
	if err != nil {
		a.log.Error("mdadm is not usable", "error", err, "output", strings.TrimSpace(string(out)))
		return
	}
	a.log.Info("tool", "mdadm", strings.TrimSpace(string(out)))
}

// collectInventory retries until the inventory can be read and, like IPA
// (disk_wait_attempts x disk_wait_delay), waits a while for a disk to show
// up: storage drivers probe asynchronously.
func (a *Agent) collectInventory(ctx context.Context) *protocol.Inventory {
	p := a.cfg.Params
	for attempt := 1; ctx.Err() == nil; attempt++ {
		inv, err := a.cfg.Collector.Collect(ctx)
		if err != nil {
			a.log.Error("inventory failed, retrying", "attempt", attempt, "error", err)
			_ = ironic.Sleep(ctx, a.cfg.Retry)
			continue
		}
		if len(inv.Disks) == 0 && attempt <= p.DiskWaitAttempts && a.cfg.Ramdisk {
			a.log.Info("no disk found yet, waiting", "attempt", attempt, "of", p.DiskWaitAttempts)
			_ = ironic.Sleep(ctx, p.DiskWaitDelay)
			continue
		}
		a.log.Info("inventory", "cpus", inv.CPU.Count, "memory_mb", inv.Memory.PhysicalMB, "disks", len(inv.Disks),
			"interfaces", len(inv.Interfaces), "boot_mode", inv.Boot.CurrentBootMode)
		for _, d := range inv.Disks {
			a.log.Info("disk", "name", d.Name, "size", d.Size, "model", d.Model)
		}
		for _, i := range inv.Interfaces {
			v4 := ""
			if i.IPv4Address != nil {
				v4 = *i.IPv4Address
			}
			a.log.Info("interface", "name", i.Name, "mac", i.MACAddress, "carrier", i.HasCarrier, "ipv4", v4, "driver", i.Driver)
		}
		return inv
	}
	return nil
}

// inspect posts the inventory to the inspection callback, retrying a few
// times; failure is logged and the agent goes on to lookup (IPA does the
// same: inspection data is useful, not required for deployment).
func (a *Agent) inspect(ctx context.Context, inv *protocol.Inventory) string {
	p := a.cfg.Params
	data := &protocol.InspectionData{
		Inventory:     *inv,
		RootDisk:      protocol.GuessRootDisk(inv.Disks),
		BootInterface: p.BootIF,
		Configuration: protocol.InspectionConfig{
			Collectors: p.InspectionCollectors,
			Managers: []protocol.HardwareManager{{
				Name: protocol.GenericHardwareManagerKey, Version: protocol.GenericHardwareManagerVersion,
			}},
		},
	}
	// The "logs" collector (in IPA's default set) adds the system logs.
	for _, c := range p.InspectionCollectors {
		if c != "logs" {
			continue
		}
		logs, err := extensions.CollectLogs(ctx, a.cfg.Logs)
		if err != nil {
			a.log.Warn("inspection: collecting logs", "error", err)
		}
		data.Logs = logs
	}
	for attempt := 1; attempt <= 5 && ctx.Err() == nil; attempt++ {
		resp, err := a.client.PostInspection(ctx, p.InspectionCallbackURL, data)
		if err == nil {
			a.log.Info("inspection data sent", "url", p.InspectionCallbackURL, "node", resp.UUID)
			return resp.UUID
		}
		a.log.Warn("inspection callback failed", "attempt", attempt, "error", err)
		_ = ironic.Sleep(ctx, time.Duration(attempt)*a.cfg.Retry)
	}
	a.log.Error("giving up on the inspection callback; continuing with lookup", "url", p.InspectionCallbackURL)
	return ""
}

// lookup finds the node and its token. IPA exits when lookup times out or
// the token was already handed out; with nobody to restart us, we log
// loudly and keep trying (a power cycle by the conductor wipes the token).
func (a *Agent) lookup(ctx context.Context, macs []string, nodeUUID string) (string, error) {
	p := a.cfg.Params
	start := time.Now()
	warned := false
	for {
		lctx := ctx
		var cancel context.CancelFunc = func() {}
		if !warned && p.LookupTimeout > 0 {
			lctx, cancel = context.WithTimeout(ctx, p.LookupTimeout)
		}
		lr, err := a.client.Lookup(lctx, macs, nodeUUID, ironic.Backoff{Initial: p.LookupInterval, Max: a.cfg.LookupMax})
		cancel()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				a.log.Error("lookup has not succeeded within ipa-lookup-timeout; still trying", "timeout", p.LookupTimeout,
					"since", time.Since(start).Round(time.Second))
				warned = true
			}
			continue
		}
		a.node = lr
		if a.cfg.OnLookup != nil {
			a.cfg.OnLookup(lr)
		}
		switch {
		case p.AgentToken != "":
			a.log.Info("using the pre-generated agent token from the kernel command line")
			return p.AgentToken, nil
		case lr.Config.TokenIssued():
			return lr.Config.AgentToken, nil
		case lr.Config.AgentToken == protocol.MaskedSecret:
			a.log.Error("lookup returned a masked agent token: a token was already issued for this node to an earlier agent run; "+
				"the controller must power-cycle the node to reset it. Retrying lookup.", "node", lr.Node.UUID)
		default:
			a.log.Error("lookup returned no usable agent token (controller too old or token too short); retrying",
				"node", lr.Node.UUID, "token_len", len(lr.Config.AgentToken))
		}
		if err := ironic.Sleep(ctx, a.cfg.LookupMax); err != nil {
			return "", err
		}
	}
}

// serveAPI starts the command API. It returns once the port is listening
// (retrying while it is busy), so that a heartbeat is never sent before the
// conductor can call back.
func (a *Agent) serveAPI(ctx context.Context) {
	p := a.cfg.Params
	addr := net.JoinHostPort(p.ListenHost, strconv.Itoa(p.ListenPort))
	listen := func() net.Listener {
		for {
			ln, err := net.Listen("tcp", addr)
			if err == nil {
				return ln
			}
			a.log.Error("command API cannot listen; retrying", "addr", addr, "error", err, "retry_in", a.cfg.Retry)
			if ironic.Sleep(ctx, a.cfg.Retry) != nil {
				return nil
			}
		}
	}
	ln := listen()
	if ln == nil {
		return
	}
	go func() {
		for ln != nil {
			err := a.api.ServeListener(ctx, ln)
			if ctx.Err() != nil {
				return
			}
			a.log.Error("command API stopped; restarting", "error", err)
			ln = listen()
		}
	}()
}

// callbackURL is the command API URL Ironic should call: ipa-advertise-host,
// or the local address of the route to the API (what IPA does), retried
// until the network provides one.
func (a *Agent) callbackURL(ctx context.Context) string {
	p := a.cfg.Params
	host := p.AdvertiseHost
	for host == "" && ctx.Err() == nil {
		ip, err := routeSource(a.client.ActiveURL())
		if err == nil {
			host = ip
			break
		}
		a.log.Error("cannot find the address to advertise; retrying", "error", err)
		_ = ironic.Sleep(ctx, a.cfg.Retry)
	}
	u := url.URL{Scheme: p.AdvertiseProtocol, Host: net.JoinHostPort(host, strconv.Itoa(p.AdvertisePort))}
	return u.String()
}

// routeSource returns the local IP the kernel would use to reach apiURL's
// host. Connecting a UDP socket sends nothing; it only picks the route.
func routeSource(apiURL string) (string, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return "", fmt.Errorf("parsing API URL %q: %w", apiURL, err)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", fmt.Errorf("no route to %s: %w", u.Host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

func (a *Agent) forceHeartbeat() {
	select {
	case a.force <- struct{}{}:
	default:
	}
}

// heartbeatLoop heartbeats at IPA's cadence: at once, then every
// heartbeat_timeout x U(0.3, 0.6), and early (at most one per
// MinForcedInterval) after every asynchronous command finishes.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	timeout := a.node.Config.HeartbeatTimeout
	if timeout <= 0 {
		timeout = 300
	}
	hb := protocol.HeartbeatRequest{
		CallbackURL:  a.callback,
		AgentToken:   tokenOf(a),
		AgentVersion: protocol.AgentVersion,
	}
	uuid := a.node.Node.UUID
	var last time.Time
	next := time.Now()
	for {
		if wait := time.Until(next); wait > 0 {
			polling := a.node.Config.ReportProgress && wait > a.cfg.ProgressInterval
			if polling {
				// Look every ProgressInterval for a command that started
				// since: its progress should not wait for the regular beat.
				wait = a.cfg.ProgressInterval
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
				if polling && a.api.Progress() == nil {
					continue
				}
			case <-a.force:
				t.Stop()
				if gap := time.Since(last); gap < a.cfg.MinForcedInterval {
					next = last.Add(a.cfg.MinForcedInterval)
					continue
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		hb.Progress = nil
		if a.node.Config.ReportProgress {
			hb.Progress = a.api.Progress()
		}
		err := a.client.Heartbeat(ctx, uuid, hb)
		last = time.Now()
		interval := time.Duration(float64(timeout) * (0.3 + 0.3*rand.Float64()) * float64(time.Second))
		if hb.Progress != nil {
			// A controller that shows progress hears from us every
			// ProgressInterval while a long command runs.
			interval = min(interval, a.cfg.ProgressInterval)
		}
		switch {
		case err == nil:
			a.log.Info("heartbeat sent", "node", uuid, "callback_url", hb.CallbackURL, "next_in", interval.Round(time.Second))
			next = last.Add(interval)
		case errors.Is(err, ironic.ErrConflict):
			a.log.Warn("heartbeat conflict (node locked by the controller); will retry", "error", err)
			next = last.Add(min(interval, a.cfg.HeartbeatErrorRetry))
		default:
			a.log.Error("heartbeat failed; will retry", "error", err, "retry_in", min(interval, a.cfg.HeartbeatErrorRetry))
			next = last.Add(min(interval, a.cfg.HeartbeatErrorRetry))
		}
	}
}

func tokenOf(a *Agent) string {
	if a.cfg.Params.AgentToken != "" {
		return a.cfg.Params.AgentToken
	}
	return a.node.Config.AgentToken
}
