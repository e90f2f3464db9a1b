// Package netup brings the ramdisk's network up: every physical NIC is set
// up, and each one that gains carrier gets a DHCPv4 lease, all in parallel
// (a server may have a dozen ports and only one cabled to the provisioning
// network; probing them one by one would take minutes).
//
// It uses u-root's dhclient package (netlink-configured, verified under
// qemu). That package draws DHCP transaction ids from u-root's rand, which
// blocks until the kernel CRNG is ready; on machines without a hardware RNG
// that took ~2 minutes, so Up sets UROOT_NOHWRNG=1 (an xid needs no
// cryptographic quality).
package netup

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// Options configures Up.
type Options struct {
	// Only restricts to one interface name (ipa-network-interface).
	Only string
	// CarrierWait is how long to wait for link carrier after setting a NIC
	// up (auto-negotiation on copper takes 2-5 s). Default 15 s.
	CarrierWait time.Duration
	// DHCPTimeout is per DHCP attempt (default 6 s); DHCPRetries attempts.
	DHCPTimeout time.Duration
	DHCPRetries int
	Log         *slog.Logger
}

// Lease is one configured interface.
type Lease struct {
	Interface string
	MAC       string
	Address   string // CIDR
	Router    string
}

// physical lists NICs with a device behind them (not lo, bridges, veths).
func physical(only string) ([]netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		name := l.Attrs().Name
		if only != "" && name != only {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", name, "device")); err != nil {
			continue
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attrs().Name < out[j].Attrs().Name })
	return out, nil
}

func carrier(name string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "carrier"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Up configures every NIC that gets carrier and a lease, and returns the
// leases. It fails only if no interface at all could be configured.
func Up(ctx context.Context, o Options) ([]Lease, error) {
	if o.CarrierWait == 0 {
		o.CarrierWait = 15 * time.Second
	}
	if o.DHCPTimeout == 0 {
		o.DHCPTimeout = 6 * time.Second
	}
	if o.DHCPRetries == 0 {
		o.DHCPRetries = 3
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	os.Setenv("UROOT_NOHWRNG", "1")

	links, err := physical(o.Only)
	if err != nil {
		return nil, err
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("no network interfaces found (missing NIC driver? see dmesg and /sys/class/net)")
	}
	var (
		mu     sync.Mutex
		leases []Lease
		wg     sync.WaitGroup
		errs   []string
	)
	for _, l := range links {
		wg.Add(1)
		go func(l netlink.Link) {
			defer wg.Done()
			name := l.Attrs().Name
			mac := l.Attrs().HardwareAddr.String()
			lease, err := upOne(ctx, l, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s (%s): %v", name, mac, err))
				o.Log.Info("network: interface not configured", "interface", name, "mac", mac, "reason", err)
				return
			}
			leases = append(leases, *lease)
			o.Log.Info("network: interface configured", "interface", name, "mac", mac, "address", lease.Address, "router", lease.Router)
		}(l)
	}
	wg.Wait()
	sort.Slice(leases, func(i, j int) bool { return leases[i].Interface < leases[j].Interface })
	if len(leases) == 0 {
		return nil, fmt.Errorf("no interface got a DHCP lease: %s", strings.Join(errs, "; "))
	}
	return leases, nil
}

func upOne(ctx context.Context, l netlink.Link, o Options) (*Lease, error) {
	name := l.Attrs().Name
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set link up: %w", err)
	}
	deadline := time.Now().Add(o.CarrierWait)
	for !carrier(name) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no carrier after %v", o.CarrierWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cfg := dhclient.Config{Timeout: o.DHCPTimeout, Retries: o.DHCPRetries}
	var lastErr error
	for r := range dhclient.SendRequests(ctx, []netlink.Link{l}, true, false, cfg, o.CarrierWait) {
		if r.Err != nil {
			lastErr = r.Err
			continue
		}
		if err := r.Lease.Configure(); err != nil {
			lastErr = fmt.Errorf("configuring lease: %w", err)
			continue
		}
		out := &Lease{Interface: name, MAC: l.Attrs().HardwareAddr.String()}
		if m4, _ := r.Lease.Message(); m4 != nil {
			ones, _ := m4.SubnetMask().Size()
			out.Address = (&net.IPNet{IP: m4.YourIPAddr, Mask: net.CIDRMask(ones, 32)}).String()
			if rt := m4.Router(); len(rt) > 0 {
				out.Router = rt[0].String()
			}
		}
		return out, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("DHCP gave no answer")
	}
	return nil, fmt.Errorf("DHCP: %w", lastErr)
}
