package conductor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// bmc is a power interface whose hardware state and failures the test
// controls: the conductor's sync and recovery logic must react to BMC
// faults we cannot provoke with fake-hardware.
type bmc struct {
	mu    sync.Mutex
	state string
	fail  error
	sets  []string
	fake.Power
}

func (b *bmc) PowerState(context.Context, *model.Node) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.fail
}

func (b *bmc) SetPowerState(_ context.Context, _ *model.Node, target string, _ time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.sets = append(b.sets, target)
	b.state = target
	return nil
}

func (b *bmc) set(state string, fail error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.fail = state, fail
}

func newTestConductor(t *testing.T, dbPath string, cfg Config, power drivers.Power) (*Conductor, *store.Store) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	fake.Register(reg)
	if power != nil {
		reg.AddInterface("power", "test", power)
		ht, _ := reg.HardwareType("fake-hardware")
		ht.Supported["power"] = append([]string{"test"}, ht.Supported["power"]...)
	}
	if cfg.Host == "" {
		cfg.Host = "c1"
	}
	cfg.LockRetries, cfg.LockRetryInterval = 1, time.Millisecond
	c := New(st, reg, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { c.Stop(); st.Close() })
	return c, st
}

func mkNode(t *testing.T, c *Conductor, name string) *model.Node {
	t.Helper()
	n := &model.Node{Driver: "fake-hardware", Name: name, ProvisionState: statemachine.Enroll}
	if err := c.CreateNode(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRecoverAfterRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db.sqlite")
	c, st := newTestConductor(t, db, Config{}, nil)
	ctx := context.Background()
	// A previous process died holding these nodes mid-flight.
	cases := []struct {
		state, target, want string
		reserved            bool
		power               string
	}{
		{statemachine.Deploying, statemachine.Active, statemachine.DeployFail, true, ""},
		{statemachine.Cleaning, statemachine.Available, statemachine.CleanFail, true, ""},
		{statemachine.Verifying, statemachine.Manageable, statemachine.Enroll, true, ""},
		{statemachine.Deleting, statemachine.Available, statemachine.Error, false, ""},
		{statemachine.DeployWait, statemachine.Active, statemachine.DeployWait, false, ""},
		{statemachine.Manageable, "", statemachine.Manageable, true, drivers.PowerOn},
	}
	var nodes []*model.Node
	for i, tc := range cases {
		n := mkNode(t, c, "n"+string(rune('a'+i)))
		n.ProvisionState, n.TargetProvisionState, n.TargetPowerState = tc.state, tc.target, tc.power
		if err := st.UpdateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		if tc.reserved {
			if _, err := st.Reserve(ctx, n.ID, "c1"); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	// Another controller's lock is left alone.
	other := mkNode(t, c, "other")
	other.ProvisionState, other.TargetProvisionState = statemachine.Deploying, statemachine.Active
	st.UpdateNode(ctx, other)
	st.Reserve(ctx, other.ID, "c2")

	c.Stop()
	st.Close()
	c2, st2 := newTestConductor(t, db, Config{}, nil)
	if err := c2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		n, err := st2.GetNodeByID(ctx, nodes[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		if n.ProvisionState != tc.want || n.Reservation != "" || n.TargetPowerState != "" {
			t.Errorf("%s: state %q reservation %q target power %q, want %q", tc.state, n.ProvisionState, n.Reservation, n.TargetPowerState, tc.want)
		}
		if tc.want != tc.state || tc.power != "" {
			if !strings.Contains(n.LastError, "controller restarted") {
				t.Errorf("%s: last_error %q", tc.state, n.LastError)
			}
		}
		if tc.state == statemachine.Cleaning && (!n.Maintenance || n.Fault != "clean failure") {
			t.Errorf("interrupted cleaning should set maintenance with fault: %+v", n)
		}
	}
	o, _ := st2.GetNodeByID(ctx, other.ID)
	if o.ProvisionState != statemachine.Deploying || o.Reservation != "c2" {
		t.Errorf("other controller's node touched: %q %q", o.ProvisionState, o.Reservation)
	}
}

func TestWaitTimeouts(t *testing.T) {
	c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{DeployCallbackTimeout: time.Millisecond, CleanCallbackTimeout: time.Hour, InspectWaitTimeout: time.Millisecond}, nil)
	ctx := context.Background()
	old := store.Now().Add(-time.Minute)
	mk := func(name, state, target string) *model.Node {
		n := mkNode(t, c, name)
		n.ProvisionState, n.TargetProvisionState, n.ProvisionUpdatedAt = state, target, &old
		n.DriverInternalInfo["agent_secret_token"] = "tok"
		st.UpdateNode(ctx, n)
		return n
	}
	deploy := mk("d", statemachine.DeployWait, statemachine.Active)
	clean := mk("c", statemachine.CleanWait, statemachine.Available)
	inspect := mk("i", statemachine.InspectWait, statemachine.Manageable)
	inspect.InspectionStartedAt = &old
	st.UpdateNode(ctx, inspect)
	c.checkWaitTimeouts(ctx)
	in, _ := st.GetNodeByID(ctx, inspect.ID)
	if in.ProvisionState != statemachine.InspectFail || !strings.Contains(in.LastError, "Timeout reached while inspecting the node") {
		t.Fatalf("inspect wait: %q %q", in.ProvisionState, in.LastError)
	}
	d, _ := st.GetNodeByID(ctx, deploy.ID)
	if d.ProvisionState != statemachine.DeployFail || d.LastError != "Timeout reached while waiting for callback for node "+d.UUID {
		t.Fatalf("deploy wait: %q %q", d.ProvisionState, d.LastError)
	}
	if _, ok := d.DriverInternalInfo["agent_secret_token"]; ok {
		t.Fatalf("token not wiped")
	}
	cl, _ := st.GetNodeByID(ctx, clean.ID)
	if cl.ProvisionState != statemachine.CleanWait {
		t.Fatalf("clean wait timed out early: %q", cl.ProvisionState)
	}
}

func TestPowerSync(t *testing.T) {
	ctx := context.Background()
	t.Run("force back", func(t *testing.T) {
		b := &bmc{state: drivers.PowerOn}
		c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{}, b)
		n := mkNode(t, c, "n")
		n.ProvisionState, n.PowerState = statemachine.Manageable, drivers.PowerOn
		st.UpdateNode(ctx, n)
		b.set(drivers.PowerOff, nil) // someone pressed the button
		c.SyncPowerStates(ctx)
		if b.state != drivers.PowerOn || len(b.sets) != 1 {
			t.Fatalf("stored state not forced back: hw %q sets %v", b.state, b.sets)
		}
		got, _ := st.GetNodeByID(ctx, n.ID)
		if got.PowerState != drivers.PowerOn || got.Reservation != "" {
			t.Fatalf("db: %q %q", got.PowerState, got.Reservation)
		}
	})
	t.Run("record out-of-band change", func(t *testing.T) {
		b := &bmc{state: drivers.PowerOn}
		f := false
		c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{ForcePowerStateDuringSync: &f}, b)
		n := mkNode(t, c, "n")
		n.ProvisionState, n.PowerState = statemachine.Manageable, drivers.PowerOn
		st.UpdateNode(ctx, n)
		b.set(drivers.PowerOff, nil)
		c.SyncPowerStates(ctx)
		got, _ := st.GetNodeByID(ctx, n.ID)
		if got.PowerState != drivers.PowerOff || len(b.sets) != 0 {
			t.Fatalf("db %q, sets %v", got.PowerState, b.sets)
		}
	})
	t.Run("maintenance after failures, then recovery", func(t *testing.T) {
		b := &bmc{state: drivers.PowerOn}
		c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{PowerStateSyncMaxRetries: 2}, b)
		n := mkNode(t, c, "n")
		n.ProvisionState, n.PowerState = statemachine.Manageable, drivers.PowerOn
		st.UpdateNode(ctx, n)
		b.set(drivers.PowerOn, errors.New("BMC 10.0.0.5:623: timeout"))
		for i := 0; i < 2; i++ {
			c.SyncPowerStates(ctx)
			if got, _ := st.GetNodeByID(ctx, n.ID); got.Maintenance {
				t.Fatalf("maintenance after %d failures", i+1)
			}
		}
		c.SyncPowerStates(ctx)
		got, _ := st.GetNodeByID(ctx, n.ID)
		if !got.Maintenance || got.Fault != "power failure" || !strings.Contains(got.MaintenanceReason, "max retries exceeded") {
			t.Fatalf("not in power-failure maintenance: %+v", got)
		}
		// Manual maintenance on another node is never cleared.
		m := mkNode(t, c, "manual")
		m.Maintenance, m.MaintenanceReason = true, "operator"
		st.UpdateNode(ctx, m)
		c.PowerFailureRecovery(ctx)
		if got, _ := st.GetNodeByID(ctx, n.ID); !got.Maintenance {
			t.Fatalf("recovered while the BMC still fails")
		}
		b.set(drivers.PowerOn, nil)
		c.PowerFailureRecovery(ctx)
		got, _ = st.GetNodeByID(ctx, n.ID)
		if got.Maintenance || got.Fault != "" || got.PowerState != drivers.PowerOn {
			t.Fatalf("not recovered: %+v", got)
		}
		if mm, _ := st.GetNodeByID(ctx, m.ID); !mm.Maintenance || mm.MaintenanceReason != "operator" {
			t.Fatalf("manual maintenance cleared")
		}
	})
}

func TestPowerActionFailureRecorded(t *testing.T) {
	ctx := context.Background()
	b := &bmc{state: drivers.PowerOff}
	c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{}, b)
	n := mkNode(t, c, "n")
	b.set(drivers.PowerOff, errors.New("BMC 10.0.0.5:623 refused the credentials"))
	if err := c.ChangePower(ctx, "n", drivers.PowerOn, 0); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	got, _ := st.GetNodeByID(ctx, n.ID)
	if got.TargetPowerState != "" || got.Reservation != "" ||
		got.LastError != "Failed to change power state to 'power on' by 'power on': BMC 10.0.0.5:623 refused the credentials" {
		t.Fatalf("%+v", got)
	}
}

func TestNoFreeWorker(t *testing.T) {
	ctx := context.Background()
	c, st := newTestConductor(t, filepath.Join(t.TempDir(), "db.sqlite"), Config{Workers: 1}, nil)
	mkNode(t, c, "a")
	n := mkNode(t, c, "b")
	c.workers <- struct{}{} // the only worker is busy
	err := c.Provision(ctx, "b", ProvisionRequest{Target: "manage"})
	<-c.workers
	if KindOf(err) != Unavailable {
		t.Fatalf("err = %v", err)
	}
	got, _ := st.GetNodeByID(ctx, n.ID)
	if got.Reservation != "" || got.ProvisionState != statemachine.Enroll || got.TargetProvisionState != "" {
		t.Fatalf("a refused request changed the node: %q %q %q", got.Reservation, got.ProvisionState, got.TargetProvisionState)
	}
	// With the worker free again the same request works.
	if err := c.Provision(ctx, "b", ProvisionRequest{Target: "manage"}); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if got, _ := st.GetNodeByID(ctx, n.ID); got.ProvisionState != statemachine.Manageable {
		t.Fatalf("state %q", got.ProvisionState)
	}
}
