package raid

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/rootdevice"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	// DefaultBootReserve is the room left at the start of every member
	// when a root volume exists: IPA's 551 MiB, enough for a 550 MiB ESP
	// (UEFI) or a BIOS boot partition plus /boot-less GRUB (BIOS).
	DefaultBootReserve = 551 * mib
	// minMaxSize is the least a "MAX" logical disk may get on a member.
	minMaxSize = 16 * mib
)

// Options tune Create, Delete and the steps.
type Options struct {
	// AssumeClean creates the arrays with --assume-clean: no initial
	// resync. Only sound when the members were just zeroed (erase_devices,
	// or devices that read zeroes after a discard): otherwise mirrors
	// differ and RAID-5/6 parity is wrong where nothing was written yet.
	AssumeClean bool
	// NamePrefix is put before every array name (tests use it to stay
	// apart from other arrays).
	NamePrefix string
	// BootReserve is the room left at the start of each member when a
	// root volume exists (DefaultBootReserve if 0; negative: none).
	BootReserve int64
	// Root is the filesystem root holding sys/ ("/" if empty).
	Root string
	// Devices, when set, replaces the listing of the machine's disks: the
	// steps and Delete consider exactly these block devices (tests use
	// loop devices, which the listing leaves out).
	Devices []string
	// Log receives the logs (slog.Default if nil).
	Log *slog.Logger
}

func (o Options) log() *slog.Logger {
	if o.Log == nil {
		return slog.Default()
	}
	return o.Log
}

func (o Options) root() string {
	if o.Root == "" {
		return "/"
	}
	return o.Root
}

// Result is what Create returns: Ironic's raid_config shape (stored by
// the conductor as node.raid_config), each logical disk as given plus
// what was built.
type Result struct {
	LogicalDisks []map[string]any `json:"logical_disks"`
}

// member is one partition of a logical disk on one disk.
type member struct {
	disk       protocol.BlockDevice
	number     int   // partition number
	start, end int64 // bytes, [start, end)
	part       string
}

// plan is the layout Create computes before touching any disk.
type plan struct {
	lds     []LogicalDisk
	names   []string   // array names
	members [][]member // by logical disk
	disks   []protocol.BlockDevice
}

// Create builds cfg on disks (the candidates; physical_disks selects among
// them): a GPT on every member disk with one Linux RAID partition per
// logical disk, then one md array per logical disk, started at once. The
// disks must be blank (no partition table): run Delete or
// erase_devices_metadata first. On failure, the arrays already created are
// stopped again.
func Create(ctx context.Context, cfg Config, disks []protocol.BlockDevice, o Options) (Result, error) {
	log := o.log()
	p, err := layout(cfg, disks, o)
	if err != nil {
		return Result{}, err
	}
	for _, d := range p.disks {
		if err := writeTable(ctx, d, p); err != nil {
			return Result{}, err
		}
	}
	for i := range p.members {
		for j := range p.members[i] {
			m := &p.members[i][j]
			if m.part, err = partitionNode(ctx, o.root(), m.disk.Name, m.number); err != nil {
				return Result{}, err
			}
		}
	}
	var created []disk.MDArray
	res := Result{}
	for i, ld := range p.lds {
		arr, err := createArray(ctx, o, ld, p.names[i], p.members[i])
		if err != nil {
			if stopErr := disk.StopMDArrays(context.WithoutCancel(ctx), created, log); stopErr != nil {
				log.Error("raid: rollback failed", "error", stopErr)
			}
			return Result{}, err
		}
		created = append(created, arr.MDArray)
		res.LogicalDisks = append(res.LogicalDisks, arr.result(ld))
		log.Info("raid: array created", "array", arr.link, "device", arr.Device, "level", ld.Level, "members", arr.Members, "size", arr.size)
	}
	return res, nil
}

// layout resolves the members of every logical disk and places the
// partitions.
func layout(cfg Config, disks []protocol.BlockDevice, o Options) (*plan, error) {
	if len(cfg.LogicalDisks) == 0 {
		return nil, fmt.Errorf("%w: no logical disks", ErrInvalid)
	}
	p := &plan{lds: cfg.LogicalDisks}
	reserve := mib
	for _, ld := range cfg.LogicalDisks {
		if ld.IsRootVolume {
			reserve = o.BootReserve
			if reserve == 0 {
				reserve = DefaultBootReserve
			}
			reserve = max(reserve, mib)
		}
	}
	cursor := map[string]int64{}
	count := map[string]int{}
	seenDisk := map[string]bool{}
	names := map[string]bool{}
	for i, ld := range cfg.LogicalDisks {
		name := ld.VolumeName
		if name == "" {
			name = "data" + strconv.Itoa(i)
			if ld.IsRootVolume {
				name = "root"
			}
		}
		name = o.NamePrefix + name
		if names[name] {
			return nil, fmt.Errorf("%w: two logical disks would be named %q", ErrInvalid, name)
		}
		names[name] = true
		p.names = append(p.names, name)
		devs, err := selectMembers(ld, disks)
		if err != nil {
			return nil, fmt.Errorf("logical_disks[%d] (%s): %w", i, name, err)
		}
		var ms []member
		for _, d := range devs {
			if !seenDisk[d.Name] {
				seenDisk[d.Name] = true
				p.disks = append(p.disks, d)
				cursor[d.Name] = reserve
			}
			ss := int64(max(d.LogicalSectors, 512))
			// The backup GPT takes the last 33 sectors (with 512-byte
			// sectors); stay 1 MiB clear, aligned.
			last := (d.Size - mib) / mib * mib
			start := (cursor[d.Name] + mib - 1) / mib * mib
			end := start + ld.SizeGB*gib
			if ld.Max {
				end = last
			}
			if end > last || end-start < minMaxSize {
				return nil, fmt.Errorf("logical_disks[%d] (%s): %s (%.1f GiB) has no room for %s at %d MiB",
					i, name, d.Name, float64(d.Size)/float64(gib), sizeText(ld), start/mib)
			}
			count[d.Name]++
			ms = append(ms, member{disk: d, number: count[d.Name], start: start / ss * ss, end: end / ss * ss})
			cursor[d.Name] = end
		}
		p.members = append(p.members, ms)
	}
	return p, nil
}

func sizeText(ld LogicalDisk) string {
	if ld.Max {
		return "its MAX partition"
	}
	return fmt.Sprintf("a %d GiB partition", ld.SizeGB)
}

// selectMembers picks the member disks of ld among disks.
func selectMembers(ld LogicalDisk, disks []protocol.BlockDevice) ([]protocol.BlockDevice, error) {
	var out []protocol.BlockDevice
	used := map[string]bool{}
	if len(ld.PhysicalDisks) == 0 {
		out = disks
		if n := ld.NumberOfPhysicalDisks; n > 0 {
			if n > len(disks) {
				return nil, fmt.Errorf("number_of_physical_disks is %d but the machine has %d disks", n, len(disks))
			}
			out = disks[:n]
		}
	}
	for j, pd := range ld.PhysicalDisks {
		var found *protocol.BlockDevice
		switch x := pd.(type) {
		case string:
			for k := range disks {
				if sameDevice(disks[k].Name, x) {
					found = &disks[k]
					break
				}
			}
			if found == nil {
				return nil, fmt.Errorf("physical_disks[%d]: no disk %s among %s", j, x, names(disks))
			}
			if used[found.Name] {
				return nil, fmt.Errorf("physical_disks[%d]: %s is listed twice", j, x)
			}
		case map[string]any:
			h, err := rootdevice.Parse(x)
			if err != nil {
				return nil, fmt.Errorf("physical_disks[%d]: %w", j, err)
			}
			for k := range disks {
				if !used[disks[k].Name] && h.Matches(disks[k]) {
					found = &disks[k]
					break
				}
			}
			if found == nil {
				return nil, fmt.Errorf("physical_disks[%d]: no disk left matches %s (disks: %s)", j, h, names(disks))
			}
		}
		used[found.Name] = true
		out = append(out, *found)
	}
	seen := map[string]bool{}
	for _, d := range out {
		if seen[d.Name] {
			return nil, fmt.Errorf("%s is listed twice", d.Name)
		}
		seen[d.Name] = true
	}
	if err := checkMembers(ld.Level, len(out)); err != nil {
		return nil, err
	}
	return out, nil
}

func sameDevice(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

func names(disks []protocol.BlockDevice) string {
	var n []string
	for _, d := range disks {
		n = append(n, d.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// writeTable writes the GPT of one member disk, after checking that the
// disk is not in use and has no partition table.
func writeTable(ctx context.Context, d protocol.BlockDevice, p *plan) error {
	dev, err := blockdev.Open(d.Name, blockdev.Options{})
	if err != nil {
		return fmt.Errorf("member disk %s: %w", d.Name, err)
	}
	defer dev.Close()
	if what := existingTable(dev); what != "" {
		return fmt.Errorf("member disk %s already has %s: run raid.delete_configuration or erase_devices_metadata first", d.Name, what)
	}
	lbs := int64(dev.LogicalSectorSize())
	tbl := &gpt.Table{LogicalSectorSize: int(lbs), PhysicalSectorSize: max(d.PhysicalSectors, int(lbs))}
	for i := range p.members {
		for _, m := range p.members[i] {
			if m.disk.Name != d.Name {
				continue
			}
			tbl.Partitions = append(tbl.Partitions, &gpt.Partition{
				Index: m.number,
				Start: uint64(m.start / lbs),
				End:   uint64(m.end/lbs - 1),
				Size:  uint64(m.end - m.start),
				Type:  gpt.LinuxRAID,
				Name:  p.names[i],
			})
		}
	}
	if err := writeProtectiveMBR(dev); err != nil {
		return err
	}
	if err := disk.WriteGPT(dev, tbl); err != nil {
		return err
	}
	if err := dev.Flush(); err != nil {
		return err
	}
	if err := dev.RereadPartitions(ctx); err != nil {
		return err
	}
	return announce(dev, tbl)
}

// existingTable says what partition table dev has, "" for none.
func existingTable(dev *blockdev.Device) string {
	b := make([]byte, 2*dev.LogicalSectorSize())
	if _, err := dev.ReadAt(b, 0); err != nil {
		return ""
	}
	if string(b[dev.LogicalSectorSize():][:8]) == "EFI PART" {
		return "a GPT"
	}
	if b[510] == 0x55 && b[511] == 0xaa {
		for i := 0; i < 4; i++ {
			if b[446+16*i+4] != 0 {
				return "an MBR partition table"
			}
		}
	}
	return ""
}

// writeProtectiveMBR writes the MBR of a GPT disk: one 0xEE entry from LBA
// 1 over the disk (capped at 2^32-1 sectors).
func writeProtectiveMBR(dev *blockdev.Device) error {
	s0 := make([]byte, 512)
	e := s0[446:]
	copy(e, []byte{0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff})
	binary.LittleEndian.PutUint32(e[8:], 1)
	sectors := dev.Size() / int64(dev.LogicalSectorSize())
	binary.LittleEndian.PutUint32(e[12:], uint32(min(sectors-1, 0xffffffff)))
	s0[510], s0[511] = 0x55, 0xaa
	if _, err := dev.WriteAt(s0, 0); err != nil {
		return fmt.Errorf("write the protective MBR of %s: %w", dev.Path(), err)
	}
	return nil
}

// announce adds the partitions the kernel did not find when re-reading the
// table with BLKPG (kernels without partition table parsers find none),
// as partprobe does.
func announce(dev *blockdev.Device, tbl *gpt.Table) error {
	if !dev.IsBlockDevice() {
		return nil
	}
	known, err := kernelPartitions(dev)
	if err != nil {
		return err
	}
	lbs := int64(tbl.LogicalSectorSize)
	for _, q := range tbl.Partitions {
		if known[q.Index] {
			continue
		}
		bp := unix.BlkpgPartition{Start: int64(q.Start) * lbs, Length: int64(q.End-q.Start+1) * lbs, Pno: int32(q.Index)}
		arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_ADD_PARTITION, Datalen: int32(unsafe.Sizeof(bp)), Data: (*byte)(unsafe.Pointer(&bp))}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, dev.File().Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
			return fmt.Errorf("add partition %d to the kernel's view of %s (BLKPG): %w", q.Index, dev.Path(), errno)
		}
	}
	return nil
}

// kernelPartitions lists the partition numbers the kernel has for dev.
func kernelPartitions(dev *blockdev.Device) (map[int]bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dev.File().Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev.Path(), err)
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", dev.Path(), err)
	}
	known := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			known[n] = true
		}
	}
	return known, nil
}

// partitionNode finds the device node of partition n of disk through sysfs
// and waits for devtmpfs to create it.
func partitionNode(ctx context.Context, sysRoot, diskPath string, n int) (string, error) {
	name := sysName(diskPath)
	dir := filepath.Join(sysRoot, "sys/class/block", name)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
			if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(n) {
				continue
			}
			node := "/dev/" + e.Name()
			if _, err := os.Stat(node); err == nil {
				return node, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("partition %d of %s did not appear", n, diskPath)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sysName(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	return filepath.Base(path)
}

// array is a created md array.
type array struct {
	disk.MDArray
	link     string // /dev/md/<name>
	name     string
	metadata string
	size     int64
}

func (a array) result(ld LogicalDisk) map[string]any {
	r := maps.Clone(ld.Raw)
	if r == nil {
		r = map[string]any{}
	}
	r["controller"] = "software"
	r["raid_level"] = ld.Level
	r["volume_name"] = a.name
	r["name"] = a.Device
	r["device_link"] = a.link
	r["metadata"] = a.metadata
	r["size_bytes"] = a.size
	r["size_gb"] = a.size / gib
	if !ld.Max {
		r["size_gb"] = ld.SizeGB
	}
	r["physical_disks"] = a.Disks
	r["members"] = a.Members
	return r
}

// createArray runs mdadm --create for one logical disk.
func createArray(ctx context.Context, o Options, ld LogicalDisk, name string, ms []member) (array, error) {
	a := array{name: name, link: "/dev/md/" + name, metadata: "1.2"}
	if ld.IsRootVolume {
		// Superblock at the end: every member reads as a plain
		// filesystem (or ESP) to firmware and boot loaders.
		a.metadata = "1.0"
	}
	args := []string{"--create", a.link, "--run", "--force", "--homehost=any", "--name=" + name,
		"--level=" + ld.MDLevel(), "--raid-devices=" + strconv.Itoa(len(ms)), "--metadata=" + a.metadata}
	if ld.Level == "0" || ld.Level == "1+0" || ld.Level == "5" || ld.Level == "6" {
		args = append(args, "--chunk=512")
	}
	if o.AssumeClean {
		args = append(args, "--assume-clean")
	}
	for _, m := range ms {
		args = append(args, m.part)
		a.Members = append(a.Members, m.part)
		if !slices.Contains(a.Disks, m.disk.Name) {
			a.Disks = append(a.Disks, m.disk.Name)
		}
	}
	out, err := exec.CommandContext(ctx, "mdadm", args...).CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return a, fmt.Errorf("create RAID-%s %s: mdadm is not installed", ld.Level, name)
		}
		return a, fmt.Errorf("create RAID-%s %s: mdadm %s: %w: %s", ld.Level, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	dev, err := findArray(o.root(), ms[0].part)
	if err != nil {
		return a, err
	}
	a.Device = dev
	if b, err := os.ReadFile(filepath.Join(o.root(), "sys/block", filepath.Base(dev), "size")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		a.size = n * 512
	}
	return a, nil
}

// findArray returns the md device holding the member partition.
func findArray(sysRoot, part string) (string, error) {
	hs, err := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", sysName(part), "holders"))
	if err != nil {
		return "", fmt.Errorf("find the array of %s: %w", part, err)
	}
	for _, h := range hs {
		if strings.HasPrefix(h.Name(), "md") {
			return "/dev/" + h.Name(), nil
		}
	}
	return "", fmt.Errorf("mdadm created no array on %s", part)
}
