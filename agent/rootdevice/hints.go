// Package rootdevice parses Ironic root device hints and picks the disk an
// image is written to, with the semantics of ironic-lib's
// parse_root_device_hints / match_root_device_hints (oslo.utils
// specs_matcher operators) and IPA's get_os_install_device.
//
// Parsing and matching are pure: no I/O, so the controller validates a
// node's hints at deploy-validate time with exactly the code the agent
// later matches with. Only ForNode, on a machine with running md arrays,
// reads sysfs and the arrays' superblocks (md.go) to know their names:
// software RAID root volumes are chosen by name.
//
// Where upstream is ill-defined we are stricter and say why up front,
// instead of failing later with "no device found": an operator that only
// makes sense for numbers (">= 10") on a string hint, a string operator on
// "size", and "<range-in>" are rejected when the hints are parsed (upstream
// accepts them and then raises or never matches). "<all-in>" is upstream a
// list operator whose device side is never a list (it raises for every
// device); here it means "contains every one of these words". One
// convenience is added: a name hint without a path ("sda") means /dev/sda.
// Everything else, including quirks such as an unknown attribute comparing
// as the string "none", follows ironic-lib, and the tests check it against
// the real ironic-lib when it is installed.
package rootdevice

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every error about malformed hints, so that
// callers (the controller's validate) can tell a bad request from a
// missing disk.
var ErrInvalid = errors.New("invalid root device hints")

type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
)

// hintNames are the valid hints in ironic-lib's VALID_ROOT_DEVICE_HINTS
// order, which is also the order error messages list them in.
var hintNames = []string{
	"size", "model", "wwn", "serial", "vendor", "wwn_with_extension",
	"wwn_vendor_extension", "name", "rotational", "hctl", "by_path",
}

var hintKinds = map[string]kind{
	"size": kindInt, "model": kindString, "wwn": kindString, "serial": kindString,
	"vendor": kindString, "wwn_with_extension": kindString,
	"wwn_vendor_extension": kindString, "name": kindString,
	"rotational": kindBool, "hctl": kindString, "by_path": kindString,
}

// ValidNames returns the hint names Ironic accepts.
func ValidNames() []string { return append([]string(nil), hintNames...) }

// operators in the order specs_matcher's grammar tries them: the n-ary
// ones first, then the unary ones ("==" before "=", "<in>" before "<=" and
// "<", "s<=" before "s<", ...).
var operators = []string{
	"<or>", "<all-in>", "<range-in>",
	"==", "=", "!=", "<in>", ">=", "<=", ">", "<",
	"s==", "s!=", "s<=", "s<", "s>=", "s>",
}

// Operators valid per hint type. An empty operator means the default
// (s== for strings, == for integers).
var (
	stringOps = map[string]bool{"": true, "s==": true, "s!=": true, "s<": true, "s<=": true,
		"s>": true, "s>=": true, "<in>": true, "<or>": true, "<all-in>": true}
	intOps = map[string]bool{"": true, "==": true, "=": true, "!=": true, "<": true,
		"<=": true, ">": true, ">=": true}
)

// Hints is a parsed and validated set of root device hints. The zero
// value (and a nil *Hints) has no hints.
type Hints struct {
	hints []hint
	raw   map[string]any
}

// hint is one parsed hint with its operands normalised as ironic-lib does:
// strings lower-cased and URL-quoted, integers as numbers.
type hint struct {
	name string
	kind kind
	op   string   // canonical: "s==" or "==" when none was given
	strs []string // string operands, normalised
	num  float64  // integer operand (size, GiB)
	b    bool     // rotational
	expr string   // the expression as written, for messages
}

// Parse validates hints (a node's properties.root_device or
// instance_info.root_device, as decoded from JSON). An empty or nil map
// gives empty Hints: the caller then picks the smallest disk of at least
// 4 GiB.
func Parse(raw map[string]any) (*Hints, error) {
	h := &Hints{raw: raw}
	if len(raw) == 0 {
		return h, nil
	}
	var invalid []string
	for name := range raw {
		if _, ok := hintKinds[name]; !ok {
			invalid = append(invalid, name)
		}
	}
	if len(invalid) > 0 {
		sort.Strings(invalid)
		return nil, fmt.Errorf("%w: the hints %q are invalid; valid hints are: %s",
			ErrInvalid, strings.Join(invalid, ", "), strings.Join(hintNames, ", "))
	}
	for _, name := range hintNames {
		v, ok := raw[name]
		if !ok {
			continue
		}
		p, err := parseHint(name, v)
		if err != nil {
			return nil, err
		}
		h.hints = append(h.hints, p)
	}
	return h, nil
}

func parseHint(name string, v any) (hint, error) {
	p := hint{name: name, kind: hintKinds[name]}
	switch p.kind {
	case kindBool:
		b, err := parseBool(v)
		if err != nil {
			return p, fmt.Errorf("%w: hint %q is not a Boolean value (true/false, yes/no, on/off, 1/0): %v", ErrInvalid, name, display(v))
		}
		p.b, p.expr = b, strconv.FormatBool(b)
		return p, nil
	case kindString:
		s, ok := v.(string)
		if !ok {
			return p, fmt.Errorf("%w: hint %q is not a string value: %v", ErrInvalid, name, display(v))
		}
		p.expr = s
		op, vals, err := split(name, s)
		if err != nil {
			return p, err
		}
		if !stringOps[op] {
			return p, fmt.Errorf("%w: hint %q: operator %q compares numbers or is not supported; string hints take s==, s!=, s<, s<=, s>, s>=, <in>, <or> or <all-in> (e.g. \"s== %s\")",
				ErrInvalid, name, op, strings.TrimSpace(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), op)))
		}
		if op == "" {
			op = "s=="
		}
		if op == "<all-in>" {
			var words []string
			for _, v := range vals {
				words = append(words, strings.Fields(v)...)
			}
			vals = words
		}
		if op != "<or>" && op != "<all-in>" {
			vals = vals[:1] // specs_matcher compares with the first operand only
		}
		for _, v := range vals {
			if name == "name" && op != "<in>" && op != "<all-in>" && !strings.HasPrefix(v, "/") {
				// "sda" means /dev/sda: devices are always named by path.
				v = "/dev/" + v
			}
			p.strs = append(p.strs, quote(v))
		}
		p.op = op
		return p, nil
	default: // kindInt
		s, err := intString(v)
		if err != nil {
			return p, fmt.Errorf("%w: hint %q is not an integer value: %v", ErrInvalid, name, display(v))
		}
		p.expr = s
		op, vals, err := split(name, s)
		if err != nil {
			return p, err
		}
		// Every operand must be a positive integer, though only the first
		// is compared (as in specs_matcher).
		for i, v := range vals {
			n, err := strconv.Atoi(v)
			if err != nil {
				return p, fmt.Errorf("%w: hint %q is not an integer value: %v", ErrInvalid, name, display(v))
			}
			if n <= 0 {
				return p, fmt.Errorf("%w: hint %q should be a positive integer: %v", ErrInvalid, name, display(v))
			}
			if i == 0 {
				p.num = float64(n)
			}
		}
		if !intOps[op] {
			return p, fmt.Errorf("%w: hint %q: operator %q does not compare integers; use ==, !=, <, <=, >, >= or = (meaning >=), e.g. \">= %s\"",
				ErrInvalid, name, op, vals[0])
		}
		if op == "" {
			op = "=="
		}
		p.op = op
		return p, nil
	}
}

// split extracts the operator and operands of an expression the way
// ironic-lib's _extract_hint_operator_and_values does: lower-case and trim
// it, take a leading operator (if any) and split the rest on it.
func split(name, expr string) (op string, vals []string, err error) {
	e := strings.ToLower(strings.TrimSpace(expr))
	if e == "" {
		return "", nil, fmt.Errorf("%w: hint %q expression is empty", ErrInvalid, name)
	}
	for _, o := range operators {
		if strings.HasPrefix(e, o) {
			op = o
			break
		}
	}
	if op == "" {
		return "", []string{e}, nil
	}
	if op == "<range-in>" {
		return "", nil, fmt.Errorf("%w: hint %q: operator <range-in> is not supported for root device hints", ErrInvalid, name)
	}
	for _, part := range strings.Split(e, op) {
		if part == "" {
			continue
		}
		v := strings.TrimSpace(part)
		if v == "" {
			return "", nil, fmt.Errorf("%w: hint %q: operator %s without a value in %q", ErrInvalid, name, op, expr)
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return "", nil, fmt.Errorf("%w: hint %q: operator %s without a value", ErrInvalid, name, op)
	}
	return op, vals, nil
}

// parseBool is oslo's bool_from_string(strict=True).
func parseBool(v any) (bool, error) {
	var s string
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		s = x
	default:
		var err error
		if s, err = intString(v); err != nil {
			return false, err
		}
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "on", "y", "yes":
		return true, nil
	case "0", "f", "false", "off", "n", "no":
		return false, nil
	}
	return false, fmt.Errorf("not a Boolean: %q", s)
}

// intString renders a JSON value the way Python's str() renders what
// json.loads made of it: integers (float64 or json.Number from Go's
// decoder) without a fraction, strings as they are.
func intString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("not an integer: %v", x)
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return x.String(), nil
	}
	return "", fmt.Errorf("not a number or string: %T", v)
}

func display(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// quote is Python's urllib.parse.quote(s) (safe="/"): everything but
// letters, digits, "_.-~" and "/" becomes %XX of its UTF-8 bytes.
// ironic-lib quotes both the hint and the device value, so equality is
// unaffected, but the ordering operators (s<, s>=...) compare the quoted
// forms, and so do we.
func quote(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '-', c == '~', c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// Empty reports whether there are no hints.
func (h *Hints) Empty() bool { return h == nil || len(h.hints) == 0 }

// Raw returns the hints as they were given.
func (h *Hints) Raw() map[string]any {
	if h == nil {
		return nil
	}
	return h.raw
}

// String renders the normalised hints as ironic-lib stores them, e.g.
// {"model": "s== samsung%20ssd", "size": ">= 100"}.
func (h *Hints) String() string {
	if h.Empty() {
		return "{}"
	}
	parts := make([]string, 0, len(h.hints))
	for _, p := range h.hints {
		var v string
		switch p.kind {
		case kindBool:
			v = strconv.FormatBool(p.b)
		case kindInt:
			v = p.op + " " + strconv.FormatFloat(p.num, 'f', -1, 64)
		default:
			if p.op == "<or>" {
				v = "<or> " + strings.Join(p.strs, " <or> ")
			} else {
				v = p.op + " " + strings.Join(p.strs, " ")
			}
		}
		parts = append(parts, strconv.Quote(p.name)+": "+strconv.Quote(v))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
