package rootdevice

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/ironlite/ironlite/agent/protocol"
)

// MinSize is the smallest disk picked when no hints are given (IPA's
// guess_root_disk min_size_required).
const MinSize = 4 << 30

const gib = 1 << 30

// ErrNotFound is matched (errors.Is) by the error returned when no device
// satisfies the hints: IPA's DeviceNotFound.
var ErrNotFound = errors.New("no suitable device found")

// NotFoundError says what was searched and what was found, so an operator
// can fix the hints without logging into the ramdisk.
type NotFoundError struct {
	// Hints are the hints searched with; empty when none were given.
	Hints *Hints
	// Devices are the devices searched (after skip_block_devices).
	Devices []protocol.BlockDevice
	// Skipped names the devices excluded by skip_block_devices.
	Skipped []string
	// RAIDMembers names the disks left out because they hold members of
	// running md arrays (the arrays are the candidates).
	RAIDMembers []string
	// Aliases are other names of devices: /dev/md/<name> of md arrays.
	Aliases map[string][]string
}

func (e *NotFoundError) Error() string {
	var b strings.Builder
	if e.Hints.Empty() {
		// IPA's wording, which operators search for.
		fmt.Fprintf(&b, "No suitable device was found for deployment - root device hints were not provided and all found block devices are smaller than %dB.", MinSize)
	} else {
		fmt.Fprintf(&b, "No suitable device was found for deployment using these hints %s.", display(e.Hints.Raw()))
	}
	if len(e.Devices) == 0 {
		b.WriteString(" No block devices were found.")
	} else {
		fmt.Fprintf(&b, " Found %d: ", len(e.Devices))
		for i, d := range e.Devices {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(e.Hints.describe(d, e.Aliases[d.Name]...))
			if !e.Hints.Empty() {
				_, why := e.Hints.explain(d, e.Aliases[d.Name]...)
				b.WriteString(": " + why)
			}
		}
		b.WriteString(".")
	}
	if len(e.Skipped) > 0 {
		fmt.Fprintf(&b, " Excluded by properties.skip_block_devices: %s.", strings.Join(e.Skipped, ", "))
	}
	if len(e.RAIDMembers) > 0 {
		fmt.Fprintf(&b, " Excluded as members of running md arrays: %s.", strings.Join(e.RAIDMembers, ", "))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Match picks the root device among devs: with hints, the first device
// (in the given order) satisfying all of them; without hints, the smallest
// device of at least MinSize, ties broken by name (IPA sorts by (size,
// name) so that BIOSes that only try the "first" disk have a chance).
// Invalid hints give an error wrapping ErrInvalid, no match a
// *NotFoundError.
func Match(devs []protocol.BlockDevice, hints map[string]any) (protocol.BlockDevice, error) {
	h, err := Parse(hints)
	if err != nil {
		return protocol.BlockDevice{}, fmt.Errorf("no devices could be found using the root device hints %s because they failed to validate: %w", display(hints), err)
	}
	return h.pick(devs, &NotFoundError{})
}

// pick chooses among devs; nf carries what was excluded before (and
// aliases), for the error.
func (h *Hints) pick(devs []protocol.BlockDevice, nf *NotFoundError) (protocol.BlockDevice, error) {
	nf.Hints, nf.Devices = h, devs
	if h.Empty() {
		sorted := append([]protocol.BlockDevice(nil), devs...)
		sort.SliceStable(sorted, func(i, j int) bool {
			if sorted[i].Size != sorted[j].Size {
				return sorted[i].Size < sorted[j].Size
			}
			return sorted[i].Name < sorted[j].Name
		})
		for _, d := range sorted {
			if d.Size >= MinSize {
				return d, nil
			}
		}
		return protocol.BlockDevice{}, nf
	}
	for _, d := range devs {
		if ok, _ := h.explain(d, nf.Aliases[d.Name]...); ok {
			return d, nil
		}
	}
	return protocol.BlockDevice{}, nf
}

// Find returns every device satisfying all hints, in order (ironic-lib's
// find_devices_by_hints). Empty hints match every device.
func (h *Hints) Find(devs []protocol.BlockDevice) []protocol.BlockDevice {
	var out []protocol.BlockDevice
	for _, d := range devs {
		if h.Matches(d) {
			out = append(out, d)
		}
	}
	return out
}

// Matches reports whether d satisfies every hint.
func (h *Hints) Matches(d protocol.BlockDevice) bool {
	ok, _ := h.explain(d)
	return ok
}

// explain checks the hints in order and says which one d fails. A name
// hint is satisfied by d's name or by one of its aliases (an md array's
// /dev/md/<name>).
func (h *Hints) explain(d protocol.BlockDevice, aliases ...string) (bool, string) {
	if h == nil {
		return true, ""
	}
	for _, p := range h.hints {
		ok, why := p.match(d)
		if !ok && p.name == "name" {
			for _, a := range aliases {
				alt := d
				alt.Name = a
				if ok, _ = p.match(alt); ok {
					break
				}
			}
		}
		if !ok {
			return false, why
		}
	}
	return true, ""
}

func (p hint) match(d protocol.BlockDevice) (bool, string) {
	switch p.kind {
	case kindBool:
		if d.Rotational == p.b {
			return true, ""
		}
		return false, fmt.Sprintf("rotational is %t, the hint wants %t", d.Rotational, p.b)
	case kindInt:
		v := float64(d.Size) / gib
		if compareNum(p.op, v, p.num) {
			return true, ""
		}
		return false, fmt.Sprintf("size %s GiB does not satisfy %q", formatGiB(d.Size), p.expr)
	}
	raw, ok := attr(d, p.name)
	v := strings.ToLower(strings.TrimSpace(raw))
	if v == "" {
		// ironic-lib skips a device whose attribute is empty.
		return false, fmt.Sprintf("%s is empty", p.name)
	}
	if !ok {
		raw = "None" // what str(None) gives upstream
	}
	if compareStr(p.op, quote(v), p.strs) {
		return true, ""
	}
	return false, fmt.Sprintf("%s %q does not match %q", p.name, raw, p.expr)
}

// attr returns a string attribute of d; ok is false when the attribute is
// unknown (a nil pointer), which ironic-lib sees as Python's None and
// compares as the string "none".
func attr(d protocol.BlockDevice, name string) (v string, ok bool) {
	var p *string
	switch name {
	case "name":
		return d.Name, true
	case "model":
		return d.Model, true
	case "wwn":
		p = d.WWN
	case "serial":
		p = d.Serial
	case "vendor":
		p = d.Vendor
	case "wwn_with_extension":
		p = d.WWNWithExtension
	case "wwn_vendor_extension":
		p = d.WWNVendorExtension
	case "hctl":
		p = d.HCTL
	case "by_path":
		p = d.ByPath
	}
	if p == nil {
		return "none", false
	}
	return *p, true
}

// compareNum is specs_matcher's numeric operators; "=" means ">=" there
// (a legacy of Nova's capabilities filter).
func compareNum(op string, v, want float64) bool {
	switch op {
	case "==":
		return v == want
	case "=", ">=":
		return v >= want
	case "!=":
		return v != want
	case "<":
		return v < want
	case "<=":
		return v <= want
	case ">":
		return v > want
	}
	return false
}

// compareStr is specs_matcher's string operators on normalised values.
func compareStr(op, v string, want []string) bool {
	switch op {
	case "s==":
		return v == want[0]
	case "s!=":
		return v != want[0]
	case "s<":
		return v < want[0]
	case "s<=":
		return v <= want[0]
	case "s>":
		return v > want[0]
	case "s>=":
		return v >= want[0]
	case "<in>":
		return strings.Contains(v, want[0])
	case "<or>":
		for _, w := range want {
			if v == w {
				return true
			}
		}
		return false
	case "<all-in>":
		for _, w := range want {
			if !strings.Contains(v, w) {
				return false
			}
		}
		return true
	}
	return false
}

// describe summarises d for error messages: name, size, model, serial and
// whatever else the hints look at.
func (h *Hints) describe(d protocol.BlockDevice, aliases ...string) string {
	parts := append(append([]string(nil), aliases...), formatGiB(d.Size)+" GiB")
	shown := map[string]bool{"name": true, "size": true}
	add := func(name string) {
		if shown[name] {
			return
		}
		shown[name] = true
		if name == "rotational" {
			parts = append(parts, "rotational "+strconv.FormatBool(d.Rotational))
			return
		}
		v, ok := attr(d, name)
		if !ok {
			parts = append(parts, name+" unknown")
			return
		}
		parts = append(parts, name+" "+strconv.Quote(v))
	}
	add("model")
	add("serial")
	if h != nil {
		for _, p := range h.hints {
			add(p.name)
		}
	}
	return d.Name + " (" + strings.Join(parts, ", ") + ")"
}

// formatGiB renders a size in GiB with at most two decimals: the size
// hint is in whole GiB, so "447.13" tells the operator to use ">= 447".
func formatGiB(size int64) string {
	return strconv.FormatFloat(float64(int64(float64(size)/gib*100))/100, 'f', -1, 64)
}
