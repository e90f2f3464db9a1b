package api

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
)

// PatchOp is one RFC 6902 operation; Ironic accepts add, replace, remove.
type PatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// pathRe is Ironic 21.4's JSON patch path rule: "/" separated words of
// [A-Za-z0-9_-] (no "~" escapes before API 1.98).
var pathRe = regexp.MustCompile(`^(/[\w-]+)+$`)

func topLevel(path string) string {
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	top, _, _ := strings.Cut(path[1:], "/")
	return top
}

// ApplyPatch applies ops to doc one at a time and returns the result; doc
// itself is modified. rootKey says which top-level keys may be added. Any
// failure is a 400 naming the operation, and nothing is applied.
func ApplyPatch(doc map[string]any, ops []PatchOp, rootKey func(string) bool) (map[string]any, error) {
	if ops == nil {
		return nil, badRequest("Invalid patch: expected a JSON array of operations")
	}
	for i, op := range ops {
		if err := applyOp(doc, op, rootKey); err != nil {
			return nil, badRequest("Couldn't apply patch '%s'. Reason: %s", opText(ops[i]), err.Error())
		}
	}
	return doc, nil
}

func opText(op PatchOp) string {
	b, _ := json.Marshal(op)
	return string(b)
}

type patchError string

func (e patchError) Error() string { return string(e) }

func applyOp(doc map[string]any, op PatchOp, rootKey func(string) bool) error {
	if !pathRe.MatchString(op.Path) {
		return patchError("Invalid patch path '" + op.Path + "'")
	}
	var value any
	switch op.Op {
	case "add", "replace":
		if len(op.Value) == 0 {
			return patchError("'value' is a required property")
		}
		dec := json.NewDecoder(strings.NewReader(string(op.Value)))
		dec.UseNumber()
		if err := dec.Decode(&value); err != nil {
			return patchError("invalid value: " + err.Error())
		}
	case "remove":
		if len(op.Value) != 0 {
			return patchError("'remove' takes no value")
		}
	default:
		return patchError("Operation '" + op.Op + "' is not supported; use add, replace or remove")
	}
	parts := strings.Split(op.Path[1:], "/")
	if len(parts) == 1 {
		key := parts[0]
		if !rootKey(key) {
			if op.Op == "add" {
				return patchError("Adding a new attribute (/" + key + ") to the root of the resource is not allowed.")
			}
			return patchError("can't " + op.Op + " non-existent attribute '/" + key + "'")
		}
		if op.Op == "remove" {
			// Removing a top-level field resets it to its default.
			if _, isObj := doc[key].(map[string]any); isObj {
				doc[key] = map[string]any{}
			} else {
				doc[key] = nil
			}
			return nil
		}
		doc[key] = value
		return nil
	}
	// Walk to the parent container.
	var parent any = doc
	for _, p := range parts[:len(parts)-1] {
		next, err := child(parent, p)
		if err != nil {
			return err
		}
		parent = next
	}
	last := parts[len(parts)-1]
	switch c := parent.(type) {
	case map[string]any:
		_, exists := c[last]
		switch op.Op {
		case "add":
			c[last] = value
		case "replace":
			if !exists {
				return patchError("can't replace non-existent object '" + last + "'")
			}
			c[last] = value
		case "remove":
			if !exists {
				return patchError("can't remove non-existent object '" + last + "'")
			}
			delete(c, last)
		}
		return nil
	case []any:
		// Arrays are reached only through their parent map; changing a
		// slice in place needs the parent, so rebuild it there.
		return patchError("patching elements of arrays is not supported; replace the whole array")
	}
	return patchError("member '" + last + "' not found: its parent is not an object")
}

func child(container any, key string) (any, error) {
	switch c := container.(type) {
	case map[string]any:
		v, ok := c[key]
		if !ok {
			return nil, patchError("member '" + key + "' not found")
		}
		return v, nil
	case []any:
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 || i >= len(c) {
			return nil, patchError("index '" + key + "' out of range")
		}
		return c[i], nil
	}
	return nil, patchError("member '" + key + "' not found: its parent is not an object")
}
