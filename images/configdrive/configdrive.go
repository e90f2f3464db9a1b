// Package configdrive builds OpenStack config drives: the small ISO9660
// image, labelled "config-2", from which cloud-init (or Ignition,
// cloudbase-init, Glean) reads an instance's metadata, user data and
// network configuration on first boot.
//
// Ironic accepts a config drive in `PUT /v1/nodes/{id}/states/provision`
// either as a string (a gzipped, base64-encoded image, or a URL), which is
// passed to the agent unchanged, or (API ≥ 1.56) as a JSON object
// {"meta_data", "network_data", "user_data", "vendor_data"}, which the
// conductor turns into an image the way openstacksdk's
// `openstack.baremetal.configdrive.build` does. This package does the
// latter: [FromJSON] validates the object and applies Ironic's defaults,
// [BuildISO] lays the files out and packs them, and [Encode] produces the
// string the agent receives. [Build] chains the three.
//
// The API layer owns the microversion gates (objects need 1.56,
// vendor_data 1.59) and the checks on the string form.
package configdrive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalid marks a configdrive object the API must reject with 400; the
// error text starts with Ironic's "Invalid configdrive format: ".
var ErrInvalid = errors.New("invalid configdrive")

// NodeInfo is what Ironic copies from the node into meta_data when the
// client did not provide it.
type NodeInfo struct {
	UUID string
	Name string // optional; Ironic only adds "name" when the node has one
}

// Contents is what goes into the config drive. The zero value of a field
// means "no such file", except MetaData, which is always written (as {} if
// nil): cloud-init does not recognise a config drive without it.
type Contents struct {
	MetaData map[string]any
	// UserData is written verbatim. Ironic passes a string through as
	// UTF-8 and serialises an object or array as JSON (Ignition configs,
	// cloud-init's JSON form).
	UserData    []byte
	NetworkData map[string]any // network_data.json, Nova's network-data format
	VendorData  map[string]any // vendor_data2.json
}

// allowedKeys are the only keys Ironic's _CONFIG_DRIVE_SCHEMA allows
// ("additionalProperties": false).
var allowedKeys = []string{"meta_data", "network_data", "user_data", "vendor_data"}

// FromJSON validates a configdrive object as decoded from the request body
// (map[string]any; decode with json.Decoder.UseNumber to keep large
// integers exact) or still encoded (json.RawMessage, []byte), the way
// Ironic's _CONFIG_DRIVE_SCHEMA does, and applies Ironic's
// build_configdrive defaults: meta_data.uuid = node.UUID and, when the
// node has a name, meta_data.name = node.Name, unless the client set them.
//
// The input is not modified. Errors wrap ErrInvalid.
func FromJSON(raw any, node NodeInfo) (Contents, error) {
	obj, err := asObject(raw)
	if err != nil {
		return Contents{}, err
	}
	var unknown []string
	for k := range obj {
		if !slices.Contains(allowedKeys, k) {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Contents{}, invalidf("unknown key %s (allowed: %s)",
			strings.Join(unknown, ", "), strings.Join(allowedKeys, ", "))
	}

	var c Contents
	if c.MetaData, err = objectField(obj, "meta_data"); err != nil {
		return Contents{}, err
	}
	if c.NetworkData, err = objectField(obj, "network_data"); err != nil {
		return Contents{}, err
	}
	if c.VendorData, err = objectField(obj, "vendor_data"); err != nil {
		return Contents{}, err
	}
	if c.UserData, err = userData(obj["user_data"]); err != nil {
		return Contents{}, err
	}

	// Copy before defaulting: the caller's map may be stored as-is in
	// instance_info, and Ironic stores what the client sent.
	md := make(map[string]any, len(c.MetaData)+2)
	for k, v := range c.MetaData {
		md[k] = v
	}
	if _, ok := md["uuid"]; !ok && node.UUID != "" {
		md["uuid"] = node.UUID
	}
	if _, ok := md["name"]; !ok && node.Name != "" {
		md["name"] = node.Name
	}
	c.MetaData = md
	return c, nil
}

func asObject(raw any) (map[string]any, error) {
	switch v := raw.(type) {
	case map[string]any:
		return v, nil
	case json.RawMessage:
		return decodeObject(v)
	case []byte:
		return decodeObject(v)
	case string:
		return nil, invalidf("expected a JSON object, got a string (a gzipped base64 image or a URL is passed to the agent as it is, not built)")
	case nil:
		return nil, invalidf("expected a JSON object, got null")
	default:
		return nil, invalidf("expected a JSON object, got %s", jsonType(raw))
	}
}

func decodeObject(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, invalidf("not valid JSON: %v", err)
	}
	if d.More() {
		return nil, invalidf("trailing data after the JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalidf("expected a JSON object, got %s", jsonType(v))
	}
	return obj, nil
}

// objectField returns obj[key] when it is an object, nil when absent. As in
// Ironic's schema, an explicit null is not an object.
func objectField(obj map[string]any, key string) (map[string]any, error) {
	v, ok := obj[key]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalidf("%s must be an object, got %s", key, jsonType(v))
	}
	return m, nil
}

// userData applies Ironic's conversion: string -> UTF-8 bytes, object or
// array -> JSON, null -> none. An empty string yields no user_data file,
// as in openstacksdk ("if user_data:").
func userData(v any) ([]byte, error) {
	switch u := v.(type) {
	case nil:
		return nil, nil
	case string:
		if u == "" {
			return nil, nil
		}
		return []byte(u), nil
	case map[string]any, []any:
		b, err := marshal(u)
		if err != nil {
			return nil, invalidf("user_data: %v", err)
		}
		return b, nil
	default:
		return nil, invalidf("user_data must be a string, an object, an array or null, got %s", jsonType(v))
	}
}

// marshal is json.Marshal without HTML escaping: user data is not HTML, and
// "<", ">" and "&" in shell snippets should stay readable.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jsonType names a decoded JSON value's type the way the schema does.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, json.Number, int, int64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// invalidError reads like Ironic's 400 message and matches ErrInvalid.
type invalidError struct{ reason string }

func (e *invalidError) Error() string        { return "Invalid configdrive format: " + e.reason }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{reason: fmt.Sprintf(format, args...)}
}
