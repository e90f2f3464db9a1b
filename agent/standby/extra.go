package standby

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ironlite/ironlite/agent/imagewrite/extraparts"
)

// extraSpec reads IPA's partition-image keys from image_info, which
// ironlite also honours for whole-disk images (docs/partitions.md):
//
//	swap_mb            integer >= 0, MiB (absent, null or 0: no swap)
//	ephemeral_mb       integer >= 0, MiB (absent, null or 0: no ephemeral)
//	ephemeral_format   "ext4" (default when absent, null or ""), "xfs", "vfat"
//	preserve_ephemeral boolean (absent or null: false)
//
// Ironic builds these from instance_info, where they may have been stored
// as strings ("1024", "True"), so numeric and boolean strings are
// accepted as Ironic's own parsing (int(), strutils.bool_from_string)
// accepts them.
func extraSpec(info map[string]any) (extraparts.Spec, error) {
	var s extraparts.Spec
	var err error
	if s.SwapMB, err = mbParam(info, "swap_mb"); err != nil {
		return s, err
	}
	if s.EphemeralMB, err = mbParam(info, "ephemeral_mb"); err != nil {
		return s, err
	}
	switch f := info["ephemeral_format"].(type) {
	case nil:
	case string:
		s.EphemeralFormat = strings.ToLower(strings.TrimSpace(f))
	default:
		return s, fmt.Errorf("ephemeral_format must be a string, not %T", f)
	}
	if s.PreserveEphemeral, err = boolParam(info, "preserve_ephemeral"); err != nil {
		return s, err
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// maxMB bounds a size to what a partition table can address (8 EiB).
const maxMB = math.MaxInt64 >> 20

func mbParam(info map[string]any, key string) (int64, error) {
	var n float64
	switch v := info[key].(type) {
	case nil:
		return 0, nil
	case float64:
		n = v
	case int:
		n = float64(v)
	case int64:
		n = float64(v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return 0, fmt.Errorf("%s must be a whole number of MiB, not %q", key, v)
		}
		n = f
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("%s must be a whole number of MiB, not %q", key, v)
		}
		n = f
	default:
		return 0, fmt.Errorf("%s must be a whole number of MiB, not %T", key, v)
	}
	if n < 0 || n != math.Trunc(n) || n > maxMB {
		return 0, fmt.Errorf("%s must be a whole number of MiB >= 0, not %v", key, n)
	}
	return int64(n), nil
}

func boolParam(info map[string]any, key string) (bool, error) {
	switch v := info[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case float64:
		if v == 0 || v == 1 {
			return v == 1, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "1", "t", "true", "on", "y", "yes":
			return true, nil
		case "0", "f", "false", "off", "n", "no", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("%s must be a boolean, not %v", key, info[key])
}
