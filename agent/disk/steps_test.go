package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/steps"
)

// node decodes a node dict the way the command API hands it to a step.
func node(t *testing.T, js string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// runStep runs a registered clean step as the clean extension does.
func runStep(ctx context.Context, t *testing.T, name string, n map[string]any) (any, error) {
	t.Helper()
	def, ok := steps.Lookup(steps.Clean, "deploy", name)
	if !ok || def.Run == nil {
		t.Fatalf("clean step deploy.%s is not registered", name)
	}
	return def.Run(ctx, steps.Request{Step: def.Step, Node: n})
}

// realisticNode is a node dict as Ironic sends it with execute_clean_step,
// with the conductor's erase settings; skip names a device to preserve.
func realisticNode(skip string, skipReadOnly bool) string {
	return fmt.Sprintf(`{
		"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
		"name": "node-0",
		"provision_state": "cleaning",
		"properties": {
			"cpus": 8, "memory_mb": 16384, "local_gb": 446, "cpu_arch": "x86_64",
			"root_device": {"size": ">= 400"},
			"skip_block_devices": [{"name": %q}, {"volume_name": "keep"}]
		},
		"instance_info": {},
		"driver_internal_info": {
			"agent_erase_devices_iterations": 1,
			"agent_erase_devices_zeroize": true,
			"agent_continue_if_secure_erase_failed": false,
			"agent_enable_ata_secure_erase": true,
			"agent_enable_nvme_secure_erase": true,
			"disk_erasure_concurrency": 4,
			"agent_erase_skip_read_only": %t,
			"clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata", "priority": 99}]
		}
	}`, skip, skipReadOnly)
}

func TestSteps(t *testing.T) {
	requireTool(t, "sfdisk", "fdisk")
	requireTool(t, "blkid", "util-linux")
	requireTool(t, "mkfs.ext4", "e2fsprogs")
	// Three disks: one to clean (partitioned, ext4), one in
	// skip_block_devices, one read-only; all full of random data.
	cleanFile := randomFile(t, 40*mib)
	clean := blockdevtest.Loop(t, cleanFile, true)
	partition(t, clean, "label: gpt\nsize=16MiB, type=L\n", 1)
	run(t, "mkfs.ext4", "-q", "-F", clean+"p1")
	keptFile := randomFile(t, 16*mib)
	kept := blockdevtest.Loop(t, keptFile, false)
	roFile := randomFile(t, 16*mib)
	ro := readOnlyLoop(t, roFile)
	keptData, _ := os.ReadFile(keptFile)
	roData, _ := os.ReadFile(roFile)
	unchanged := func() {
		t.Helper()
		for f, want := range map[string][]byte{keptFile: keptData, roFile: roData} {
			if got, _ := os.ReadFile(f); !bytes.Equal(got, want) {
				t.Fatalf("%s was modified", f)
			}
		}
	}

	RegisterSteps(Options{Devices: []string{clean, kept, ro}, Log: quiet})

	t.Run("advertised", func(t *testing.T) {
		want := map[string]protocol.Step{
			"erase_devices_metadata": {Step: "erase_devices_metadata", Interface: "deploy", Priority: 99, Abortable: true},
			"erase_devices":          {Step: "erase_devices", Interface: "deploy", Priority: 10, Abortable: true},
			"erase_devices_express":  {Step: "erase_devices_express", Interface: "deploy", Priority: 0, Abortable: true},
			"erase_pstore":           {Step: "erase_pstore", Interface: "deploy", Priority: 0, Abortable: true},
		}
		for _, s := range steps.List(steps.Clean) {
			if w, ok := want[s.Step]; ok {
				if !reflect.DeepEqual(s, w) {
					t.Errorf("clean step %+v, want %+v", s, w)
				}
				delete(want, s.Step)
			}
		}
		if len(want) > 0 {
			t.Errorf("not advertised: %v", want)
		}
		d, ok := steps.Lookup(steps.Deploy, "deploy", "erase_devices_metadata")
		if !ok || d.Run == nil || d.Priority != 0 {
			t.Errorf("deploy step erase_devices_metadata = %+v", d.Step)
		}
	})

	t.Run("erase_devices_metadata", func(t *testing.T) {
		res, err := runStep(context.Background(), t, "erase_devices_metadata", node(t, realisticNode(kept, false)))
		if err != nil {
			t.Fatal(err)
		}
		want := result{
			clean: "metadata erased",
			kept:  "skipped: matches properties.skip_block_devices",
			ro:    "skipped: read-only device",
		}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("result = %v, want %v", res, want)
		}
		if got := probe(t, clean, 0, 0); got != "" {
			t.Errorf("blkid -p %s = %s after the metadata erase", clean, got)
		}
		if got := probe(t, clean, mib, 16*mib); got != "" {
			t.Errorf("blkid -p on the old partition = %s", got)
		}
		unchanged()
	})

	t.Run("erase_devices refuses a read-only device", func(t *testing.T) {
		_, err := runStep(context.Background(), t, "erase_devices", node(t, realisticNode(kept, false)))
		if err == nil || !strings.Contains(err.Error(), ro) || !strings.Contains(err.Error(), "agent_erase_skip_read_only") {
			t.Fatalf("erase_devices = %v, want a read-only error naming %s", err, ro)
		}
		unchanged()
	})

	t.Run("erase_devices", func(t *testing.T) {
		ctx, tr := withTracker()
		res, err := runStep(ctx, t, "erase_devices", node(t, realisticNode(kept, true)))
		if err != nil {
			t.Fatal(err)
		}
		want := result{
			clean: "zeroed with BLKZEROOUT",
			kept:  "skipped: matches properties.skip_block_devices",
			ro:    "skipped: read-only device",
		}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("result = %v, want %v", res, want)
		}
		assertZero(t, cleanFile)
		unchanged()
		p := tr.Snapshot()
		if p.Phase != "erase" || p.Percent != 100 || p.BytesTotal != 40*mib {
			t.Errorf("step progress = %+v, want erase 100%% of %d", p, 40*mib)
		}
		if d := p.Devices[clean]; d == nil || d.Percent != 100 {
			t.Errorf("device progress = %+v", d)
		}
		if _, ok := p.Devices[kept]; ok {
			t.Error("progress reported for a skipped device")
		}
	})

	t.Run("erase_devices_express", func(t *testing.T) {
		res, err := runStep(context.Background(), t, "erase_devices_express", node(t, realisticNode(kept, false)))
		if err != nil {
			t.Fatal(err)
		}
		// Loop devices say they are rotational: metadata only.
		if got := res.(result)[clean]; got != "metadata erased" {
			t.Errorf("result[%s] = %q", clean, got)
		}
		unchanged()
	})

	t.Run("aborted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := runStep(ctx, t, "erase_devices", node(t, realisticNode(kept, true)))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("erase_devices after abort = %v, want context.Canceled", err)
		}
	})

	t.Run("bad skip list", func(t *testing.T) {
		n := node(t, `{"properties": {"skip_block_devices": [{"colour": "red"}]}}`)
		for _, s := range []string{"erase_devices_metadata", "erase_devices", "erase_devices_express"} {
			if _, err := runStep(context.Background(), t, s, n); err == nil || !strings.Contains(err.Error(), "colour") {
				t.Errorf("%s with an invalid skip list = %v", s, err)
			}
		}
		unchanged()
	})
}

// TestEraseDevicesParallel erases several disks at once, fed through the
// step's runner with a concurrency of 2, with progress per disk.
func TestEraseDevicesParallel(t *testing.T) {
	var devs, files []string
	for range 3 {
		f := randomFile(t, 16*mib)
		files = append(files, f)
		devs = append(devs, blockdevtest.Loop(t, f, false))
	}
	// An image file too: overwritten, not zeroed out.
	img := randomFile(t, 8*mib)
	files = append(files, img)
	devs = append(devs, img)
	s := &stepSet{Options: Options{Root: "/", Devices: devs}, log: quiet}
	ctx, tr := withTracker()
	res, err := s.eraseDevices(ctx, steps.Request{Node: node(t, `{"driver_internal_info": {"disk_erasure_concurrency": 2, "agent_erase_devices_iterations": 2}}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		assertZero(t, f)
	}
	r := res.(result)
	if r[img] != "overwritten with 2 random passes and zeroes" || r[devs[0]] != "zeroed with BLKZEROOUT" {
		t.Errorf("result = %v", r)
	}
	p := tr.Snapshot()
	if want := int64(3*16*mib + 3*8*mib); p.BytesTotal != want || p.BytesDone != want {
		t.Errorf("step progress %d/%d, want %d", p.BytesDone, p.BytesTotal, want)
	}
	for _, d := range devs {
		if p.Devices[d] == nil || p.Devices[d].Percent != 100 {
			t.Errorf("progress of %s = %+v", d, p.Devices[d])
		}
	}
}

// TestEraseDevicesFailFast checks that a disk that cannot be erased (here:
// mounted) fails the step at once, stopping the erasure of the others,
// and that the error names it.
func TestEraseDevicesFailFast(t *testing.T) {
	requireTool(t, "mkfs.ext4", "e2fsprogs")
	busy := blockdevtest.LoopFile(t, 16*mib, nil)
	run(t, "mkfs.ext4", "-q", "-F", busy)
	dir := t.TempDir()
	if out, err := exec.Command("mount", busy, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v: %s", err, out)
	}
	t.Cleanup(func() { run(t, "umount", dir) })
	big := blockdevtest.File(t, "big.img", 1<<30, nil) // overwritten: slow
	s := &stepSet{Options: Options{Root: "/", Devices: []string{busy, big}}, log: quiet}
	ctx, tr := withTracker()
	_, err := s.eraseDevices(ctx, steps.Request{Node: node(t, `{"driver_internal_info": {"agent_erase_devices_iterations": 3}}`)})
	if err == nil || !strings.Contains(err.Error(), "erase_devices failed on "+busy) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("erase_devices = %v, want a failure naming %s", err, busy)
	}
	if strings.Contains(err.Error(), big) {
		t.Errorf("the stopped device is reported as failed: %v", err)
	}
	if p := tr.Snapshot().Devices[big]; p != nil && p.BytesDone >= p.BytesTotal {
		t.Errorf("%s was erased in full (%d bytes) despite the failure", big, p.BytesDone)
	}
}

func TestNodeSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		info string
		want settings
		err  string
	}{
		{"defaults", `{}`, settings{iterations: 1, zeroize: true, concurrency: 4}, ""},
		{"conductor values", `{"agent_erase_devices_iterations": 3, "agent_erase_devices_zeroize": false, "agent_erase_skip_read_only": true, "disk_erasure_concurrency": 8}`,
			settings{iterations: 3, zeroize: false, skipReadOnly: true, concurrency: 8}, ""},
		{"strings", `{"agent_erase_devices_iterations": "0", "agent_erase_devices_zeroize": "True", "disk_erasure_concurrency": "2"}`,
			settings{iterations: 0, zeroize: true, concurrency: 2}, ""},
		{"nulls keep defaults", `{"agent_erase_devices_iterations": null, "agent_erase_devices_zeroize": null}`,
			settings{iterations: 1, zeroize: true, concurrency: 4}, ""},
		{"concurrency at least 1", `{"disk_erasure_concurrency": 0}`, settings{iterations: 1, zeroize: true, concurrency: 1}, ""},
		{"fraction", `{"agent_erase_devices_iterations": 1.5}`, settings{}, "agent_erase_devices_iterations is 1.5, not an integer"},
		{"negative", `{"agent_erase_devices_iterations": -1}`, settings{}, "must be 0 or more"},
		{"not a bool", `{"agent_erase_skip_read_only": "sometimes"}`, settings{}, "agent_erase_skip_read_only is sometimes, not a Boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nodeSettings(node(t, `{"driver_internal_info": `+tc.info+`}`))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("nodeSettings = %+v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("nodeSettings = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// sysTree builds a fake sysfs: each device is a directory under
// sys/devices/virtual/block linked from sys/block and sys/class/block, as
// the kernel lays it out.
func sysTree(t *testing.T, devs map[string]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, files := range devs {
		dir := filepath.Join(root, "sys/devices/virtual/block", name)
		for p, c := range files {
			full := filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if c == "<dir>" {
				if err := os.MkdirAll(full, 0o755); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(full, []byte(c+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for l, up := range map[string]string{"sys/block": "../", "sys/class/block": "../../"} {
			if err := os.MkdirAll(filepath.Join(root, l), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(up+"devices/virtual/block/"+name, filepath.Join(root, l, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestListAndTargets(t *testing.T) {
	disk := func(sectors string, extra map[string]string) map[string]string {
		m := map[string]string{"size": sectors, "queue/rotational": "0", "queue/logical_block_size": "512",
			"queue/physical_block_size": "4096", "ro": "0", "removable": "0"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	root := sysTree(t, map[string]map[string]string{
		"sda": disk("937703088", map[string]string{"device/model": "SAMSUNG MZ7LH480", "serial": "S45P"}),
		"sdb": disk("937703088", map[string]string{
			"sdb1/partition": "1", "sdb1/start": "2048", "sdb1/size": "937699000", "sdb1/holders/md0": "<dir>"}),
		"sdc":   disk("30031872", map[string]string{"removable": "1"}),
		"sdd":   disk("937703088", map[string]string{"ro": "1"}),
		"sde":   disk("937703088", map[string]string{"holders/dm-0": "<dir>"}),
		"md0":   disk("937435136", map[string]string{"md/level": "raid1"}),
		"md127": disk("0", map[string]string{"md/level": ""}), // an inactive container
		"loop0": disk("2048", nil),
		"zram0": disk("2048", nil),
	})
	devs, err := List(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
	}
	if want := "/dev/md0 /dev/sda /dev/sdb /dev/sdc /dev/sdd /dev/sde"; strings.Join(names, " ") != want {
		t.Fatalf("List = %v, want %s", names, want)
	}
	if md := devs[0]; md.Size != 937435136*512 || md.LogicalSectors != 512 || md.PhysicalSectors != 4096 {
		t.Errorf("md0 = %+v", md)
	}
	if devs[1].Model != "SAMSUNG MZ7LH480" {
		t.Errorf("sda from the inventory = %+v", devs[1])
	}

	s := &stepSet{Options: Options{Root: root}, log: quiet}
	ts, err := s.targets(context.Background(), node(t, `{"properties": {"skip_block_devices": [{"model": "<in> samsung"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, tg := range ts {
		got[tg.dev.Name] = tg.skip
		if tg.dev.Name == "/dev/sdd" && !tg.st.readOnly {
			t.Error("sdd is not seen read-only")
		}
		if tg.dev.Name == "/dev/sde" && !reflect.DeepEqual(tg.st.holders, []string{"dm-0"}) {
			t.Errorf("sde holders = %v", tg.st.holders)
		}
	}
	want := map[string]string{
		"/dev/md0": "",
		"/dev/sda": "skipped: matches properties.skip_block_devices",
		"/dev/sdb": "skipped: member of RAID array md0",
		"/dev/sdc": "skipped: removable device",
		"/dev/sdd": "", // read-only: each step decides
		"/dev/sde": "", // held by device-mapper: the exclusive open says so
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("targets = %v\nwant %v", got, want)
	}
}

func TestErasePstore(t *testing.T) {
	root := t.TempDir()
	store := filepath.Join(root, "sys/fs/pstore")
	for _, f := range []string{"dmesg-efi-170000000001", "console-ramoops-0"} {
		if err := os.MkdirAll(store, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(store, f), []byte("panic"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	mounts := "sysfs /sys sysfs rw 0 0\npstore /sys/fs/pstore pstore rw,nosuid,nodev,noexec,relatime 0 0\n"
	if err := os.WriteFile(filepath.Join(root, "proc/mounts"), []byte(mounts), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &stepSet{Options: Options{Root: root}, log: quiet}
	if _, err := s.erasePstore(context.Background(), steps.Request{}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(store); len(ents) != 0 {
		t.Errorf("pstore still holds %v", ents)
	}
	// Not mounted: nothing to do.
	if err := os.WriteFile(filepath.Join(root, "proc/mounts"), []byte("sysfs /sys sysfs rw 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.erasePstore(context.Background(), steps.Request{}); err != nil {
		t.Fatal(err)
	}
}
