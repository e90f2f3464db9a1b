package progress

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestSnapshot(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := New()
	tr.now = func() time.Time { return now }
	if p := tr.Snapshot(); p.Phase != "" || p.Percent != 0 {
		t.Fatalf("fresh tracker: %+v", p)
	}
	tr.SetPhase("write", 1000)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { tr.Add(25) })
	}
	wg.Wait()
	now = now.Add(2 * time.Second)
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"percent", tr.Snapshot().Percent, 25},
		{"rate", tr.Snapshot().BytesPerSecond, 125},
		{"eta", tr.Snapshot().ETASeconds, 6},
		{"elapsed", tr.Snapshot().ElapsedSeconds, 2},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	tr.Device("/dev/sda").SetPhase("erase", 10)
	tr.Device("/dev/sda").Add(10)
	if d := tr.Snapshot().Devices["/dev/sda"]; d == nil || d.Percent != 100 {
		t.Errorf("device progress: %+v", d)
	}
	tr.SetPhase("verify", 0)
	if p := tr.Snapshot(); p.Phase != "verify" || p.BytesDone != 0 || p.Percent != 0 {
		t.Errorf("new phase did not reset: %+v", p)
	}
	tr.SetTotal(50)
	tr.Add(20)
	tr.Complete()
	if p := tr.Snapshot(); p.BytesDone != 50 || p.Percent != 100 {
		t.Errorf("complete: %+v", p)
	}
}

func TestNilTrackerFromContext(t *testing.T) {
	tr := From(context.Background())
	tr.SetPhase("x", 1) // all no-ops on nil
	tr.Add(1)
	tr.Complete()
	if tr.Snapshot() != nil || tr.Device("d") != nil {
		t.Error("nil tracker returned something")
	}
	real := New()
	if From(With(context.Background(), real)) != real {
		t.Error("tracker not carried by the context")
	}
}
