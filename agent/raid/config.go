// Package raid builds and removes software RAID (Linux md, through mdadm)
// in-band, as IPA's GenericHardwareManager does for Ironic's
// raid_interface=agent: raid.create_configuration and
// raid.delete_configuration clean steps and the raid.apply_configuration
// deploy step, driven by the node's target_raid_config.
//
// Layouts (docs/raid.md): a root volume (RAID-1) alone on its disks is a
// mirror of whole disks with metadata 1.0 (superblock at the end), so that
// every member disk reads, from sector 0, the whole-disk image written to
// the array and boots on its own by BIOS and UEFI. Every other member disk
// gets a GPT with one Linux RAID partition per logical disk it takes part
// in; where it carries the root volume, room is left at its start for the
// ESP that PrepareRootMembers copies from the image after the deploy.
//
// Beyond IPA: any number of logical disks of levels 0, 1, 5, 6 and 1+0,
// each on any subset of the disks; the root volume need not be the first;
// data volumes formatted on request (the "filesystem" and "label"
// extension keys); the initial resync skipped (--assume-clean) when the
// members were just zeroed, or throttled (sync_speed_max); and Assemble,
// which starts the arrays in a fresh ramdisk so that the root volume can
// be chosen as the install device (agent/rootdevice).
package raid

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ironlite/ironlite/agent/filesystem"
	"github.com/ironlite/ironlite/agent/rootdevice"
)

// ErrInvalid is wrapped by every error of ParseConfig.
var ErrInvalid = errors.New("invalid target_raid_config")

// Config is a parsed target_raid_config.
type Config struct {
	LogicalDisks []LogicalDisk
}

// LogicalDisk is one volume of the configuration.
type LogicalDisk struct {
	// SizeGB is the size in GiB (Ironic's unit); 0 when Max is set.
	SizeGB int64
	// Max is size_gb "MAX": the rest of the member disks.
	Max bool
	// Level is the RAID level as Ironic spells it: "0", "1", "5", "6",
	// "1+0".
	Level string
	// PhysicalDisks selects the members: each entry is a device name
	// ("/dev/sda") or root-device-style hints ({"serial": "..."}). Empty:
	// every disk (or the first NumberOfPhysicalDisks).
	PhysicalDisks []any
	// NumberOfPhysicalDisks, if not 0, is the number of members.
	NumberOfPhysicalDisks int
	IsRootVolume          bool
	VolumeName            string
	// Filesystem (ironlite extension key "filesystem") is made on the
	// array once it is built: "ext4", "xfs" or "vfat"; "" for none. Data
	// volumes only: the root volume receives a whole-disk image.
	Filesystem string
	// Label (extension key "label") is the filesystem's label.
	Label string
	// Raw is the logical disk as given, echoed back in the result.
	Raw map[string]any
}

// MDLevel is the level as mdadm spells it ("1+0" is "10").
func (l LogicalDisk) MDLevel() string {
	if l.Level == "1+0" {
		return "10"
	}
	return l.Level
}

// minMembers is the number of members each supported level needs at least.
var minMembers = map[string]int{"0": 2, "1": 2, "5": 3, "6": 4, "1+0": 4}

// ironicLevels are the levels of Ironic's schema that software RAID does
// not build.
var ironicLevels = map[string]bool{"JBOD": true, "2": true, "5+0": true, "6+0": true}

// knownKeys are the properties Ironic's schema allows in a logical disk.
var knownKeys = map[string]bool{
	"size_gb": true, "raid_level": true, "volume_name": true, "is_root_volume": true,
	"share_physical_disks": true, "disk_type": true, "interface_type": true,
	"number_of_physical_disks": true, "controller": true, "physical_disks": true,
	// ironlite extension keys: a filesystem on a data volume.
	"filesystem": true, "label": true,
}

// Filesystems are the filesystems a data volume may be formatted with.
var Filesystems = []string{filesystem.Ext4, filesystem.XFS, filesystem.VFAT}

var volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$`)

// ParseConfig validates a node's target_raid_config (as decoded from
// JSON) for software RAID. The messages name the logical disk (by index,
// from 0, and volume name) and the offending property.
func ParseConfig(raw map[string]any) (Config, error) {
	var cfg Config
	if raw == nil {
		return cfg, fmt.Errorf("%w: the node has no target_raid_config", ErrInvalid)
	}
	for k := range raw {
		if k != "logical_disks" {
			return cfg, fmt.Errorf("%w: unknown property %q (only logical_disks is allowed)", ErrInvalid, k)
		}
	}
	list, ok := raw["logical_disks"].([]any)
	if !ok {
		return cfg, fmt.Errorf("%w: logical_disks is required and must be a list", ErrInvalid)
	}
	if len(list) == 0 {
		return cfg, fmt.Errorf("%w: logical_disks is empty", ErrInvalid)
	}
	names := map[string]int{}
	root := -1
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return cfg, fmt.Errorf("%w: logical_disks[%d] is not an object", ErrInvalid, i)
		}
		ld, err := parseLogicalDisk(m)
		if err != nil {
			where := fmt.Sprintf("logical_disks[%d]", i)
			if n, _ := m["volume_name"].(string); n != "" {
				where += fmt.Sprintf(" (%q)", n)
			}
			return cfg, fmt.Errorf("%w: %s: %v", ErrInvalid, where, err)
		}
		if ld.VolumeName != "" {
			if j, dup := names[ld.VolumeName]; dup {
				return cfg, fmt.Errorf("%w: logical_disks[%d] and [%d] have the same volume_name %q", ErrInvalid, j, i, ld.VolumeName)
			}
			names[ld.VolumeName] = i
		}
		if ld.IsRootVolume {
			if root >= 0 {
				return cfg, fmt.Errorf("%w: logical_disks[%d] and [%d] are both is_root_volume; there can be one root volume", ErrInvalid, root, i)
			}
			root = i
		}
		if ld.Max && i != len(list)-1 {
			return cfg, fmt.Errorf("%w: logical_disks[%d] has size_gb \"MAX\" but is not the last logical disk; only the last one may take the rest of the disks", ErrInvalid, i)
		}
		cfg.LogicalDisks = append(cfg.LogicalDisks, ld)
	}
	return cfg, nil
}

func parseLogicalDisk(m map[string]any) (LogicalDisk, error) {
	ld := LogicalDisk{Raw: m}
	var unknown []string
	for k := range m {
		if !knownKeys[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return ld, fmt.Errorf("unknown properties %s", strings.Join(unknown, ", "))
	}
	ctrl, ok := m["controller"].(string)
	if !ok || ctrl != "software" {
		if _, present := m["controller"]; !present {
			return ld, fmt.Errorf(`controller is missing: this agent builds software RAID only, set "controller": "software"`)
		}
		return ld, fmt.Errorf(`controller is %v: this agent builds software RAID only ("controller": "software")`, display(m["controller"]))
	}
	lvl, ok := m["raid_level"].(string)
	switch {
	case !ok:
		return ld, fmt.Errorf("raid_level is required and must be a string (\"0\", \"1\", \"5\", \"6\" or \"1+0\"), not %v", display(m["raid_level"]))
	case ironicLevels[lvl]:
		return ld, fmt.Errorf("raid_level %q is not supported by software RAID (supported: 0, 1, 5, 6, 1+0)", lvl)
	case minMembers[lvl] == 0:
		return ld, fmt.Errorf("unknown raid_level %q (supported: 0, 1, 5, 6, 1+0)", lvl)
	}
	ld.Level = lvl
	switch v := m["size_gb"].(type) {
	case nil:
		return ld, fmt.Errorf(`size_gb is required (a number of GiB or "MAX")`)
	case string:
		if v != "MAX" {
			return ld, fmt.Errorf(`size_gb is %q: must be a positive integer or "MAX"`, v)
		}
		ld.Max = true
	default:
		n, err := integer(v)
		if err != nil || n <= 0 {
			return ld, fmt.Errorf(`size_gb is %v: must be a positive integer or "MAX"`, display(v))
		}
		ld.SizeGB = n
	}
	if v, present := m["volume_name"]; present {
		s, ok := v.(string)
		if !ok || !volumeNameRE.MatchString(s) {
			return ld, fmt.Errorf("volume_name %v is not usable as an md array name (1-32 letters, digits, '_', '.', '-', not starting with '.' or '-')", display(v))
		}
		ld.VolumeName = s
	}
	if v, present := m["is_root_volume"]; present {
		b, ok := v.(bool)
		if !ok {
			return ld, fmt.Errorf("is_root_volume is %v, not a Boolean", display(v))
		}
		ld.IsRootVolume = b
	}
	if ld.IsRootVolume && ld.Level != "1" {
		return ld, fmt.Errorf("the root volume must be RAID-1 (raid_level \"1\"), not %q: each member of a mirror holds a whole copy that firmware and the boot loader can read as a plain disk", ld.Level)
	}
	if v, present := m["number_of_physical_disks"]; present {
		n, err := integer(v)
		if err != nil || n <= 0 {
			return ld, fmt.Errorf("number_of_physical_disks is %v: must be a positive integer", display(v))
		}
		ld.NumberOfPhysicalDisks = int(n)
	}
	if v, present := m["physical_disks"]; present {
		list, ok := v.([]any)
		if !ok {
			return ld, fmt.Errorf("physical_disks must be a list of device names or device hint objects")
		}
		for j, p := range list {
			switch x := p.(type) {
			case string:
				if x == "" {
					return ld, fmt.Errorf("physical_disks[%d] is an empty name", j)
				}
			case map[string]any:
				if len(x) == 0 {
					return ld, fmt.Errorf("physical_disks[%d] is an empty hint object", j)
				}
				if _, err := rootdevice.Parse(x); err != nil {
					return ld, fmt.Errorf("physical_disks[%d]: %v", j, err)
				}
			default:
				return ld, fmt.Errorf("physical_disks[%d] is %v: must be a device name or a device hint object", j, display(p))
			}
		}
		ld.PhysicalDisks = list
		if ld.NumberOfPhysicalDisks > 0 && ld.NumberOfPhysicalDisks != len(list) {
			return ld, fmt.Errorf("number_of_physical_disks is %d but physical_disks lists %d", ld.NumberOfPhysicalDisks, len(list))
		}
	}
	if err := ld.parseFilesystem(m); err != nil {
		return ld, err
	}
	if n := ld.memberCount(); n > 0 {
		if err := checkMembers(ld.Level, n); err != nil {
			return ld, err
		}
	}
	return ld, nil
}

// parseFilesystem reads the extension keys filesystem and label.
func (ld *LogicalDisk) parseFilesystem(m map[string]any) error {
	fsRaw, hasFS := m["filesystem"]
	labelRaw, hasLabel := m["label"]
	if !hasFS {
		if hasLabel {
			return fmt.Errorf("label needs filesystem (%s)", strings.Join(Filesystems, ", "))
		}
		return nil
	}
	fs, _ := fsRaw.(string)
	if !slices.Contains(Filesystems, fs) {
		return fmt.Errorf("filesystem %s is not supported (%s)", display(fsRaw), strings.Join(Filesystems, ", "))
	}
	if ld.IsRootVolume {
		return fmt.Errorf("filesystem is for data volumes: the root volume receives the instance image, which brings its own partitions and filesystems")
	}
	ld.Filesystem = fs
	if hasLabel {
		label, ok := labelRaw.(string)
		if !ok || label == "" {
			return fmt.Errorf("label must be a non-empty string, not %s", display(labelRaw))
		}
		if err := filesystem.ValidateLabel(fs, label); err != nil {
			return fmt.Errorf("label: %v", err)
		}
		ld.Label = label
	}
	return nil
}

// memberCount is the number of members the logical disk asks for, 0 for
// "every disk" (known only on the machine).
func (l LogicalDisk) memberCount() int {
	if len(l.PhysicalDisks) > 0 {
		return len(l.PhysicalDisks)
	}
	return l.NumberOfPhysicalDisks
}

// checkMembers checks a member count against the level's needs.
func checkMembers(level string, n int) error {
	need := minMembers[level]
	if n < need {
		return fmt.Errorf("RAID-%s needs at least %d member disks, got %d", level, need, n)
	}
	if level == "1+0" && n%2 != 0 {
		return fmt.Errorf("RAID-1+0 needs an even number of member disks, got %d", n)
	}
	return nil
}

func integer(v any) (int64, error) {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), nil
		}
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case json.Number:
		return strconv.ParseInt(x.String(), 10, 64)
	}
	return 0, fmt.Errorf("not an integer")
}

func display(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
