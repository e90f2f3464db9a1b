package raid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/protocol"
)

// DeleteResult says what Delete did.
type DeleteResult struct {
	// Stopped are the arrays stopped.
	Stopped []string `json:"stopped_arrays"`
	// Wiped are the former member disks whose md superblocks and
	// partition tables were erased.
	Wiped []string `json:"wiped_disks"`
}

// Delete removes software RAID: it stops every md array (with
// Options.Devices: every array with a member on one of them), destroys the
// md superblocks of their members, and erases the partition tables and
// signatures of the member disks. Disks carrying md superblocks of arrays
// that are not assembled (the ramdisk assembles nothing by itself) are
// found with mdadm --examine and wiped too. Other disks are left alone.
func Delete(ctx context.Context, o Options) (DeleteResult, error) {
	log := o.log()
	var res DeleteResult
	disks, err := candidateDisks(ctx, o)
	if err != nil {
		return res, err
	}
	inScope := map[string]bool{}
	for _, d := range disks {
		inScope[sysName(d.Name)] = true
	}
	all, err := disk.MDArrays(o.root())
	if err != nil {
		return res, err
	}
	var arrays []disk.MDArray
	wipe := map[string]bool{}
	for _, a := range all {
		ours := len(o.Devices) == 0
		for _, d := range a.Disks {
			ours = ours || inScope[sysName(d)]
		}
		if !ours {
			continue
		}
		arrays = append(arrays, a)
		res.Stopped = append(res.Stopped, a.Device)
		for _, d := range a.Disks {
			wipe[sysName(d)] = true
		}
	}
	err = disk.StopMDArrays(ctx, arrays, log)
	removeStaleLinks(o.root())
	if err != nil {
		return res, fmt.Errorf("delete software RAID: %w", err)
	}
	var errs []error
	for _, d := range disks {
		name := sysName(d.Name)
		stale := staleMembers(ctx, o.root(), d.Name)
		for _, m := range stale {
			if out, err := exec.CommandContext(ctx, "mdadm", "--zero-superblock", m).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("mdadm --zero-superblock %s: %w: %s", m, err, strings.TrimSpace(string(out))))
			}
		}
		if !wipe[name] && len(stale) == 0 {
			continue
		}
		if err := disk.EraseMetadata(ctx, d.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Wiped = append(res.Wiped, d.Name)
		log.Info("raid: member disk wiped", "disk", d.Name, "stale_members", stale)
	}
	sort.Strings(res.Wiped)
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("delete software RAID: %w", err)
	}
	return res, nil
}

// candidateDisks are the disks RAID may be built on or removed from:
// Options.Devices, or the machine's disks without the md arrays.
func candidateDisks(ctx context.Context, o Options) ([]protocol.BlockDevice, error) {
	if len(o.Devices) > 0 {
		var out []protocol.BlockDevice
		for _, p := range o.Devices {
			d, err := describe(o.root(), p)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		return out, nil
	}
	all, err := disk.List(ctx, o.root())
	if err != nil {
		return nil, err
	}
	var out []protocol.BlockDevice
	for _, d := range all {
		if !strings.HasPrefix(filepath.Base(d.Name), "md") {
			out = append(out, d)
		}
	}
	return out, nil
}

// describe reads name, size and sector sizes of a block device from
// sysfs.
func describe(sysRoot, path string) (protocol.BlockDevice, error) {
	name := sysName(path)
	read := func(attr string) int64 {
		b, err := os.ReadFile(filepath.Join(sysRoot, "sys/class/block", name, attr))
		if err != nil {
			return 0
		}
		var n int64
		fmt.Sscan(strings.TrimSpace(string(b)), &n)
		return n
	}
	sectors := read("size")
	if sectors <= 0 {
		return protocol.BlockDevice{}, fmt.Errorf("%s: not a block device with a size in sysfs", path)
	}
	return protocol.BlockDevice{
		Name:            path,
		Size:            sectors * 512,
		Rotational:      read("queue/rotational") == 1,
		LogicalSectors:  int(read("queue/logical_block_size")),
		PhysicalSectors: int(read("queue/physical_block_size")),
	}, nil
}

// staleMembers returns the device and its partitions that carry an md
// superblock (mdadm --examine succeeds) without being in an array.
func staleMembers(ctx context.Context, sysRoot, path string) []string {
	name := sysName(path)
	devs := []string{path}
	ents, _ := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", name))
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(sysRoot, "sys/class/block", name, e.Name(), "partition")); err == nil {
			devs = append(devs, "/dev/"+e.Name())
		}
	}
	var out []string
	for _, d := range devs {
		if hs, _ := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", sysName(d), "holders")); len(hs) > 0 {
			continue
		}
		if hasMDSuperblock(ctx, d) {
			out = append(out, d)
		}
	}
	return out
}

// hasMDSuperblock runs mdadm --examine, which also succeeds on a disk with
// a partition table (it describes the MBR): only an md superblock has a
// RAID level.
func hasMDSuperblock(ctx context.Context, dev string) bool {
	out, err := exec.CommandContext(ctx, "mdadm", "--examine", dev).CombinedOutput()
	return err == nil && strings.Contains(string(out), "Raid Level :")
}
