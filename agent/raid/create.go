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
	"github.com/ironlite/ironlite/agent/filesystem"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/rootdevice"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	// DefaultBootReserve is the room left at the start of every disk
	// carrying a root volume built on partitions: IPA's 551 MiB, enough
	// for a 550 MiB ESP.
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
	// BootReserve is the room left at the start of each disk carrying a
	// root volume built on partitions, for the ESP PrepareRootMembers
	// copies there (DefaultBootReserve if 0; negative: 1 MiB, the least).
	BootReserve int64
	// Root is the filesystem root holding sys/ ("/" if empty).
	Root string
	// Devices, when set, replaces the listing of the machine's disks: the
	// steps and Delete consider exactly these block devices (tests use
	// loop devices, which the listing leaves out).
	Devices []string
	// ResyncSpeedLimitKB, if positive, caps the initial resync (and any
	// later resync or rebuild until the array stops) of every array with
	// redundancy at that many KiB/s per array: it is written to
	// /sys/block/mdX/md/sync_speed_max as soon as the array exists, so that
	// the resync does not eat the disks' bandwidth while the image is
	// written. 0 keeps the kernel's limit (/proc/sys/dev/raid/
	// speed_limit_max, 200000 by default). Moot with AssumeClean.
	ResyncSpeedLimitKB int
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

// member is one member of a logical disk: a partition of a disk, or the
// whole disk (number 0).
type member struct {
	disk       protocol.BlockDevice
	number     int   // partition number; 0 for the whole disk
	start, end int64 // bytes, [start, end)
	part       string
}

// plan is the layout Create computes before touching any disk.
type plan struct {
	lds     []LogicalDisk
	names   []string   // array names
	members [][]member // by logical disk
	disks   []protocol.BlockDevice
	// partitioned are the disks that get a GPT (all but the members of a
	// whole-disk root mirror).
	partitioned map[string]bool
}

// wholeDisk reports whether logical disk i is built on whole disks.
func (p *plan) wholeDisk(i int) bool {
	return len(p.members[i]) > 0 && p.members[i][0].number == 0
}

// Create builds cfg on disks (the candidates; physical_disks selects among
// them) and starts the arrays at once.
//
// Layout: a root volume whose member disks carry no other logical disk is
// a RAID-1 over the whole disks with metadata 1.0 (superblock at the
// end): each member disk then reads, from sector 0, exactly what is
// written to the array — the whole-disk image's partition table, boot
// code and partitions — and boots on its own, BIOS or UEFI. Every other
// member disk gets a GPT with one Linux RAID partition per logical disk
// it takes part in; when it carries the root volume, BootReserve is left
// free at its start for the ESP that PrepareRootMembers copies there
// after the image is written.
//
// The disks must be blank (no partition table): run Delete or
// erase_devices_metadata first. Data volumes with a filesystem are
// formatted. On failure, the arrays already created are stopped again.
func Create(ctx context.Context, cfg Config, disks []protocol.BlockDevice, o Options) (Result, error) {
	log := o.log()
	p, err := layout(cfg, disks, o)
	if err != nil {
		return Result{}, err
	}
	for _, d := range p.disks {
		if p.partitioned[d.Name] {
			err = writeTable(ctx, d, p)
		} else {
			err = checkBlank(d)
		}
		if err != nil {
			return Result{}, err
		}
	}
	for i := range p.members {
		for j := range p.members[i] {
			m := &p.members[i][j]
			if m.number == 0 {
				m.part = m.disk.Name
				continue
			}
			if m.part, err = partitionNode(ctx, o.root(), m.disk.Name, m.number); err != nil {
				return Result{}, err
			}
		}
	}
	removeStaleLinks(o.root()) // mdadm would not reuse their names
	var created []disk.MDArray
	rollback := func() {
		if stopErr := disk.StopMDArrays(context.WithoutCancel(ctx), created, log); stopErr != nil {
			log.Error("raid: rollback failed", "error", stopErr)
		}
	}
	res := Result{}
	for i, ld := range p.lds {
		arr, err := createArray(ctx, o, ld, p.names[i], p.members[i], p.wholeDisk(i))
		if arr.Device != "" {
			created = append(created, arr.MDArray)
		}
		if err == nil {
			err = arr.finish(ctx, o, ld)
		}
		if err != nil {
			rollback()
			return Result{}, err
		}
		res.LogicalDisks = append(res.LogicalDisks, arr.result(ld))
		log.Info("raid: array created", "array", arr.link, "device", arr.Device, "level", ld.Level,
			"members", arr.Members, "whole_disks", arr.wholeDisk, "size", arr.size, "filesystem", ld.Filesystem)
	}
	return res, nil
}

// layout resolves the members of every logical disk and places the
// partitions.
func layout(cfg Config, disks []protocol.BlockDevice, o Options) (*plan, error) {
	if len(cfg.LogicalDisks) == 0 {
		return nil, fmt.Errorf("%w: no logical disks", ErrInvalid)
	}
	p := &plan{lds: cfg.LogicalDisks, partitioned: map[string]bool{}}
	reserve := o.BootReserve
	if reserve == 0 {
		reserve = DefaultBootReserve
	}
	reserve = max(reserve, mib)
	// Members first: whether the root mirror takes whole disks depends on
	// what the other logical disks use.
	selected := make([][]protocol.BlockDevice, len(cfg.LogicalDisks))
	uses := map[string]int{}
	root := -1
	names := map[string]bool{}
	for i, ld := range cfg.LogicalDisks {
		name := ld.VolumeName
		if name == "" {
			name = "data" + strconv.Itoa(i)
			if ld.IsRootVolume {
				name = rootdevice.DefaultRAIDRootName
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
		selected[i] = devs
		for _, d := range devs {
			uses[d.Name]++
		}
		if ld.IsRootVolume {
			root = i
		}
	}
	wholeRoot := root >= 0
	bootDisks := map[string]bool{}
	if root >= 0 {
		for _, d := range selected[root] {
			wholeRoot = wholeRoot && uses[d.Name] == 1
			bootDisks[d.Name] = true
		}
	}
	cursor := map[string]int64{}
	count := map[string]int{}
	seenDisk := map[string]bool{}
	for i, ld := range cfg.LogicalDisks {
		name := p.names[i]
		var ms []member
		for _, d := range selected[i] {
			if !seenDisk[d.Name] {
				seenDisk[d.Name] = true
				p.disks = append(p.disks, d)
				cursor[d.Name] = mib
				if bootDisks[d.Name] {
					cursor[d.Name] = reserve
				}
			}
			if i == root && wholeRoot {
				// The superblock (and a bitmap) take the end of the disk;
				// 1 MiB is more than mdadm reserves there.
				if !ld.Max && ld.SizeGB*gib+mib > d.Size {
					return nil, fmt.Errorf("logical_disks[%d] (%s): %s (%.1f GiB) has no room for a %d GiB mirror and its md superblock",
						i, name, d.Name, float64(d.Size)/float64(gib), ld.SizeGB)
				}
				ms = append(ms, member{disk: d, start: 0, end: d.Size})
				continue
			}
			p.partitioned[d.Name] = true
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
	dev, err := openBlank(d)
	if err != nil {
		return err
	}
	defer dev.Close()
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

// openBlank opens a member disk exclusively (it must not be in use) and
// checks that it has no partition table.
func openBlank(d protocol.BlockDevice) (*blockdev.Device, error) {
	dev, err := blockdev.Open(d.Name, blockdev.Options{})
	if err != nil {
		return nil, fmt.Errorf("member disk %s: %w", d.Name, err)
	}
	if what := existingTable(dev); what != "" {
		dev.Close()
		return nil, fmt.Errorf("member disk %s already has %s: run raid.delete_configuration or erase_devices_metadata first", d.Name, what)
	}
	return dev, nil
}

// checkBlank checks a whole-disk member as writeTable checks the others.
func checkBlank(d protocol.BlockDevice) error {
	dev, err := openBlank(d)
	if err != nil {
		return err
	}
	return dev.Close()
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
	link      string // /dev/md/<name>
	name      string
	metadata  string
	size      int64
	wholeDisk bool
	fsUUID    string
	speedKB   int
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
	r["member_layout"] = "partitions"
	if a.wholeDisk {
		r["member_layout"] = "whole_disks"
	}
	if ld.Filesystem != "" {
		r["filesystem"] = ld.Filesystem
		r["filesystem_uuid"] = a.fsUUID
	}
	if a.speedKB > 0 {
		r["resync_speed_limit_kb"] = a.speedKB
	}
	return r
}

// createArray runs mdadm --create for one logical disk. The returned
// array has its Device set as soon as the array exists, also on error.
func createArray(ctx context.Context, o Options, ld LogicalDisk, name string, ms []member, whole bool) (array, error) {
	a := array{name: name, link: "/dev/md/" + name, metadata: "1.2", wholeDisk: whole}
	if ld.IsRootVolume {
		// Superblock at the end: the array's data starts at offset 0 of
		// every member, so each member reads as the image written to the
		// array (whole disks) or as its partitions (partition members).
		a.metadata = "1.0"
	}
	args := []string{"--create", a.link, "--run", "--force", "--homehost=any", "--name=" + name,
		"--level=" + ld.MDLevel(), "--raid-devices=" + strconv.Itoa(len(ms)), "--metadata=" + a.metadata}
	if ld.Level == "0" || ld.Level == "1+0" || ld.Level == "5" || ld.Level == "6" {
		args = append(args, "--chunk=512")
	}
	if whole && !ld.Max {
		// Whole disks: the array is size_gb, the rest of each disk unused.
		args = append(args, "--size="+strconv.FormatInt(ld.SizeGB*gib/1024, 10))
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

// finish throttles the new array's resync and makes its filesystem.
func (a *array) finish(ctx context.Context, o Options, ld LogicalDisk) error {
	if o.ResyncSpeedLimitKB > 0 && ld.Level != "0" {
		if err := setSyncSpeedMax(o.root(), a.Device, o.ResyncSpeedLimitKB); err != nil {
			return err
		}
		a.speedKB = o.ResyncSpeedLimitKB
	}
	if ld.Filesystem != "" {
		id, err := makeFilesystem(ctx, a.Device, ld.Filesystem, ld.Label)
		if err != nil {
			return fmt.Errorf("format %s (%s) as %s: %w", a.link, a.Device, ld.Filesystem, err)
		}
		a.fsUUID = id
	}
	return nil
}

// makeFilesystem is filesystem.Make (a variable for the tests).
var makeFilesystem = filesystem.Make

// setSyncSpeedMax writes the array's resync speed cap (KiB/s).
func setSyncSpeedMax(sysRoot, dev string, kb int) error {
	p := filepath.Join(sysRoot, "sys/block", filepath.Base(dev), "md/sync_speed_max")
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0o644); err != nil {
		return fmt.Errorf("limit the resync speed of %s to %d KiB/s: %w", dev, kb, err)
	}
	return nil
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
