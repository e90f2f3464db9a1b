// Package ipmisim runs OpenIPMI's ipmi_sim as a simulated BMC for tests and
// benchmarks: one process per BMC on a free loopback UDP port, with a
// lan.conf, a commands file (MC, SDRs, sensors, SEL) and a chassis_control
// program (a small shell script) that records the machine's power state and
// boot device in files, so tests can cross-check what the BMC was told.
//
// From a test:
//
//	sim := ipmisim.Start(t, ipmisim.Options{PowerOn: true})
//	node.DriverInfo = sim.DriverInfo()       // ipmi_address, ipmi_port, ...
//	... drive the node ...
//	if !sim.Power() { ... }                  // what the chassis program recorded
//	sim.SetPower(false)                      // flip power out of band
//
// Start skips the test when ipmi_sim is missing, unless the environment
// variable CI is set, in which case it fails. The simulator is stopped by
// t.Cleanup. Outside tests use Launch and Stop.
package ipmisim

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

//go:embed chassis.sh
var chassisScript []byte

// Sensor is an analog threshold sensor put into the simulated BMC's SDR
// repository (a Full Sensor Record) with a fixed reading.
type Sensor struct {
	Number uint8  // sensor number (unique per BMC, 1..254)
	Name   string // up to 16 characters
	Type   uint8  // IPMI sensor type: 0x01 temperature, 0x02 voltage, 0x04 fan, ...
	Unit   uint8  // IPMI base unit: 1 degrees C, 4 volts, 6 watts, 18 RPM, ...
	M      uint8  // reading = Raw * M (0 means 1)
	Raw    uint8  // raw reading
	Entity uint8  // entity ID (0 means 0x07, system board)
}

// SELEntry is a standard (type 0x02) system event log record.
type SELEntry struct {
	Time         time.Time
	SensorType   uint8
	SensorNumber uint8
	EventType    uint8 // event/reading type code (0x01 threshold, 0x6f sensor-specific)
	Deassertion  bool
	Data         [3]byte
}

// Options configure a simulated BMC. The zero value is a BMC with user
// "admin"/"password", powered off, no sensors and an empty SEL.
type Options struct {
	User     string // default "admin"
	Password string // default "password"
	PowerOn  bool   // initial power state
	// BootDevice is the initial recorded boot device (default "default").
	BootDevice string
	// Delay makes every chassis program call sleep this long (a slow BMC).
	Delay time.Duration
	// SoftOffDelay is how long after an ACPI soft-off request the power goes
	// off (0: at once). IgnoreSoftOff makes the "OS" ignore ACPI entirely.
	SoftOffDelay  time.Duration
	IgnoreSoftOff bool
	Sensors       []Sensor
	SEL           []SELEntry
	// Dir holds the configuration and the recorded state; default a fresh
	// temporary directory.
	Dir string
	// Port is the UDP port on 127.0.0.1; 0 picks a free one. A given port
	// must be free (Launch fails otherwise).
	Port int
}

// Sim is a running simulated BMC.
type Sim struct {
	Addr     string // "127.0.0.1"
	Port     int
	User     string
	Password string
	Dir      string // state directory of the chassis program

	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
	logPath  string
	ownsDir  bool
}

// Available reports whether ipmi_sim (and ipmitool, used by tests to
// cross-check) are installed; the error says what is missing.
func Available() error {
	var missing []string
	for _, b := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not found in PATH (Debian packages: openipmi ipmitool)", strings.Join(missing, " and "))
	}
	return nil
}

// RequireTools skips the test when ipmi_sim or ipmitool is missing, or
// fails it when running under CI (environment variable CI set).
func RequireTools(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ipmisim: %v (CI is set, so this is a failure, not a skip)", err)
		}
		t.Skipf("ipmisim: %v; skipping (set CI=true to make this a failure)", err)
	}
}

// Start launches a simulated BMC for the test and stops it at cleanup.
func Start(t testing.TB, opts Options) *Sim {
	t.Helper()
	RequireTools(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Launch(opts)
	if err != nil {
		t.Fatalf("ipmisim: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// Launch starts a simulated BMC; the caller must Stop it.
func Launch(opts Options) (*Sim, error) {
	if opts.User == "" {
		opts.User = "admin"
	}
	if opts.Password == "" {
		opts.Password = "password"
	}
	if opts.BootDevice == "" {
		opts.BootDevice = "default"
	}
	ownsDir := false
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "ipmisim-")
		if err != nil {
			return nil, err
		}
		opts.Dir, ownsDir = d, true
	}
	s := &Sim{Addr: "127.0.0.1", User: opts.User, Password: opts.Password, Dir: filepath.Join(opts.Dir, "chassis"), ownsDir: ownsDir}
	if err := s.writeFiles(opts); err != nil {
		return nil, err
	}
	if opts.Port != 0 {
		if err := s.run(opts.Dir, opts.Port); err != nil {
			return nil, err
		}
		return s, nil
	}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		port, err := pickPort()
		if err != nil {
			return nil, err
		}
		if err := s.run(opts.Dir, port); err != nil {
			lastErr = err
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("could not start ipmi_sim: %w", lastErr)
}

func (s *Sim) writeFiles(opts Options) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	prog := filepath.Join(opts.Dir, "chassis.sh")
	if err := os.WriteFile(prog, chassisScript, 0o755); err != nil {
		return err
	}
	power := "0"
	if opts.PowerOn {
		power = "1"
	}
	soft := strconv.FormatInt(opts.SoftOffDelay.Milliseconds(), 10)
	if opts.IgnoreSoftOff {
		soft = "-1"
	}
	files := map[string]string{
		"power":            power + "\n",
		"boot":             opts.BootDevice + "\n",
		"softoff_delay_ms": soft + "\n",
		"calls":            "",
	}
	if opts.Delay > 0 {
		files["delay"] = fmt.Sprintf("%.3f\n", opts.Delay.Seconds())
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	var cmds strings.Builder
	cmds.WriteString("mc_setbmc 0x20\n")
	cmds.WriteString("mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n")
	cmds.WriteString("sel_enable 0x20 1000 0x0a\n")
	for _, sn := range opts.Sensors {
		if err := writeSensor(&cmds, sn); err != nil {
			return err
		}
	}
	for _, e := range opts.SEL {
		writeSEL(&cmds, e)
	}
	cmds.WriteString("mc_enable 0x20\n")
	return os.WriteFile(filepath.Join(opts.Dir, "cmds"), []byte(cmds.String()), 0o644)
}

func writeSensor(w *strings.Builder, sn Sensor) error {
	if len(sn.Name) == 0 || len(sn.Name) > 16 {
		return fmt.Errorf("sensor name %q must have 1..16 characters", sn.Name)
	}
	m := sn.M
	if m == 0 {
		m = 1
	}
	entity := sn.Entity
	if entity == 0 {
		entity = 0x07
	}
	n := len(sn.Name)
	// IPMI v2.0 table 43-1, Full Sensor Record. ipmi_sim assigns record IDs.
	b := []byte{0x00, 0x00, 0x51, 0x01, byte(43 + n),
		0x20, 0x00, sn.Number, entity, 0x01,
		0x7f,       // sensor initialisation: scanning + events enabled
		0x40,       // capabilities: auto re-arm, no thresholds, no events
		sn.Type,    // sensor type
		0x01,       // event/reading type: threshold
		0, 0, 0, 0, // assertion/deassertion masks
		0, 0, // reading masks
		0x00,    // units 1: unsigned
		sn.Unit, // base unit
		0x00,    // modifier unit
		0x00,    // linear
		m, 0x00, // M, tolerance
		0x00, 0x00, // B, accuracy
		0x00, 0x00, // accuracy/direction, R/B exponents
		0x00,             // analog characteristics
		0, 0, 0, 0xff, 0, // nominal, normal max/min, sensor max/min
		0, 0, 0, 0, 0, 0, // thresholds
		0, 0, // hysteresis
		0, 0, 0, // reserved, OEM
		byte(0xc0 | n), // 8-bit ASCII ID string
	}
	b = append(b, sn.Name...)
	w.WriteString("main_sdr_add 0x20")
	for _, x := range b {
		fmt.Fprintf(w, " 0x%02x", x)
	}
	w.WriteString("\n")
	fmt.Fprintf(w, "sensor_add 0x20 0 %d 0x%02x 0x01\n", sn.Number, sn.Type)
	fmt.Fprintf(w, "sensor_set_value 0x20 0 %d %d 0\n", sn.Number, sn.Raw)
	return nil
}

func writeSEL(w *strings.Builder, e SELEntry) {
	ts := uint32(e.Time.Unix())
	dirType := e.EventType & 0x7f
	if e.Deassertion {
		dirType |= 0x80
	}
	b := []byte{byte(ts), byte(ts >> 8), byte(ts >> 16), byte(ts >> 24),
		0x20, 0x00, 0x04, e.SensorType, e.SensorNumber, dirType, e.Data[0], e.Data[1], e.Data[2]}
	w.WriteString("sel_add 0x20 0x02")
	for _, x := range b {
		fmt.Fprintf(w, " 0x%02x", x)
	}
	w.WriteString("\n")
}

// pickPort returns a UDP port on 127.0.0.1 that no socket uses, chosen
// below the kernel's ephemeral range so client sockets never collide.
func pickPort() (int, error) {
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(12000)
		n, err := udpSocketsOn(p)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return p, nil
		}
	}
	return 0, errors.New("no free UDP port found")
}

// udpSocketsOn counts the UDP sockets (IPv4 and IPv6) bound to port.
// ipmi_sim binds with SO_REUSEADDR, so a second simulator on a busy port
// would start silently and steal packets: we check before and after.
func udpSocketsOn(port int) (int, error) {
	want := fmt.Sprintf(":%04X", port)
	count := 0
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		fh, err := os.Open(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, err
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 1 && strings.HasSuffix(fields[1], want) {
				count++
			}
		}
		fh.Close()
	}
	return count, nil
}

func (s *Sim) run(dir string, port int) error {
	conf := fmt.Sprintf(`name "ironlite-sim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s %s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, filepath.Join(dir, "chassis.sh"), s.Dir, s.User, s.Password)
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	state := filepath.Join(dir, fmt.Sprintf("state-%d", port))
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	s.logPath = filepath.Join(dir, "ipmi_sim.log")
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("ipmi_sim", "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "cmds"), "-s", state)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if n, err := udpSocketsOn(port); err != nil || n != 0 {
		return fmt.Errorf("port %d busy", port)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ipmi_sim: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := udpSocketsOn(port)
		if err == nil && n == 1 {
			break
		}
		if err == nil && n > 1 { // someone else bound it meanwhile
			killGroup(cmd, done)
			return fmt.Errorf("port %d was taken by another socket", port)
		}
		select {
		case <-done:
			out, _ := os.ReadFile(s.logPath)
			return fmt.Errorf("ipmi_sim exited at start: %s", strings.TrimSpace(string(out)))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			killGroup(cmd, done)
			return fmt.Errorf("ipmi_sim did not bind 127.0.0.1:%d within 10s", port)
		}
	}
	s.cmd, s.done, s.Port = cmd, done, port
	return nil
}

func killGroup(cmd *exec.Cmd, done chan struct{}) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Stop terminates the simulator (idempotent).
func (s *Sim) Stop() error {
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			killGroup(s.cmd, s.done)
		}
		if s.ownsDir {
			_ = os.RemoveAll(filepath.Dir(s.Dir))
		}
	})
	return nil
}

// Alive reports whether the ipmi_sim process is still running.
func (s *Sim) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// DriverInfo returns an Ironic driver_info for this BMC (cipher suite 3,
// as ipmi_sim does not answer cipher-suite discovery).
func (s *Sim) DriverInfo() map[string]any {
	return map[string]any{
		"ipmi_address":      s.Addr,
		"ipmi_port":         s.Port,
		"ipmi_username":     s.User,
		"ipmi_password":     s.Password,
		"ipmi_cipher_suite": 3,
	}
}

// IPMIToolArgs returns the ipmitool arguments reaching this BMC (password
// included: for tests only).
func (s *Sim) IPMIToolArgs() []string {
	return []string{"-I", "lanplus", "-C", "3", "-H", s.Addr, "-p", strconv.Itoa(s.Port), "-U", s.User, "-P", s.Password}
}

// IPMITool runs ipmitool against this BMC and returns its combined output.
func (s *Sim) IPMITool(args ...string) (string, error) {
	out, err := exec.Command("ipmitool", append(s.IPMIToolArgs(), args...)...).CombinedOutput()
	return string(out), err
}

func (s *Sim) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, name))
	return strings.TrimSpace(string(b))
}

func (s *Sim) write(name, v string) error {
	tmp := filepath.Join(s.Dir, name+".tmp-go")
	if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.Dir, name))
}

// Power reports the power state the chassis program recorded (a pending
// soft-off whose time has passed counts as off).
func (s *Sim) Power() bool {
	if at := s.read("softoff_at"); at != "" {
		if ms, err := strconv.ParseInt(at, 10, 64); err == nil && time.Now().UnixMilli() >= ms {
			return false
		}
	}
	return s.read("power") == "1"
}

// SetPower flips the power out of band (as if someone pressed the button).
func (s *Sim) SetPower(on bool) error {
	_ = os.Remove(filepath.Join(s.Dir, "softoff_at"))
	if on {
		return s.write("power", "1")
	}
	return s.write("power", "0")
}

// BootDevice returns the boot device the chassis program recorded, as
// ipmi_sim hands it over: "pxe", "default" (disk), "cdrom", "bios", "none".
func (s *Sim) BootDevice() string { return s.read("boot") }

// Identify returns the last "set identify" value ("<interval> <force>").
func (s *Sim) Identify() string { return s.read("identify") }

// SetDelay changes how long each chassis program call sleeps.
func (s *Sim) SetDelay(d time.Duration) error {
	if d <= 0 {
		return os.Remove(filepath.Join(s.Dir, "delay"))
	}
	return s.write("delay", fmt.Sprintf("%.3f", d.Seconds()))
}

// Calls returns the chassis program invocations so far ("get power",
// "set power 1", "set boot pxe", ...).
func (s *Sim) Calls() []string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "calls"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Log returns ipmi_sim's own output.
func (s *Sim) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// FreePort returns a UDP port on 127.0.0.1 with no socket bound to it (for
// "nothing listening" tests, or Options.Port).
func FreePort() (int, error) { return pickPort() }
