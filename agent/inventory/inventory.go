// Package inventory collects the machine's hardware inventory in IPA's
// format (protocol.Inventory), for lookup, inspection and root-disk choice.
//
// It uses ghw where ghw is right and reads sysfs itself where ghw is not:
// without udev (our ramdisk has none) ghw reports disk model, serial, WWN and
// by-path as "unknown" (it reads them only from /run/udev/data), and it has
// no NIC driver or carrier at all (reference/libraries.md §4). All paths go
// through Collector.Root so tests run against fake trees in t.TempDir().
package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"
	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Collector gathers the inventory. The zero value inspects the running
// machine.
type Collector struct {
	// Root is the filesystem root holding sys/ and proc/ ("/" if empty).
	Root string
	// BootIF is the BOOTIF kernel parameter, reported as boot.pxe_interface.
	BootIF string
	// Arch overrides the architecture (default: uname machine).
	Arch string
	// Addrs returns a NIC's IPv4 and IPv6 address ("" if none). Default:
	// the live interface addresses.
	Addrs func(ifname string) (v4, v6 string)
	// Hostname overrides os.Hostname.
	Hostname func() string
	// BMC, if set, returns the in-band BMC's addresses (see BMCInfo).
	BMC func(ctx context.Context) (BMCInfo, error)
	// DisableGHW uses only the built-in sysfs readers (for comparison tests).
	DisableGHW bool
	Log        *slog.Logger
}

// BMCInfo is what an in-band BMC query returns.
type BMCInfo struct {
	Address, V6Address, MAC string
}

func (c *Collector) root() string {
	if c.Root == "" {
		return "/"
	}
	return c.Root
}

func (c *Collector) path(p ...string) string {
	return filepath.Join(append([]string{c.root()}, p...)...)
}

func (c *Collector) log() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

// ghwOpts are the options for every ghw call: our root, no external tools
// (the ramdisk has none), no warnings on the console.
func (c *Collector) ghwOpts() []any {
	opts := []any{ghw.WithDisableTools(), ghw.WithDisableWarnings()}
	if c.root() != "/" {
		opts = append(opts, ghw.WithChroot(c.root()))
	}
	return opts
}

// Collect gathers the whole inventory. Individual sections degrade to what
// could be read (logged), so one broken sysfs file never hides the rest;
// it only fails when not even a CPU count or a NIC could be found.
func (c *Collector) Collect(ctx context.Context) (*protocol.Inventory, error) {
	inv := &protocol.Inventory{
		BMCAddress:   protocol.NoBMCAddress,
		BMCV6Address: protocol.NoBMCV6Address,
		BMCMAC:       protocol.NoBMCMAC,
	}
	var err error
	if inv.CPU, err = c.CPU(); err != nil {
		return nil, fmt.Errorf("inventory: cpu: %w", err)
	}
	if inv.Memory, err = c.Memory(); err != nil {
		c.log().Warn("inventory: memory", "error", err)
	}
	if inv.Disks, err = c.Disks(); err != nil {
		c.log().Warn("inventory: disks", "error", err)
	}
	if inv.Interfaces, err = c.Interfaces(); err != nil {
		return nil, fmt.Errorf("inventory: interfaces: %w", err)
	}
	inv.SystemVendor = c.SystemVendor()
	inv.Boot = c.Boot()
	if c.Hostname != nil {
		inv.Hostname = c.Hostname()
	} else if h, err := os.Hostname(); err == nil {
		inv.Hostname = h
	}
	if c.BMC != nil {
		if b, err := c.BMC(ctx); err != nil {
			c.log().Info("inventory: no in-band BMC", "reason", err)
		} else {
			if b.Address != "" {
				inv.BMCAddress = b.Address
			}
			if b.V6Address != "" {
				inv.BMCV6Address = b.V6Address
			}
			if b.MAC != "" {
				inv.BMCMAC = b.MAC
			}
		}
	}
	return inv, nil
}

// readStr reads a sysfs attribute, trimmed; "" if absent or unreadable.
func readStr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(p string) (int64, bool) {
	n, err := strconv.ParseInt(readStr(p), 10, 64)
	return n, err == nil
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ---------------------------------------------------------------------------
// CPU

// CPU returns the processor summary: ghw for model, threads and flags, with
// /proc/cpuinfo as the fallback, and frequency from cpufreq or cpuinfo.
func (c *Collector) CPU() (protocol.CPU, error) {
	ci := c.parseCPUInfo()
	out := protocol.CPU{
		ModelName:    ci.model,
		Count:        ci.count,
		Flags:        ci.flags,
		Frequency:    ci.mhz,
		SocketCount:  ci.sockets,
		Architecture: c.Arch,
	}
	if !c.DisableGHW {
		if info, err := safeGHW(func() (*ghw.CPUInfo, error) { return ghw.CPU(c.ghwOpts()...) }); err == nil && info != nil {
			if info.TotalHardwareThreads > 0 && out.Count == 0 {
				out.Count = int(info.TotalHardwareThreads)
			}
			if len(info.Processors) > 0 {
				p := info.Processors[0]
				if out.ModelName == "" {
					out.ModelName = p.Model
				}
				if len(out.Flags) == 0 {
					out.Flags = p.Capabilities
				}
				if out.SocketCount == 0 {
					out.SocketCount = len(info.Processors)
				}
			}
		} else if err != nil {
			c.log().Debug("inventory: ghw cpu failed, using /proc/cpuinfo", "error", err)
		}
	}
	// lscpu's "CPU max MHz" comes from cpufreq when the platform has it.
	if khz, ok := readInt(c.path("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")); ok && khz > 0 {
		out.Frequency = fmt.Sprintf("%.4f", float64(khz)/1000)
	}
	if out.Architecture == "" {
		out.Architecture = machine()
	}
	if out.Flags == nil {
		out.Flags = []string{}
	}
	if out.Count == 0 {
		return out, fmt.Errorf("no processors found in %s", c.path("proc/cpuinfo"))
	}
	return out, nil
}

type cpuInfo struct {
	model, mhz     string
	count, sockets int
	flags          []string
}

func (c *Collector) parseCPUInfo() cpuInfo {
	var ci cpuInfo
	b, err := os.ReadFile(c.path("proc/cpuinfo"))
	if err != nil {
		return ci
	}
	phys := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			ci.count++
		case "model name":
			if ci.model == "" {
				ci.model = v
			}
		case "cpu MHz":
			if ci.mhz == "" {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					ci.mhz = fmt.Sprintf("%.4f", f)
				}
			}
		case "flags", "Features":
			if ci.flags == nil {
				ci.flags = strings.Fields(v)
			}
		case "physical id":
			phys[v] = true
		}
	}
	ci.sockets = len(phys)
	return ci
}

// machine is uname -m, which is what lscpu reports as Architecture.
func machine() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		return unix.ByteSliceToString(u.Machine[:])
	}
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}

// safeGHW calls into ghw, converting a panic into an error: ghw walks many
// files and a single odd one must not kill the agent.
func safeGHW[T any](f func() (T, error)) (res T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ghw panic: %v", r)
		}
	}()
	return f()
}

// ---------------------------------------------------------------------------
// Memory

// Memory returns usable bytes (MemTotal, as psutil) and installed MiB: the
// online memory blocks in sysfs (IPA sums DIMMs with lshw; the memory block
// total is the same number without dmidecode), else ghw, else MemTotal.
func (c *Collector) Memory() (protocol.Memory, error) {
	var m protocol.Memory
	b, err := os.ReadFile(c.path("proc/meminfo"))
	if err != nil {
		return m, fmt.Errorf("reading meminfo: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m.Total = kb * 1024
		}
	}
	if phys := c.memoryBlocksBytes(); phys > 0 {
		m.PhysicalMB = phys >> 20
	} else if !c.DisableGHW {
		if info, err := safeGHW(func() (*ghw.MemoryInfo, error) { return ghw.Memory(c.ghwOpts()...) }); err == nil && info.TotalPhysicalBytes > 0 {
			m.PhysicalMB = info.TotalPhysicalBytes >> 20
		}
	}
	if m.PhysicalMB == 0 {
		m.PhysicalMB = m.Total >> 20
	}
	if m.Total == 0 {
		return m, fmt.Errorf("no MemTotal in %s", c.path("proc/meminfo"))
	}
	return m, nil
}

func (c *Collector) memoryBlocksBytes() int64 {
	dir := c.path("sys/devices/system/memory")
	bs := readStr(filepath.Join(dir, "block_size_bytes"))
	size, err := strconv.ParseInt(bs, 16, 64)
	if err != nil || size <= 0 {
		return 0
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "memory") {
			continue
		}
		if _, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "memory")); err != nil {
			continue
		}
		if st := readStr(filepath.Join(dir, e.Name(), "state")); st == "online" || st == "" {
			n++
		}
	}
	return n * size
}

// ---------------------------------------------------------------------------
// System

// SystemVendor reads DMI (ghw's product info reads the same files; reading
// them directly keeps the fallbacks identical).
func (c *Collector) SystemVendor() protocol.SystemVendor {
	d := func(f string) string { return readStr(c.path("sys/class/dmi/id", f)) }
	sv := protocol.SystemVendor{
		ProductName:  d("product_name"),
		SerialNumber: d("product_serial"),
		Manufacturer: d("sys_vendor"),
	}
	if v, ver, date := d("bios_vendor"), d("bios_version"), d("bios_date"); v != "" || ver != "" || date != "" {
		sv.Firmware = &protocol.Firmware{Vendor: v, Version: ver, BuildDate: date}
	}
	return sv
}

// Boot reports the firmware boot mode and the PXE MAC.
func (c *Collector) Boot() protocol.BootInfo {
	mode := "bios"
	if _, err := os.Stat(c.path("sys/firmware/efi")); err == nil {
		mode = "uefi"
	}
	return protocol.BootInfo{CurrentBootMode: mode, PXEInterface: c.BootIF}
}

// ---------------------------------------------------------------------------
// Network interfaces

// Interfaces lists physical NICs (those with a device link; bridges, bonds
// and veths have none, and IPA skips them too).
func (c *Collector) Interfaces() ([]protocol.NetworkInterface, error) {
	dir := c.path("sys/class/net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	addrs := c.Addrs
	if addrs == nil {
		addrs = liveAddrs
	}
	var out []protocol.NetworkInterface
	for _, e := range ents {
		name := e.Name()
		base := filepath.Join(dir, name)
		if name == "lo" {
			continue
		}
		if _, err := os.Stat(filepath.Join(base, "device")); err != nil {
			continue
		}
		ni := protocol.NetworkInterface{
			Name:       name,
			MACAddress: strings.ToLower(readStr(filepath.Join(base, "address"))),
			HasCarrier: readStr(filepath.Join(base, "carrier")) == "1",
			Vendor:     readStr(filepath.Join(base, "device/vendor")),
			Product:    readStr(filepath.Join(base, "device/device")),
		}
		if sp, ok := readInt(filepath.Join(base, "speed")); ok && sp > 0 {
			s := int(sp)
			ni.SpeedMbps = &s
		}
		if drv, err := os.Readlink(filepath.Join(base, "device/driver")); err == nil {
			ni.Driver = filepath.Base(drv)
		}
		if real, err := filepath.EvalSymlinks(filepath.Join(base, "device")); err == nil {
			ni.PCIAddress = lastPCIAddress(real)
		}
		v4, v6 := addrs(name)
		ni.IPv4Address, ni.IPv6Address = strp(v4), strp(v6)
		out = append(out, ni)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func liveAddrs(name string) (v4, v6 string) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return "", ""
	}
	as, err := ifc.Addrs()
	if err != nil {
		return "", ""
	}
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			if v4 == "" {
				v4 = ip4.String()
			}
		} else if v6 == "" {
			v6 = ipn.IP.String()
			if ipn.IP.IsLinkLocalUnicast() {
				v6 += "%" + name
			}
		}
	}
	return v4, v6
}

var pciAddrRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$`)

// lastPCIAddress returns the PCI address nearest to the device in a sysfs
// device path (the function the device hangs off), or "".
func lastPCIAddress(p string) string {
	parts := strings.Split(p, string(filepath.Separator))
	for i := len(parts) - 1; i >= 0; i-- {
		if pciAddrRE.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return ""
}
