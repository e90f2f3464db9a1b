// Package ipxe is Ironic's "ipxe" boot interface: a node that should run
// the agent gets a per-node iPXE script that loads the deploy kernel and
// ramdisk over HTTP with the agent's kernel parameters; a deployed node
// gets a script that boots its local disk. Ironic writes these scripts as
// files under http_root and deletes them; here they are rendered on
// request from what the node's driver_internal_info says it should boot
// (PrepareRamdisk / PrepareInstance / CleanUp*), so a restarted controller
// serves exactly what its database says.
package ipxe

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/pxe"
)

// netbootKey in driver_internal_info says what the node network-boots:
// netbootRamdisk (the agent) or netbootDisk (its local disk); absent: no
// script, boot.ipxe falls through to the firmware's next device.
const (
	netbootKey     = "ironlite_netboot"
	netbootRamdisk = "ramdisk"
	netbootDisk    = "disk"
)

// Config is the controller-wide part of the boot interface.
type Config struct {
	// BootURL is the base URL machines reach the controller's boot HTTP
	// server at (e.g. "http://192.168.100.1:6385"): scripts, deploy
	// kernels and ramdisks are served below it.
	BootURL string
	// APIURL is the ipa-api-url handed to the agent; default BootURL.
	APIURL string
	// DeployKernel and DeployRamdisk are the default agent kernel and
	// ramdisk ([conductor]deploy_kernel/deploy_ramdisk): a local path, a
	// file:// URL or an http(s) URL. A node's driver_info deploy_kernel /
	// deploy_ramdisk override them.
	DeployKernel, DeployRamdisk string
	// KernelParams are appended to every agent kernel command line
	// ([pxe]kernel_append_params), e.g. "console=ttyS0,115200n8"; a node's
	// driver_info kernel_append_params (space-separated) replaces them.
	KernelParams []string
}

// Boot is the ipxe boot interface.
type Boot struct{ cfg Config }

// Register adds the "ipxe" boot interface (and "pxe", which is the same
// here: every iPXE-capable firmware chainloads through iPXE anyway).
func Register(r *drivers.Registry, cfg Config) *Boot {
	if cfg.APIURL == "" {
		cfg.APIURL = cfg.BootURL
	}
	cfg.BootURL = strings.TrimRight(cfg.BootURL, "/")
	b := &Boot{cfg: cfg}
	r.AddInterface("boot", "ipxe", b)
	r.AddInterface("boot", "pxe", b)
	return b
}

// Properties lists the driver_info keys the interface reads.
func (b *Boot) Properties() map[string]string {
	return map[string]string{
		"deploy_kernel":        "Agent kernel: a path on the controller, file:// or http(s):// URL. Optional: defaults to serve --deploy-kernel.",
		"deploy_ramdisk":       "Agent ramdisk (initramfs): as deploy_kernel. Optional: defaults to serve --deploy-ramdisk.",
		"kernel_append_params": "Kernel parameters for the agent ramdisk, space-separated; replaces serve --kernel-append-params. Optional.",
	}
}

// Validate checks that the node can be booted into the agent.
func (b *Boot) Validate(n *model.Node) error {
	if b.cfg.BootURL == "" {
		return fmt.Errorf("iPXE boot needs the controller's boot URL: start ironlite serve with --boot-url http://ADDRESS:PORT (an address the machines can reach)")
	}
	for _, which := range []string{"deploy_kernel", "deploy_ramdisk"} {
		if _, err := b.source(n, which); err != nil {
			return err
		}
	}
	if _, err := b.params(n, ""); err != nil {
		return err
	}
	return nil
}

// source returns where the node's deploy_kernel or deploy_ramdisk comes
// from: an http(s) URL (passed to iPXE as is) or a local path (served).
func (b *Boot) source(n *model.Node, which string) (string, error) {
	v := model.Str(n.DriverInfo, which)
	origin := "driver_info " + which
	if v == "" {
		v = b.cfg.DeployKernel
		if which == "deploy_ramdisk" {
			v = b.cfg.DeployRamdisk
		}
		origin = "serve --" + strings.ReplaceAll(which, "_", "-")
	}
	if v == "" {
		return "", fmt.Errorf("no %s for node %s: set driver_info %s (path, file:// or http(s):// URL) or start ironlite serve with --%s (e.g. build/%s from make initramfs)",
			which, n.UUID, which, strings.ReplaceAll(which, "_", "-"), map[string]string{"deploy_kernel": "vmlinuz", "deploy_ramdisk": "ironlite-agent.cpio.gz"}[which])
	}
	if strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") {
		if err := pxe.CheckURL(v); err != nil {
			return "", fmt.Errorf("%s: %w", origin, err)
		}
		return v, nil
	}
	p := v
	if strings.HasPrefix(v, "file://") {
		u, err := url.Parse(v)
		if err != nil {
			return "", fmt.Errorf("%s %q: %w", origin, v, err)
		}
		p = u.Path
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %q: must be an absolute path or a file:// or http(s):// URL", origin, v)
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", origin, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s is not a regular file", origin, p)
	}
	return p, nil
}

// params returns the agent's kernel parameters.
func (b *Boot) params(n *model.Node, bootif string) ([]string, error) {
	extra := b.cfg.KernelParams
	if v, ok := n.DriverInfo["kernel_append_params"].(string); ok {
		extra = strings.Fields(v)
	}
	p, err := pxe.AgentParams(b.cfg.APIURL, bootif, extra...)
	if err != nil {
		return nil, fmt.Errorf("kernel parameters for node %s: %w", n.UUID, err)
	}
	return p, nil
}

func (b *Boot) url(n *model.Node, which string) (string, error) {
	src, err := b.source(n, which)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		return src, nil
	}
	return fmt.Sprintf("%s/boot/nodes/%s/%s", b.cfg.BootURL, n.UUID, which), nil
}

// PrepareRamdisk makes the node's next network boot load the agent.
func (b *Boot) PrepareRamdisk(_ context.Context, n *model.Node) error {
	if err := b.Validate(n); err != nil {
		return err
	}
	setNetboot(n, netbootRamdisk)
	return nil
}

// CleanUpRamdisk stops serving the agent to the node.
func (b *Boot) CleanUpRamdisk(_ context.Context, n *model.Node) error {
	setNetboot(n, "")
	return nil
}

// PrepareInstance makes a network boot of the node boot its local disk
// (Ironic's netboot fallback); the persistent boot device is set to disk
// by the deploy, so this only matters for PXE-first machines.
func (b *Boot) PrepareInstance(_ context.Context, n *model.Node) error {
	setNetboot(n, netbootDisk)
	return nil
}

// CleanUpInstance stops serving the node anything.
func (b *Boot) CleanUpInstance(_ context.Context, n *model.Node) error {
	setNetboot(n, "")
	return nil
}

func setNetboot(n *model.Node, v string) {
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = model.JSONObject{}
	}
	if v == "" {
		delete(n.DriverInternalInfo, netbootKey)
		return
	}
	n.DriverInternalInfo[netbootKey] = v
}

// Script renders the node's iPXE script for a boot from the NIC with MAC
// mac ("aa:bb:cc:dd:ee:ff").
func (b *Boot) Script(n *model.Node, mac string) (string, error) {
	switch model.Str(n.DriverInternalInfo, netbootKey) {
	case netbootRamdisk:
		kernel, err := b.url(n, "deploy_kernel")
		if err != nil {
			return "", err
		}
		initrd, err := b.url(n, "deploy_ramdisk")
		if err != nil {
			return "", err
		}
		params, err := b.params(n, mac)
		if err != nil {
			return "", err
		}
		return pxe.RenderNodeScript(pxe.NodeScript{Mode: pxe.ModeDeploy, KernelURL: kernel, InitrdURL: initrd, KernelParams: params})
	case netbootDisk:
		return pxe.RenderNodeScript(pxe.NodeScript{Mode: pxe.ModeDisk})
	}
	return "", drivers.ErrNoBootConfig
}

// ServeFile serves the node's deploy kernel and ramdisk when they are
// local files.
func (b *Boot) ServeFile(n *model.Node, name string) (string, bool) {
	if name != "deploy_kernel" && name != "deploy_ramdisk" {
		return "", false
	}
	src, err := b.source(n, name)
	if err != nil || strings.Contains(src, "://") {
		return "", false
	}
	return src, true
}
