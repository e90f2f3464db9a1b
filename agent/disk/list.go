// Package disk erases the machine's disks for cleaning, as IPA's
// GenericHardwareManager does: erase_devices_metadata (partition tables
// and signatures), erase_devices (every byte) and erase_devices_express,
// and exports the building blocks (List, EraseMetadata, Zero) for the image
// writer and the RAID code.
//
// The ramdisk has no wipefs, sgdisk, shred, lsblk or udev, so everything
// here is ioctls and plain reads and writes on the block devices, through
// agent/blockdev (exclusive opens: a mounted disk or an active md member
// is refused, never overwritten underneath its user).
package disk

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ironlite/ironlite/agent/inventory"
	"github.com/ironlite/ironlite/agent/protocol"
)

// List returns the block devices root device hints and erasure consider,
// as IPA's list_all_block_devices does: the disks of the inventory plus
// assembled md RAID arrays (/dev/md0 can be the root device and is erased
// like a disk), sorted by name. sysRoot is the filesystem root holding
// sys/ ("/" normally).
func List(ctx context.Context, sysRoot string) ([]protocol.BlockDevice, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if sysRoot == "" {
		sysRoot = "/"
	}
	devs, err := (&inventory.Collector{Root: sysRoot}).Disks()
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(sysRoot, "sys/block"))
	if err != nil {
		return nil, fmt.Errorf("list md arrays: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "md") {
			continue
		}
		// lsblk's TYPE is "raid1" etc. for arrays; containers (imsm,
		// ddf) and stopped arrays have no RAID level and hold no data.
		level := readStr(sysRoot, name, "md/level")
		if !strings.HasPrefix(level, "raid") {
			continue
		}
		if d, ok := describe(sysRoot, name); ok {
			devs = append(devs, d)
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, nil
}

// describe reads the attributes of a block device that is not a disk in
// the inventory's sense (an md array, or a device named explicitly in
// Options.Devices): name, size and queue facts. ok is false for a device
// of size zero or without a sysfs entry.
func describe(sysRoot, name string) (protocol.BlockDevice, bool) {
	sectors, err := strconv.ParseInt(readStr(sysRoot, name, "size"), 10, 64)
	if err != nil || sectors <= 0 {
		return protocol.BlockDevice{}, false
	}
	d := protocol.BlockDevice{
		Name:       "/dev/" + name,
		Size:       sectors * 512, // sysfs counts 512-byte sectors whatever the device's
		Rotational: readStr(sysRoot, name, "queue/rotational") == "1",
	}
	d.LogicalSectors, _ = strconv.Atoi(readStr(sysRoot, name, "queue/logical_block_size"))
	d.PhysicalSectors, _ = strconv.Atoi(readStr(sysRoot, name, "queue/physical_block_size"))
	return d, true
}

// readStr reads a sysfs attribute of a block device, trimmed; "" if absent.
func readStr(sysRoot, name, attr string) string {
	b, err := os.ReadFile(filepath.Join(sysRoot, "sys/class/block", name, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// state is what decides whether a device may be erased.
type state struct {
	readOnly  bool
	removable bool
	// mdHolders are the md arrays built on the device or on one of its
	// partitions.
	mdHolders []string
	// holders are all holders (md, dm: LVM, multipath, crypt), which make
	// an exclusive open fail.
	holders []string
}

// readState reads a device's flags from sysfs. Devices without a sysfs
// entry (image files) have none set.
func readState(sysRoot, name string) state {
	s := state{
		readOnly:  readStr(sysRoot, name, "ro") == "1",
		removable: readStr(sysRoot, name, "removable") == "1",
	}
	dirs := []string{name}
	ents, _ := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", name))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), name) && readStr(sysRoot, name, filepath.Join(e.Name(), "partition")) != "" {
			dirs = append(dirs, filepath.Join(name, e.Name()))
		}
	}
	for _, d := range dirs {
		hs, _ := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", d, "holders"))
		for _, h := range hs {
			s.holders = append(s.holders, h.Name())
			if strings.HasPrefix(h.Name(), "md") {
				s.mdHolders = append(s.mdHolders, h.Name())
			}
		}
	}
	return s
}

// sysName is the sysfs name of a device path ("/dev/sda" -> "sda"),
// following symlinks such as /dev/disk/by-path/... .
func sysName(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	return filepath.Base(path)
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
