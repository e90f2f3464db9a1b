package disk

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/progress"
)

// Sizes of the units of work. Each is short enough that cancellation
// (abort) is noticed within a second or so even on a slow disk, and long
// enough that per-call overhead does not matter.
const (
	// zeroChunk is one BLKZEROOUT call when the device offloads zeroing.
	zeroChunk = 64 << 20
	// discardChunk is one BLKSECDISCARD call.
	discardChunk = 256 << 20
	// writeBuffer is one write of an overwrite pass: large and aligned,
	// written with O_DIRECT so progress is what reached the device, not
	// the page cache, and a 512 MiB machine does not fill its RAM with
	// dirty pages.
	writeBuffer = 8 << 20
)

// Zero makes every byte of the block device dev read back as zero, the
// fastest way the device guarantees: BLKZEROOUT when it offloads zeroing
// (WRITE ZEROES, zeroing UNMAP), else overwriting it with zeroes. It
// reports progress to progress.From(ctx).Device(dev), stops when ctx is
// cancelled, and returns how the device was zeroed.
func Zero(ctx context.Context, dev string) (method string, err error) {
	cfg := eraseConfig{sysRoot: "/", queue: sysQueue("/"), zeroize: true}
	return eraseDevice(ctx, dev, cfg, newMeter(ctx, dev, nil, 0))
}

// eraseConfig is how one device is erased.
type eraseConfig struct {
	// sysRoot holds sys/ for the device's flags and holders.
	sysRoot string
	// queue reads the device's queue limits (nil or an error: none known,
	// e.g. an image file).
	queue func(path string) (blockdev.Queue, error)
	// secureDiscard tries BLKSECDISCARD on devices that discard and do
	// not offload zeroing.
	secureDiscard bool
	// iterations is the number of random overwrite passes when the
	// device must be overwritten (agent_erase_devices_iterations).
	iterations int
	// zeroize adds a final zero pass (agent_erase_devices_zeroize).
	zeroize bool
}

func sysQueue(sysRoot string) func(string) (blockdev.Queue, error) {
	return func(path string) (blockdev.Queue, error) { return blockdev.ReadQueue(sysRoot, path) }
}

// plan is the method eraseConfig picks for a device.
type plan int

const (
	planZeroOut    plan = iota // BLKZEROOUT, offloaded
	planSecDiscard             // BLKSECDISCARD, then a zero pass
	planOverwrite              // random passes, then a zero pass
)

func (c eraseConfig) plan(path string, block bool) plan {
	if !block || c.queue == nil {
		return planOverwrite
	}
	q, err := c.queue(path)
	switch {
	case err != nil:
		return planOverwrite
	case q.WriteZeroesMax > 0:
		return planZeroOut
	case c.secureDiscard && q.DiscardMax > 0:
		return planSecDiscard
	}
	return planOverwrite
}

// passes is how many times the plan goes over the device, for progress.
func (c eraseConfig) passes(p plan) int64 {
	n := int64(0)
	switch p {
	case planZeroOut:
		return 1
	case planSecDiscard:
		n = 1
	case planOverwrite:
		n = int64(c.iterations)
	}
	if c.zeroize {
		n++
	}
	return n
}

// eraseDevice erases one device according to cfg and says how.
//
// Like IPA, where a successful ATA or NVMe secure erase makes shred's
// passes moot, the random passes are only for devices that have to be
// overwritten: a device that offloads zeroing is zeroed, one that
// securely discards is discarded and then zeroed.
func eraseDevice(ctx context.Context, path string, cfg eraseConfig, m *meter) (string, error) {
	d, err := openForErase(cfg.sysRoot, path)
	if err != nil {
		return "", err
	}
	defer d.Close()
	size := d.Size()
	p := cfg.plan(path, d.IsBlockDevice())
	m.start(size * cfg.passes(p))

	var method string
	switch p {
	case planZeroOut:
		if err := zeroOut(ctx, d, m); err != nil {
			return "", err
		}
		method = "zeroed with BLKZEROOUT"
	case planSecDiscard:
		err := secureDiscard(ctx, d, m)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
			// Most devices that discard cannot do it securely; they
			// say so at the first call.
			p = planOverwrite
			m.retotal(size * cfg.passes(p))
			break
		}
		if err != nil {
			return "", err
		}
		method = "securely discarded with BLKSECDISCARD"
		if cfg.zeroize {
			if err := overwrite(ctx, d, false, m); err != nil {
				return "", err
			}
			method += ", then overwritten with zeroes"
		}
	}
	if p == planOverwrite {
		for range cfg.iterations {
			if err := overwrite(ctx, d, true, m); err != nil {
				return "", err
			}
		}
		if cfg.zeroize {
			if err := overwrite(ctx, d, false, m); err != nil {
				return "", err
			}
		}
		method = overwriteMethod(cfg.iterations, cfg.zeroize)
	}
	if err := d.Flush(); err != nil {
		return "", err
	}
	// The partition table is gone: drop the kernel's stale partitions.
	if err := d.RereadPartitions(ctx); err != nil {
		return "", err
	}
	return method, nil
}

func overwriteMethod(iterations int, zeroize bool) string {
	s := ""
	switch iterations {
	case 0:
	case 1:
		s = "overwritten with 1 random pass"
	default:
		s = fmt.Sprintf("overwritten with %d random passes", iterations)
	}
	switch {
	case zeroize && s == "":
		return "overwritten with zeroes"
	case zeroize:
		return s + " and zeroes"
	case s == "":
		// What IPA's shred does with --iterations 0 and no --zero.
		return "nothing written (agent_erase_devices_iterations is 0 and agent_erase_devices_zeroize is false)"
	}
	return s
}

// zeroOut zeroes the device with BLKZEROOUT in chunks.
func zeroOut(ctx context.Context, d *blockdev.Device, m *meter) error {
	for off := int64(0); off < d.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(zeroChunk, d.Size()-off)
		if err := d.ZeroRange(ctx, off, n); err != nil {
			return err
		}
		m.add(n)
		off += n
	}
	return nil
}

// secureDiscard discards the whole device with BLKSECDISCARD in chunks.
func secureDiscard(ctx context.Context, d *blockdev.Device, m *meter) error {
	for off := int64(0); off < d.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(discardChunk, d.Size()-off)
		if err := d.SecureDiscard(off, n); err != nil {
			return err
		}
		m.add(n)
		off += n
	}
	return nil
}

// overwrite writes the whole device once, with random data (a fresh
// ChaCha8 stream seeded from the kernel, fast enough to keep up with any
// disk) or zeroes, then makes it durable.
func overwrite(ctx context.Context, d *blockdev.Device, random bool, m *meter) error {
	if d.IsBlockDevice() {
		if restore, err := directIO(d.File()); err == nil {
			defer restore()
		}
	}
	buf := alignedBuffer(writeBuffer)
	var rng *rand.ChaCha8
	if random {
		var seed [32]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return fmt.Errorf("seed random pass: %w", err)
		}
		rng = rand.NewChaCha8(seed)
	}
	for off := int64(0); off < d.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), d.Size()-off)
		if rng != nil {
			_, _ = rng.Read(buf[:n]) // never fails
		}
		if _, err := d.WriteAt(buf[:n], off); err != nil {
			return err
		}
		m.add(n)
		off += n
	}
	return d.Flush()
}

// directIO switches f to O_DIRECT (shred and IPA's dd do the same) and
// returns a function that switches it back.
func directIO(f *os.File) (restore func(), err error) {
	fd := f.Fd()
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(fd, unix.F_SETFL, flags|unix.O_DIRECT); err != nil {
		return nil, err
	}
	return func() { _, _ = unix.FcntlInt(fd, unix.F_SETFL, flags) }, nil
}

// alignedBuffer returns n zero bytes starting on a 4 KiB boundary, as
// O_DIRECT needs.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % align); r != 0 {
		off = align - r
	}
	return b[off : off+n : off+n]
}

// meter reports a device's erase progress to its own tracker and to the
// step's tracker, whose total is the sum over the devices.
type meter struct {
	dev, step *progress.Tracker
	// stepTotal is shared by the meters of one step.
	stepTotal *atomic.Int64
	// counted is this device's share of stepTotal.
	counted int64
}

// newMeter makes the meter for dev under ctx's tracker. stepTotal is nil
// when the step's tracker is not to be fed (Zero on its own); expected is
// what the caller already counted in it for this device.
func newMeter(ctx context.Context, dev string, stepTotal *atomic.Int64, expected int64) *meter {
	t := progress.From(ctx)
	m := &meter{dev: t.Device(dev), stepTotal: stepTotal, counted: expected}
	if stepTotal != nil {
		m.step = t
	}
	return m
}

// start begins the device's erase of total bytes of work.
func (m *meter) start(total int64) {
	m.dev.SetPhase("erase", total)
	m.count(total)
}

// retotal changes the device's total when its plan changes midway.
func (m *meter) retotal(total int64) {
	m.dev.SetTotal(total)
	m.count(total)
}

func (m *meter) count(total int64) {
	if m.step != nil && total != m.counted {
		m.step.SetTotal(m.stepTotal.Add(total - m.counted))
	}
	m.counted = total
}

func (m *meter) add(n int64) {
	m.dev.Add(n)
	m.step.Add(n)
}
