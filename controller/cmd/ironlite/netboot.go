package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ironlite/ironlite/controller/agentclient"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/drivers/ipxe"
	"github.com/ironlite/ironlite/controller/pxe"
)

// netbootOptions are serve's network-boot and deploy flags.
type netbootOptions struct {
	bootURL, deployKernel, deployRamdisk, kernelParams string
	tftpListen, tftpRoot, ipxeDir                      string
	cleanPriority                                      []string
	agentCommandTimeout, powerOffInterval              time.Duration
	dhcp, dhcpInterface, dhcpServerIP, dhcpRange       string
	dhcpNetmask, dhcpRouter                            string
	dhcpDNS                                            []string
	dhcpLease                                          time.Duration
}

func (o *netbootOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&o.bootURL, "boot-url", "", "base URL machines reach this controller at for iPXE scripts, the agent ramdisk, images and the agent API (default: from --listen when it is not a wildcard address)")
	f.StringVar(&o.deployKernel, "deploy-kernel", "", "agent kernel for every node without driver_info deploy_kernel: a path or an http(s) URL (make initramfs builds build/vmlinuz)")
	f.StringVar(&o.deployRamdisk, "deploy-ramdisk", "", "agent ramdisk for every node without driver_info deploy_ramdisk (build/ironlite-agent.cpio.gz)")
	f.StringVar(&o.kernelParams, "kernel-append-params", "console=tty0 console=ttyS0,115200n8", "kernel parameters added to the agent's command line ([pxe]kernel_append_params)")
	f.StringVar(&o.tftpListen, "tftp-listen", "", "address:port of the TFTP server serving iPXE binaries to PXE firmware, e.g. 192.168.100.1:69 (off when empty)")
	f.StringVar(&o.tftpRoot, "tftp-root", "", "TFTP root (default: <data-dir>/tftpboot, filled with the iPXE binaries from --ipxe-dir)")
	f.StringVar(&o.ipxeDir, "ipxe-dir", "/usr/lib/ipxe", "where undionly.kpxe, ipxe.efi and snponly.efi come from (Debian package ipxe)")
	f.StringSliceVar(&o.cleanPriority, "clean-step-priority-override", []string{"deploy.erase_devices:0"}, "interface.step:priority for automated cleaning; the default erases disk metadata only, deploy.erase_devices:10 erases whole disks")
	f.DurationVar(&o.agentCommandTimeout, "agent-command-timeout", 60*time.Second, "timeout of one command sent to an agent")
	f.StringVar(&o.dhcp, "dhcp", "off", "built-in DHCP server: off (use your own, see README for the dnsmasq lines), proxy (beside an existing DHCP server: boot information only) or full (hands out --dhcp-range)")
	f.StringVar(&o.dhcpInterface, "dhcp-interface", "", "interface the DHCP server answers on (required with --dhcp)")
	f.StringVar(&o.dhcpServerIP, "dhcp-server-ip", "", "this controller's address on --dhcp-interface (default: the interface's first IPv4 address)")
	f.StringVar(&o.dhcpRange, "dhcp-range", "", "full mode: FIRST-LAST addresses to hand out, e.g. 192.168.100.100-192.168.100.199")
	f.StringVar(&o.dhcpNetmask, "dhcp-netmask", "", "full mode: subnet mask (default: the interface's)")
	f.StringVar(&o.dhcpRouter, "dhcp-router", "", "full mode: default gateway handed out (none when empty)")
	f.StringSliceVar(&o.dhcpDNS, "dhcp-dns", nil, "full mode: DNS servers handed out")
	f.DurationVar(&o.dhcpLease, "dhcp-lease-time", time.Hour, "full mode: lease time")
	f.DurationVar(&o.powerOffInterval, "post-deploy-power-off-interval", 5*time.Second, "how often the BMC is asked whether the agent powered the machine off after a deploy (7 checks, then a hard power off)")
}

// resolveBootURL picks the boot URL: the flag, else --listen unless it is a
// wildcard (machines cannot reach "0.0.0.0").
func (o *netbootOptions) resolveBootURL(listen string) (string, error) {
	if o.bootURL != "" {
		u, err := url.Parse(o.bootURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("--boot-url %q: want http://ADDRESS:PORT", o.bootURL)
		}
		return strings.TrimRight(o.bootURL, "/"), nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", listen, err)
	}
	ip := net.ParseIP(host)
	if host == "" || (ip != nil && ip.IsUnspecified()) {
		return "", nil // network boot unavailable until --boot-url is given; validation says so
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func (o *netbootOptions) hardware(bootURL string) (hardwareConfig, error) {
	prio := map[string]int{}
	for _, kv := range o.cleanPriority {
		k, v, ok := strings.Cut(kv, ":")
		var p int
		if _, err := fmt.Sscan(v, &p); !ok || err != nil || !strings.Contains(k, ".") {
			return hardwareConfig{}, fmt.Errorf("--clean-step-priority-override %q: want interface.step:priority, e.g. deploy.erase_devices:10", kv)
		}
		prio[k] = p
	}
	for _, f := range []struct{ flag, v string }{{"--deploy-kernel", o.deployKernel}, {"--deploy-ramdisk", o.deployRamdisk}} {
		if f.v != "" && !strings.Contains(f.v, "://") {
			abs, err := filepath.Abs(f.v)
			if err != nil {
				return hardwareConfig{}, err
			}
			if _, err := os.Stat(abs); err != nil {
				return hardwareConfig{}, fmt.Errorf("%s: %w (make initramfs builds build/vmlinuz and build/ironlite-agent.cpio.gz)", f.flag, err)
			}
			if f.flag == "--deploy-kernel" {
				o.deployKernel = abs
			} else {
				o.deployRamdisk = abs
			}
		}
	}
	return hardwareConfig{
		boot: ipxe.Config{BootURL: bootURL, DeployKernel: o.deployKernel, DeployRamdisk: o.deployRamdisk,
			KernelParams: strings.Fields(o.kernelParams)},
		direct: agent.DirectConfig{BootURL: bootURL, CleanStepPriority: prio, PowerOffInterval: o.powerOffInterval},
		agents: agentclient.Options{CommandTimeout: o.agentCommandTimeout},
	}, nil
}

// startTFTP fills the TFTP root with the iPXE binaries and serves it until
// ctx ends.
func (o *netbootOptions) startTFTP(ctx context.Context, dataDir string, log *slog.Logger) error {
	if o.tftpListen == "" {
		return nil
	}
	root := o.tftpRoot
	if root == "" {
		root = filepath.Join(dataDir, "tftpboot")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("TFTP root: %w", err)
	}
	var found []string
	for _, name := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		src := filepath.Join(o.ipxeDir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			found = append(found, name)
			continue
		}
		if err := copyFile(src, filepath.Join(root, name)); err != nil {
			return fmt.Errorf("TFTP root: %w", err)
		}
		found = append(found, name)
	}
	if len(found) == 0 {
		log.Warn("no iPXE binaries for PXE firmware: install Debian's ipxe package or set --ipxe-dir", "ipxe_dir", o.ipxeDir)
	}
	srv := pxe.NewTFTPServer(root, log)
	if err := serveInBackground("TFTP on "+o.tftpListen, func() error { return srv.ListenAndServe(ctx, o.tftpListen) }, log); err != nil {
		return err
	}
	log.Info("TFTP server listening", "addr", o.tftpListen, "root", root, "files", found)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// bootResolver adapts the conductor to pxe.Resolver.
type bootResolver struct{ c *conductor.Conductor }

func (r bootResolver) BootScript(ctx context.Context, mac string) (string, error) {
	s, err := r.c.BootScript(ctx, mac)
	return s, notFound(err)
}

func (r bootResolver) BootFile(ctx context.Context, name string) (string, error) {
	p, err := r.c.BootFile(ctx, name)
	return p, notFound(err)
}

func notFound(err error) error {
	if errors.Is(err, conductor.ErrNoBootConfig) {
		return fmt.Errorf("%w: %v", pxe.ErrNotFound, err)
	}
	return err
}

// startDHCP runs the built-in DHCP server until ctx ends. It answers only
// machines with a port (known MACs), hands iPXE the boot script and PXE
// firmware an iPXE binary over TFTP.
func (o *netbootOptions) startDHCP(ctx context.Context, bootURL, dataDir string, cond *conductor.Conductor, log *slog.Logger) error {
	var mode pxe.DHCPMode
	switch o.dhcp {
	case "", "off":
		return nil
	case "proxy":
		mode = pxe.DHCPModeProxy
	case "full":
		mode = pxe.DHCPModeFull
	default:
		return fmt.Errorf("--dhcp %q: use off, proxy or full", o.dhcp)
	}
	if bootURL == "" {
		return fmt.Errorf("--dhcp needs --boot-url: iPXE clients are sent <boot-url>/boot.ipxe")
	}
	if o.tftpListen == "" {
		log.Warn("--dhcp without --tftp-listen: PXE firmware that is not iPXE cannot fetch an iPXE binary")
	}
	cfg := pxe.DHCPConfig{
		Mode: mode, Interface: o.dhcpInterface, BootScriptURL: bootURL + "/boot.ipxe",
		Allow:     func(mac net.HardwareAddr) bool { return cond.IsKnownMAC(ctx, mac.String()) },
		LeaseTime: o.dhcpLease, LeaseFile: filepath.Join(dataDir, "dhcp-leases.json"),
	}
	parseIP := func(flag, v string) (net.IP, error) {
		if v == "" {
			return nil, nil
		}
		ip := net.ParseIP(v).To4()
		if ip == nil {
			return nil, fmt.Errorf("%s %q: not an IPv4 address", flag, v)
		}
		return ip, nil
	}
	var err error
	if cfg.ServerIP, err = parseIP("--dhcp-server-ip", o.dhcpServerIP); err != nil {
		return err
	}
	if cfg.Router, err = parseIP("--dhcp-router", o.dhcpRouter); err != nil {
		return err
	}
	for _, d := range o.dhcpDNS {
		ip, err := parseIP("--dhcp-dns", d)
		if err != nil {
			return err
		}
		cfg.DNS = append(cfg.DNS, ip)
	}
	if o.dhcpNetmask != "" {
		m, err := parseIP("--dhcp-netmask", o.dhcpNetmask)
		if err != nil {
			return err
		}
		cfg.Netmask = net.IPMask(m)
	}
	if o.dhcpRange != "" {
		first, last, ok := strings.Cut(o.dhcpRange, "-")
		if !ok {
			return fmt.Errorf("--dhcp-range %q: want FIRST-LAST", o.dhcpRange)
		}
		if cfg.RangeStart, err = parseIP("--dhcp-range", first); err != nil {
			return err
		}
		if cfg.RangeEnd, err = parseIP("--dhcp-range", last); err != nil {
			return err
		}
	}
	srv, err := pxe.NewDHCPServer(cfg, log)
	if err != nil {
		return fmt.Errorf("DHCP: %w", err)
	}
	if err := serveInBackground("DHCP on "+o.dhcpInterface, func() error { return srv.ListenAndServe(ctx) }, log); err != nil {
		return err
	}
	log.Info("DHCP server running", "mode", o.dhcp, "interface", o.dhcpInterface, "range", o.dhcpRange)
	return nil
}

// serveInBackground runs serve, which blocks until serve's context ends. An
// error in its first 200 ms (a port taken, a missing interface) is returned,
// so `ironlite serve` fails at start saying why; a later one is logged.
func serveInBackground(what string, serve func() error, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-time.After(200 * time.Millisecond):
	}
	go func() {
		if err := <-errc; err != nil {
			log.Error(what+" stopped", "err", err)
		}
	}()
	return nil
}
