package rootdevice

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DefaultRAIDRootName is the name of the root volume's md array when the
// logical disk has no volume_name (agent/raid creates it under that name).
const DefaultRAIDRootName = "root"

// MDArray is a running md array as the root device choice sees it.
type MDArray struct {
	// Device is the array's node, "/dev/md127".
	Device string
	// Name is the array's name from its superblock without the
	// "homehost:" prefix ("root" for "any:root"); "" for metadata 0.90
	// or external metadata, which carry none.
	Name string
	// Disks are the disks holding the members ("/dev/sda" for both a
	// whole-disk member and a partition of sda).
	Disks []string
}

// Link is the array's /dev/md/<name> path, "" without a name.
func (a MDArray) Link() string {
	if a.Name == "" {
		return ""
	}
	return "/dev/md/" + a.Name
}

// scanMD lists the running md arrays; a variable so that tests stand a
// fake machine in.
var scanMD = func() []MDArray { return MDArrays("/") }

// MDArrays lists the running md arrays under sysRoot ("/" normally) with
// their names, read from the members' md superblocks rather than from
// /dev/md/ links: the ramdisk has no udev, and mdadm leaves a stale link
// behind when an array stops, or none when a name is taken. Arrays
// without members are left out.
func MDArrays(sysRoot string) []MDArray {
	ents, _ := os.ReadDir(filepath.Join(sysRoot, "sys/block"))
	var out []MDArray
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "md") {
			continue
		}
		dir := filepath.Join(sysRoot, "sys/block", name)
		slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
		if len(slaves) == 0 {
			continue
		}
		a := MDArray{Device: "/dev/" + name}
		version := readTrim(filepath.Join(dir, "md/metadata_version"))
		seen := map[string]bool{}
		for _, s := range slaves {
			if a.Name == "" {
				a.Name = superblockName(sysRoot, s.Name(), version)
			}
			d := "/dev/" + ParentDisk(sysRoot, s.Name())
			if !seen[d] {
				seen[d] = true
				a.Disks = append(a.Disks, d)
			}
		}
		sort.Strings(a.Disks)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// superblockName reads the set_name of the v1.x md superblock on member
// (a sysfs block device name) and strips the "homehost:" prefix.
func superblockName(sysRoot, member, version string) string {
	sectors, err := strconv.ParseInt(readTrim(filepath.Join(sysRoot, "sys/class/block", member, "size")), 10, 64)
	if err != nil {
		return ""
	}
	var off int64
	switch version {
	case "1.0":
		// mdadm's super1: 8 KiB from the end, aligned down to 4 KiB.
		off = (sectors - 16) &^ 7 * 512
	case "1.1":
		off = 0
	case "1.2":
		off = 4096
	default:
		return ""
	}
	f, err := os.Open(filepath.Join(sysRoot, "dev", member))
	if err != nil {
		return ""
	}
	defer f.Close()
	sb := make([]byte, 64)
	if _, err := f.ReadAt(sb, off); err != nil {
		return ""
	}
	if binary.LittleEndian.Uint32(sb[0:]) != 0xa92b4efc || binary.LittleEndian.Uint32(sb[4:]) != 1 {
		return ""
	}
	name := string(sb[32:64])
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if _, after, ok := strings.Cut(name, ":"); ok {
		name = after
	}
	return name
}

// ParentDisk is the sysfs name of the disk holding the block device name:
// the device itself unless it is a partition. sysRoot holds sys/.
func ParentDisk(sysRoot, name string) string {
	if _, err := os.Stat(filepath.Join(sysRoot, "sys/class/block", name, "partition")); err != nil {
		return name
	}
	p, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "sys/class/block", name))
	if err != nil {
		return name
	}
	return filepath.Base(filepath.Dir(p))
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// RAIDRootVolume returns the name of the node's software RAID root volume
// (the md array the image goes to), and whether the node has one: the
// logical disk with is_root_volume true and controller "software" in
// raid_config (what was built, as the agent reported it), else in
// target_raid_config (what cleaning builds). Its name is its volume_name,
// or DefaultRAIDRootName.
func RAIDRootVolume(node map[string]any) (string, bool) {
	for _, key := range []string{"raid_config", "target_raid_config"} {
		cfg, _ := node[key].(map[string]any)
		var lds []map[string]any
		switch x := cfg["logical_disks"].(type) {
		case []any:
			for _, item := range x {
				ld, _ := item.(map[string]any)
				lds = append(lds, ld)
			}
		case []map[string]any:
			lds = x
		}
		for _, ld := range lds {
			if root, _ := ld["is_root_volume"].(bool); !root || ld["controller"] != "software" {
				continue
			}
			if name, _ := ld["volume_name"].(string); name != "" {
				return name, true
			}
			return DefaultRAIDRootName, true
		}
	}
	return "", false
}
