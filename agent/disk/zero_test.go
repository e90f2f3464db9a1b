package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/progress"
)

// withTracker returns a context carrying a fresh progress tracker.
func withTracker() (context.Context, *progress.Tracker) {
	t := progress.New()
	return progress.With(context.Background(), t), t
}

func TestZero(t *testing.T) {
	file := randomFile(t, 48*mib)
	dev := blockdevtest.Loop(t, file, false)
	ctx, tr := withTracker()
	method, err := Zero(ctx, dev)
	if err != nil {
		t.Fatalf("Zero: %v", err)
	}
	// Loop devices offload zeroing to the backing file (fallocate).
	if method != "zeroed with BLKZEROOUT" {
		t.Errorf("method = %q", method)
	}
	assertZero(t, dev)
	assertZero(t, file)
	p := tr.Snapshot().Devices[dev]
	if p == nil || p.Phase != "erase" || p.Percent != 100 || p.BytesTotal != 48*mib {
		t.Errorf("device progress = %+v, want erase 100%% of %d bytes", p, 48*mib)
	}
}

// TestEraseDevicePlans forces each erase method on a real loop device
// (whose queue really offloads zeroing, so the others are reached by
// pretending otherwise) and on a plain file.
func TestEraseDevicePlans(t *testing.T) {
	const size = 24 * mib
	for _, tc := range []struct {
		name       string
		file       bool // erase the image file itself, not a loop device over it
		queue      blockdev.Queue
		queueErr   error
		secDiscard bool
		iterations int
		zeroize    bool
		method     string
		passes     int64
		// zero: the device ends all zeroes; else it ends neither zero nor
		// as it was (random passes) or as it was (nothing written).
		zero, unchanged bool
	}{
		{name: "offload", queue: blockdev.Queue{WriteZeroesMax: 1}, iterations: 3, zeroize: true,
			method: "zeroed with BLKZEROOUT", passes: 1, zero: true},
		{name: "overwrite with zeroes", zeroize: true,
			method: "overwritten with zeroes", passes: 1, zero: true},
		{name: "random passes then zeroes", iterations: 2, zeroize: true,
			method: "overwritten with 2 random passes and zeroes", passes: 3, zero: true},
		{name: "one random pass only", iterations: 1,
			method: "overwritten with 1 random pass", passes: 1},
		{name: "unknown queue overwrites", queueErr: os.ErrNotExist, iterations: 1, zeroize: true,
			method: "overwritten with 1 random pass and zeroes", passes: 2, zero: true},
		{name: "no secure discard falls back to overwriting", queue: blockdev.Queue{DiscardMax: 1}, secDiscard: true, iterations: 1, zeroize: true,
			method: "overwritten with 1 random pass and zeroes", passes: 2, zero: true},
		{name: "nothing to do", method: "nothing written (agent_erase_devices_iterations is 0 and agent_erase_devices_zeroize is false)", unchanged: true},
		{name: "image file", file: true, queue: blockdev.Queue{WriteZeroesMax: 1}, zeroize: true,
			method: "overwritten with zeroes", passes: 1, zero: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := randomFile(t, size)
			orig, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			dev := file
			if !tc.file {
				dev = blockdevtest.Loop(t, file, false)
			}
			cfg := eraseConfig{
				sysRoot:       "/",
				queue:         func(string) (blockdev.Queue, error) { return tc.queue, tc.queueErr },
				secureDiscard: tc.secDiscard,
				iterations:    tc.iterations,
				zeroize:       tc.zeroize,
			}
			ctx, tr := withTracker()
			method, err := eraseDevice(ctx, dev, cfg, newMeter(ctx, dev, nil, 0))
			if err != nil {
				t.Fatalf("eraseDevice: %v", err)
			}
			if method != tc.method {
				t.Errorf("method = %q, want %q", method, tc.method)
			}
			p := tr.Snapshot().Devices[dev]
			if want := tc.passes * size; p.BytesTotal != want || p.BytesDone != want {
				t.Errorf("progress %d/%d bytes, want %d/%d", p.BytesDone, p.BytesTotal, want, want)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.zero:
				assertZero(t, file)
			case tc.unchanged:
				if !bytes.Equal(got, orig) {
					t.Error("the device changed")
				}
			default:
				if bytes.Equal(got, orig) || bytes.Equal(got[:mib], make([]byte, mib)) || bytes.Equal(got[size-mib:], orig[size-mib:]) {
					t.Error("the random pass did not overwrite the device")
				}
			}
		})
	}
}

func TestEraseDeviceCancel(t *testing.T) {
	const size = 1 << 30
	file := blockdevtest.File(t, "disk.img", size, nil)
	dev := blockdevtest.Loop(t, file, false)
	cfg := eraseConfig{sysRoot: "/", iterations: 3, zeroize: true} // no queue: overwrite
	ctx, tr := withTracker()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := eraseDevice(ctx, dev, cfg, newMeter(ctx, dev, nil, 0))
		done <- err
	}()
	for tr.Snapshot().Devices[dev] == nil || tr.Snapshot().Devices[dev].BytesDone == 0 {
		select {
		case err := <-done:
			t.Fatalf("eraseDevice ended before it was cancelled: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("eraseDevice = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("eraseDevice took %v to stop", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("eraseDevice did not stop within 10 s of the cancel")
	}
	if p := tr.Snapshot().Devices[dev]; p.BytesDone >= p.BytesTotal {
		t.Errorf("progress %d/%d: the erase was not interrupted", p.BytesDone, p.BytesTotal)
	}
}

func TestOverwriteMethod(t *testing.T) {
	for _, tc := range []struct {
		iterations int
		zeroize    bool
		want       string
	}{
		{0, true, "overwritten with zeroes"},
		{1, true, "overwritten with 1 random pass and zeroes"},
		{3, false, "overwritten with 3 random passes"},
	} {
		if got := overwriteMethod(tc.iterations, tc.zeroize); got != tc.want {
			t.Errorf("overwriteMethod(%d, %t) = %q, want %q", tc.iterations, tc.zeroize, got, tc.want)
		}
	}
}

func TestAlignedBuffer(t *testing.T) {
	for range 16 {
		b := alignedBuffer(writeBuffer)
		if len(b) != writeBuffer || cap(b) != writeBuffer {
			t.Fatalf("len %d cap %d", len(b), cap(b))
		}
		if addr := uintptrOf(b); addr%4096 != 0 {
			t.Fatalf("buffer at %#x is not 4 KiB aligned", addr)
		}
	}
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func TestDirectIO(t *testing.T) {
	dev := blockdevtest.LoopFile(t, 4*mib, nil)
	d, err := blockdev.Open(dev, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	flags := func() int {
		f, err := unix.FcntlInt(d.File().Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	restore, err := directIO(d.File())
	if err != nil {
		t.Fatalf("directIO: %v", err)
	}
	if flags()&unix.O_DIRECT == 0 {
		t.Fatal("O_DIRECT not set")
	}
	if _, err := d.WriteAt(alignedBuffer(writeBuffer)[:mib], mib); err != nil {
		t.Fatalf("aligned O_DIRECT write: %v", err)
	}
	restore()
	if flags()&unix.O_DIRECT != 0 {
		t.Fatal("O_DIRECT not cleared")
	}
}
