package ipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/ipmi/ipmisim"
	"github.com/ironlite/ironlite/controller/model"
)

// testLogger writes the driver's logs into the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func fastOptions(t testing.TB) Options {
	return Options{
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PollInterval:     50 * time.Millisecond,
		PollMaxInterval:  500 * time.Millisecond,
		PowerTimeout:     10 * time.Second,
		SoftPowerTimeout: 10 * time.Second,
		RetryBackoff:     50 * time.Millisecond,
	}
}

func newDriver(t testing.TB, o Options) *Driver {
	d := New(o)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func simNode(s *ipmisim.Sim) *model.Node {
	return &model.Node{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", Driver: "ipmi", DriverInfo: s.DriverInfo()}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ipmitoolPower cross-checks with the real ipmitool.
func ipmitoolPower(t *testing.T, s *ipmisim.Sim) string {
	t.Helper()
	out, err := s.IPMITool("chassis", "power", "status")
	if err != nil {
		t.Fatalf("ipmitool power status: %v: %s", err, out)
	}
	switch strings.TrimSpace(out) {
	case "Chassis Power is on":
		return drivers.PowerOn
	case "Chassis Power is off":
		return drivers.PowerOff
	}
	t.Fatalf("ipmitool power status: unexpected %q", out)
	return ""
}

func ipmitoolBootSelector(t *testing.T, s *ipmisim.Sim) string {
	t.Helper()
	out, err := s.IPMITool("chassis", "bootparam", "get", "5")
	if err != nil {
		t.Fatalf("ipmitool bootparam get 5: %v: %s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if _, v, ok := strings.Cut(l, "Boot Device Selector :"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Boot Device Selector in %q", out)
	return ""
}

func checkPower(t *testing.T, d *Driver, s *ipmisim.Sim, n *model.Node, want string) {
	t.Helper()
	got, err := d.Power.PowerState(ctxT(t, 20*time.Second), n)
	if err != nil {
		t.Fatalf("PowerState: %v", err)
	}
	if got != want {
		t.Errorf("PowerState = %q, want %q", got, want)
	}
	if tool := ipmitoolPower(t, s); tool != want {
		t.Errorf("ipmitool says %q, want %q", tool, want)
	}
	if rec := s.Power(); rec != (want == drivers.PowerOn) {
		t.Errorf("chassis program recorded power on=%v, want %q", rec, want)
	}
}

func hasCall(s *ipmisim.Sim, call string) bool { return slices.Contains(s.Calls(), call) }

func TestPowerOnOff(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	checkPower(t, d, s, n, drivers.PowerOff)
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.PowerOn, 0); err != nil {
		t.Fatalf("power on: %v", err)
	}
	checkPower(t, d, s, n, drivers.PowerOn)
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.PowerOff, 0); err != nil {
		t.Fatalf("power off: %v", err)
	}
	checkPower(t, d, s, n, drivers.PowerOff)
	if !hasCall(s, "set power 1") || !hasCall(s, "set power 0") {
		t.Errorf("chassis program calls: %v", s.Calls())
	}
	if got := d.OpenSessions(); got != 1 {
		t.Errorf("open sessions = %d, want 1 (one reused session per BMC)", got)
	}
}

func TestRebootHard(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	if err := d.Power.Reboot(ctxT(t, 30*time.Second), n, false, 0); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	checkPower(t, d, s, n, drivers.PowerOn)
	calls := s.Calls()
	off, on := slices.Index(calls, "set power 0"), slices.Index(calls, "set power 1")
	if off < 0 || on < 0 || off > on {
		t.Errorf("want power off then on, calls: %v", calls)
	}
	// From off, reboot just powers on.
	if err := s.SetPower(false); err != nil {
		t.Fatal(err)
	}
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.Rebooting, 0); err != nil {
		t.Fatalf("reboot from off: %v", err)
	}
	checkPower(t, d, s, n, drivers.PowerOn)
}

func TestSoftPowerOff(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true, SoftOffDelay: 700 * time.Millisecond})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	start := time.Now()
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.SoftPowerOff, 0); err != nil {
		t.Fatalf("soft power off: %v", err)
	}
	if el := time.Since(start); el < 700*time.Millisecond {
		t.Errorf("soft off returned after %s, before the OS finished (700ms)", el)
	}
	checkPower(t, d, s, n, drivers.PowerOff)
	if !hasCall(s, "set shutdown 1") || hasCall(s, "set power 0") {
		t.Errorf("want an ACPI shutdown and no hard off, calls: %v", s.Calls())
	}
}

func TestSoftPowerOffFallsBackToHard(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true, IgnoreSoftOff: true})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	start := time.Now()
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.SoftPowerOff, time.Second); err != nil {
		t.Fatalf("soft power off: %v", err)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("fell back after %s, before the 1s timeout", el)
	}
	checkPower(t, d, s, n, drivers.PowerOff)
	calls := s.Calls()
	if sd, off := slices.Index(calls, "set shutdown 1"), slices.Index(calls, "set power 0"); sd < 0 || off < sd {
		t.Errorf("want shutdown then hard off, calls: %v", calls)
	}
}

func TestSoftReboot(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true, SoftOffDelay: 300 * time.Millisecond})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	if err := d.Power.Reboot(ctxT(t, 30*time.Second), n, true, 0); err != nil {
		t.Fatalf("soft reboot: %v", err)
	}
	checkPower(t, d, s, n, drivers.PowerOn)
	calls := s.Calls()
	if sd, on := slices.Index(calls, "set shutdown 1"), slices.Index(calls, "set power 1"); sd < 0 || on < sd || hasCall(s, "set power 0") {
		t.Errorf("want ACPI shutdown then power on (no hard off), calls: %v", calls)
	}
}

func TestBootDevice(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	cases := []struct {
		dev, recorded, selector string
		persistent, uefi        bool
	}{
		{drivers.BootPXE, "pxe", "Force PXE", false, false},
		{drivers.BootDisk, "default", "Force Boot from default Hard-Drive", true, false},
		{drivers.BootCDROM, "cdrom", "Force Boot from CD/DVD", false, true},
		{drivers.BootBIOS, "bios", "Force Boot into BIOS Setup", false, false},
		{drivers.BootPXE, "pxe", "Force PXE", true, true},
	}
	for _, c := range cases {
		n.BootMode = ""
		if c.uefi {
			n.BootMode = "uefi"
		}
		if err := d.Management.SetBootDevice(ctxT(t, 20*time.Second), n, c.dev, c.persistent); err != nil {
			t.Fatalf("set %s: %v", c.dev, err)
		}
		if got := s.BootDevice(); got != c.recorded {
			t.Errorf("set %s: chassis program recorded %q, want %q", c.dev, got, c.recorded)
		}
		if got := ipmitoolBootSelector(t, s); got != c.selector {
			t.Errorf("set %s: ipmitool bootparam get 5 says %q, want %q", c.dev, got, c.selector)
		}
		bd, err := d.Management.BootDevice(ctxT(t, 20*time.Second), n)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if bd.Device == nil || *bd.Device != c.dev {
			t.Errorf("BootDevice = %v, want %s", bd.Device, c.dev)
		}
		// ipmi_sim drops the persistent bit (ironic-observed gotcha 14).
		if bd.Persistent == nil || *bd.Persistent {
			t.Errorf("persistent = %v, want false (ipmi_sim does not keep it)", bd.Persistent)
		}
	}
	if err := d.Management.SetBootDevice(ctxT(t, 5*time.Second), n, "floppy", false); err == nil || err.Error() != "Invalid boot device floppy specified." {
		t.Errorf("floppy: %v", err)
	}
	// safe is supported by the driver but refused by ipmi_sim: a clear BMC error.
	err := d.Management.SetBootDevice(ctxT(t, 20*time.Second), n, drivers.BootSafe, false)
	if err == nil || !strings.Contains(err.Error(), s.Addr) {
		t.Errorf("safe on ipmi_sim: want a BMC error naming the address, got %v", err)
	}
}

func TestForceBootDevice(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	n.DriverInfo["ipmi_force_boot_device"] = "true"
	if err := d.Management.SetBootDevice(ctxT(t, 20*time.Second), n, drivers.BootPXE, true); err != nil {
		t.Fatal(err)
	}
	if n.DriverInternalInfo["persistent_boot_device"] != "pxe" {
		t.Fatalf("driver_internal_info = %v", n.DriverInternalInfo)
	}
	// Someone changes the boot device behind our back; power on re-sends pxe.
	if _, err := s.IPMITool("chassis", "bootdev", "disk"); err != nil {
		t.Fatal(err)
	}
	if err := d.Power.SetPowerState(ctxT(t, 30*time.Second), n, drivers.PowerOn, 0); err != nil {
		t.Fatal(err)
	}
	if got := s.BootDevice(); got != "pxe" {
		t.Errorf("boot device after power on = %q, want pxe re-sent", got)
	}
}

func TestSensorsAndSEL(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	s := ipmisim.Start(t, ipmisim.Options{
		Sensors: []ipmisim.Sensor{
			{Number: 1, Name: "CPU Temp", Type: 0x01, Unit: 1, Raw: 45},
			{Number: 2, Name: "FAN1", Type: 0x04, Unit: 18, M: 50, Raw: 60, Entity: 0x1d},
		},
		SEL: []ipmisim.SELEntry{
			{Time: now.Add(-time.Hour), SensorType: 0x01, SensorNumber: 1, EventType: 0x01, Data: [3]byte{0x59, 95, 90}},
			{Time: now, SensorType: 0x04, SensorNumber: 2, EventType: 0x01, Deassertion: true, Data: [3]byte{0x52, 5, 10}},
		},
	})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	sensors, err := d.Management.Sensors(ctxT(t, 20*time.Second), n)
	if err != nil {
		t.Fatalf("Sensors: %v", err)
	}
	want := map[string]struct {
		typ, unit string
		reading   float64
	}{"CPU Temp": {"Temperature", "degrees C", 45}, "FAN1": {"Fan", "RPM", 3000}}
	if len(sensors) != len(want) {
		t.Fatalf("sensors = %+v, want %d", sensors, len(want))
	}
	for _, sn := range sensors {
		w, ok := want[sn.Name]
		if !ok {
			t.Errorf("unexpected sensor %+v", sn)
			continue
		}
		if sn.Type != w.typ || sn.Unit != w.unit || sn.Reading == nil || *sn.Reading != w.reading || sn.Status != "ok" {
			r := "nil"
			if sn.Reading != nil {
				r = fmt.Sprint(*sn.Reading)
			}
			t.Errorf("sensor %s: type %q unit %q reading %s status %q; want %+v, status ok", sn.Name, sn.Type, sn.Unit, r, sn.Status, w)
		}
	}
	out, err := s.IPMITool("sdr", "list")
	if err != nil || !strings.Contains(out, "CPU Temp") || !strings.Contains(out, "3000 RPM") {
		t.Errorf("ipmitool sdr list: %v %s", err, out)
	}

	sel, err := d.Management.SEL(ctxT(t, 20*time.Second), n)
	if err != nil {
		t.Fatalf("SEL: %v", err)
	}
	if len(sel) != 2 {
		t.Fatalf("SEL = %+v, want 2 entries", sel)
	}
	// ipmi_sim stamps added records with its own SEL clock, so the
	// configured times are not kept: only check a time is there.
	if sel[0].Time.IsZero() || sel[0].SensorType != "Temperature" || sel[0].Sensor != "CPU Temp" || sel[0].Direction != "Asserted" {
		t.Errorf("SEL[0] = %+v", sel[0])
	}
	if sel[1].Time.IsZero() || sel[1].SensorType != "Fan" || sel[1].Sensor != "FAN1" || sel[1].Direction != "Deasserted" {
		t.Errorf("SEL[1] = %+v", sel[1])
	}
	t.Logf("SEL: %+v", sel)

	if err := d.Management.ClearSEL(ctxT(t, 20*time.Second), n); err != nil {
		t.Fatalf("ClearSEL: %v", err)
	}
	sel, err = d.Management.SEL(ctxT(t, 20*time.Second), n)
	if err != nil || len(sel) != 0 {
		t.Errorf("SEL after clear = %+v, %v", sel, err)
	}
	out, err = s.IPMITool("sel", "info")
	if err != nil || !strings.Contains(out, "Entries          : 0") {
		t.Errorf("ipmitool sel info after clear: %v %s", err, out)
	}
}

func TestIndicators(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	ctx := ctxT(t, 30*time.Second)
	inds, err := d.Management.Indicators(ctx, n)
	if err != nil || len(inds) != 1 || inds[0].Name != "identify" || inds[0].Component != "system" {
		t.Fatalf("Indicators = %+v, %v", inds, err)
	}
	if st, err := d.Management.IndicatorState(ctx, n, "system", "identify"); err != nil || st != IndicatorUnknown {
		t.Errorf("initial state = %q, %v; want unknown (ipmi_sim does not report identify)", st, err)
	}
	for _, c := range []struct{ state, recorded string }{
		{IndicatorBlinking, "255 0"}, {IndicatorOn, "0 1"}, {IndicatorOff, "0 0"},
	} {
		if err := d.Management.SetIndicatorState(ctx, n, "system", "identify", c.state); err != nil {
			t.Fatalf("set %s: %v", c.state, err)
		}
		if got := s.Identify(); got != c.recorded {
			t.Errorf("set %s: chassis program got identify %q, want %q", c.state, got, c.recorded)
		}
		if st, err := d.Management.IndicatorState(ctx, n, "system", "identify"); err != nil || st != c.state {
			t.Errorf("state after set %s = %q, %v", c.state, st, err)
		}
	}
	if err := d.Management.SetIndicatorState(ctx, n, "disk", "led", "on"); err == nil {
		t.Error("unknown indicator accepted")
	}
}

func TestWrongPasswordFailsFast(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := newDriver(t, fastOptions(t))
	n := simNode(s)
	n.DriverInfo["ipmi_password"] = "not-the-Secret-42"
	start := time.Now()
	st, err := d.Power.PowerState(ctxT(t, 30*time.Second), n)
	el := time.Since(start)
	if err == nil || st != drivers.PowerError {
		t.Fatalf("PowerState = %q, %v; want error", st, err)
	}
	if !errors.Is(err, ErrAuthentication) {
		t.Errorf("error %v is not ErrAuthentication", err)
	}
	if el > 2*time.Second {
		t.Errorf("wrong password took %s; want fast (no retries)", el)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("127.0.0.1:%d", s.Port)) || strings.Contains(msg, "not-the-Secret-42") || !strings.Contains(msg, "password") {
		t.Errorf("error should name the BMC and say 'wrong password' without the password: %s", msg)
	}
	t.Logf("wrong password: %s (%s)", msg, el)

	n.DriverInfo["ipmi_password"] = s.Password
	n.DriverInfo["ipmi_username"] = "nobody"
	if _, err := d.Power.PowerState(ctxT(t, 30*time.Second), n); !errors.Is(err, ErrAuthentication) {
		t.Errorf("unknown user: %v", err)
	}
}

func TestUnreachableNothingListening(t *testing.T) {
	ipmisim.RequireTools(t)
	port, err := ipmisim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	o := fastOptions(t)
	o.AttemptTimeout = 300 * time.Millisecond
	d := newDriver(t, o)
	n := &model.Node{UUID: "dead", DriverInfo: model.JSONObject{"ipmi_address": "127.0.0.1", "ipmi_port": float64(port), "ipmi_username": "admin", "ipmi_password": "x"}}
	start := time.Now()
	_, err = d.Power.PowerState(ctxT(t, 60*time.Second), n)
	el := time.Since(start)
	var be *BMCError
	if !errors.As(err, &be) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("want BMCError/ErrUnreachable, got %v", err)
	}
	if be.Attempts != 3 {
		t.Errorf("attempts = %d, want 3 (1 + 2 retries)", be.Attempts)
	}
	if el > 10*time.Second {
		t.Errorf("took %s", el)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("error does not name the BMC: %v", err)
	}
	t.Logf("nothing listening: %v (%s)", err, el)
}

// blackHole is a BMC that receives and never answers.
func blackHole(t *testing.T) int {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return conn.LocalAddr().(*net.UDPAddr).Port
}

func TestUnreachableTimeoutBounded(t *testing.T) {
	port := blackHole(t)
	o := fastOptions(t)
	o.AttemptTimeout = 200 * time.Millisecond
	o.UDPRetries = 1 // 2 sends per request
	o.Retries = 1    // 2 attempts
	d := newDriver(t, o)
	n := &model.Node{UUID: "hole", DriverInfo: model.JSONObject{"ipmi_address": "127.0.0.1", "ipmi_port": port}}
	start := time.Now()
	_, err := d.Power.PowerState(ctxT(t, 60*time.Second), n)
	el := time.Since(start)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("want ErrUnreachable, got %v", err)
	}
	// 2 attempts x 2 sends x 200ms + 50ms backoff.
	if el < 700*time.Millisecond || el > 3*time.Second {
		t.Errorf("took %s, want about 0.85s", el)
	}
	t.Logf("black hole: %v (%s)", err, el)
}

func TestSlowBMC(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true, Delay: 1200 * time.Millisecond})
	o := fastOptions(t)
	o.AttemptTimeout = 3 * time.Second
	d := newDriver(t, o)
	n := simNode(s)
	start := time.Now()
	st, err := d.Power.PowerState(ctxT(t, 30*time.Second), n)
	if err != nil || st != drivers.PowerOn {
		t.Fatalf("slow BMC: %q, %v", st, err)
	}
	if el := time.Since(start); el < 1200*time.Millisecond {
		t.Errorf("answered in %s, faster than the BMC's delay", el)
	}
	// A caller with a shorter budget gets a bounded, clear error.
	start = time.Now()
	_, err = d.Power.PowerState(ctxT(t, 500*time.Millisecond), n)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("short deadline on a slow BMC: %v after %s", err, time.Since(start))
	}
	t.Logf("slow BMC with 500ms deadline: %v", err)
}

func TestDeadBMCDoesNotBlockOthers(t *testing.T) {
	live := ipmisim.Start(t, ipmisim.Options{PowerOn: true})
	slow := ipmisim.Start(t, ipmisim.Options{PowerOn: true, Delay: 2 * time.Second})
	dead := blackHole(t)
	o := fastOptions(t)
	o.AttemptTimeout = 3 * time.Second
	d := newDriver(t, o)
	ln := simNode(live)
	// Open the live session first so the measurement is one command.
	if _, err := d.Power.PowerState(ctxT(t, 10*time.Second), ln); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = d.Power.PowerState(ctxT(t, 3*time.Second), &model.Node{UUID: "dead", DriverInfo: model.JSONObject{"ipmi_address": "127.0.0.1", "ipmi_port": dead}})
		}()
		go func() {
			defer wg.Done()
			_, _ = d.Power.PowerState(ctxT(t, 3*time.Second), simNode(slow))
		}()
	}
	time.Sleep(300 * time.Millisecond) // dead and slow calls are in flight
	for i := 0; i < 3; i++ {
		start := time.Now()
		st, err := d.Power.PowerState(ctxT(t, 10*time.Second), ln)
		if el := time.Since(start); err != nil || st != drivers.PowerOn || el > 500*time.Millisecond {
			t.Errorf("live BMC while others hang: %q, %v in %s", st, err, el)
		}
	}
	wg.Wait()
}

func TestManyBMCsWithSessionCap(t *testing.T) {
	const nBMC = 6
	sims := make([]*ipmisim.Sim, nBMC)
	for i := range sims {
		sims[i] = ipmisim.Start(t, ipmisim.Options{PowerOn: i%2 == 0})
	}
	o := fastOptions(t)
	o.MaxSessions = 2
	d := newDriver(t, o)
	for round := 0; round < 2; round++ {
		var wg sync.WaitGroup
		errs := make([]error, nBMC)
		for i, s := range sims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := d.Power.PowerState(ctxT(t, 30*time.Second), simNode(s))
				if err == nil && (st == drivers.PowerOn) != (i%2 == 0) {
					err = fmt.Errorf("bmc %d: state %q", i, st)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := d.OpenSessions(); got > 2 {
			t.Errorf("open sessions %d > MaxSessions 2", got)
		}
	}
}

func TestIdleCloseAndReconnect(t *testing.T) {
	dir := t.TempDir()
	s := ipmisim.Start(t, ipmisim.Options{PowerOn: true, Dir: dir})
	o := fastOptions(t)
	o.IdleTimeout = 300 * time.Millisecond
	o.AttemptTimeout = 300 * time.Millisecond
	d := newDriver(t, o)
	n := simNode(s)
	if _, err := d.Power.PowerState(ctxT(t, 10*time.Second), n); err != nil {
		t.Fatal(err)
	}
	if d.OpenSessions() != 1 {
		t.Fatalf("open sessions = %d", d.OpenSessions())
	}
	deadline := time.Now().Add(3 * time.Second)
	for d.OpenSessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if d.OpenSessions() != 0 {
		t.Fatalf("idle session not closed")
	}
	// Use a session, then restart the BMC under it: the stale session must
	// be dropped and a new one opened transparently.
	o.IdleTimeout = time.Hour
	d2 := newDriver(t, o)
	if _, err := d2.Power.PowerState(ctxT(t, 10*time.Second), n); err != nil {
		t.Fatal(err)
	}
	port := s.Port
	_ = s.Stop()
	s2, err := ipmisim.Launch(ipmisim.Options{PowerOn: false, Dir: t.TempDir(), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Stop() })
	st, err := d2.Power.PowerState(ctxT(t, 20*time.Second), n)
	if err != nil || st != drivers.PowerOff {
		t.Fatalf("after BMC restart: %q, %v", st, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	s := ipmisim.Start(t, ipmisim.Options{})
	d := New(fastOptions(t))
	n := simNode(s)
	if _, err := d.Power.PowerState(ctxT(t, 10*time.Second), n); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	_ = d.Close()
	if _, err := d.Power.PowerState(ctxT(t, 10*time.Second), n); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if d.OpenSessions() != 0 {
		t.Errorf("sessions open after Close: %d", d.OpenSessions())
	}
}
