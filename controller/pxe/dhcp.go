package pxe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DHCPMode says whether a DHCPServer hands out addresses.
type DHCPMode string

const (
	// DHCPModeProxy runs beside the network's own DHCP server, which keeps
	// handing out addresses: we answer only PXE and iPXE clients, and only
	// with boot information (a ProxyDHCP server in the PXE specification's
	// terms). This is the mode for a provisioning network the controller
	// does not own.
	DHCPModeProxy DHCPMode = "proxy"
	// DHCPModeFull makes us the network's DHCP server for an address
	// range: every client we are allowed to answer (PXE or not: the agent
	// ramdisk and the deployed OS need addresses too) gets a lease, and
	// PXE clients get boot information with it.
	DHCPModeFull DHCPMode = "full"
)

// Well-known ports. pxePort is the PXE boot server port, on which PXE
// firmware that got a ProxyDHCP offer without boot-server discovery
// options asks again (PXE 2.1 §2.2.2; pixiecore calls it the BINL port).
const (
	serverPort = 67
	clientPort = 68
	pxePort    = 4011
)

// Client architecture types (RFC 4578 §2.1, IANA "Processor Architecture
// Types") that the default boot file table knows.
const (
	ArchBIOS     uint16 = 0  // x86 BIOS
	ArchEFIIA32  uint16 = 6  // x86 UEFI, 32-bit
	ArchEFIx64   uint16 = 7  // x86-64 UEFI (RFC 4578 calls it "EFI BC")
	ArchEFIBC    uint16 = 9  // x86-64 UEFI as some firmware reports it
	ArchEFIARM64 uint16 = 11 // ARM64 UEFI
)

// DefaultBootFiles returns the TFTP boot file for each client architecture
// when DHCPConfig.BootFiles does not say otherwise. They must exist in the
// TFTP root. The x86 names are those of the iPXE project's builds (and of
// Debian's ipxe package); there is no common name for ARM64, so
// snponly-arm64.efi is ours: iPXE's bin-arm64-efi/snponly.efi, renamed.
//
// x86 UEFI gets snponly.efi, as Ironic's uefi_ipxe_bootfile_name does: it
// drives the NIC through the firmware's own network stack (SNP), so it works
// on any NIC the firmware can PXE boot from, which is what just happened.
// ipxe.efi carries iPXE's own NIC drivers instead; it is the one to use when
// a firmware's SNP is broken. To switch, set
// BootFiles: map[uint16]string{pxe.ArchEFIx64: "ipxe.efi", pxe.ArchEFIBC: "ipxe.efi"}.
// A 32-bit UEFI (ArchEFIIA32) needs a 32-bit build of iPXE under that name,
// or a BootFiles entry naming one.
func DefaultBootFiles() map[uint16]string {
	return map[uint16]string{
		ArchBIOS:     "undionly.kpxe",
		ArchEFIIA32:  "snponly.efi",
		ArchEFIx64:   "snponly.efi",
		ArchEFIBC:    "snponly.efi",
		ArchEFIARM64: "snponly-arm64.efi",
	}
}

// DHCPConfig configures a DHCPServer. Zero values are defaults where a
// default makes sense; NewDHCPServer says which fields are missing.
type DHCPConfig struct {
	// Mode is DHCPModeProxy or DHCPModeFull. Required.
	Mode DHCPMode

	// Interface is the provisioning network interface (e.g. "br0").
	// ListenAndServe binds to it (SO_BINDTODEVICE) so that broadcast
	// replies leave through it and nothing is answered on other networks.
	// When set, NewDHCPServer also takes ServerIP (its first IPv4
	// address) and Netmask from it if they are unset, and checks that
	// they and the range fit it.
	Interface string

	// ServerIP is our IPv4 address on the provisioning network: the DHCP
	// server identifier, next-server (siaddr) and TFTP server (option 66).
	// Required unless Interface has an IPv4 address.
	ServerIP net.IP

	// BootScriptURL is the http(s) URL of the generic iPXE script (see
	// BootScript), given to iPXE clients as their boot file. Required.
	BootScriptURL string

	// BootFiles maps a client architecture (DHCP option 93) to the TFTP
	// file that PXE firmware without iPXE is given. Entries replace those
	// of DefaultBootFiles; an entry with an empty name removes one. A
	// client whose architecture has no entry gets no boot file.
	BootFiles map[uint16]string

	// BootFileFor, if set, picks the TFTP file for one machine, overriding
	// BootFiles; it returns "" to keep the default. It is consulted only
	// for firmware without iPXE: iPXE clients always get BootScriptURL
	// (see the chainload-loop guard on DHCPServer).
	BootFileFor func(mac net.HardwareAddr, arch uint16) string

	// Allow reports whether we may answer the machine with this MAC;
	// requests from others are dropped without a reply. nil answers
	// everyone. Beside a production DHCP server (proxy mode) this is what
	// keeps us from booting machines we do not manage. It is called for
	// every request, from the server's goroutines.
	Allow func(mac net.HardwareAddr) bool

	// Full mode only.

	// RangeStart and RangeEnd bound the addresses handed out (inclusive).
	// They must lie in the subnet of ServerIP and Netmask, and the range
	// can hold at most 65536 addresses. ServerIP and Router are never
	// handed out even if inside the range.
	RangeStart, RangeEnd net.IP
	// Netmask is the subnet mask given to clients (option 1). Defaults to
	// the mask of ServerIP on Interface.
	Netmask net.IPMask
	// Router is the default gateway (option 3); omitted if nil.
	Router net.IP
	// DNS are the name servers (option 6); omitted if empty.
	DNS []net.IP
	// LeaseTime is the lease duration (option 51); default 1 hour,
	// minimum 1 minute.
	LeaseTime time.Duration
	// LeaseFile, if set, is a JSON file that keeps the leases across
	// restarts, so that a machine keeps its address when the controller
	// restarts. It is read by NewDHCPServer and rewritten (atomically)
	// whenever a lease is granted, released or declined.
	LeaseFile string
}

// Defaults and limits.
const (
	defaultLeaseTime = time.Hour
	minLeaseTime     = time.Minute
	maxRangeSize     = 1 << 16

	// offerHold is how long an offered address stays reserved for the
	// client it was offered to while it decides.
	offerHold = time.Minute
	// declineHold is how long an address a client declined (RFC 2131
	// §3.1.5: someone else answers ARP for it) is kept out of use.
	declineHold = 10 * time.Minute

	// A machine whose firmware (not iPXE) starts more than loopLimit DHCP
	// exchanges within loopWindow is probably chainloading in a loop;
	// see DHCPServer.
	loopLimit  = 3
	loopWindow = 2 * time.Minute
)

// DHCPServer answers DHCP for network boot. See DHCPMode for what each mode
// answers.
//
// Boot information. A client that identifies as iPXE (user class "iPXE",
// option 77, or iPXE's encapsulated options, option 175) gets
// BootScriptURL. PXE firmware without iPXE (vendor class "PXEClient...")
// gets an iPXE binary over TFTP, chosen by its architecture (option 93, or
// the "Arch:NNNNN" field of the vendor class): this is the first stage that
// the iPXE script then replaces. Other clients get no boot information.
//
// Chainload-loop guard. An iPXE client is never given a boot file other
// than BootScriptURL, whatever BootFiles and BootFileFor say: giving iPXE
// an iPXE binary makes it load itself forever (lab gotcha 17). The other
// loop, firmware → iPXE binary → back to firmware (for example an iPXE
// built without HTTP, or an EFI binary the firmware cannot start), cannot
// be told from a machine that simply reboots, so it is only reported: when
// a MAC starts more than 3 DHCP exchanges as non-iPXE firmware within 2
// minutes (counted by transaction ID, so retransmissions do not count), a
// warning is logged, at most once per 2 minutes per MAC.
//
// Leases (full mode) are kept per MAC address, not per client identifier:
// firmware, iPXE, the agent and the deployed OS may all send different
// client identifiers for one NIC, and they should all get the same address.
// A MAC keeps its address after its lease expires for as long as no other
// client needs it; a new MAC first gets an address derived from a hash of
// its MAC, so addresses are mostly stable even without a LeaseFile.
//
// Only Ethernet clients and DHCP (not plain BOOTP) are answered.
type DHCPServer struct {
	mode        DHCPMode
	iface       string
	serverIP    net.IP // 4 bytes
	scriptURL   string
	bootFiles   map[uint16]string
	bootFileFor func(net.HardwareAddr, uint16) string
	allow       func(net.HardwareAddr) bool

	// Full mode.
	netmask   net.IPMask // 4 bytes
	router    net.IP
	dns       []net.IP
	leaseTime time.Duration
	pool      *leasePool // guarded by mu

	log *slog.Logger
	now func() time.Time // replaced by tests

	mu    sync.Mutex
	boots map[string]*bootHistory // loop guard, by MAC
}

// bootHistory is what the chainload-loop guard remembers about one MAC.
type bootHistory struct {
	lastXID  dhcpv4.TransactionID
	attempts []time.Time // within loopWindow
	warned   time.Time
}

// NewDHCPServer checks cfg and returns a server for it; it does not listen
// yet. In full mode it loads cfg.LeaseFile if that exists. A nil log
// discards log output.
func NewDHCPServer(cfg DHCPConfig, log *slog.Logger) (*DHCPServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &DHCPServer{
		mode:        cfg.Mode,
		iface:       cfg.Interface,
		scriptURL:   cfg.BootScriptURL,
		bootFileFor: cfg.BootFileFor,
		allow:       cfg.Allow,
		log:         log.With("component", "dhcp", "mode", string(cfg.Mode)),
		now:         time.Now,
		boots:       make(map[string]*bootHistory),
	}
	if err := s.configure(cfg); err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	return s, nil
}

// configure validates cfg into s. Its errors name the field to fix.
func (s *DHCPServer) configure(cfg DHCPConfig) error {
	switch cfg.Mode {
	case DHCPModeProxy, DHCPModeFull:
	case "":
		return fmt.Errorf("Mode is not set: set it to %q or %q", DHCPModeProxy, DHCPModeFull)
	default:
		return fmt.Errorf("unknown Mode %q: set it to %q or %q", cfg.Mode, DHCPModeProxy, DHCPModeFull)
	}

	// ServerIP and Netmask, from the interface where not given.
	var ifNet *net.IPNet // ServerIP's subnet on Interface
	if cfg.ServerIP != nil && cfg.ServerIP.To4() == nil {
		return fmt.Errorf("ServerIP %s is not an IPv4 address", cfg.ServerIP)
	}
	if cfg.Interface != "" {
		nets, err := interfaceIPv4Nets(cfg.Interface)
		if err != nil {
			return fmt.Errorf("Interface: %w", err)
		}
		if len(nets) == 0 {
			return fmt.Errorf("Interface %q has no IPv4 address: configure one, or set Interface to the provisioning network's interface", cfg.Interface)
		}
		if cfg.ServerIP == nil {
			ifNet = nets[0]
			cfg.ServerIP = nets[0].IP
		} else {
			for _, n := range nets {
				if n.IP.Equal(cfg.ServerIP) {
					ifNet = n
				}
			}
			if ifNet == nil {
				return fmt.Errorf("ServerIP %s is not an address of interface %q (it has %s): set ServerIP to one of them",
					cfg.ServerIP, cfg.Interface, joinNets(nets))
			}
		}
	}
	if cfg.ServerIP == nil {
		return errors.New("ServerIP is not set: set it to our IPv4 address on the provisioning network (or set Interface)")
	}
	s.serverIP = cfg.ServerIP.To4()
	if s.serverIP.IsUnspecified() || s.serverIP.IsMulticast() || s.serverIP.Equal(net.IPv4bcast) {
		return fmt.Errorf("ServerIP %s is not a unicast address", s.serverIP)
	}

	if cfg.BootScriptURL == "" {
		return errors.New("BootScriptURL is not set: set it to the http(s) URL of boot.ipxe, e.g. http://192.168.100.1:6385/boot.ipxe")
	}
	if err := CheckURL(cfg.BootScriptURL); err != nil {
		return fmt.Errorf("BootScriptURL: %w", err)
	}
	if len(cfg.BootScriptURL) > 255 {
		return fmt.Errorf("BootScriptURL is %d bytes long: DHCP option 67 holds at most 255", len(cfg.BootScriptURL))
	}

	s.bootFiles = DefaultBootFiles()
	for arch, name := range cfg.BootFiles {
		if name == "" {
			delete(s.bootFiles, arch)
			continue
		}
		if err := checkBootFile(name); err != nil {
			return fmt.Errorf("BootFiles[%d]: %w", arch, err)
		}
		s.bootFiles[arch] = name
	}

	if cfg.Mode == DHCPModeProxy {
		var set []string
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"RangeStart", cfg.RangeStart != nil}, {"RangeEnd", cfg.RangeEnd != nil},
			{"Netmask", cfg.Netmask != nil}, {"Router", cfg.Router != nil}, {"DNS", len(cfg.DNS) > 0},
			{"LeaseTime", cfg.LeaseTime != 0}, {"LeaseFile", cfg.LeaseFile != ""},
		} {
			if f.set {
				set = append(set, f.name)
			}
		}
		if len(set) > 0 {
			return fmt.Errorf("%s apply to mode %q only: in proxy mode the network's DHCP server hands out addresses; unset them or use mode %q",
				strings.Join(set, ", "), DHCPModeFull, DHCPModeFull)
		}
		return nil
	}
	return s.configureFull(cfg, ifNet)
}

// configureFull validates the address options of full mode and loads the
// lease file.
func (s *DHCPServer) configureFull(cfg DHCPConfig, ifNet *net.IPNet) error {
	where := fmt.Sprintf("the subnet of ServerIP %s", s.serverIP)
	switch {
	case cfg.Netmask != nil:
		m, err := ipv4Mask(cfg.Netmask)
		if err != nil {
			return fmt.Errorf("Netmask: %w", err)
		}
		s.netmask = m
	case ifNet != nil:
		s.netmask = ifNet.Mask
	default:
		return errors.New("Netmask is not set: set it (e.g. 255.255.255.0), or set Interface to take it from there")
	}
	subnet := &net.IPNet{IP: s.serverIP.Mask(s.netmask), Mask: s.netmask}
	if ifNet != nil {
		where = fmt.Sprintf("interface %q's subnet", cfg.Interface)
		if !bytes.Equal(s.netmask, ifNet.Mask) {
			return fmt.Errorf("Netmask %s does not match interface %q (%s): unset Netmask or fix it", net.IP(s.netmask), cfg.Interface, ifNet)
		}
	}

	if cfg.RangeStart == nil || cfg.RangeEnd == nil {
		return fmt.Errorf("RangeStart and RangeEnd must be set in mode %q: the first and last address to hand out, in %s %s", DHCPModeFull, where, subnet)
	}
	start, end := cfg.RangeStart.To4(), cfg.RangeEnd.To4()
	if start == nil || end == nil {
		return fmt.Errorf("RangeStart %s and RangeEnd %s must be IPv4 addresses", cfg.RangeStart, cfg.RangeEnd)
	}
	for _, r := range []struct {
		name string
		ip   net.IP
	}{{"RangeStart", start}, {"RangeEnd", end}} {
		if !subnet.Contains(r.ip) {
			return fmt.Errorf("%s %s is outside %s %s: set the range inside it", r.name, r.ip, where, subnet)
		}
		if ones, _ := s.netmask.Size(); ones <= 30 {
			if r.ip.Equal(subnet.IP) {
				return fmt.Errorf("%s %s is the subnet's network address: start the range above it", r.name, r.ip)
			}
			if r.ip.Equal(broadcastAddr(subnet)) {
				return fmt.Errorf("%s %s is the subnet's broadcast address: end the range below it", r.name, r.ip)
			}
		}
	}
	lo, hi := ipToU32(start), ipToU32(end)
	if lo > hi {
		return fmt.Errorf("RangeStart %s is above RangeEnd %s: swap them", start, end)
	}
	if hi-lo >= maxRangeSize {
		return fmt.Errorf("range %s-%s holds %d addresses, more than %d: narrow it", start, end, uint64(hi-lo)+1, maxRangeSize)
	}

	if cfg.Router != nil {
		s.router = cfg.Router.To4()
		if s.router == nil || !subnet.Contains(s.router) {
			return fmt.Errorf("Router %s is not an IPv4 address in %s %s", cfg.Router, where, subnet)
		}
	}
	for _, d := range cfg.DNS {
		if d.To4() == nil {
			return fmt.Errorf("DNS server %s is not an IPv4 address", d)
		}
		s.dns = append(s.dns, d.To4())
	}

	s.leaseTime = cfg.LeaseTime
	switch {
	case s.leaseTime == 0:
		s.leaseTime = defaultLeaseTime
	case s.leaseTime < minLeaseTime:
		return fmt.Errorf("LeaseTime %s is below %s: clients would renew constantly", s.leaseTime, minLeaseTime)
	case s.leaseTime > dhcpv4.MaxLeaseTime:
		return fmt.Errorf("LeaseTime %s is above the %s DHCP can express", s.leaseTime, dhcpv4.MaxLeaseTime)
	}

	excluded := []net.IP{s.serverIP}
	if s.router != nil {
		excluded = append(excluded, s.router)
	}
	s.pool = newLeasePool(lo, hi, excluded, subnet)
	if s.pool.capacity() == 0 {
		return fmt.Errorf("range %s-%s holds no address besides ServerIP and Router: widen it", start, end)
	}
	if cfg.LeaseFile != "" {
		dir := filepath.Dir(cfg.LeaseFile)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("LeaseFile %s: directory %s does not exist: create it or change LeaseFile", cfg.LeaseFile, dir)
		}
		s.pool.file = cfg.LeaseFile
		skipped, err := s.pool.load(s.now())
		if err != nil {
			return fmt.Errorf("LeaseFile: %w (fix or remove the file)", err)
		}
		for _, msg := range skipped {
			s.log.Warn("dhcp lease file entry ignored", "file", cfg.LeaseFile, "reason", msg)
		}
	}
	return nil
}

// Serve answers the DHCP requests that arrive on conn until conn is
// closed, then returns nil; any other read error is returned. conn must
// receive what is sent to port 67, broadcasts included, and be able to
// send broadcasts; ListenAndServe makes such a socket. Serve is for tests
// and for callers that make their own socket; in proxy mode such callers
// do not get the port 4011 service that ListenAndServe adds.
func (s *DHCPServer) Serve(conn net.PacketConn) error {
	return s.serve(conn, false)
}

// ListenAndServe listens on port 67 of Interface (and, in proxy mode, on
// the PXE boot server port 4011) and serves until ctx is done, then closes
// its sockets and returns nil. Interface must be set: without it replies
// to clients without an address would leave through whichever interface
// routes 255.255.255.255, and we would answer on every network.
func (s *DHCPServer) ListenAndServe(ctx context.Context) error {
	if s.iface == "" {
		return errors.New("dhcp: ListenAndServe needs DHCPConfig.Interface: set it to the provisioning network's interface")
	}
	type listener struct {
		conn       net.PacketConn
		bootServer bool
	}
	ports := []int{serverPort}
	if s.mode == DHCPModeProxy {
		ports = append(ports, pxePort)
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			l.conn.Close()
		}
	}
	for _, port := range ports {
		conn, err := listenUDP4(ctx, s.iface, port)
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: listen on %s port %d: %w", s.iface, port, err)
		}
		ls = append(ls, listener{conn, port == pxePort})
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()

	errc := make(chan error, len(ls))
	for _, l := range ls {
		s.log.Info("dhcp server listening", "interface", s.iface, "addr", l.conn.LocalAddr().String(), "server_ip", s.serverIP.String())
		go func() { errc <- s.serve(l.conn, l.bootServer) }()
	}
	var first error
	for range ls {
		if err := <-errc; err != nil && first == nil {
			first = err
			closeAll() // stop the other listener too
		}
	}
	closeAll()
	if ctx.Err() != nil {
		return nil
	}
	return first
}

// serve is Serve; bootServer says conn is the PXE boot server port.
func (s *DHCPServer) serve(conn net.PacketConn, bootServer bool) error {
	buf := make([]byte, 8192)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp: read on %s: %w", conn.LocalAddr(), err)
		}
		resp, dest := s.respondSafely(buf[:n], peer, bootServer)
		if resp == nil {
			continue
		}
		if _, err := conn.WriteTo(resp.ToBytes(), dest); err != nil {
			s.log.Warn("dhcp reply not sent", "mac", resp.ClientHWAddr.String(), "dest", dest.String(), "err", err)
		}
	}
}

// respondSafely is respond, but a panic (from a bug, or from the Allow or
// BootFileFor callbacks) costs only the packet, not the controller.
func (s *DHCPServer) respondSafely(b []byte, peer net.Addr, bootServer bool) (resp *dhcpv4.DHCPv4, dest *net.UDPAddr) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("dhcp request handling panicked; request dropped", "panic", fmt.Sprint(r), "peer", addrString(peer))
			resp, dest = nil, nil
		}
	}()
	return s.respond(b, peer, bootServer)
}

// respond parses one datagram and returns the reply and where to send it,
// or nil if it gets none.
func (s *DHCPServer) respond(b []byte, peer net.Addr, bootServer bool) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.log.Debug("dhcp packet dropped: not DHCP", "peer", addrString(peer), "err", err)
		return nil, nil
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil // a reply (maybe our own broadcast): not for a server
	}
	if len(req.ClientHWAddr) != 6 {
		s.log.Debug("dhcp packet dropped: not an Ethernet client", "peer", addrString(peer), "hlen", len(req.ClientHWAddr))
		return nil, nil
	}
	c := classify(req)
	log := s.log.With("mac", c.mac.String(), "xid", req.TransactionID.String(), "type", req.MessageType().String())
	if s.allow != nil && !s.allow(c.mac) {
		log.Debug("dhcp request ignored: machine not managed here")
		return nil, nil
	}
	var resp *dhcpv4.DHCPv4
	if s.mode == DHCPModeProxy {
		resp = s.handleProxy(req, c, bootServer, log)
	} else {
		resp = s.handleFull(req, c, log)
	}
	if resp == nil {
		return nil, nil
	}
	return resp, replyAddr(req, resp, peer, bootServer)
}

// client is what a request says about the machine that sent it.
type client struct {
	mac      net.HardwareAddr
	pxe      bool   // vendor class "PXEClient..." (PXE firmware or iPXE)
	ipxe     bool   // iPXE: user class "iPXE" or option 175
	arch     uint16 // option 93, or the vendor class's Arch field; 0 if neither
	archSeen bool
}

func classify(req *dhcpv4.DHCPv4) client {
	c := client{mac: req.ClientHWAddr}
	vc := req.ClassIdentifier()
	c.pxe = strings.HasPrefix(vc, "PXEClient")
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			c.ipxe = true
		}
	}
	if req.Options.Has(dhcpv4.GenericOptionCode(175)) {
		c.ipxe = true
	}
	if archs := req.ClientArch(); len(archs) > 0 {
		c.arch, c.archSeen = uint16(archs[0]), true
	} else if a, ok := archFromVendorClass(vc); ok {
		c.arch, c.archSeen = a, true
	}
	return c
}

// archFromVendorClass reads the architecture from a PXE vendor class,
// "PXEClient:Arch:00007:UNDI:003016", for clients that omit option 93.
func archFromVendorClass(vc string) (uint16, bool) {
	f := strings.Split(vc, ":")
	if len(f) < 3 || f[0] != "PXEClient" || f[1] != "Arch" {
		return 0, false
	}
	n, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// boot is the boot information for one client.
type boot struct {
	file string // "" for none
	tftp bool   // file is a TFTP path (not a URL)
}

// bootInfo picks c's boot file. It is the chainload-loop guard: iPXE gets
// the script URL and nothing else.
func (s *DHCPServer) bootInfo(c client, log *slog.Logger) boot {
	switch {
	case c.ipxe:
		return boot{file: s.scriptURL}
	case !c.pxe:
		return boot{}
	}
	if s.bootFileFor != nil {
		if f := s.bootFileFor(c.mac, c.arch); f != "" {
			err := checkBootFile(f)
			if err == nil {
				return boot{file: f, tftp: true}
			}
			log.Warn("dhcp BootFileFor result ignored; using BootFiles", "bootfile", f, "err", err)
		}
	}
	if f, ok := s.bootFiles[c.arch]; ok {
		return boot{file: f, tftp: true}
	}
	log.Warn("dhcp: no boot file for this client architecture; set DHCPConfig.BootFiles for it", "arch", c.arch)
	return boot{}
}

// handleProxy answers in proxy mode: DISCOVERs on port 67 with an offer
// of boot information only, and REQUESTs (and INFORMs) on the PXE boot
// server port with the same information in an ACK. Everything else on
// port 67 is the real DHCP server's business.
func (s *DHCPServer) handleProxy(req *dhcpv4.DHCPv4, c client, bootServer bool, log *slog.Logger) *dhcpv4.DHCPv4 {
	mt := req.MessageType()
	var replyType dhcpv4.MessageType
	switch {
	case !bootServer && mt == dhcpv4.MessageTypeDiscover:
		replyType = dhcpv4.MessageTypeOffer
	case bootServer && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform):
		replyType = dhcpv4.MessageTypeAck
	default:
		log.Debug("dhcp request ignored: not for a proxy server")
		return nil
	}
	if !c.pxe && !c.ipxe {
		log.Debug("dhcp request ignored: not a PXE client", "vendor_class", req.ClassIdentifier())
		return nil
	}
	if replyType == dhcpv4.MessageTypeOffer {
		s.noteFirmwareBoot(req, c, log)
	}
	b := s.bootInfo(c, log)
	if b.file == "" {
		return nil // bootInfo logged why
	}
	resp, err := s.newReply(req, replyType)
	if err != nil {
		log.Error("dhcp reply not built", "err", err)
		return nil
	}
	// A ProxyDHCP reply carries no address: yiaddr stays 0 (the boot
	// server ACK echoes the ciaddr the client already has).
	if bootServer {
		resp.ClientIPAddr = req.ClientIPAddr
	}
	s.addBoot(resp, b)
	// Option 60 "PXEClient" is what marks an offer as ProxyDHCP to PXE
	// firmware and to iPXE. The client's UUID (option 97) is echoed, as
	// PXE servers do; some ROMs want it back.
	resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	if guid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
	// PXE discovery control "skip discovery, boot the file" (vendor
	// option 43, sub-option 6 = 8) for BIOS and iPXE. UEFI firmware does
	// not get it: some UEFI PXE stacks ignore ProxyDHCP offers that carry
	// it, while all of them, offered no option 43, ask the boot server
	// port 4011 instead, which we answer (pixiecore found the same).
	if c.ipxe || c.arch == ArchBIOS {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	log.Info("dhcp "+strings.ToLower(replyType.String()), "arch", c.arch, "ipxe", c.ipxe, "bootfile", b.file, "ip", resp.ClientIPAddr.String())
	return resp
}

// handleFull answers in full mode.
func (s *DHCPServer) handleFull(req *dhcpv4.DHCPv4, c client, log *slog.Logger) *dhcpv4.DHCPv4 {
	mt := req.MessageType()
	// A relayed request comes from the relay's subnet; we have a pool for
	// one subnet only, and an address from it would be useless elsewhere.
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() && !s.pool.subnet.Contains(gi) {
		log.Debug("dhcp request ignored: relayed from a subnet we have no range for", "giaddr", gi.String())
		return nil
	}
	now := s.now()
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		s.noteFirmwareBoot(req, c, log)
		s.mu.Lock()
		ip, ok := s.pool.offer(c.mac, req.RequestedIPAddress(), now)
		s.mu.Unlock()
		if !ok {
			log.Warn("dhcp: no free address for client; widen RangeStart-RangeEnd")
			return nil
		}
		return s.ackOrOffer(req, c, dhcpv4.MessageTypeOffer, ip, log)

	case dhcpv4.MessageTypeRequest:
		serverID := req.ServerIdentifier()
		requested := req.RequestedIPAddress().To4()
		ciaddr := req.ClientIPAddr.To4()
		var ip net.IP
		var ok bool
		var why string
		s.mu.Lock()
		switch {
		case serverID != nil: // SELECTING: the answer to an offer
			if !serverID.Equal(s.serverIP) {
				s.pool.forgetOffer(c.mac, now)
				s.mu.Unlock()
				log.Debug("dhcp request ignored: client chose another server", "server_id", serverID.String())
				return nil
			}
			ip, ok = s.pool.bindOffered(c.mac, requested, now, s.leaseTime)
			why = "not the address offered"
		case requested != nil: // INIT-REBOOT: checking a remembered address
			ip, ok = s.pool.claim(c.mac, requested, now, s.leaseTime)
			why = "address not available to this client"
		case ciaddr != nil && !ciaddr.IsUnspecified(): // RENEWING / REBINDING
			ip, ok = s.pool.claim(c.mac, ciaddr, now, s.leaseTime)
			why = "address not available to this client"
		default:
			s.mu.Unlock()
			log.Debug("dhcp request ignored: names no address")
			return nil
		}
		if ok {
			s.saveLeases(log)
		}
		s.mu.Unlock()
		if !ok {
			asked := requested
			if asked == nil {
				asked = ciaddr
			}
			return s.nak(req, why, asked, log)
		}
		return s.ackOrOffer(req, c, dhcpv4.MessageTypeAck, ip, log)

	case dhcpv4.MessageTypeRelease:
		s.mu.Lock()
		if s.pool.release(c.mac, req.ClientIPAddr, now) {
			s.saveLeases(log)
		}
		s.mu.Unlock()
		log.Info("dhcp release", "ip", req.ClientIPAddr.String())
		return nil

	case dhcpv4.MessageTypeDecline:
		ip := req.RequestedIPAddress()
		s.mu.Lock()
		declined := s.pool.decline(c.mac, ip, now)
		if declined {
			s.saveLeases(log)
		}
		s.mu.Unlock()
		if declined {
			log.Warn("dhcp decline: client found the address in use; another host has it, check for static addresses in the range",
				"ip", ip.String(), "held_for", declineHold)
		}
		return nil

	case dhcpv4.MessageTypeInform:
		// The client has an address (configured by other means) and asks
		// only for options: no lease, no yiaddr.
		resp, err := s.newReply(req, dhcpv4.MessageTypeAck)
		if err != nil {
			log.Error("dhcp reply not built", "err", err)
			return nil
		}
		s.addNetworkOptions(resp, false)
		b := s.bootInfo(c, log)
		s.addBoot(resp, b)
		log.Info("dhcp ack (inform)", "arch", c.arch, "ipxe", c.ipxe, "bootfile", b.file, "ip", req.ClientIPAddr.String())
		return resp
	}
	log.Debug("dhcp request ignored: unsupported message type")
	return nil
}

// ackOrOffer builds an OFFER or ACK of ip with the network options and,
// for PXE clients, boot information. No option 60 "PXEClient" is sent:
// firmware then takes the offer as a plain DHCP offer with a boot file and
// boots it, without waiting for ProxyDHCP or asking port 4011.
func (s *DHCPServer) ackOrOffer(req *dhcpv4.DHCPv4, c client, mt dhcpv4.MessageType, ip net.IP, log *slog.Logger) *dhcpv4.DHCPv4 {
	resp, err := s.newReply(req, mt)
	if err != nil {
		log.Error("dhcp reply not built", "err", err)
		return nil
	}
	resp.YourIPAddr = ip
	s.addNetworkOptions(resp, true)
	b := s.bootInfo(c, log)
	s.addBoot(resp, b)
	log.Info("dhcp "+strings.ToLower(mt.String()), "ip", ip.String(), "arch", c.arch, "ipxe", c.ipxe, "pxe", c.pxe, "bootfile", b.file)
	return resp
}

// nak refuses a REQUEST, which sends the client back to DISCOVER.
func (s *DHCPServer) nak(req *dhcpv4.DHCPv4, why string, asked net.IP, log *slog.Logger) *dhcpv4.DHCPv4 {
	resp, err := s.newReply(req, dhcpv4.MessageTypeNak)
	if err != nil {
		log.Error("dhcp reply not built", "err", err)
		return nil
	}
	resp.UpdateOption(dhcpv4.OptMessage(why))
	// RFC 2131 §4.3.2: a NAK through a relay has the broadcast bit set,
	// since the client may have no usable address.
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		resp.SetBroadcast()
	}
	log.Info("dhcp nak", "ip", asked.String(), "reason", why)
	return resp
}

// newReply starts a reply to req: xid, chaddr, flags, giaddr, the relay
// agent option (RFC 3046) and client identifier (RFC 6842) copied, and our
// server identifier.
func (s *DHCPServer) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP)),
	)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", mt, err)
	}
	return resp, nil
}

// addNetworkOptions adds the full-mode options; withLease adds the lease
// times (not for INFORM).
func (s *DHCPServer) addNetworkOptions(resp *dhcpv4.DHCPv4, withLease bool) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(s.netmask))
	if s.router != nil {
		resp.UpdateOption(dhcpv4.OptRouter(s.router))
	}
	if len(s.dns) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(s.dns...))
	}
	if withLease {
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.leaseTime))
		// T1 and T2 at RFC 2131's defaults (§4.4.5), stated so that no
		// client has to guess.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRenewTimeValue, dhcpv4.Duration(s.leaseTime/2).ToBytes()))
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRebindingTimeValue, dhcpv4.Duration(s.leaseTime*7/8).ToBytes()))
	}
}

// addBoot adds b to resp: the file both in option 67 and the BOOTP file
// field (older PXE ROMs read only the field; it holds 127 bytes, so a
// longer URL goes in the option only), next-server, and for TFTP files
// option 66.
func (s *DHCPServer) addBoot(resp *dhcpv4.DHCPv4, b boot) {
	if b.file == "" {
		return
	}
	resp.ServerIPAddr = s.serverIP
	resp.UpdateOption(dhcpv4.OptBootFileName(b.file))
	if len(b.file) <= 127 {
		resp.BootFileName = b.file
	}
	if b.tftp {
		resp.UpdateOption(dhcpv4.OptTFTPServerName(s.serverIP.String()))
	}
}

// noteFirmwareBoot feeds the chainload-loop guard (see DHCPServer) with a
// DHCP exchange started by PXE firmware without iPXE.
func (s *DHCPServer) noteFirmwareBoot(req *dhcpv4.DHCPv4, c client, log *slog.Logger) {
	if c.ipxe || !c.pxe {
		return
	}
	now := s.now()
	key := c.mac.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.boots[key]
	if h == nil {
		if len(s.boots) >= 4096 {
			s.pruneBoots(now)
		}
		h = &bootHistory{}
		s.boots[key] = h
	} else if h.lastXID == req.TransactionID {
		return // a retransmission of the same exchange
	}
	h.lastXID = req.TransactionID
	kept := h.attempts[:0]
	for _, t := range h.attempts {
		if now.Sub(t) < loopWindow {
			kept = append(kept, t)
		}
	}
	h.attempts = append(kept, now)
	if len(h.attempts) > loopLimit && now.Sub(h.warned) >= loopWindow {
		h.warned = now
		log.Warn("dhcp: machine keeps PXE booting as firmware without iPXE; it may be chainloading in a loop (iPXE binary that fails to start, or iPXE without HTTP support)",
			"boots", len(h.attempts), "window", loopWindow, "arch", c.arch)
	}
}

// pruneBoots forgets machines not seen within loopWindow; s.mu is held.
func (s *DHCPServer) pruneBoots(now time.Time) {
	for k, h := range s.boots {
		if n := len(h.attempts); n == 0 || now.Sub(h.attempts[n-1]) >= loopWindow {
			delete(s.boots, k)
		}
	}
}

// saveLeases writes the lease file, if any; s.mu is held. A failure is
// logged, not returned: the client has its address either way, and the
// next change rewrites the whole file.
func (s *DHCPServer) saveLeases(log *slog.Logger) {
	if err := s.pool.save(); err != nil {
		log.Error("dhcp lease file not written; addresses may change on restart", "err", err)
	}
}

// replyAddr returns where the reply resp to req, which came from peer,
// goes (RFC 2131 §4.1, PXE 2.1):
//   - on the PXE boot server port: back to the sender, address and port;
//   - relayed (giaddr set): to the relay's server port 67, or to the port
//     it sent from if it asked so with the relay source port sub-option
//     (RFC 8357);
//   - a NAK: broadcast, the client's address is in doubt;
//   - a client with an address (ciaddr): unicast to it, port 68;
//   - otherwise broadcast to 255.255.255.255:68. RFC 2131 allows unicast
//     to yiaddr when the broadcast flag is clear, but that needs an ARP
//     entry we cannot add without a raw socket; every client accepts the
//     broadcast.
func replyAddr(req, resp *dhcpv4.DHCPv4, peer net.Addr, bootServer bool) *net.UDPAddr {
	from, _ := peer.(*net.UDPAddr)
	if bootServer && from != nil {
		return &net.UDPAddr{IP: from.IP, Port: from.Port}
	}
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		port := serverPort
		if rai := req.RelayAgentInfo(); rai != nil && rai.Has(dhcpv4.RelaySourcePortSubOption) && from != nil {
			port = from.Port
		}
		return &net.UDPAddr{IP: gi, Port: port}
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: clientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
}

// checkBootFile checks a TFTP boot file name: it must fit the BOOTP file
// field and hold no control characters (it is also logged and may be
// printed by firmware).
func checkBootFile(name string) error {
	if len(name) > 127 {
		return fmt.Errorf("boot file name %q is %d bytes; the DHCP file field holds 127", name, len(name))
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("boot file name %q contains control character %q", name, r)
		}
	}
	return nil
}

// interfaceIPv4Nets returns the IPv4 addresses of the named interface.
func interfaceIPv4Nets(name string) ([]*net.IPNet, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w: set Interface to an existing network interface", name, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of interface %q: %w", name, err)
	}
	var nets []*net.IPNet
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil {
			continue
		}
		m, err := ipv4Mask(n.Mask)
		if err != nil {
			continue
		}
		nets = append(nets, &net.IPNet{IP: n.IP.To4(), Mask: m})
	}
	return nets, nil
}

func joinNets(nets []*net.IPNet) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		ones, _ := n.Mask.Size()
		s[i] = fmt.Sprintf("%s/%d", n.IP, ones)
	}
	return strings.Join(s, ", ")
}

// ipv4Mask returns m as a 4-byte contiguous mask.
func ipv4Mask(m net.IPMask) (net.IPMask, error) {
	switch len(m) {
	case net.IPv4len:
	case net.IPv6len:
		// net.IPv4Mask values are 4 bytes, but a mask parsed from an
		// IPv4-in-IPv6 form is 16.
		m = m[12:]
	default:
		return nil, fmt.Errorf("%v is not an IPv4 mask", m)
	}
	if ones, bits := m.Size(); bits != 32 || ones == 0 {
		return nil, fmt.Errorf("%s is not a valid IPv4 netmask", net.IP(m))
	}
	return m, nil
}

func broadcastAddr(n *net.IPNet) net.IP {
	ip := make(net.IP, 4)
	for i := range ip {
		ip[i] = n.IP[i] | ^n.Mask[i]
	}
	return ip
}

func ipToU32(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func u32ToIP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}
