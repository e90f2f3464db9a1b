// Package ipmi implements Ironic's "ipmi" hardware type with its
// "ipmitool" power and management interfaces, natively over IPMI LAN
// (github.com/bougou/go-ipmi) instead of one ipmitool process per command.
//
// One session per BMC is kept open while in use and closed after an idle
// period; calls to one BMC are serialised, calls to different BMCs run in
// parallel (a global cap limits open sessions); lost packets and dead
// sessions are retried with backoff and a fresh session; every power action
// is verified by reading the state back. Errors name the BMC's address,
// never its password.
package ipmi

import (
	"context"
	"log/slog"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// Options tune the driver; zero values take the defaults in brackets.
type Options struct {
	// Logger receives structured logs (node UUID, BMC address; never
	// passwords). [slog.Default()]
	Logger *slog.Logger

	// MaxSessions caps the BMC sessions open at once, over all BMCs. When
	// all are taken, the least recently used idle session is closed, or
	// the call waits. [128]
	MaxSessions int
	// IdleTimeout closes a BMC's session after this long unused (below
	// go-ipmi's 30 s keep-alive, so idle sessions never send traffic). [20s]
	IdleTimeout time.Duration

	// AttemptTimeout is how long one UDP request waits for its answer. [1s]
	AttemptTimeout time.Duration
	// UDPRetries is how often one request is retransmitted after
	// AttemptTimeout; -1 for never. [2]
	UDPRetries int
	// CommandTimeout bounds one IPMI command (or the session setup),
	// retransmissions included. [10s]
	CommandTimeout time.Duration
	// Retries is how often a failed command is retried (with a fresh
	// session after a transport error), with exponential backoff from
	// RetryBackoff; -1 for no retries. Authentication failures and
	// definite refusals (IPMI completion codes other than busy/timeout)
	// are never retried. [2, 250ms]
	Retries      int
	RetryBackoff time.Duration
	// CallTimeout bounds one driver call to a BMC, waiting for the BMC's
	// previous call, retries and backoff included. [30s]
	CallTimeout time.Duration

	// PowerTimeout is how long a power on/off may take to show in the
	// BMC's power status ([conductor]power_state_change_timeout). [60s]
	PowerTimeout time.Duration
	// SoftPowerTimeout is how long the OS gets to shut down after an ACPI
	// soft power off before the driver powers off hard
	// ([conductor]soft_power_off_timeout). [600s]
	SoftPowerTimeout time.Duration
	// PollInterval is the first delay between power status reads while
	// waiting; it doubles up to PollMaxInterval. [200ms, 5s]
	PollInterval    time.Duration
	PollMaxInterval time.Duration

	// DisableBootTimeout sends "raw 0x00 0x08 0x03 0x08" before setting the
	// boot device, as [ipmi]disable_boot_timeout; a node's
	// ipmi_disable_boot_timeout overrides it. [true]
	DisableBootTimeout *bool
	// IdentifyInterval is how long the identify LED blinks for the
	// "blinking" indicator state (IPMI allows up to 255s). [255s]
	IdentifyInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 128
	}
	def(&o.IdleTimeout, 20*time.Second)
	def(&o.AttemptTimeout, time.Second)
	if o.UDPRetries < 0 {
		o.UDPRetries = 0
	} else if o.UDPRetries == 0 {
		o.UDPRetries = 2
	}
	def(&o.CommandTimeout, 10*time.Second)
	if o.Retries < 0 {
		o.Retries = 0
	} else if o.Retries == 0 {
		o.Retries = 2
	}
	def(&o.RetryBackoff, 250*time.Millisecond)
	def(&o.CallTimeout, 30*time.Second)
	def(&o.PowerTimeout, 60*time.Second)
	def(&o.SoftPowerTimeout, 600*time.Second)
	def(&o.PollInterval, 200*time.Millisecond)
	def(&o.PollMaxInterval, 5*time.Second)
	if o.DisableBootTimeout == nil {
		t := true
		o.DisableBootTimeout = &t
	}
	def(&o.IdentifyInterval, 255*time.Second)
	if o.IdentifyInterval > 255*time.Second {
		o.IdentifyInterval = 255 * time.Second
	}
	return o
}

func (o *Options) closeTimeout() time.Duration {
	if o.AttemptTimeout < time.Second {
		return o.AttemptTimeout
	}
	return time.Second
}

// Driver is the IPMI driver: it owns the BMC sessions. Power and Management
// are its two Ironic interfaces.
type Driver struct {
	opts  Options
	log   *slog.Logger
	pool  *pool
	ident *identifyCache

	Power      *Power
	Management *Management
}

// New creates a driver without registering it.
func New(opts Options) *Driver {
	o := opts.withDefaults()
	d := &Driver{opts: o, log: o.Logger.With("driver", "ipmi"), ident: newIdentifyCache()}
	d.pool = newPool(&d.opts, d.log)
	d.Power = &Power{base{d}}
	d.Management = &Management{base{d}}
	return d
}

// Register creates a driver and adds the "ipmitool" power and management
// interfaces and the "ipmi" hardware type to r. Keep the returned driver
// to Close it at shutdown.
func Register(r *drivers.Registry, opts Options) *Driver {
	d := New(opts)
	d.Register(r)
	return d
}

// Register adds d's interfaces and the "ipmi" hardware type to r.
func (d *Driver) Register(r *drivers.Registry) {
	r.AddInterface("power", "ipmitool", d.Power)
	r.AddInterface("management", "ipmitool", d.Management)
	r.AddHardwareType(&drivers.HardwareType{
		Name: "ipmi",
		Supported: map[string][]string{
			"bios":       {"no-bios"},
			"boot":       {"ipxe", "pxe"},
			"console":    {"no-console"},
			"deploy":     {"direct"},
			"inspect":    {"no-inspect", "agent"},
			"management": {"ipmitool", "noop"},
			"network":    {"noop", "flat"},
			"power":      {"ipmitool"},
			"raid":       {"no-raid", "agent"},
			"rescue":     {"no-rescue"},
			"storage":    {"noop"},
			"vendor":     {"no-vendor"},
		},
	})
}

// Close closes every BMC session (waiting up to CallTimeout for calls in
// flight). Calls after Close fail with ErrClosed. Safe to call twice.
func (d *Driver) Close() error {
	d.pool.close()
	return nil
}

// OpenSessions reports how many BMC sessions are open.
func (d *Driver) OpenSessions() int { return d.pool.openSessions() }

// base is what both interfaces share.
type base struct{ d *Driver }

// Properties returns Ironic's descriptions of the ipmi_* driver_info keys.
func (base) Properties() map[string]string {
	out := make(map[string]string, len(properties))
	for k, v := range properties {
		out[k] = v
	}
	return out
}

// Validate checks driver_info without touching the BMC (as Ironic: BMCs
// are too fragile to be probed on every validate).
func (base) Validate(n *model.Node) error {
	_, err := ParseDriverInfo(n)
	return err
}

func (b base) info(n *model.Node) (*BMCInfo, error) { return ParseDriverInfo(n) }

func (b base) logger(n *model.Node, bi *BMCInfo) *slog.Logger {
	return b.d.log.With("node", n.UUID, "bmc", bi.Endpoint())
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	_ drivers.Power      = (*Power)(nil)
	_ drivers.Management = (*Management)(nil)
	_ drivers.Indicators = (*Management)(nil)
	_ drivers.BMCReader  = (*Management)(nil)
)
