package pxe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

const testScriptURL = "http://127.0.0.1:6385/boot.ipxe"

var (
	loopback = net.IPv4(127, 0, 0, 1).To4()
	macA     = mustMAC("52:54:00:00:00:0a")
	macB     = mustMAC("52:54:00:00:00:0b")
	macC     = mustMAC("52:54:00:00:00:0c")
	macD     = mustMAC("52:54:00:00:00:0d")
	macAlien = mustMAC("52:54:00:ff:ff:ff") // not managed by us
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// allowKnown is the Allow hook of the tests: every MAC but macAlien.
func allowKnown(mac net.HardwareAddr) bool { return !bytes.Equal(mac, macAlien) }

// proxyConfig and fullConfig are the configurations of the tests. Full
// mode uses a range in 127.0.0.0/8 so that 127.0.0.1, where the test
// "relay" sits, is in the pool's subnet.
func proxyConfig() DHCPConfig {
	return DHCPConfig{Mode: DHCPModeProxy, ServerIP: loopback, BootScriptURL: testScriptURL, Allow: allowKnown}
}

func fullConfig() DHCPConfig {
	return DHCPConfig{
		Mode: DHCPModeFull, ServerIP: loopback, BootScriptURL: testScriptURL, Allow: allowKnown,
		RangeStart: net.IPv4(127, 0, 0, 100), RangeEnd: net.IPv4(127, 0, 0, 109),
		Netmask: net.IPv4Mask(255, 0, 0, 0), Router: net.IPv4(127, 0, 0, 254),
		DNS: []net.IP{net.IPv4(127, 0, 0, 53)}, LeaseTime: 10 * time.Minute,
	}
}

// testClock is a settable clock for the lease tests.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type dhcpFixture struct {
	srv     *DHCPServer
	addr    net.Addr // the socket that plays port 67
	pxeAddr net.Addr // the socket that plays port 4011 (proxy mode)
	logs    *syncBuffer
	stop    func()
}

// startDHCP runs a server for cfg on loopback sockets until the test ends
// (or stop is called). clock, if not nil, replaces the server's clock.
func startDHCP(t *testing.T, cfg DHCPConfig, clock *testClock) *dhcpFixture {
	t.Helper()
	fx := &dhcpFixture{logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewDHCPServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		srv.now = clock.Now
	}
	fx.srv = srv
	var conns []net.PacketConn
	var wg sync.WaitGroup
	for _, bootServer := range []bool{false, true} {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		if bootServer {
			fx.pxeAddr = conn.LocalAddr()
		} else {
			fx.addr = conn.LocalAddr()
		}
		wg.Go(func() {
			if err := srv.serve(conn, bootServer); err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	var once sync.Once
	fx.stop = func() {
		once.Do(func() {
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(func() {
		fx.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", fx.logs)
		}
	})
	return fx
}

// relayed makes req look relayed by an agent on 127.0.0.1 that asks for
// replies on its source port (RFC 8357), which is how replies reach a test
// socket on loopback rather than port 67 or a broadcast. A circuit ID
// lets the tests check the relay option is echoed.
func relayed(req *dhcpv4.DHCPv4) {
	req.GatewayIPAddr = loopback
	req.UpdateOption(dhcpv4.OptRelayAgentInfo(
		dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte("port7")),
		dhcpv4.OptGeneric(dhcpv4.RelaySourcePortSubOption, nil),
	))
}

// exchange sends req, relayed, to the server's port-67 socket and returns
// the reply, or nil if none arrives within wait.
func (fx *dhcpFixture) exchange(t *testing.T, req *dhcpv4.DHCPv4, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	relayed(req)
	return sendRecv(t, fx.addr, req, wait)
}

// sendRecv sends req as is to dst over UDP and returns the reply with
// req's transaction ID, or nil if none arrives within wait.
func sendRecv(t *testing.T, dst net.Addr, req *dhcpv4.DHCPv4, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteTo(req.ToBytes(), dst); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, 4096)
	for {
		conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			t.Fatal(err)
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if resp.TransactionID == req.TransactionID {
			return resp
		}
	}
}

// replyWait is how long a reply that must come may take.
const replyWait = 3 * time.Second

// expectNoReply checks that req gets no reply, without waiting for a
// timeout: it sends req and then, from the same socket, a probe that is
// always answered. The server handles one socket's requests in order, so
// a reply to req would arrive before the probe's. req goes to the boot
// server port if bootServer, else to port 67, relayed unless it already
// has a giaddr.
func (fx *dhcpFixture) expectNoReply(t *testing.T, req *dhcpv4.DHCPv4, bootServer bool) {
	t.Helper()
	dst := fx.addr
	var probe *dhcpv4.DHCPv4
	switch {
	case bootServer:
		dst = fx.pxeAddr
		probe = newMessage(t, dhcpv4.MessageTypeRequest, macD, pxeFirmware(7), dhcpv4.WithClientIP(loopback))
	case fx.srv.mode == DHCPModeProxy:
		probe = newDiscover(t, macD, pxeFirmware(0))
		relayed(probe)
	default: // an INFORM changes no lease
		probe = newMessage(t, dhcpv4.MessageTypeInform, macD, dhcpv4.WithClientIP(loopback))
		relayed(probe)
	}
	if gi := req.GatewayIPAddr; !bootServer && (gi == nil || gi.IsUnspecified()) {
		relayed(req)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range []*dhcpv4.DHCPv4{req, probe} {
		if _, err := conn.WriteTo(p.ToBytes(), dst); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 4096)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("probe not answered: %v", err)
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		switch resp.TransactionID {
		case req.TransactionID:
			t.Fatalf("got a reply, want none: %s", resp.Summary())
		case probe.TransactionID:
			return
		}
	}
}

// Packet builders, with the options real firmware sends.

func newDiscover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newMessage(t *testing.T, mt dhcpv4.MessageType, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var testGUID = append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)

// pxeFirmware is what PXE firmware of architecture arch sends: vendor
// class, option 93 and the machine UUID (option 97).
func pxeFirmware(arch uint16) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier(vendorClass(arch)))
		d.UpdateOption(dhcpv4.OptClientArch(iana.Arch(arch)))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, testGUID))
	}
}

func vendorClass(arch uint16) string {
	if arch == ArchBIOS {
		return "PXEClient:Arch:00000:UNDI:002001"
	}
	return fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003016", arch)
}

// ipxeUserClass is iPXE's user class, raw as iPXE sends it (not RFC 3004).
func ipxeUserClass(d *dhcpv4.DHCPv4) { dhcpv4.WithUserClass("iPXE", false)(d) }

// ipxeEncap is iPXE's encapsulated option 175 (here: feature "HTTP").
func ipxeEncap(d *dhcpv4.DHCPv4) {
	d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{19, 1, 1}))
}

func requireType(t *testing.T, resp *dhcpv4.DHCPv4, want dhcpv4.MessageType) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no reply, want %s", want)
	}
	if got := resp.MessageType(); got != want {
		t.Fatalf("reply is %s, want %s: %s", got, want, resp.Summary())
	}
}

// checkBoot checks the boot information of a reply.
func checkBoot(t *testing.T, resp *dhcpv4.DHCPv4, wantFile string, wantTFTP bool) {
	t.Helper()
	if got := resp.BootFileNameOption(); got != wantFile {
		t.Errorf("option 67 = %q, want %q", got, wantFile)
	}
	if resp.BootFileName != wantFile {
		t.Errorf("file field = %q, want %q", resp.BootFileName, wantFile)
	}
	if !resp.ServerIPAddr.Equal(loopback) {
		t.Errorf("siaddr = %v, want %v", resp.ServerIPAddr, loopback)
	}
	wantTFTPName := ""
	if wantTFTP {
		wantTFTPName = loopback.String()
	}
	if got := resp.TFTPServerName(); got != wantTFTPName {
		t.Errorf("option 66 = %q, want %q", got, wantTFTPName)
	}
	if !resp.ServerIdentifier().Equal(loopback) {
		t.Errorf("server identifier = %v, want %v", resp.ServerIdentifier(), loopback)
	}
}

func TestDHCPBootFile(t *testing.T) {
	type tc struct {
		name     string
		mods     []dhcpv4.Modifier
		wantFile string
		wantTFTP bool
	}
	tcs := []tc{
		{"BIOS", []dhcpv4.Modifier{pxeFirmware(0)}, "undionly.kpxe", true},
		{"UEFI IA32", []dhcpv4.Modifier{pxeFirmware(6)}, "snponly.efi", true},
		{"UEFI x64", []dhcpv4.Modifier{pxeFirmware(7)}, "snponly.efi", true},
		{"UEFI BC", []dhcpv4.Modifier{pxeFirmware(9)}, "snponly.efi", true},
		{"UEFI ARM64", []dhcpv4.Modifier{pxeFirmware(11)}, "snponly-arm64.efi", true},
		{"arch from vendor class only", []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		}, "snponly.efi", true},
		{"iPXE by user class", []dhcpv4.Modifier{pxeFirmware(0), ipxeUserClass}, testScriptURL, false},
		{"iPXE by RFC 3004 user class", []dhcpv4.Modifier{pxeFirmware(0), dhcpv4.WithUserClass("iPXE", true)}, testScriptURL, false},
		{"iPXE by option 175", []dhcpv4.Modifier{pxeFirmware(7), ipxeEncap}, testScriptURL, false},
		{"iPXE without PXEClient vendor class", []dhcpv4.Modifier{ipxeUserClass}, testScriptURL, false},
	}
	for _, mode := range []DHCPMode{DHCPModeProxy, DHCPModeFull} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := proxyConfig()
			if mode == DHCPModeFull {
				cfg = fullConfig()
			}
			fx := startDHCP(t, cfg, nil)
			for _, c := range tcs {
				t.Run(c.name, func(t *testing.T) {
					resp := fx.exchange(t, newDiscover(t, macA, c.mods...), replyWait)
					requireType(t, resp, dhcpv4.MessageTypeOffer)
					checkBoot(t, resp, c.wantFile, c.wantTFTP)
					if mode == DHCPModeFull && !fx.srv.pool.subnet.Contains(resp.YourIPAddr) {
						t.Errorf("yiaddr %v not in the pool's subnet", resp.YourIPAddr)
					}
				})
			}
		})
	}
}

func TestDHCPBootFileOverrides(t *testing.T) {
	special := mustMAC("52:54:00:00:00:5e")
	cfg := proxyConfig()
	cfg.BootFiles = map[uint16]string{ArchEFIx64: "ipxe.efi", ArchEFIARM64: ""}
	cfg.BootFileFor = func(mac net.HardwareAddr, arch uint16) string {
		switch {
		case bytes.Equal(mac, special) && arch == ArchBIOS:
			return "special/undionly.kpxe"
		case bytes.Equal(mac, special):
			return "bad\nname"
		}
		return ""
	}
	fx := startDHCP(t, cfg, nil)
	for _, c := range []struct {
		name     string
		mac      net.HardwareAddr
		mods     []dhcpv4.Modifier
		wantFile string // "" for no reply
		wantTFTP bool
	}{
		{"BootFiles replaces a default", macA, []dhcpv4.Modifier{pxeFirmware(7)}, "ipxe.efi", true},
		{"BootFiles keeps other defaults", macA, []dhcpv4.Modifier{pxeFirmware(9)}, "snponly.efi", true},
		{"BootFiles removes a default", macA, []dhcpv4.Modifier{pxeFirmware(11)}, "", false},
		{"unknown architecture", macA, []dhcpv4.Modifier{pxeFirmware(16)}, "", false},
		{"BootFileFor overrides", special, []dhcpv4.Modifier{pxeFirmware(0)}, "special/undionly.kpxe", true},
		{"invalid BootFileFor result falls back", special, []dhcpv4.Modifier{pxeFirmware(7)}, "ipxe.efi", true},
		// The chainload-loop guard: iPXE is never given a binary, even
		// by BootFileFor.
		{"iPXE ignores BootFileFor", special, []dhcpv4.Modifier{pxeFirmware(0), ipxeUserClass}, testScriptURL, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.wantFile == "" {
				fx.expectNoReply(t, newDiscover(t, c.mac, c.mods...), false)
				return
			}
			resp := fx.exchange(t, newDiscover(t, c.mac, c.mods...), replyWait)
			requireType(t, resp, dhcpv4.MessageTypeOffer)
			checkBoot(t, resp, c.wantFile, c.wantTFTP)
		})
	}
	if !strings.Contains(fx.logs.String(), "BootFileFor result ignored") {
		t.Error("invalid BootFileFor result not logged")
	}
	if !strings.Contains(fx.logs.String(), "no boot file for this client architecture") {
		t.Error("missing boot file not logged")
	}
}

func TestDHCPProxyOffer(t *testing.T) {
	fx := startDHCP(t, proxyConfig(), nil)
	for _, c := range []struct {
		name      string
		mods      []dhcpv4.Modifier
		wantOpt43 bool
	}{
		{"BIOS", []dhcpv4.Modifier{pxeFirmware(0)}, true},
		{"iPXE", []dhcpv4.Modifier{pxeFirmware(7), ipxeUserClass}, true},
		// UEFI is left to ask port 4011 (see handleProxy).
		{"UEFI", []dhcpv4.Modifier{pxeFirmware(7)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := fx.exchange(t, newDiscover(t, macA, c.mods...), replyWait)
			requireType(t, resp, dhcpv4.MessageTypeOffer)
			if !resp.YourIPAddr.Equal(net.IPv4zero) {
				t.Errorf("yiaddr = %v, want 0.0.0.0 (a proxy hands out no address)", resp.YourIPAddr)
			}
			if got := resp.ClassIdentifier(); got != "PXEClient" {
				t.Errorf("option 60 = %q, want PXEClient", got)
			}
			for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter} {
				if resp.Options.Has(o) {
					t.Errorf("proxy offer has %s", o)
				}
			}
			if got := resp.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(got, testGUID) {
				t.Errorf("option 97 = %x, want the client's %x", got, testGUID)
			}
			rai := resp.RelayAgentInfo()
			if rai == nil || string(rai.Get(dhcpv4.AgentCircuitIDSubOption)) != "port7" {
				t.Errorf("relay agent option not echoed: %v", resp.Options.Get(dhcpv4.OptionRelayAgentInformation))
			}
			if !resp.GatewayIPAddr.Equal(loopback) {
				t.Errorf("giaddr = %v, want %v", resp.GatewayIPAddr, loopback)
			}
			got43 := resp.Options.Get(dhcpv4.OptionVendorSpecificInformation)
			if c.wantOpt43 && !bytes.Equal(got43, []byte{6, 1, 8, 255}) {
				t.Errorf("option 43 = %x, want discovery control 8", got43)
			}
			if !c.wantOpt43 && got43 != nil {
				t.Errorf("option 43 = %x, want none", got43)
			}
		})
	}
}

func TestDHCPProxyBootServer(t *testing.T) {
	fx := startDHCP(t, proxyConfig(), nil)
	clientIP := net.IPv4(127, 0, 0, 1)

	// UEFI firmware, having got its address elsewhere and our offer
	// without option 43, asks the boot server port directly (unicast, no
	// relay): the ACK comes back to the port it sent from.
	req := newMessage(t, dhcpv4.MessageTypeRequest, macA, pxeFirmware(7), dhcpv4.WithClientIP(clientIP))
	resp := sendRecv(t, fx.pxeAddr, req, replyWait)
	requireType(t, resp, dhcpv4.MessageTypeAck)
	checkBoot(t, resp, "snponly.efi", true)
	if !resp.YourIPAddr.Equal(net.IPv4zero) || !resp.ClientIPAddr.Equal(clientIP) {
		t.Errorf("yiaddr %v ciaddr %v, want 0.0.0.0 and %v", resp.YourIPAddr, resp.ClientIPAddr, clientIP)
	}
	if got := resp.ClassIdentifier(); got != "PXEClient" {
		t.Errorf("option 60 = %q, want PXEClient", got)
	}

	for _, c := range []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"DISCOVER on the boot server port", newDiscover(t, macA, pxeFirmware(7))},
		{"unknown MAC", newMessage(t, dhcpv4.MessageTypeRequest, macAlien, pxeFirmware(7), dhcpv4.WithClientIP(clientIP))},
		{"not PXE", newMessage(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(clientIP))},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx.expectNoReply(t, c.req, true)
		})
	}
}

func TestDHCPProxyIgnores(t *testing.T) {
	fx := startDHCP(t, proxyConfig(), nil)
	bootp := newDiscover(t, macA, pxeFirmware(0))
	bootp.Options.Del(dhcpv4.OptionDHCPMessageType)
	infiniband := newDiscover(t, macA, pxeFirmware(0))
	infiniband.ClientHWAddr = bytes.Repeat([]byte{1}, 16)
	for _, c := range []struct {
		name    string
		req     *dhcpv4.DHCPv4
		wantLog string
	}{
		{"unknown MAC", newDiscover(t, macAlien, pxeFirmware(0)), "not managed here"},
		{"unknown MAC as iPXE", newDiscover(t, macAlien, ipxeUserClass), "not managed here"},
		{"not a PXE client", newDiscover(t, macA), "not a PXE client"},
		{"REQUEST to the real server", newMessage(t, dhcpv4.MessageTypeRequest, macA, pxeFirmware(0),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(127, 0, 0, 2)))), "not for a proxy server"},
		{"plain BOOTP", bootp, "not for a proxy server"},
		{"not Ethernet", infiniband, "not an Ethernet client"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx.expectNoReply(t, c.req, false)
			if !strings.Contains(fx.logs.String(), c.wantLog) {
				t.Errorf("log lacks %q", c.wantLog)
			}
		})
	}
}

// fullLease runs DISCOVER and REQUEST for mac and returns the address.
func fullLease(t *testing.T, fx *dhcpFixture, mac net.HardwareAddr, mods ...dhcpv4.Modifier) net.IP {
	t.Helper()
	offer := fx.exchange(t, newDiscover(t, mac, mods...), replyWait)
	requireType(t, offer, dhcpv4.MessageTypeOffer)
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := fx.exchange(t, req, replyWait)
	requireType(t, ack, dhcpv4.MessageTypeAck)
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ACK of %v for an offer of %v", ack.YourIPAddr, offer.YourIPAddr)
	}
	return ack.YourIPAddr
}

func inTestRange(ip net.IP) bool {
	v := ip.To4()
	return v != nil && v[0] == 127 && v[1] == 0 && v[2] == 0 && v[3] >= 100 && v[3] <= 109
}

func TestDHCPFullLeases(t *testing.T) {
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	fx := startDHCP(t, fullConfig(), clock)

	// DISCOVER -> OFFER with the network options.
	offer := fx.exchange(t, newDiscover(t, macA, pxeFirmware(0)), replyWait)
	requireType(t, offer, dhcpv4.MessageTypeOffer)
	ipA := offer.YourIPAddr
	if !inTestRange(ipA) {
		t.Fatalf("offered %v, outside the range", ipA)
	}
	if got := offer.SubnetMask(); !bytes.Equal(got, net.IPv4Mask(255, 0, 0, 0)) {
		t.Errorf("subnet mask = %v", got)
	}
	if got := offer.Router(); len(got) != 1 || !got[0].Equal(net.IPv4(127, 0, 0, 254)) {
		t.Errorf("router = %v", got)
	}
	if got := offer.DNS(); len(got) != 1 || !got[0].Equal(net.IPv4(127, 0, 0, 53)) {
		t.Errorf("DNS = %v", got)
	}
	if got := offer.IPAddressLeaseTime(0); got != 10*time.Minute {
		t.Errorf("lease time = %v", got)
	}
	if got := offer.IPAddressRenewalTime(0); got != 5*time.Minute {
		t.Errorf("T1 = %v", got)
	}
	if offer.ClassIdentifier() != "" {
		t.Errorf("full-mode offer has option 60 %q", offer.ClassIdentifier())
	}
	checkBoot(t, offer, "undionly.kpxe", true)

	// REQUEST (selecting) -> ACK of the same address.
	req, err := dhcpv4.NewRequestFromOffer(offer, pxeFirmware(0))
	if err != nil {
		t.Fatal(err)
	}
	ack := fx.exchange(t, req, replyWait)
	requireType(t, ack, dhcpv4.MessageTypeAck)
	if !ack.YourIPAddr.Equal(ipA) {
		t.Fatalf("ACK of %v, offered %v", ack.YourIPAddr, ipA)
	}
	checkBoot(t, ack, "undionly.kpxe", true)

	// The same MAC gets the same address, as iPXE and as the agent.
	for _, mods := range [][]dhcpv4.Modifier{{pxeFirmware(0), ipxeUserClass}, nil} {
		again := fx.exchange(t, newDiscover(t, macA, mods...), replyWait)
		requireType(t, again, dhcpv4.MessageTypeOffer)
		if !again.YourIPAddr.Equal(ipA) {
			t.Errorf("second offer to the same MAC: %v, want %v", again.YourIPAddr, ipA)
		}
	}
	plain := fx.exchange(t, newDiscover(t, macA), replyWait)
	requireType(t, plain, dhcpv4.MessageTypeOffer)
	if plain.BootFileNameOption() != "" || plain.BootFileName != "" {
		t.Errorf("a non-PXE client got a boot file %q", plain.BootFileNameOption())
	}

	// Another MAC, another address.
	ipB := fullLease(t, fx, macB)
	if ipB.Equal(ipA) || !inTestRange(ipB) {
		t.Fatalf("second MAC got %v (first has %v)", ipB, ipA)
	}

	nakCases := []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"SELECTING an address not offered", newMessage(t, dhcpv4.MessageTypeRequest, macB,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipA)))},
		{"INIT-REBOOT with another MAC's address", newMessage(t, dhcpv4.MessageTypeRequest, macB,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipA)))},
		{"INIT-REBOOT outside the range", newMessage(t, dhcpv4.MessageTypeRequest, macC,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(127, 0, 0, 200))))},
		{"INIT-REBOOT on another network", newMessage(t, dhcpv4.MessageTypeRequest, macC,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 1, 2, 3))))},
		{"RENEWING another MAC's address", newMessage(t, dhcpv4.MessageTypeRequest, macC, dhcpv4.WithClientIP(ipB))},
	}
	for _, c := range nakCases {
		t.Run("NAK "+c.name, func(t *testing.T) {
			resp := fx.exchange(t, c.req, replyWait)
			requireType(t, resp, dhcpv4.MessageTypeNak)
			if !resp.YourIPAddr.Equal(net.IPv4zero) || resp.Message() == "" || !resp.IsBroadcast() {
				t.Errorf("NAK: yiaddr %v message %q broadcast %v", resp.YourIPAddr, resp.Message(), resp.IsBroadcast())
			}
		})
	}

	// RENEWING: ciaddr set, no server identifier.
	renew := newMessage(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(ipA))
	resp := fx.exchange(t, renew, replyWait)
	requireType(t, resp, dhcpv4.MessageTypeAck)
	if !resp.YourIPAddr.Equal(ipA) {
		t.Errorf("renewal ACK of %v, want %v", resp.YourIPAddr, ipA)
	}

	// A REQUEST for another server's offer: no reply.
	other := newMessage(t, dhcpv4.MessageTypeRequest, macA,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(127, 0, 0, 99))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipA)))
	fx.expectNoReply(t, other, false)

	// INFORM: options, no address, no lease.
	inform := newMessage(t, dhcpv4.MessageTypeInform, macA, dhcpv4.WithClientIP(ipA))
	resp = fx.exchange(t, inform, replyWait)
	requireType(t, resp, dhcpv4.MessageTypeAck)
	if !resp.YourIPAddr.Equal(net.IPv4zero) || resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || resp.SubnetMask() == nil {
		t.Errorf("INFORM ACK: yiaddr %v, lease time %v, mask %v", resp.YourIPAddr, resp.IPAddressLeaseTime(0), resp.SubnetMask())
	}

	// RELEASE, and a day later the MAC still gets its address back.
	release := newMessage(t, dhcpv4.MessageTypeRelease, macA, dhcpv4.WithClientIP(ipA),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)))
	fx.expectNoReply(t, release, false)
	clock.Advance(24 * time.Hour)
	if ip := fullLease(t, fx, macA); !ip.Equal(ipA) {
		t.Errorf("after release and a day: %v, want %v", ip, ipA)
	}

	// DECLINE: the client found the address in use; it gets another and
	// nobody gets the declined one for a while.
	decline := newMessage(t, dhcpv4.MessageTypeDecline, macB,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ipB)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)))
	fx.expectNoReply(t, decline, false)
	if ip := fullLease(t, fx, macB); ip.Equal(ipB) {
		t.Errorf("declined address %v offered again", ip)
	}
	if !strings.Contains(fx.logs.String(), "dhcp decline") {
		t.Error("DECLINE not logged")
	}

	// Unknown MACs get nothing, in full mode too.
	fx.expectNoReply(t, newDiscover(t, macAlien), false)
	// A relay on a subnet we have no range for gets nothing.
	far := newDiscover(t, macC)
	relayed(far)
	far.GatewayIPAddr = net.IPv4(10, 9, 8, 7)
	fx.expectNoReply(t, far, false)
	if !strings.Contains(fx.logs.String(), "relayed from a subnet we have no range for") {
		t.Error("request relayed from another subnet not logged")
	}
}

func TestDHCPFullRangeExhaustion(t *testing.T) {
	clock := &testClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := fullConfig()
	// Three addresses, one of them ours: two to hand out.
	cfg.ServerIP = net.IPv4(127, 0, 0, 1)
	cfg.RangeStart, cfg.RangeEnd = net.IPv4(127, 0, 0, 100), net.IPv4(127, 0, 0, 102)
	cfg.Router = net.IPv4(127, 0, 0, 101)
	fx := startDHCP(t, cfg, clock)

	ipA := fullLease(t, fx, macA)
	clock.Advance(time.Minute)
	ipB := fullLease(t, fx, macB)
	for _, ip := range []net.IP{ipA, ipB} {
		if ip.Equal(net.IPv4(127, 0, 0, 101)) {
			t.Fatalf("handed out the router's address %v", ip)
		}
	}
	fx.expectNoReply(t, newDiscover(t, macC), false)
	if !strings.Contains(fx.logs.String(), "no free address") {
		t.Error("exhaustion not logged")
	}

	// Once the leases have expired, the one that expired first goes to
	// the newcomer; the other MAC keeps its address.
	clock.Advance(time.Hour)
	if ip := fullLease(t, fx, macC); !ip.Equal(ipA) {
		t.Errorf("newcomer got %v, want the oldest expired address %v", ip, ipA)
	}
	if ip := fullLease(t, fx, macB); !ip.Equal(ipB) {
		t.Errorf("MAC B got %v, want its own %v", ip, ipB)
	}
	fx.expectNoReply(t, newDiscover(t, macA), false) // the range is full again
}

func TestDHCPLeasePersistence(t *testing.T) {
	dir := t.TempDir()
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(dir, "leases.json")

	// Where would macA land by itself? Ask a server without a lease file,
	// then make macA take another address, so that getting it back after
	// the restart proves the file was read.
	probe := startDHCP(t, fullConfig(), nil)
	hashed := fullLease(t, probe, macA)
	probe.stop()
	chosen := net.IPv4(127, 0, 0, 107).To4()
	if chosen.Equal(hashed) {
		chosen = net.IPv4(127, 0, 0, 108).To4()
	}

	fx := startDHCP(t, cfg, nil)
	ipA := fullLease(t, fx, macA, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(chosen)))
	if !ipA.Equal(chosen) {
		t.Fatalf("asked for %v, got %v", chosen, ipA)
	}
	ipB := fullLease(t, fx, macB)
	fx.stop()

	data, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatalf("lease file: %v\n%s", err, data)
	}
	if len(lf.Leases) != 2 {
		t.Fatalf("lease file has %d leases, want 2:\n%s", len(lf.Leases), data)
	}
	// Add an entry that no longer fits the range: skipped, with a warning.
	lf.Leases = append(lf.Leases, leaseRecord{MAC: macD.String(), IP: "127.0.0.200", Expires: time.Now()})
	data, _ = json.Marshal(lf)
	if err := os.WriteFile(cfg.LeaseFile, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// The restarted server gives both their addresses back, in the other
	// order and without being asked for them.
	fx2 := startDHCP(t, cfg, nil)
	if ip := fullLease(t, fx2, macB); !ip.Equal(ipB) {
		t.Errorf("after restart macB got %v, want %v", ip, ipB)
	}
	if ip := fullLease(t, fx2, macA); !ip.Equal(ipA) {
		t.Errorf("after restart macA got %v, want %v", ip, ipA)
	}
	if !strings.Contains(fx2.logs.String(), "lease file entry ignored") {
		t.Error("out-of-range lease file entry not reported")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("lease directory holds %d files, want 1 (temporary files left behind?)", len(entries))
	}
}

func TestDHCPChainloadLoopWarning(t *testing.T) {
	fx := startDHCP(t, proxyConfig(), nil)
	const warning = "may be chainloading in a loop"
	boot := func(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		d := newDiscover(t, mac, mods...)
		requireType(t, fx.exchange(t, d, replyWait), dhcpv4.MessageTypeOffer)
		return d
	}
	// Three firmware boots, each followed by iPXE: normal.
	for range loopLimit {
		d := boot(macA, pxeFirmware(0))
		// A retransmission (same xid) is the same boot.
		requireType(t, fx.exchange(t, d, replyWait), dhcpv4.MessageTypeOffer)
		boot(macA, pxeFirmware(0), ipxeUserClass)
	}
	boot(macB, pxeFirmware(0)) // another machine's boots do not count
	if strings.Contains(fx.logs.String(), warning) {
		t.Fatalf("warned after %d boots", loopLimit)
	}
	boot(macA, pxeFirmware(7))
	if n := strings.Count(fx.logs.String(), warning); n != 1 {
		t.Fatalf("%d warnings after %d boots, want 1", n, loopLimit+1)
	}
	boot(macA, pxeFirmware(0))
	if n := strings.Count(fx.logs.String(), warning); n != 1 {
		t.Errorf("warning repeated within the window: %d", n)
	}
}

func TestReplyAddr(t *testing.T) {
	peer := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 5555}
	relay := net.IPv4(10, 0, 0, 1)
	client := net.IPv4(10, 0, 0, 50)
	mk := func(mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		return newMessage(t, mt, macA, mods...)
	}
	withRelayPort := dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.RelaySourcePortSubOption, nil)))
	withCircuit := dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte("x"))))
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	for _, c := range []struct {
		name       string
		req        *dhcpv4.DHCPv4
		resp       dhcpv4.MessageType
		peer       net.Addr
		bootServer bool
		want       *net.UDPAddr
	}{
		{"no address: broadcast", mk(dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeOffer, peer, false, bcast},
		{"broadcast flag", mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithBroadcast(true)), dhcpv4.MessageTypeOffer, peer, false, bcast},
		{"ciaddr: unicast", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(client)), dhcpv4.MessageTypeAck, peer, false,
			&net.UDPAddr{IP: client, Port: 68}},
		{"NAK with ciaddr: broadcast", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(client)), dhcpv4.MessageTypeNak, peer, false, bcast},
		{"relayed: giaddr port 67", mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(relay), withCircuit), dhcpv4.MessageTypeOffer, peer, false,
			&net.UDPAddr{IP: relay, Port: 67}},
		{"relayed NAK: giaddr", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithGatewayIP(relay)), dhcpv4.MessageTypeNak, peer, false,
			&net.UDPAddr{IP: relay, Port: 67}},
		{"relayed with ciaddr: giaddr", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithGatewayIP(relay), dhcpv4.WithClientIP(client)), dhcpv4.MessageTypeAck, peer, false,
			&net.UDPAddr{IP: relay, Port: 67}},
		{"relay source port (RFC 8357)", mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(relay), withRelayPort), dhcpv4.MessageTypeOffer, peer, false,
			&net.UDPAddr{IP: relay, Port: 5555}},
		{"relay source port, no peer", mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(relay), withRelayPort), dhcpv4.MessageTypeOffer, nil, false,
			&net.UDPAddr{IP: relay, Port: 67}},
		{"boot server: back to the sender", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(client)), dhcpv4.MessageTypeAck, peer, true,
			&net.UDPAddr{IP: peer.IP, Port: 5555}},
		{"boot server, no peer: ciaddr", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(client)), dhcpv4.MessageTypeAck, nil, true,
			&net.UDPAddr{IP: client, Port: 68}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := newMessage(t, c.resp, macA)
			got := replyAddr(c.req, resp, c.peer, c.bootServer)
			if !got.IP.Equal(c.want.IP) || got.Port != c.want.Port {
				t.Errorf("replyAddr = %v, want %v", got, c.want)
			}
		})
	}
}

func TestNewDHCPServerErrors(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := func(f func(*DHCPConfig)) DHCPConfig { c := fullConfig(); f(&c); return c }
	proxy := func(f func(*DHCPConfig)) DHCPConfig { c := proxyConfig(); f(&c); return c }
	for _, c := range []struct {
		name string
		cfg  DHCPConfig
		want string
	}{
		{"no mode", proxy(func(c *DHCPConfig) { c.Mode = "" }), "Mode is not set"},
		{"bad mode", proxy(func(c *DHCPConfig) { c.Mode = "relay" }), `unknown Mode "relay"`},
		{"no server IP", proxy(func(c *DHCPConfig) { c.ServerIP = nil }), "ServerIP is not set"},
		{"IPv6 server IP", proxy(func(c *DHCPConfig) { c.ServerIP = net.ParseIP("fd00::1") }), "not an IPv4 address"},
		{"broadcast server IP", proxy(func(c *DHCPConfig) { c.ServerIP = net.IPv4bcast }), "not a unicast address"},
		{"no script URL", proxy(func(c *DHCPConfig) { c.BootScriptURL = "" }), "BootScriptURL is not set"},
		{"TFTP script URL", proxy(func(c *DHCPConfig) { c.BootScriptURL = "tftp://127.0.0.1/boot.ipxe" }), "scheme must be http or https"},
		{"unsafe script URL", proxy(func(c *DHCPConfig) { c.BootScriptURL = "http://x/a b" }), "whitespace"},
		{"long script URL", proxy(func(c *DHCPConfig) { c.BootScriptURL = "http://x/" + strings.Repeat("a", 250) }), "at most 255"},
		{"bad boot file", proxy(func(c *DHCPConfig) { c.BootFiles = map[uint16]string{7: "a\x00b"} }), "BootFiles[7]"},
		{"long boot file", proxy(func(c *DHCPConfig) { c.BootFiles = map[uint16]string{0: strings.Repeat("a", 128)} }), "holds 127"},
		{"range in proxy mode", proxy(func(c *DHCPConfig) { c.RangeStart = net.IPv4(127, 0, 0, 5); c.LeaseFile = "x" }),
			`RangeStart, LeaseFile apply to mode "full" only`},
		{"no range", full(func(c *DHCPConfig) { c.RangeEnd = nil }), "RangeStart and RangeEnd must be set"},
		{"no netmask", full(func(c *DHCPConfig) { c.Netmask = nil }), "Netmask is not set"},
		{"bad netmask", full(func(c *DHCPConfig) { c.Netmask = net.IPv4Mask(255, 0, 255, 0) }), "not a valid IPv4 netmask"},
		{"range outside subnet", full(func(c *DHCPConfig) { c.RangeStart = net.IPv4(10, 0, 0, 1) }),
			"RangeStart 10.0.0.1 is outside the subnet of ServerIP 127.0.0.1 127.0.0.0/8"},
		{"range reversed", full(func(c *DHCPConfig) { c.RangeStart, c.RangeEnd = c.RangeEnd, c.RangeStart }), "swap them"},
		{"range too large", full(func(c *DHCPConfig) { c.RangeStart, c.RangeEnd = net.IPv4(127, 0, 0, 1), net.IPv4(127, 1, 0, 1) }), "narrow it"},
		{"range has network address", full(func(c *DHCPConfig) { c.RangeStart = net.IPv4(127, 0, 0, 0) }), "network address"},
		{"range has broadcast address", full(func(c *DHCPConfig) { c.RangeEnd = net.IPv4(127, 255, 255, 255) }), "broadcast address"},
		{"range is only us", full(func(c *DHCPConfig) { c.RangeStart, c.RangeEnd, c.Router = loopback, loopback, nil }), "holds no address"},
		{"router outside subnet", full(func(c *DHCPConfig) { c.Router = net.IPv4(10, 0, 0, 1) }), "Router 10.0.0.1"},
		{"IPv6 DNS", full(func(c *DHCPConfig) { c.DNS = []net.IP{net.ParseIP("fd00::53")} }), "DNS server fd00::53"},
		{"short lease", full(func(c *DHCPConfig) { c.LeaseTime = 10 * time.Second }), "below 1m0s"},
		{"lease file directory missing", full(func(c *DHCPConfig) { c.LeaseFile = filepath.Join(dir, "nope", "leases.json") }), "does not exist"},
		{"corrupt lease file", full(func(c *DHCPConfig) { c.LeaseFile = corrupt }), "LeaseFile: parse"},
		{"missing interface", proxy(func(c *DHCPConfig) { c.Interface = "ironlite-nope0" }), "set Interface to an existing network interface"},
		{"server IP not on interface", proxy(func(c *DHCPConfig) { c.Interface, c.ServerIP = "lo", net.IPv4(10, 1, 1, 1) }),
			`ServerIP 10.1.1.1 is not an address of interface "lo"`},
		{"range outside interface subnet", full(func(c *DHCPConfig) {
			c.Interface, c.Netmask = "lo", nil
			c.RangeStart, c.RangeEnd, c.Router = net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 9), nil
		}), `RangeStart 10.0.0.1 is outside interface "lo"'s subnet 127.0.0.0/8`},
		{"netmask contradicts interface", full(func(c *DHCPConfig) { c.Interface, c.Netmask = "lo", net.IPv4Mask(255, 255, 0, 0) }),
			`does not match interface "lo"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewDHCPServer(c.cfg, nil)
			if err == nil {
				t.Fatalf("no error, want one containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}

	// ServerIP and Netmask come from the interface when unset.
	cfg := fullConfig()
	cfg.Interface, cfg.ServerIP, cfg.Netmask = "lo", nil, nil
	srv, err := NewDHCPServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.serverIP.Equal(loopback) || !bytes.Equal(srv.netmask, net.IPv4Mask(255, 0, 0, 0)) {
		t.Errorf("from lo: server IP %v, netmask %v", srv.serverIP, net.IP(srv.netmask))
	}
	// Without an interface there is nothing to bind to.
	srv, err = NewDHCPServer(proxyConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ListenAndServe(t.Context()); err == nil || !strings.Contains(err.Error(), "needs DHCPConfig.Interface") {
		t.Errorf("ListenAndServe without Interface: %v", err)
	}
}

// rawPacket builds a BOOTP header with the magic cookie, followed by opts
// as given (so they can be malformed).
func rawPacket(op byte, hlen byte, opts []byte) []byte {
	b := make([]byte, 236)
	b[0], b[1], b[2] = op, 1, hlen
	copy(b[4:8], []byte{1, 2, 3, 4})
	copy(b[28:], macA)
	b = append(b, 99, 130, 83, 99)
	return append(b, opts...)
}

// malformedPackets are garbage and near-DHCP packets that must be dropped,
// or answered, without a panic.
func malformedPackets(t testing.TB) [][]byte {
	discover := []byte{53, 1, 1}
	pxe := append([]byte{60, 32}, "PXEClient:Arch:00000:UNDI:002001"...)
	pkts := [][]byte{
		nil,
		{1},
		make([]byte, 235),
		make([]byte, 240),                        // zero cookie
		rawPacket(1, 6, nil),                     // no options, no End
		rawPacket(1, 6, []byte{255}),             // no message type: BOOTP
		rawPacket(1, 6, []byte{53, 1}),           // length past the end
		rawPacket(1, 6, []byte{53, 0, 255}),      // empty message type
		rawPacket(1, 6, []byte{53, 1, 99, 255}),  // unknown message type
		rawPacket(2, 6, append(discover, 255)),   // a BOOTREPLY
		rawPacket(1, 0, append(discover, 255)),   // no hardware address
		rawPacket(1, 255, append(discover, 255)), // hlen beyond the field
		rawPacket(1, 6, append(append(discover, pxe...), 93, 1, 7, 255)), // odd option 93
		rawPacket(1, 6, append(append(discover, pxe...), 93, 0, 255)),    // empty option 93
		rawPacket(1, 6, append(discover, append([]byte{60, 20}, "PXEClient:Arch:99999"...)...)),
		rawPacket(1, 6, append(discover, append([]byte{60, 15}, "PXEClient:Arch:"...)...)),
		rawPacket(1, 6, append(discover, 77, 3, 9, 'i', 'P', 255)), // RFC 3004 user class overrunning
		rawPacket(1, 6, append(discover, 77, 0, 175, 0, 255)),      // empty user class, empty 175
		rawPacket(1, 6, []byte{53, 1, 3, 50, 3, 1, 2, 3, 255}),     // REQUEST, 3-byte address
		rawPacket(1, 6, []byte{53, 1, 3, 54, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 255}),
		rawPacket(1, 6, []byte{53, 1, 3, 255}),                     // REQUEST naming nothing
		rawPacket(1, 6, []byte{53, 1, 4, 255}),                     // DECLINE naming nothing
		rawPacket(1, 6, []byte{53, 1, 7, 255}),                     // RELEASE naming nothing
		rawPacket(1, 6, append(discover, 82, 4, 19, 9, 1, 1, 255)), // relay sub-option overrunning
		rawPacket(1, 6, append(append(discover, pxe...), 97, 1, 0, 43, 1, 6, 255)),
		rawPacket(1, 6, append(discover, bytes.Repeat([]byte{0}, 2000)...)), // padding, no End
	}
	// Valid requests too, so the fuzzer starts from packets that get
	// answers.
	for _, mods := range [][]dhcpv4.Modifier{
		{pxeFirmware(0)}, {pxeFirmware(7), ipxeUserClass}, {pxeFirmware(7), dhcpv4.WithClientIP(loopback), dhcpv4.WithGatewayIP(loopback)},
	} {
		d, err := dhcpv4.NewDiscovery(macA, mods...)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, d.ToBytes())
		d.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
		d.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(127, 0, 0, 105)))
		pkts = append(pkts, d.ToBytes())
	}
	return pkts
}

func TestDHCPMalformedPackets(t *testing.T) {
	for _, mode := range []DHCPMode{DHCPModeProxy, DHCPModeFull} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := proxyConfig()
			if mode == DHCPModeFull {
				cfg = fullConfig()
			}
			// Only the MACs used here: corrupted MACs must not use up
			// the range before the final check.
			cfg.Allow = func(mac net.HardwareAddr) bool { return bytes.Equal(mac, macA) || bytes.Equal(mac, macB) }
			fx := startDHCP(t, cfg, nil)
			peer := &net.UDPAddr{IP: loopback, Port: 68}
			pkts := malformedPackets(t)
			// Directly, without the recover of the serving loop, so a
			// panic fails the test.
			for i, p := range pkts {
				for _, bootServer := range []bool{false, true} {
					if resp, dest := fx.srv.respond(p, peer, bootServer); resp != nil && dest == nil {
						t.Errorf("packet %d: reply without destination", i)
					}
				}
			}
			// Random corruption of valid packets.
			rng := rand.New(rand.NewPCG(1, 2))
			for range 20000 {
				p := bytes.Clone(pkts[len(pkts)-1-rng.IntN(6)])
				for range 1 + rng.IntN(8) {
					switch i := rng.IntN(len(p)); rng.IntN(3) {
					case 0:
						p[i] = byte(rng.Uint32())
					case 1:
						p = p[:i]
					default:
						p[i] ^= 1 << rng.IntN(8)
					}
					if len(p) == 0 {
						break
					}
				}
				fx.srv.respond(p, peer, rng.IntN(2) == 0)
			}
			// And over the network: the server survives them all and
			// still answers.
			conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, p := range pkts {
				if len(p) > 0 {
					conn.WriteTo(p, fx.addr)
				}
			}
			resp := fx.exchange(t, newDiscover(t, macB, pxeFirmware(0)), replyWait)
			requireType(t, resp, dhcpv4.MessageTypeOffer)
		})
	}
}

func FuzzDHCPRespond(f *testing.F) {
	for _, p := range malformedPackets(f) {
		f.Add(p, false)
	}
	log := slog.New(slog.DiscardHandler)
	proxy, err := NewDHCPServer(proxyConfig(), log)
	if err != nil {
		f.Fatal(err)
	}
	full, err := NewDHCPServer(fullConfig(), log)
	if err != nil {
		f.Fatal(err)
	}
	peer := &net.UDPAddr{IP: loopback, Port: 68}
	f.Fuzz(func(t *testing.T, p []byte, bootServer bool) {
		for _, srv := range []*DHCPServer{proxy, full} {
			resp, dest := srv.respond(p, peer, bootServer)
			if resp == nil {
				continue
			}
			if dest == nil {
				t.Fatal("reply without destination")
			}
			if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
				t.Fatalf("our reply does not parse: %v", err)
			}
		}
	})
}
