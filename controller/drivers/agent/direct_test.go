package agent_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	agentapi "github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/progress"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/controller/agentclient"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/drivers/ipxe"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/store"
)

// The flow tests run the conductor with the real direct deploy, the real
// ipxe boot interface and SQLite, against the real agent command server
// (agent/api) on loopback. Only what the agent's commands do to a disk is
// stood in for: agent/e2e and controller/e2e write real disks.

const mac = "52:54:00:12:34:56"

// testAgent is the agent side: the real command server with commands whose
// outcome the test decides.
type testAgent struct {
	srv     *agentapi.Server
	http    *httptest.Server
	release chan struct{} // closes to let prepare_image finish
	mu      sync.Mutex
	calls   []string
	params  map[string]map[string]any
}

// newAgent starts the real command server with the commands register
// adds; record notes a call and its parameters for the test.
func newAgent(t *testing.T, register func(reg *agentapi.Registry, a *testAgent, record func(name string, p map[string]any))) *testAgent {
	a := &testAgent{release: make(chan struct{}), params: map[string]map[string]any{}}
	reg := agentapi.NewRegistry()
	record := func(name string, p map[string]any) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.calls = append(a.calls, name)
		a.params[name] = p
	}
	register(reg, a, record)
	a.srv = agentapi.New(context.Background(), reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.http = httptest.NewServer(a.srv.Handler())
	t.Cleanup(a.http.Close)
	return a
}

func newTestAgent(t *testing.T) *testAgent {
	return newAgent(t, registerTestCommands)
}

func registerTestCommands(reg *agentapi.Registry, a *testAgent, record func(string, map[string]any)) {
	reg.Register("standby.prepare_image", agentapi.Command{Async: true, Run: func(ctx context.Context, p map[string]any) (any, error) {
		record("standby.prepare_image", p)
		info, _ := p["image_info"].(map[string]any)
		if info["os_hash_value"] == strings.Repeat("0", 64) {
			return nil, &agentapi.Error{Type: "ImageChecksumError", Code: 500, Message: "Error verifying image checksum",
				Details: "Image failed to verify against checksum. location: x; image ID: x; image checksum: " + strings.Repeat("0", 64)}
		}
		tr := progress.From(ctx)
		tr.SetPhase("write", 100)
		tr.Add(40)
		select {
		case <-a.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return "image written", nil
	}})
	reg.Register("standby.get_partition_uuids", agentapi.Command{Run: func(_ context.Context, p map[string]any) (any, error) {
		record("standby.get_partition_uuids", p)
		return map[string]any{"root uuid": "0x1234abcd"}, nil
	}})
	reg.Register("standby.power_off", agentapi.Command{Async: true, Run: func(_ context.Context, p map[string]any) (any, error) {
		record("standby.power_off", p)
		return nil, nil
	}})
	reg.Register("clean.get_clean_steps", agentapi.Command{Run: func(_ context.Context, p map[string]any) (any, error) {
		record("clean.get_clean_steps", p)
		step := func(iface, name string, prio int) protocol.Step {
			return protocol.Step{Interface: iface, Step: name, Priority: prio, Abortable: true}
		}
		return protocol.GetStepsResult{
			CleanSteps: map[string][]protocol.Step{"GenericHardwareManager": {
				step("deploy", "erase_devices", 10), step("deploy", "erase_devices_metadata", 99),
				step("deploy", "erase_pstore", 0), step("raid", "delete_configuration", 0),
			}},
			HardwareManagerVersion: map[string]string{"generic_hardware_manager": "1.1"},
		}, nil
	}})
	reg.Register("clean.execute_clean_step", agentapi.Command{Async: true, Run: func(_ context.Context, p map[string]any) (any, error) {
		s, _ := p["step"].(map[string]any)
		record("clean.execute_clean_step:"+s["step"].(string), p)
		if s["step"] == "erase_pstore" {
			return nil, &agentapi.Error{Type: "CleaningError", Code: 500, Message: "Clean step failed", Details: "pstore is busy"}
		}
		return protocol.CleanStepResult{CleanStep: s}, nil
	}})
}

func (a *testAgent) called() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

type env struct {
	t     *testing.T
	c     *conductor.Conductor
	st    *store.Store
	agent *testAgent
	node  *model.Node
	token string
	image string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, envConfig{})
}

// envConfig adjusts newEnvWith; the zero value is newEnv's.
type envConfig struct {
	// direct adjusts the direct deploy's configuration.
	direct func(*agent.DirectConfig)
	// agent starts the agent side (default newTestAgent).
	agent func(*testing.T) *testAgent
	// node is the node to create (default "n1" of driver test-direct,
	// whose raid interface is no-raid; test-raid offers "agent" first,
	// test-noraid no RAID at all).
	node *model.Node
}

// newEnvWith builds the conductor, SQLite, the real ipxe and direct
// interfaces and the agent, and brings a node with a PXE port to
// manageable.
func newEnvWith(t *testing.T, cfg envConfig) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	kernel, ramdisk, image := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd"), filepath.Join(dir, "disk.qcow2")
	for _, f := range []string{kernel, ramdisk, image} {
		if err := os.WriteFile(f, []byte("contents of "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := drivers.NewRegistry()
	fake.Register(reg)
	agent.Register(reg)
	ipxe.Register(reg, ipxe.Config{BootURL: "http://10.0.0.1:6385", DeployKernel: kernel, DeployRamdisk: ramdisk})
	dc := agent.DirectConfig{BootURL: "http://10.0.0.1:6385", PowerOffChecks: 2, PowerOffInterval: time.Millisecond, Log: log}
	if cfg.direct != nil {
		cfg.direct(&dc)
	}
	agent.RegisterDirect(reg, agentclient.New(agentclient.Options{Attempts: 1, Logger: log}), dc)
	for _, ht := range []struct {
		name          string
		raid, inspect []string
	}{
		{"test-direct", []string{"no-raid"}, []string{"agent", "no-inspect"}},
		{"test-raid", []string{"agent", "no-raid"}, []string{"no-inspect"}},
		{"test-noraid", []string{"no-raid"}, []string{"no-inspect"}},
	} {
		reg.AddHardwareType(&drivers.HardwareType{Name: ht.name, Supported: map[string][]string{
			"power": {"fake"}, "management": {"fake"}, "boot": {"ipxe"}, "deploy": {"direct"},
			"inspect": ht.inspect, "raid": ht.raid, "bios": {"no-bios"}, "console": {"no-console"},
			"network": {"noop"}, "rescue": {"no-rescue"}, "storage": {"noop"}, "vendor": {"no-vendor"},
		}})
	}
	c := conductor.New(st, reg, conductor.Config{Host: "c1", LockRetries: 20, LockRetryInterval: 10 * time.Millisecond,
		DeployCallbackTimeout: time.Hour, CheckStateInterval: time.Hour}, log)
	t.Cleanup(func() { c.Stop(); st.Close() })
	n := cfg.node
	if n == nil {
		n = &model.Node{Driver: "test-direct", Name: "n1"}
	}
	n.ProvisionState = "enroll"
	if err := c.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := c.CreatePort(ctx, &model.Port{UUID: uuid.NewString(), Address: mac, NodeID: n.ID, NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		t.Fatal(err)
	}
	if cfg.agent == nil {
		cfg.agent = newTestAgent
	}
	e := &env{t: t, c: c, st: st, agent: cfg.agent(t), node: n, image: image}
	e.provision("manage")
	e.want("manageable")
	return e
}

func (e *env) provision(target string, steps ...drivers.CleanStep) {
	e.t.Helper()
	req := conductor.ProvisionRequest{Target: target}
	if target == "clean" {
		req.CleanSteps = steps
	}
	if err := e.c.Provision(context.Background(), e.node.UUID, req); err != nil {
		e.t.Fatalf("provision %s: %v", target, err)
	}
	e.c.Wait()
}

func (e *env) get() *model.Node {
	e.t.Helper()
	n, err := e.st.GetNode(context.Background(), e.node.UUID)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) want(state string) *model.Node {
	e.t.Helper()
	n := e.get()
	if n.ProvisionState != state {
		e.t.Fatalf("provision_state = %q, want %q (last_error %q)", n.ProvisionState, state, n.LastError)
	}
	return n
}

// boot plays the freshly booted agent: lookup (token), heartbeat.
func (e *env) boot() {
	e.t.Helper()
	_, token, err := e.c.Lookup(context.Background(), []string{mac}, "")
	if err != nil {
		e.t.Fatalf("lookup: %v", err)
	}
	e.token = token
	e.agent.srv.SetToken(token, true)
	e.heartbeat()
}

func (e *env) heartbeat() {
	e.t.Helper()
	err := e.c.Heartbeat(context.Background(), e.node.UUID, protocol.HeartbeatRequest{
		CallbackURL: e.agent.http.URL, AgentToken: e.token, AgentVersion: "test"})
	if err != nil {
		e.t.Fatalf("heartbeat: %v", err)
	}
	e.c.Wait()
}

func (e *env) setInstance(ii model.JSONObject) {
	e.t.Helper()
	if _, err := e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error {
		n.InstanceInfo = ii
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// waitCommand waits until the agent's last command has finished.
func (e *env) waitCommand() {
	e.t.Helper()
	for i := 0; i < 500; i++ {
		if p := e.agent.srv.Progress(); p == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatal("agent command still running")
}

func TestDeployToActive(t *testing.T) {
	e := newEnv(t)
	e.provision("provide")
	e.want("clean wait")
	if script, err := e.c.BootScript(context.Background(), mac); err != nil || !strings.Contains(script, "ipa-api-url=http://10.0.0.1:6385") {
		t.Fatalf("cleaning boot script: %v\n%s", err, script)
	}
	e.boot() // get_clean_steps, then erase_devices_metadata (99); erase_devices is overridden to 0
	e.waitCommand()
	e.heartbeat() // step done: all done
	n := e.want("available")
	got := e.agent.called()
	want := []string{"clean.get_clean_steps", "clean.execute_clean_step:erase_devices_metadata"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("agent commands during cleaning = %v, want %v", got, want)
	}
	if n.PowerState != "power off" || n.DriverInternalInfo["agent_secret_token"] != nil {
		t.Errorf("after cleaning: power %q, token kept %v", n.PowerState, n.DriverInternalInfo["agent_secret_token"] != nil)
	}
	if _, err := e.c.BootScript(context.Background(), mac); err == nil {
		t.Errorf("a cleaned node is still served the agent")
	}

	e.setInstance(model.JSONObject{"image_source": "file://" + e.image, "image_disk_format": "qcow2"})
	if err := e.c.Provision(context.Background(), e.node.UUID, conductor.ProvisionRequest{Target: "active",
		ConfigDrive: map[string]any{"meta_data": map[string]any{"hostname": "h1"}}}); err != nil {
		t.Fatal(err)
	}
	e.c.Wait()
	n = e.want("wait call-back")
	if n.DeployStep["step"] != "deploy" || n.PowerState != "power on" {
		t.Errorf("after deploy start: step %v power %q", n.DeployStep, n.PowerState)
	}
	if p, err := e.c.BootFile(context.Background(), "nodes/"+n.UUID+"/image/disk.qcow2"); err != nil || p != e.image {
		t.Errorf("BootFile(image) = %q, %v", p, err)
	}
	e.boot() // prepare_image sent
	n = e.want("wait call-back")
	if n.DeployStep["step"] != "write_image" {
		t.Fatalf("deploy_step = %v", n.DeployStep)
	}
	info := e.agent.params["standby.prepare_image"]["image_info"].(map[string]any)
	if info["os_hash_algo"] != "sha256" || len(info["os_hash_value"].(string)) != 64 ||
		info["urls"].([]any)[0] != "http://10.0.0.1:6385/boot/nodes/"+n.UUID+"/image/disk.qcow2" {
		t.Errorf("image_info = %v", info)
	}
	if cd, _ := e.agent.params["standby.prepare_image"]["configdrive"].(string); len(cd) < 100 {
		t.Errorf("configdrive not built from the JSON form: %q", cd)
	}
	e.heartbeat() // still running: progress recorded
	n = e.want("wait call-back")
	prog, _ := n.DriverInternalInfo["ironlite_progress"].(map[string]any)
	if prog["phase"] != "write" || prog["percent"] != 40.0 {
		t.Errorf("ironlite_progress = %v", prog)
	}
	close(e.agent.release)
	e.waitCommand()
	e.heartbeat()
	n = e.want("active")
	if n.PowerState != "power on" || n.DriverInternalInfo["root_uuid_or_disk_id"] != "0x1234abcd" || len(n.DeployStep) != 0 {
		t.Errorf("active node: power %q, root uuid %v, deploy_step %v", n.PowerState, n.DriverInternalInfo["root_uuid_or_disk_id"], n.DeployStep)
	}
	flow, _ := n.DriverInternalInfo["ironlite_deploy"].(map[string]any)
	timings, _ := flow["timings"].(map[string]any)
	if flow["phase"] != "done" {
		t.Errorf("ironlite_deploy phase = %v, want done", flow["phase"])
	}
	for _, phase := range []string{"boot", "write", "reboot", "total"} {
		if _, ok := timings[phase]; !ok {
			t.Errorf("timing %q missing: %v", phase, flow)
		}
	}
	if script, err := e.c.BootScript(context.Background(), mac); err != nil || !strings.Contains(script, "sanboot") {
		t.Errorf("an active node's boot script should boot its disk: %v %q", err, script)
	}
	if _, err := e.c.BootFile(context.Background(), "nodes/"+n.UUID+"/image/disk.qcow2"); err == nil {
		t.Errorf("the image is still served after the deploy")
	}
	if dev, _ := n.DriverInternalInfo["boot_device"].(string); dev != "" && dev != "disk" {
		t.Errorf("boot device %q", dev)
	}

	// rebuild: the same flow again from active, with a fresh agent token.
	e.provision("rebuild")
	n = e.want("wait call-back")
	if n.DeployStep["step"] != "deploy" || n.DriverInternalInfo["agent_url"] != nil {
		t.Fatalf("rebuild did not restart the deploy: step %v, agent_url %v", n.DeployStep, n.DriverInternalInfo["agent_url"])
	}
	e.boot()
	e.waitCommand()
	e.heartbeat()
	e.want("active")

	// undeploy: powered off, nothing served, instance_info cleared, then
	// cleaning boots the agent again.
	e.provision("deleted")
	n = e.want("clean wait")
	if len(n.InstanceInfo) != 0 || n.DriverInternalInfo["ironlite_image"] != nil {
		t.Errorf("after undeploy: instance_info %v, ironlite_image %v", n.InstanceInfo, n.DriverInternalInfo["ironlite_image"])
	}
	e.boot()
	e.waitCommand()
	e.heartbeat()
	e.want("available")
}

func TestDeployChecksumFailure(t *testing.T) {
	e := newEnv(t)
	if _, err := e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error {
		f := false
		n.AutomatedClean = &f
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.provision("provide")
	e.want("available")
	e.setInstance(model.JSONObject{"image_source": "http://images.example/disk.qcow2",
		"image_os_hash_algo": "sha256", "image_os_hash_value": strings.Repeat("0", 64)})
	e.provision("active")
	e.boot()
	e.waitCommand()
	e.heartbeat()
	n := e.want("deploy failed")
	if !strings.Contains(n.LastError, strings.Repeat("0", 64)) || !strings.Contains(n.LastError, "deploy.write_image failed") {
		t.Errorf("last_error = %q", n.LastError)
	}
	if n.PowerState != "power off" || n.DriverInternalInfo["agent_secret_token"] != nil {
		t.Errorf("after failure: power %q, token kept %v", n.PowerState, n.DriverInternalInfo["agent_secret_token"] != nil)
	}
}

func TestDeployValidation(t *testing.T) {
	e := newEnv(t)
	f := false
	e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error { n.AutomatedClean = &f; return nil })
	e.provision("provide")
	for _, c := range []struct {
		ii   model.JSONObject
		want string
	}{
		{model.JSONObject{}, "image_source is required"},
		{model.JSONObject{"image_source": "http://x/img.qcow2"}, "checksum is required"},
		{model.JSONObject{"image_source": "http://x/img.qcow2", "image_os_hash_algo": "md5", "image_os_hash_value": "00"}, "md5 and sha1 are refused"},
		{model.JSONObject{"image_source": "file:///nonexistent/img"}, "no such file"},
		{model.JSONObject{"image_source": "7b1c2e3d-glance-id"}, "no Glance"},
		{model.JSONObject{"image_source": "file://" + e.image, "image_disk_format": "vmdk"}, "image_disk_format"},
		{model.JSONObject{"image_source": "file://" + e.image, "root_device": map[string]any{"colour": "blue"}}, "unknown hint"},
		{model.JSONObject{"image_source": "file://" + e.image, "ephemeral_gb": -1}, "ephemeral_gb must not be negative"},
		{model.JSONObject{"image_source": "file://" + e.image, "swap_mb": "lots"}, "swap_mb must be a whole number"},
		{model.JSONObject{"image_source": "file://" + e.image, "ephemeral_gb": 1, "ephemeral_format": "ntfs"}, "ephemeral_format \"ntfs\" is not supported"},
		{model.JSONObject{"image_source": "file://" + e.image, "preserve_ephemeral": "maybe"}, "preserve_ephemeral must be true or false"},
	} {
		e.setInstance(c.ii)
		err := e.c.Provision(context.Background(), e.node.UUID, conductor.ProvisionRequest{Target: "active"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("instance_info %v: err %v, want %q", c.ii, err, c.want)
		}
		e.want("available")
	}
}

func TestAbortInWaitCallBack(t *testing.T) {
	e := newEnv(t)
	f := false
	e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error { n.AutomatedClean = &f; return nil })
	e.provision("provide")
	e.setInstance(model.JSONObject{"image_source": "file://" + e.image})
	e.provision("active")
	e.want("wait call-back")
	e.provision("abort")
	n := e.want("deploy failed")
	if !strings.Contains(n.LastError, "aborted") || n.PowerState != "power off" {
		t.Errorf("after abort: last_error %q, power %q", n.LastError, n.PowerState)
	}
	if _, err := e.c.BootScript(context.Background(), mac); err == nil {
		t.Errorf("an aborted node is still served the agent")
	}
}

func TestManualCleanFailure(t *testing.T) {
	e := newEnv(t)
	e.provision("clean", drivers.CleanStep{Interface: "deploy", Step: "erase_devices_metadata"},
		drivers.CleanStep{Interface: "deploy", Step: "erase_pstore"})
	e.want("clean wait")
	e.boot()
	e.waitCommand()
	e.heartbeat() // metadata done, pstore started
	e.waitCommand()
	e.heartbeat() // pstore failed
	n := e.want("clean failed")
	if !strings.Contains(n.LastError, "deploy.erase_pstore") || !strings.Contains(n.LastError, "pstore is busy") {
		t.Errorf("last_error = %q", n.LastError)
	}
	if n.Maintenance {
		t.Errorf("a failed manual cleaning put the node in maintenance")
	}

	// A step the agent does not offer fails at the first heartbeat.
	e.c.SetMaintenance(context.Background(), e.node.UUID, false, "")
	e.provision("manage")
	e.provision("clean", drivers.CleanStep{Interface: "deploy", Step: "burnin_cpu"})
	e.boot()
	n = e.want("clean failed")
	if !strings.Contains(n.LastError, "deploy.burnin_cpu is not supported by the agent") {
		t.Errorf("last_error = %q", n.LastError)
	}
}

func TestIsKnownMAC(t *testing.T) {
	e := newEnv(t)
	for m, want := range map[string]bool{mac: true, strings.ToUpper(mac): true, "52:54:00:12:34:57": false, "garbage": false} {
		if got := e.c.IsKnownMAC(context.Background(), m); got != want {
			t.Errorf("IsKnownMAC(%q) = %v, want %v", m, got, want)
		}
	}
}

// In-band inspection of a node with a BMC network-boots the agent too.
func TestInspectServesTheAgent(t *testing.T) {
	e := newEnv(t)
	e.provision("inspect")
	n := e.want("inspect wait")
	if script, err := e.c.BootScript(context.Background(), mac); err != nil || !strings.Contains(script, "deploy_ramdisk") {
		t.Errorf("inspection boot script: %v\n%s", err, script)
	}
	if n.PowerState != "power on" {
		t.Errorf("power_state = %q during inspection", n.PowerState)
	}
}
