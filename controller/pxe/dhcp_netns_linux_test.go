package pxe

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread that has entered the named network
// namespace. The thread stays locked, so it ends with its goroutine instead
// of going back to the scheduler inside the namespace. Sockets made by fn
// stay in the namespace after it returns.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// TestDHCPListenAndServeNetns runs ListenAndServe on one end of a veth
// pair and a real DHCP client (nclient4, raw sockets) on the other, each
// end in a network namespace of its own: interface binding, broadcast
// replies and the port 4011 listener as on a provisioning network.
func TestDHCPListenAndServeNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), rand.IntN(1_000_000))
	srvNS, cliNS := "ilt-dhcps-"+suffix, "ilt-dhcpc-"+suffix
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{srvNS, cliNS} {
		ip("netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
			}
		})
	}
	// The veth ends are created straight in their namespaces, so their
	// names cannot clash with anything in the root namespace.
	ip("link", "add", "dhcps0", "netns", srvNS, "type", "veth", "peer", "name", "dhcpc0", "netns", cliNS)
	ip("-n", srvNS, "addr", "add", "10.99.0.1/24", "dev", "dhcps0")
	ip("-n", srvNS, "link", "set", "dhcps0", "up")
	ip("-n", cliNS, "addr", "add", "10.99.0.50/24", "dev", "dhcpc0") // for the port 4011 request only
	ip("-n", cliNS, "link", "set", "dhcpc0", "up")

	var clientMAC net.HardwareAddr
	if err := inNetns(cliNS, func() error {
		ifc, err := net.InterfaceByName("dhcpc0")
		if err != nil {
			return err
		}
		clientMAC = ifc.HardwareAddr
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	serverIP := net.IPv4(10, 99, 0, 1).To4()
	base := DHCPConfig{
		Interface:     "dhcps0", // ServerIP and Netmask come from it
		BootScriptURL: "http://10.99.0.1:6385/boot.ipxe",
		Allow:         func(mac net.HardwareAddr) bool { return bytes.Equal(mac, clientMAC) },
	}

	// serve runs ListenAndServe in the server namespace until the
	// returned function is called, which checks it returned nil.
	serve := func(cfg DHCPConfig) (stop func()) {
		t.Helper()
		logs := &syncBuffer{}
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- inNetns(srvNS, func() error {
				srv, err := NewDHCPServer(cfg, log)
				if err != nil {
					return err
				}
				return srv.ListenAndServe(ctx)
			})
		}()
		want := 1
		if cfg.Mode == DHCPModeProxy {
			want = 2
		}
		for deadline := time.Now().Add(5 * time.Second); strings.Count(logs.String(), "dhcp server listening") < want; {
			select {
			case err := <-done:
				t.Fatalf("server ended early: %v\n%s", err, logs)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("server not listening:\n%s", logs)
			}
		}
		return func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ListenAndServe: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("ListenAndServe did not return after cancellation")
			}
			if t.Failed() {
				t.Logf("server log:\n%s", logs)
			}
		}
	}

	t.Run("full", func(t *testing.T) {
		cfg := base
		cfg.Mode = DHCPModeFull
		cfg.RangeStart, cfg.RangeEnd = net.IPv4(10, 99, 0, 100), net.IPv4(10, 99, 0, 110)
		stop := serve(cfg)
		defer stop()
		var lease *nclient4.Lease
		err := inNetns(cliNS, func() error {
			c, err := nclient4.New("dhcpc0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
			if err != nil {
				return err
			}
			defer c.Close()
			lease, err = c.Request(t.Context(), pxeFirmware(ArchBIOS))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		ack := lease.ACK
		if v := ack.YourIPAddr.To4(); v == nil || !bytes.Equal(v[:3], []byte{10, 99, 0}) || v[3] < 100 || v[3] > 110 {
			t.Errorf("leased %v, outside 10.99.0.100-110", ack.YourIPAddr)
		}
		if !bytes.Equal(ack.SubnetMask(), net.IPv4Mask(255, 255, 255, 0)) {
			t.Errorf("subnet mask %v, want the interface's /24", ack.SubnetMask())
		}
		if ack.BootFileName != "undionly.kpxe" || !ack.ServerIPAddr.Equal(serverIP) || !ack.ServerIdentifier().Equal(serverIP) {
			t.Errorf("ACK file %q siaddr %v server id %v", ack.BootFileName, ack.ServerIPAddr, ack.ServerIdentifier())
		}
	})

	t.Run("proxy", func(t *testing.T) {
		cfg := base
		cfg.Mode = DHCPModeProxy
		stop := serve(cfg)
		defer stop()
		var offer, ack *dhcpv4.DHCPv4
		err := inNetns(cliNS, func() error {
			c, err := nclient4.New("dhcpc0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
			if err != nil {
				return err
			}
			defer c.Close()
			if offer, err = c.DiscoverOffer(t.Context(), pxeFirmware(ArchEFIx64), ipxeUserClass); err != nil {
				return err
			}
			// UEFI firmware asking the boot server port, from the
			// address the network's DHCP server gave it.
			conn, err := net.ListenPacket("udp4", "10.99.0.50:0")
			if err != nil {
				return err
			}
			defer conn.Close()
			req, err := dhcpv4.New(dhcpv4.WithHwAddr(clientMAC), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 50)), pxeFirmware(ArchEFIx64))
			if err != nil {
				return err
			}
			if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: serverIP, Port: pxePort}); err != nil {
				return err
			}
			conn.SetReadDeadline(time.Now().Add(replyWait))
			buf := make([]byte, 2048)
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("port 4011: %w", err)
			}
			ack, err = dhcpv4.FromBytes(buf[:n])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !offer.YourIPAddr.Equal(net.IPv4zero) || offer.ClassIdentifier() != "PXEClient" {
			t.Errorf("proxy offer: yiaddr %v, option 60 %q", offer.YourIPAddr, offer.ClassIdentifier())
		}
		if offer.BootFileNameOption() != cfg.BootScriptURL || !offer.ServerIPAddr.Equal(serverIP) {
			t.Errorf("proxy offer to iPXE: file %q siaddr %v", offer.BootFileNameOption(), offer.ServerIPAddr)
		}
		if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "snponly.efi" || !ack.ServerIPAddr.Equal(serverIP) {
			t.Errorf("boot server reply: %s", ack.Summary())
		}
	})
}
