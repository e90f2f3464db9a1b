package rootdevice

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ironlite/ironlite/agent/protocol"
)

// SkipList is a parsed properties.skip_block_devices: devices matching any
// of its hint sets are neither deployed to nor erased.
type SkipList struct {
	hints []*Hints
	// VolumeNames lists the {"volume_name": ...} entries: software RAID
	// volumes to preserve, which the RAID code honours (they match no
	// block device here, as in IPA).
	VolumeNames []string
}

// ParseSkipList validates properties.skip_block_devices as decoded from
// JSON: a list of hint dicts (same names and operators as root device
// hints) or {"volume_name": "..."} entries. nil gives an empty list.
func ParseSkipList(v any) (*SkipList, error) {
	s := &SkipList{}
	var entries []any
	switch x := v.(type) {
	case nil:
		return s, nil
	case []any:
		entries = x
	case []map[string]any:
		for _, m := range x {
			entries = append(entries, m)
		}
	default:
		return nil, fmt.Errorf("%w: skip_block_devices must be a list of hint dicts, not %s", ErrInvalid, display(v))
	}
	for i, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: skip_block_devices entry %d must be a dict of hints, not %s", ErrInvalid, i, display(e))
		}
		if vn, ok := m["volume_name"]; ok {
			name, ok := vn.(string)
			if !ok || name == "" {
				return nil, fmt.Errorf("%w: skip_block_devices entry %d: volume_name must be a non-empty string, not %s", ErrInvalid, i, display(vn))
			}
			s.VolumeNames = append(s.VolumeNames, name)
			continue
		}
		if len(m) == 0 {
			// It would match every disk; upstream crashes on it.
			return nil, fmt.Errorf("%w: skip_block_devices entry %d is empty", ErrInvalid, i)
		}
		h, err := Parse(m)
		if err != nil {
			return nil, fmt.Errorf("skip_block_devices entry %d: %w", i, err)
		}
		s.hints = append(s.hints, h)
	}
	return s, nil
}

// Skips reports whether d matches an entry of the list.
func (s *SkipList) Skips(d protocol.BlockDevice) bool {
	if s == nil {
		return false
	}
	for _, h := range s.hints {
		if h.Matches(d) {
			return true
		}
	}
	return false
}

// Apply splits devs into the devices to keep and the names of those the
// list excludes.
func (s *SkipList) Apply(devs []protocol.BlockDevice) (kept []protocol.BlockDevice, skipped []string) {
	for _, d := range devs {
		if s.Skips(d) {
			skipped = append(skipped, d.Name)
			continue
		}
		kept = append(kept, d)
	}
	return kept, skipped
}

// NodeHints returns a node's root device hints as IPA takes them:
// instance_info.root_device, else properties.root_device (nil if neither
// is set).
func NodeHints(node map[string]any) map[string]any {
	for _, section := range []string{"instance_info", "properties"} {
		sec, _ := node[section].(map[string]any)
		if h, ok := sec["root_device"].(map[string]any); ok && len(h) > 0 {
			return h
		}
	}
	return nil
}

// NodeSkipList parses the node's properties.skip_block_devices.
func NodeSkipList(node map[string]any) (*SkipList, error) {
	props, _ := node["properties"].(map[string]any)
	return ParseSkipList(props["skip_block_devices"])
}

// Validate checks a node's root device hints and skip list, as the
// conductor does at deploy-validate time.
func Validate(node map[string]any) error {
	if _, err := Parse(NodeHints(node)); err != nil {
		return err
	}
	_, err := NodeSkipList(node)
	return err
}

// ForNode picks the node's root device among devs as IPA's
// get_os_install_device does: devices matching skip_block_devices are
// excluded, then the node's hints (or, without hints, the size rule)
// choose.
//
// Software RAID: when md arrays are running (devs lists them, as
// disk.List does), the disks holding their members are no candidates
// (they cannot be written while in an array; the array is the candidate),
// arrays whose volume name skip_block_devices lists ({"volume_name": ...})
// are excluded, and a name hint also matches an array by its
// /dev/md/<name> link ({"name": "/dev/md/root"}; size hints compare the
// array's size). Without hints, a node with a software RAID root volume
// (see RAIDRootVolume) gets that array, found by its name; it is an error
// when no running array has it (not built, or not assembled), rather than
// writing the image onto a bare member disk.
func ForNode(devs []protocol.BlockDevice, node map[string]any) (protocol.BlockDevice, error) {
	raw := NodeHints(node)
	h, err := Parse(raw)
	if err != nil {
		return protocol.BlockDevice{}, fmt.Errorf("no devices could be found using the root device hints %s because they failed to validate: %w", display(raw), err)
	}
	skip, err := NodeSkipList(node)
	if err != nil {
		return protocol.BlockDevice{}, err
	}
	kept, skipped := skip.Apply(devs)
	nf := &NotFoundError{Skipped: skipped}
	var arrays []MDArray
	for _, d := range devs {
		if strings.HasPrefix(d.Name, "/dev/md") {
			arrays = scanMD()
			break
		}
	}
	if len(arrays) > 0 {
		kept = nf.withoutRAIDMembers(kept, arrays, skip.VolumeNames)
	}
	if vol, ok := RAIDRootVolume(node); ok && h.Empty() {
		for _, a := range arrays {
			if a.Name != vol {
				continue
			}
			for _, d := range kept {
				if d.Name == a.Device {
					return d, nil
				}
			}
		}
		return protocol.BlockDevice{}, &RAIDRootNotFoundError{Volume: vol, Arrays: arrays, NotFound: nf}
	}
	return h.pick(kept, nf)
}

// withoutRAIDMembers drops from devs the disks holding members of arrays
// and the arrays named in volumeNames (skip_block_devices), recording
// them, and notes the arrays' /dev/md/<name> aliases.
func (nf *NotFoundError) withoutRAIDMembers(devs []protocol.BlockDevice, arrays []MDArray, volumeNames []string) []protocol.BlockDevice {
	members := map[string]bool{}
	skipVolume := map[string]bool{}
	nf.Aliases = map[string][]string{}
	for _, a := range arrays {
		for _, d := range a.Disks {
			members[d] = true
		}
		if a.Name != "" {
			nf.Aliases[a.Device] = []string{a.Link()}
			if slices.Contains(volumeNames, a.Name) {
				skipVolume[a.Device] = true
			}
		}
	}
	var out []protocol.BlockDevice
	for _, d := range devs {
		switch {
		case members[d.Name]:
			nf.RAIDMembers = append(nf.RAIDMembers, d.Name)
		case skipVolume[d.Name]:
			nf.Skipped = append(nf.Skipped, d.Name)
		default:
			out = append(out, d)
		}
	}
	return out
}

// RAIDRootNotFoundError is returned when the node has a software RAID
// root volume but no running md array carries its name. It matches
// ErrNotFound.
type RAIDRootNotFoundError struct {
	// Volume is the root volume's name.
	Volume string
	// Arrays are the running arrays.
	Arrays []MDArray
	// NotFound describes the devices that were considered.
	NotFound *NotFoundError
}

func (e *RAIDRootNotFoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "No suitable device was found for deployment: the node's RAID configuration has a software RAID root volume %q, but no running md array is named %q", e.Volume, e.Volume)
	if len(e.Arrays) == 0 {
		b.WriteString(" (no md array is running: build it with the raid.create_configuration clean step, and check that the agent assembled it)")
	} else {
		var names []string
		for _, a := range e.Arrays {
			n := a.Name
			if n == "" {
				n = "no name"
			}
			names = append(names, fmt.Sprintf("%s (%s)", a.Device, n))
		}
		fmt.Fprintf(&b, " (running: %s)", strings.Join(names, ", "))
	}
	b.WriteString(". Root device hints (e.g. {\"name\": \"/dev/md/" + e.Volume + "\"}) choose the device explicitly.")
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *RAIDRootNotFoundError) Is(target error) bool { return target == ErrNotFound }
