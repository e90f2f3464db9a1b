package standby_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/checksum"
	agentcd "github.com/ironlite/ironlite/agent/configdrive"
	"github.com/ironlite/ironlite/agent/imagewrite/extraparts"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/standby"
	"github.com/ironlite/ironlite/images/configdrive"
)

const extraDisk = 256 << 20

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// rawImage makes a 32 MiB whole-disk image partitioned by the sfdisk
// script, its partitions filled with a pattern, and returns its path and
// sha256.
func rawImage(t *testing.T, script string) (string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	b := bytes.Repeat([]byte("image "), imgSize/6+1)[:imgSize]
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	b, _ = os.ReadFile(p)
	s := sha256.Sum256(b)
	return p, hex.EncodeToString(s[:])
}

func isoBytes(t *testing.T) []byte {
	t.Helper()
	s, err := configdrive.Build(map[string]any{"meta_data": map[string]any{"hostname": "bm01"}}, configdrive.NodeInfo{UUID: "u-1", Name: "bm01"})
	if err != nil {
		t.Fatal(err)
	}
	iso, err := agentcd.Decode(context.Background(), s, agentcd.HTTPFetcher(nil))
	if err != nil {
		t.Fatal(err)
	}
	return iso
}

func writeImage(t *testing.T, dev, img, sum string, extra extraparts.Spec, iso []byte) (*standby.Outcome, error) {
	t.Helper()
	exp, err := checksum.Parse(context.Background(), "sha256:"+sum, img, checksum.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return standby.WriteImage(context.Background(), standby.Request{
		URLs: []string{img}, Checksum: &exp, Device: dev, Extra: extra, ConfigDrive: iso,
		EraseMetadata: true, RequirePartitions: true,
	})
}

func diskHash(t *testing.T, dev string) string {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func cmdOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func blkidTag(t *testing.T, dev, tag string) string {
	t.Helper()
	out, _ := exec.Command("blkid", "-c", "/dev/null", "-p", "-o", "value", "-s", tag, dev).Output()
	return strings.TrimSpace(string(out))
}

// sfdiskLine finds the line of `sfdisk -d` for partition n.
func sfdiskLine(dump, dev string, n int) string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(dev) + `p?` + regexp.QuoteMeta(string(rune('0'+n))) + ` : .*$`)
	return re.FindString(dump)
}

// checkPartition checks one added partition on disk against what the
// write reported.
func checkPartition(t *testing.T, dev, table string, p *extraparts.Partition, fstype, label string) {
	t.Helper()
	if p == nil {
		t.Fatalf("%s partition not reported", label)
	}
	if p.Device != dev+"p"+string(rune('0'+p.Number)) {
		t.Errorf("%s: device %s, partition %d", label, p.Device, p.Number)
	}
	for tag, want := range map[string]string{"TYPE": fstype, "LABEL": label, "UUID": p.FilesystemUUID, "PART_ENTRY_UUID": p.PartitionUUID} {
		if got := blkidTag(t, p.Device, tag); got != want {
			t.Errorf("%s: blkid %s = %q, want %q", p.Device, tag, got, want)
		}
	}
	if table == "gpt" {
		if got := blkidTag(t, p.Device, "PART_ENTRY_NAME"); got != label {
			t.Errorf("%s: GPT name %q, want %q", p.Device, got, label)
		}
	}
	if p.StartBytes%(1<<20) != 0 {
		t.Errorf("%s starts at %d, not 1 MiB aligned", p.Device, p.StartBytes)
	}
	switch fstype {
	case "ext4":
		cmdOut(t, "e2fsck", "-f", "-n", p.Device)
	case "xfs":
		if _, err := exec.LookPath("xfs_repair"); err == nil {
			cmdOut(t, "xfs_repair", "-n", p.Device)
		}
	case "vfat":
		cmdOut(t, "fsck.fat", "-n", p.Device)
	}
}

func TestExtraPartitions(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "blkid", "mke2fs", "mkswap", "e2fsck")
	const (
		gpt1 = "label: gpt\nstart=2048, size=20480, type=linux\n"
		mbr1 = "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=20480, type=83\n"
		mbr2 = "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=20480, type=83\nstart=22528, size=20480, type=83\n"
		mbr3 = "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=10240, type=83\nstart=12288, size=10240, type=83\nstart=22528, size=10240, type=83\n"
	)
	for _, tc := range []struct {
		name       string
		disk       int64 // default extraDisk
		script     string
		extra      extraparts.Spec
		configDrv  bool
		tools      []string
		err        string // refused, with the disk left as it was
		swapNum    int
		ephNum     int
		configNum  int
		ephMBRType string
	}{
		{name: "gpt swap+ext4+configdrive", script: gpt1, extra: extraparts.Spec{SwapMB: 16, EphemeralMB: 64}, configDrv: true, swapNum: 2, ephNum: 3, configNum: 4},
		{name: "gpt xfs only", script: gpt1, extra: extraparts.Spec{EphemeralMB: 320, EphemeralFormat: "xfs"}, disk: 512 << 20, tools: []string{"mkfs.xfs"}, ephNum: 2}, // mkfs.xfs 6.x wants 300 MiB
		{name: "gpt swap+vfat", script: gpt1, extra: extraparts.Spec{SwapMB: 8, EphemeralMB: 32, EphemeralFormat: "vfat"}, tools: []string{"mkfs.fat", "fsck.fat"}, swapNum: 2, ephNum: 3},
		{name: "gpt swap only", script: gpt1, extra: extraparts.Spec{SwapMB: 32}, configDrv: true, swapNum: 2, configNum: 3},
		{name: "mbr swap+ext4+configdrive", script: mbr1, extra: extraparts.Spec{SwapMB: 16, EphemeralMB: 64}, configDrv: true, swapNum: 2, ephNum: 3, configNum: 4},
		{name: "mbr three used, swap in the fourth", script: mbr3, extra: extraparts.Spec{SwapMB: 16}, swapNum: 4},
		{name: "mbr full for the config drive", script: mbr2, extra: extraparts.Spec{SwapMB: 16, EphemeralMB: 64}, configDrv: true,
			err: "the image's MBR has 2 of its 4 primary partitions in use (partition 1, sectors 2048-22527; partition 2, sectors 22528-43007) and swap and ephemeral need one each (logical partitions are not created); the config drive would need one more"},
		{name: "mbr full", script: mbr3, extra: extraparts.Spec{SwapMB: 16, EphemeralMB: 16},
			err: "the image's MBR has 3 of its 4 primary partitions in use"},
		{name: "gpt too little space", script: gpt1, extra: extraparts.Spec{SwapMB: 64, EphemeralMB: 128}, configDrv: true,
			err: "not enough free space after the image: the ephemeral partition needs 128 MiB from sector 196608 on, but only 95 MiB are free there before the last 64 MiB of the disk, which are kept for the config drive (disk 256 MiB, requested swap 64 MiB + ephemeral 128 MiB)"},
		{name: "mbr too little space", script: mbr1, extra: extraparts.Spec{EphemeralMB: 200},
			err: "not enough free space after the image: the ephemeral partition needs 200 MiB"},
		{name: "bad format", script: gpt1, extra: extraparts.Spec{EphemeralMB: 10, EphemeralFormat: "btrfs"},
			err: `ephemeral_format "btrfs" is not supported (one of ext4, xfs, vfat)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needTools(t, tc.tools...)
			img, sum := rawImage(t, tc.script)
			size := tc.disk
			if size == 0 {
				size = extraDisk
			}
			dev := blockdevtest.Loop(t, blockdevtest.File(t, "disk.img", size, bytes.Repeat([]byte{0x5a}, 1<<20)), true)
			var iso []byte
			if tc.configDrv {
				iso = isoBytes(t)
			}
			before := ""
			if tc.err != "" {
				before = diskHash(t, dev)
			}
			out, err := writeImage(t, dev, img, sum, tc.extra, iso)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				if diskHash(t, dev) != before {
					t.Error("the refused write changed the disk")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			table := "gpt"
			if strings.Contains(tc.script, "dos") {
				table = "dos"
			}
			dump := cmdOut(t, "sfdisk", "-d", dev)
			if table == "gpt" {
				if v := cmdOut(t, "sgdisk", "-v", dev); !strings.Contains(v, "No problems found") {
					t.Errorf("sgdisk -v:\n%s", v)
				}
				p := cmdOut(t, "sgdisk", "-p", dev)
				for _, name := range []string{"swap1", "ephemeral0"} {
					if want := (name == "swap1" && tc.swapNum > 0) || (name == "ephemeral0" && tc.ephNum > 0); strings.Contains(p, name) != want {
						t.Errorf("sgdisk -p shows %s: %v, want %v\n%s", name, !want, want, p)
					}
				}
			}
			x := out.Extra
			if x == nil {
				t.Fatal("no extra partitions reported")
			}
			if tc.swapNum > 0 {
				checkPartition(t, dev, table, x.Swap, "swap", "swap1")
				if x.Swap.Number != tc.swapNum || x.Swap.SizeBytes != tc.extra.SwapMB<<20 {
					t.Errorf("swap %+v, want partition %d of %d MiB", x.Swap, tc.swapNum, tc.extra.SwapMB)
				}
				line := sfdiskLine(dump, dev, tc.swapNum)
				if want := map[string]string{"gpt": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "dos": "type=82"}[table]; !strings.Contains(line, want) {
					t.Errorf("swap partition line %q lacks %s", line, want)
				}
			} else if x.Swap != nil {
				t.Errorf("swap %+v not asked for", x.Swap)
			}
			if tc.ephNum > 0 {
				f := tc.extra.EphemeralFormat
				if f == "" {
					f = "ext4"
				}
				checkPartition(t, dev, table, x.Ephemeral, f, "ephemeral0")
				if x.Ephemeral.Number != tc.ephNum || x.Ephemeral.SizeBytes != tc.extra.EphemeralMB<<20 {
					t.Errorf("ephemeral %+v, want partition %d of %d MiB", x.Ephemeral, tc.ephNum, tc.extra.EphemeralMB)
				}
				line := sfdiskLine(dump, dev, tc.ephNum)
				if want := map[string]string{"gpt": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "dos": "type=83"}[table]; !strings.Contains(line, want) {
					t.Errorf("ephemeral partition line %q lacks %s", line, want)
				}
				if x.Swap != nil && x.Ephemeral.StartBytes < x.Swap.StartBytes+x.Swap.SizeBytes {
					t.Errorf("ephemeral %+v does not follow swap %+v", x.Ephemeral, x.Swap)
				}
			}
			if tc.configNum > 0 {
				if out.ConfigDrive == nil || out.ConfigDrive.Partition != tc.configNum || !out.ConfigDrive.Created {
					t.Errorf("config drive %+v, want a new partition %d", out.ConfigDrive, tc.configNum)
				}
				node := dev + "p" + string(rune('0'+tc.configNum))
				if got := blkidTag(t, node, "LABEL"); got != "config-2" {
					t.Errorf("%s label %q", node, got)
				}
			}
			// The image's own partition is untouched.
			if line := sfdiskLine(dump, dev, 1); !strings.Contains(line, "start=        2048") {
				t.Errorf("partition 1: %q", line)
			}
		})
	}
}

// TestPreserveEphemeral deploys with swap and ephemeral, then rebuilds
// with preserve_ephemeral: the ephemeral partition keeps its sectors,
// partition UUID, filesystem and contents; the swap is made anew.
func TestPreserveEphemeral(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk", "blkid", "mke2fs", "mkswap", "e2fsck", "debugfs")
	for _, script := range []string{
		"label: gpt\nstart=2048, size=20480, type=linux\n",
		"label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=20480, type=83\n",
	} {
		t.Run(strings.Fields(script)[1], func(t *testing.T) {
			img, sum := rawImage(t, script)
			dev := blockdevtest.Loop(t, blockdevtest.File(t, "disk.img", extraDisk, bytes.Repeat([]byte{0x5a}, 1<<20)), true)
			spec := extraparts.Spec{SwapMB: 16, EphemeralMB: 64}
			first, err := writeImage(t, dev, img, sum, spec, isoBytes(t))
			if err != nil {
				t.Fatal(err)
			}
			eph := first.Extra.Ephemeral
			// The instance writes something to its ephemeral disk.
			data := filepath.Join(t.TempDir(), "data")
			if err := os.WriteFile(data, []byte("instance data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmdOut(t, "debugfs", "-w", "-R", "write "+data+" data", eph.Device)

			// Rebuild, keeping it.
			spec.PreserveEphemeral = true
			second, err := writeImage(t, dev, img, sum, spec, isoBytes(t))
			if err != nil {
				t.Fatal(err)
			}
			kept := second.Extra.Ephemeral
			if !kept.Preserved || kept.StartBytes != eph.StartBytes || kept.SizeBytes != eph.SizeBytes ||
				kept.FilesystemUUID != eph.FilesystemUUID || kept.PartitionUUID != eph.PartitionUUID {
				t.Errorf("after rebuild ephemeral %+v, before %+v", kept, eph)
			}
			if second.Extra.Swap == nil || second.Extra.Swap.FilesystemUUID == first.Extra.Swap.FilesystemUUID {
				t.Errorf("swap not made anew: %+v", second.Extra.Swap)
			}
			if got := cmdOut(t, "debugfs", "-R", "cat data", kept.Device); !strings.Contains(got, "instance data") {
				t.Errorf("ephemeral data after rebuild: %q", got)
			}
			cmdOut(t, "e2fsck", "-f", "-n", kept.Device)
			if blkidTag(t, kept.Device, "LABEL") != "ephemeral0" {
				t.Error("ephemeral label lost")
			}
			if strings.Contains(script, "gpt") {
				if v := cmdOut(t, "sgdisk", "-v", dev); !strings.Contains(v, "No problems found") {
					t.Errorf("sgdisk -v:\n%s", v)
				}
			}
			if second.ConfigDrive == nil || blkidTag(t, dev+"p4", "LABEL") != "config-2" {
				t.Errorf("config drive after rebuild: %+v", second.ConfigDrive)
			}
		})
	}
}

func TestPreserveEphemeralRefused(t *testing.T) {
	needTools(t, "sfdisk", "blkid", "mke2fs", "mkswap")
	gpt := "label: gpt\nstart=2048, size=20480, type=linux\n"
	for _, tc := range []struct {
		name  string
		first *extraparts.Spec // deployed before, nil for a fresh disk
		err   string
		is    error
	}{
		{name: "nothing to keep on a fresh disk", err: "no partition table", is: extraparts.ErrNoEphemeral},
		{name: "nothing to keep after a deploy without one", first: &extraparts.Spec{SwapMB: 16},
			err: `no partition on`, is: extraparts.ErrNoEphemeral},
		{name: "the new image reaches into it", first: &extraparts.Spec{EphemeralMB: 64},
			err: "may be written: what follows is kept"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, sum := rawImage(t, gpt)
			dev := blockdevtest.Loop(t, blockdevtest.File(t, "disk.img", extraDisk, nil), true)
			if tc.first != nil {
				if _, err := writeImage(t, dev, img, sum, *tc.first, nil); err != nil {
					t.Fatal(err)
				}
			}
			next, nextSum := img, sum
			if tc.is == nil {
				// A 48 MiB image: past the ephemeral partition at 33 MiB.
				next = filepath.Join(t.TempDir(), "big.raw")
				b := make([]byte, 48<<20)
				copy(b, must(os.ReadFile(img)))
				if err := os.WriteFile(next, b, 0o644); err != nil {
					t.Fatal(err)
				}
				s := sha256.Sum256(b)
				nextSum = hex.EncodeToString(s[:])
			}
			before := diskHash(t, dev)
			_, err := writeImage(t, dev, next, nextSum, extraparts.Spec{EphemeralMB: 64, PreserveEphemeral: true}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.err) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
			if diskHash(t, dev) != before {
				t.Error("the refused write changed the disk")
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPrepareImageExtraPartitions goes through the command API: image_info
// keys in, get_partition_uuids out.
func TestPrepareImageExtraPartitions(t *testing.T) {
	needTools(t, "sfdisk", "blkid", "mke2fs", "mkswap")
	img, sum := rawImage(t, "label: gpt\nstart=2048, size=20480, type=linux\n")
	const disk = 5 << 30 // over IPA's 4 GiB minimum for a root disk
	dev := blockdevtest.Loop(t, blockdevtest.File(t, "disk.img", disk, nil), true)
	s := commands(t, dev, disk, map[string]any{"properties": map[string]any{}})
	info := map[string]any{
		"id": "disk.raw", "urls": []any{img}, "os_hash_algo": "sha256", "os_hash_value": sum,
		"swap_mb": float64(32), "ephemeral_mb": "512", "ephemeral_format": "ext4", "preserve_ephemeral": "False",
	}
	res := run(t, s, "standby.prepare_image", map[string]any{"image_info": info})
	if res.CommandStatus != protocol.StatusSucceeded {
		t.Fatalf("prepare_image: %s %+v", res.CommandStatus, res.CommandError)
	}
	res = run(t, s, "standby.get_partition_uuids", map[string]any{})
	r := res.CommandResult.(map[string]any)
	if r["root uuid"] == nil {
		t.Errorf("IPA's root uuid missing: %+v", r)
	}
	parts, _ := r["partitions"].(map[string]any)
	for role, want := range map[string]struct {
		fstype, label string
		num           int
	}{"swap": {"swap", "swap1", 2}, "ephemeral": {"ext4", "ephemeral0", 3}} {
		p, _ := parts[role].(map[string]any)
		if p == nil {
			t.Fatalf("get_partition_uuids has no %s: %+v", role, r)
		}
		node := dev + "p" + string(rune('0'+want.num))
		if p["device"] != node || p["partition_uuid"] != blkidTag(t, node, "PART_ENTRY_UUID") ||
			p["filesystem_uuid"] != blkidTag(t, node, "UUID") || blkidTag(t, node, "TYPE") != want.fstype || blkidTag(t, node, "LABEL") != want.label {
			t.Errorf("%s: %+v; blkid of %s: %s", role, p, node, cmdOut(t, "blkid", "-p", node))
		}
	}

	// Malformed keys are refused before anything runs.
	for key, bad := range map[string]any{"ephemeral_format": "btrfs", "swap_mb": float64(-1), "ephemeral_mb": "lots", "preserve_ephemeral": "maybe"} {
		info := map[string]any{"id": "disk.raw", "urls": []any{img}, "os_hash_algo": "sha256", "os_hash_value": sum, "ephemeral_mb": float64(10), key: bad}
		if _, err := s.Run("standby.prepare_image", map[string]any{"image_info": info}, true); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%v: error %v", key, bad, err)
		}
	}
}
