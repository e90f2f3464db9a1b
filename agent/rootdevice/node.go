package rootdevice

import (
	"fmt"

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
	return h.pick(kept, skipped)
}
