package disk

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/progress"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/rootdevice"
	"github.com/ironlite/ironlite/agent/steps"
)

// Options configure the steps RegisterSteps installs.
type Options struct {
	// Root is the filesystem root holding sys/ and proc/ ("/" if empty).
	Root string
	// Devices, when set, replaces the listing of the machine's disks: the
	// steps work on exactly these block devices (or image files). Tests
	// use it to erase loop devices, which the IPA-like listing leaves out;
	// in production leave it empty, so that every disk is cleaned.
	Devices []string
	// Log receives the steps' logs (slog.Default if nil).
	Log *slog.Logger
}

// RegisterSteps installs the disk clean steps with IPA's names and default
// priorities, replacing the placeholders of package steps:
// deploy.erase_devices_metadata (99), deploy.erase_devices (10),
// deploy.erase_devices_express (0) and deploy.erase_pstore (0), all
// abortable; and erase_devices_metadata as a deploy step (priority 0), as
// IPA offers it.
func RegisterSteps(o Options) {
	if o.Root == "" {
		o.Root = "/"
	}
	s := &stepSet{Options: o, log: logger(o.Log)}
	clean := func(name string, prio int, run steps.Func) {
		steps.Register(steps.Clean, steps.Definition{
			Step: protocol.Step{Step: name, Interface: "deploy", Priority: prio, Abortable: true},
			Run:  run,
		})
	}
	clean("erase_devices_metadata", 99, s.eraseMetadata)
	clean("erase_devices", 10, s.eraseDevices)
	clean("erase_devices_express", 0, s.eraseExpress)
	clean("erase_pstore", 0, s.erasePstore)
	steps.Register(steps.Deploy, steps.Definition{
		Step: protocol.Step{Step: "erase_devices_metadata", Interface: "deploy", Priority: 0},
		Run:  s.eraseMetadata,
	})
}

type stepSet struct {
	Options
	log *slog.Logger
}

// settings are the erase settings the conductor puts in
// driver_internal_info when cleaning starts.
type settings struct {
	iterations   int  // agent_erase_devices_iterations
	zeroize      bool // agent_erase_devices_zeroize
	skipReadOnly bool // agent_erase_skip_read_only
	concurrency  int  // disk_erasure_concurrency
}

// nodeSettings reads the erase settings with Ironic's defaults (IPA's own
// default concurrency is 1; the conductor sends 4).
func nodeSettings(node map[string]any) (settings, error) {
	info, _ := node["driver_internal_info"].(map[string]any)
	s := settings{iterations: 1, zeroize: true, concurrency: 4}
	var err error
	if s.iterations, err = intSetting(info, "agent_erase_devices_iterations", s.iterations); err != nil {
		return s, err
	}
	if s.concurrency, err = intSetting(info, "disk_erasure_concurrency", s.concurrency); err != nil {
		return s, err
	}
	if s.zeroize, err = boolSetting(info, "agent_erase_devices_zeroize", s.zeroize); err != nil {
		return s, err
	}
	if s.skipReadOnly, err = boolSetting(info, "agent_erase_skip_read_only", s.skipReadOnly); err != nil {
		return s, err
	}
	if s.iterations < 0 {
		return s, fmt.Errorf("driver_internal_info.agent_erase_devices_iterations is %d, must be 0 or more", s.iterations)
	}
	s.concurrency = max(1, s.concurrency)
	return s, nil
}

func intSetting(info map[string]any, key string, def int) (int, error) {
	v, ok := info[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case float64:
		if x == float64(int(x)) {
			return int(x), nil
		}
	case int:
		return x, nil
	case json.Number:
		if n, err := strconv.Atoi(x.String()); err == nil {
			return n, nil
		}
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(x)); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("driver_internal_info.%s is %v, not an integer", key, v)
}

func boolSetting(info map[string]any, key string, def bool) (bool, error) {
	v, ok := info[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
			return b, nil
		}
	}
	return false, fmt.Errorf("driver_internal_info.%s is %v, not a Boolean", key, v)
}

// target is a device a step considered, and why it leaves it alone ("" if
// it does not).
type target struct {
	dev  protocol.BlockDevice
	skip string
	st   state
}

// targets lists the devices and marks those excluded by the node's
// properties.skip_block_devices, removable devices (virtual media,
// USB sticks) and members of assembled md arrays. IPA skips RAID members
// by their signature; its ramdisk assembles every array it finds, so that
// is the same set. Ours assembles none on its own, so a stale member of a
// former array is erased, as cleaning should. The array device itself is
// listed and erased.
func (s *stepSet) targets(ctx context.Context, node map[string]any) ([]target, error) {
	devs, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	skip, err := rootdevice.NodeSkipList(node)
	if err != nil {
		return nil, err
	}
	var out []target
	for _, d := range devs {
		t := target{dev: d, st: readState(s.Root, sysName(d.Name))}
		switch {
		case skip.Skips(d):
			t.skip = "skipped: matches properties.skip_block_devices"
		case t.st.removable:
			t.skip = "skipped: removable device"
		case len(t.st.mdHolders) > 0:
			t.skip = "skipped: member of RAID array " + strings.Join(t.st.mdHolders, ", ")
		}
		out = append(out, t)
	}
	return out, nil
}

func (s *stepSet) list(ctx context.Context) ([]protocol.BlockDevice, error) {
	if len(s.Devices) == 0 {
		return List(ctx, s.Root)
	}
	var out []protocol.BlockDevice
	for _, p := range s.Devices {
		if d, ok := describe(s.Root, sysName(p)); ok {
			d.Name = p
			out = append(out, d)
			continue
		}
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("device %s: not a block device known to sysfs nor an image file", p)
		}
		out = append(out, protocol.BlockDevice{Name: p, Size: st.Size()})
	}
	return out, nil
}

// result is a step's clean_result: what was done to each device.
type result map[string]string

// each runs work on the targets not skipped, at most n at a time, and
// records skipped ones in the result. With failFast the first failure
// cancels the others (erase_devices: no point in hours more of erasing
// when the step fails anyway); otherwise every device is tried, as IPA's
// metadata erase does, and all failures are reported together.
func (s *stepSet) each(ctx context.Context, step string, ts []target, n int, failFast bool, work func(ctx context.Context, t target) (string, error)) (any, error) {
	res := result{}
	errs := map[string]error{}
	var mu sync.Mutex
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, t := range ts {
		if t.skip != "" {
			s.log.Info("disk: leaving device alone", "step", step, "device", t.dev.Name, "reason", t.skip)
			res[t.dev.Name] = t.skip
		}
	}
	for _, t := range ts {
		if t.skip != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-inner.Done():
				return
			}
			if inner.Err() != nil {
				return
			}
			method, err := work(inner, t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if inner.Err() != nil && errors.Is(err, context.Canceled) {
					return // aborted, or stopped because another device failed
				}
				s.log.Error("disk: erase failed", "step", step, "device", t.dev.Name, "error", err)
				errs[t.dev.Name] = err
				if failFast {
					cancel()
				}
				return
			}
			s.log.Info("disk: erased", "step", step, "device", t.dev.Name, "method", method)
			res[t.dev.Name] = method
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		names := make([]string, 0, len(errs))
		for n := range errs {
			names = append(names, n)
		}
		sort.Strings(names)
		msgs := make([]string, len(names))
		for i, n := range names {
			msgs[i] = fmt.Sprintf("%s: %v", n, errs[n])
		}
		return nil, fmt.Errorf("%s failed on %s", step, strings.Join(msgs, "; "))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s aborted: %w", step, err)
	}
	return res, nil
}

// eraseMetadata is erase_devices_metadata: partition tables and
// signatures on every device, one at a time (seconds each). Read-only
// devices are skipped, as IPA does for this step.
//
// Software RAID goes first, as in IPA: the arrays built only on devices
// this step erases are erased themselves (the filesystem on /dev/md0),
// then stopped, and the md superblocks on their members destroyed; only
// then are the former members (no longer busy) erased like any disk. An
// array with a member on a device left alone (skip list, read-only,
// removable) stays assembled, and its members are skipped.
func (s *stepSet) eraseMetadata(ctx context.Context, req steps.Request) (any, error) {
	const step = "erase_devices_metadata"
	ts, err := s.targets(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	skipReadOnly(ts)
	work := func(ctx context.Context, t target) (string, error) {
		if err := eraseMetadata(ctx, s.Root, t.dev.Name, s.log); err != nil {
			return "", err
		}
		return "metadata erased", nil
	}
	arrays, err := s.arraysToDismantle(ts)
	if err != nil {
		return nil, err
	}
	if len(arrays) == 0 {
		return s.each(ctx, step, ts, 1, false, work)
	}
	// Pass 1: the arrays' own contents, while they are assembled.
	isArray := map[string]bool{}
	for _, a := range arrays {
		isArray[sysName(a.Device)] = true
	}
	var mds []target
	for _, t := range ts {
		if isArray[sysName(t.dev.Name)] && t.skip == "" {
			mds = append(mds, t)
		}
	}
	res := result{}
	if len(mds) > 0 {
		r, err := s.each(ctx, step, mds, 1, false, work)
		if err != nil {
			return nil, err
		}
		maps.Copy(res, r.(result))
	}
	if err := StopMDArrays(ctx, arrays, s.log); err != nil {
		return nil, fmt.Errorf("%s: dismantle software RAID: %w", step, err)
	}
	for _, a := range arrays {
		res[a.Device] = "metadata erased, array stopped, member superblocks erased"
	}
	// Pass 2: everything else, former members included (the stopped
	// arrays are gone from the listing).
	if ts, err = s.targets(ctx, req.Node); err != nil {
		return nil, err
	}
	skipReadOnly(ts)
	var rest []target
	for _, t := range ts {
		if !isArray[sysName(t.dev.Name)] {
			rest = append(rest, t)
		}
	}
	r, err := s.each(ctx, step, rest, 1, false, work)
	if err != nil {
		return nil, err
	}
	maps.Copy(res, r.(result))
	return res, nil
}

// arraysToDismantle returns the md arrays whose members are all on
// devices among ts that are erased (not skipped, or skipped only for
// being an md member).
func (s *stepSet) arraysToDismantle(ts []target) ([]MDArray, error) {
	erased := map[string]bool{}
	for _, t := range ts {
		mdOnly := len(t.st.mdHolders) > 0 && strings.HasPrefix(t.skip, "skipped: member of RAID array") && !t.st.readOnly
		if t.skip == "" || mdOnly {
			erased[sysName(t.dev.Name)] = true
		}
	}
	all, err := MDArrays(s.Root)
	if err != nil {
		return nil, err
	}
	var out []MDArray
	for _, a := range all {
		ok := len(a.Disks) > 0
		for _, d := range a.Disks {
			ok = ok && erased[sysName(d)]
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// eraseDevices is erase_devices: every byte of every device, in parallel
// (disk_erasure_concurrency), with per-device progress. A read-only device
// fails the step unless agent_erase_skip_read_only is set (IPA's rule:
// a device that cannot be erased must not pass for erased).
func (s *stepSet) eraseDevices(ctx context.Context, req steps.Request) (any, error) {
	set, err := nodeSettings(req.Node)
	if err != nil {
		return nil, err
	}
	ts, err := s.targets(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	cfg := eraseConfig{sysRoot: s.Root, queue: sysQueue(s.Root), secureDiscard: true, iterations: set.iterations, zeroize: set.zeroize}
	if readOnly := skipReadOnly(ts); len(readOnly) > 0 && !set.skipReadOnly {
		return nil, fmt.Errorf("cannot erase %s: flagged read-only, and driver_internal_info.agent_erase_skip_read_only is not set", strings.Join(readOnly, ", "))
	}
	return s.eraseWithProgress(ctx, "erase_devices", ts, set.concurrency, true,
		func(t target) int64 {
			return t.dev.Size * cfg.passes(cfg.plan(t.dev.Name, blockdev.IsBlockDevice(t.dev.Name)))
		},
		func(ctx context.Context, t target, m *meter) (string, error) {
			return eraseDevice(ctx, t.dev.Name, cfg, m)
		})
}

// eraseExpress is erase_devices_express: metadata erase everywhere, plus a
// full zeroing where it is fast and guaranteed: solid-state devices that
// offload zeroing. (IPA does an NVMe format where it can, metadata erase
// elsewhere.) An offloaded WRITE ZEROES on a spinning disk still writes
// every sector, so those get the metadata erase only.
func (s *stepSet) eraseExpress(ctx context.Context, req steps.Request) (any, error) {
	set, err := nodeSettings(req.Node)
	if err != nil {
		return nil, err
	}
	ts, err := s.targets(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	skipReadOnly(ts)
	fast := func(path string) bool {
		q, err := blockdev.ReadQueue(s.Root, path)
		return err == nil && blockdev.IsBlockDevice(path) && q.WriteZeroesMax > 0 && !q.Rotational
	}
	return s.eraseWithProgress(ctx, "erase_devices_express", ts, set.concurrency, false,
		func(t target) int64 {
			if fast(t.dev.Name) {
				return t.dev.Size
			}
			return 0
		},
		func(ctx context.Context, t target, m *meter) (string, error) {
			if err := eraseMetadata(ctx, s.Root, t.dev.Name, s.log); err != nil {
				return "", err
			}
			if !fast(t.dev.Name) {
				return "metadata erased", nil
			}
			cfg := eraseConfig{sysRoot: s.Root, queue: sysQueue(s.Root), zeroize: true}
			method, err := eraseDevice(ctx, t.dev.Name, cfg, m)
			if err != nil {
				return "", err
			}
			return "metadata erased, " + method, nil
		})
}

// skipReadOnly marks the read-only devices among ts as skipped and
// returns their names (erase_devices fails on them unless told otherwise).
func skipReadOnly(ts []target) []string {
	var names []string
	for i := range ts {
		if ts[i].skip == "" && ts[i].st.readOnly {
			ts[i].skip = "skipped: read-only device"
			names = append(names, ts[i].dev.Name)
		}
	}
	return names
}

// eraseWithProgress runs work under a step tracker in phase "erase" whose
// total is the sum of expected over the devices, each device feeding its
// own child tracker too.
func (s *stepSet) eraseWithProgress(ctx context.Context, step string, ts []target, n int, failFast bool,
	expected func(target) int64, work func(context.Context, target, *meter) (string, error)) (any, error) {
	var total atomic.Int64
	exp := map[string]int64{}
	for _, t := range ts {
		if t.skip == "" {
			exp[t.dev.Name] = expected(t)
			total.Add(exp[t.dev.Name])
		}
	}
	tracker := progress.From(ctx)
	tracker.SetPhase("erase", total.Load())
	return s.each(ctx, step, ts, n, failFast, func(ctx context.Context, t target) (string, error) {
		return work(ctx, t, newMeter(ctx, t.dev.Name, &total, exp[t.dev.Name]))
	})
}

// erasePstore is erase_pstore: it empties the kernel's persistent store of
// crash logs (which may hold the previous tenant's data) if pstore is
// mounted.
func (s *stepSet) erasePstore(ctx context.Context, req steps.Request) (any, error) {
	f, err := os.Open(filepath.Join(s.Root, "proc/mounts"))
	if err != nil {
		return nil, fmt.Errorf("erase pstore: %w", err)
	}
	defer f.Close()
	mount := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 3 && fs[2] == "pstore" {
			mount = fs[1]
			break
		}
	}
	if mount == "" {
		s.log.Info("disk: no pstore mounted, nothing to erase")
		return nil, nil
	}
	dir := filepath.Join(s.Root, mount)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("erase pstore: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return nil, fmt.Errorf("erase pstore: %w", err)
		}
	}
	s.log.Info("disk: pstore erased", "path", mount, "entries", len(ents))
	return nil, nil
}
