package configdrive

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var node = NodeInfo{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", Name: "node-1"}

func TestFromJSON(t *testing.T) {
	tests := []struct {
		name     string
		raw      any
		node     NodeInfo
		meta     map[string]any
		user     string // "" means no user_data
		network  map[string]any
		vendor   map[string]any
		wantUser bool
	}{
		{
			name: "empty object gets uuid and name",
			raw:  map[string]any{},
			node: node,
			meta: map[string]any{"uuid": node.UUID, "name": node.Name},
		},
		{
			name: "no name on a node without one",
			raw:  map[string]any{},
			node: NodeInfo{UUID: node.UUID},
			meta: map[string]any{"uuid": node.UUID},
		},
		{
			name: "client's uuid and name win, even null",
			raw:  map[string]any{"meta_data": map[string]any{"uuid": "mine", "name": nil, "hostname": "h"}},
			node: node,
			meta: map[string]any{"uuid": "mine", "name": nil, "hostname": "h"},
		},
		{
			name:     "user_data string is used verbatim",
			raw:      map[string]any{"user_data": "#cloud-config\nruncmd: [\"echo a && b > c\"]\n"},
			node:     node,
			meta:     map[string]any{"uuid": node.UUID, "name": node.Name},
			user:     "#cloud-config\nruncmd: [\"echo a && b > c\"]\n",
			wantUser: true,
		},
		{
			name:     "user_data object becomes JSON, unescaped",
			raw:      map[string]any{"user_data": map[string]any{"ignition": map[string]any{"version": "3.4.0"}, "x": "a&b<c>"}},
			node:     node,
			meta:     map[string]any{"uuid": node.UUID, "name": node.Name},
			user:     `{"ignition":{"version":"3.4.0"},"x":"a&b<c>"}`,
			wantUser: true,
		},
		{
			name:     "user_data array becomes JSON",
			raw:      map[string]any{"user_data": []any{"a", 1.5}},
			node:     node,
			meta:     map[string]any{"uuid": node.UUID, "name": node.Name},
			user:     `["a",1.5]`,
			wantUser: true,
		},
		{
			name:     "empty user_data object is still written",
			raw:      map[string]any{"user_data": map[string]any{}},
			node:     node,
			meta:     map[string]any{"uuid": node.UUID, "name": node.Name},
			user:     `{}`,
			wantUser: true,
		},
		{
			name: "null and empty user_data mean none",
			raw:  map[string]any{"user_data": ""},
			node: node,
			meta: map[string]any{"uuid": node.UUID, "name": node.Name},
		},
		{
			name: "null user_data",
			raw:  map[string]any{"user_data": nil},
			node: node,
			meta: map[string]any{"uuid": node.UUID, "name": node.Name},
		},
		{
			name: "network and vendor data",
			raw: map[string]any{
				"network_data": map[string]any{"links": []any{}},
				"vendor_data":  map[string]any{"k": "v"},
			},
			node:    node,
			meta:    map[string]any{"uuid": node.UUID, "name": node.Name},
			network: map[string]any{"links": []any{}},
			vendor:  map[string]any{"k": "v"},
		},
		{
			name:     "encoded JSON keeps big integers exact",
			raw:      json.RawMessage(`{"meta_data": {"n": 9007199254740993}, "user_data": {"n": 9007199254740993}}`),
			node:     node,
			meta:     map[string]any{"n": json.Number("9007199254740993"), "uuid": node.UUID, "name": node.Name},
			user:     `{"n":9007199254740993}`,
			wantUser: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := FromJSON(tt.raw, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.MetaData, tt.meta) {
				t.Errorf("meta_data = %#v, want %#v", c.MetaData, tt.meta)
			}
			if tt.wantUser != (c.UserData != nil) || string(c.UserData) != tt.user {
				t.Errorf("user_data = %q (nil %v), want %q", c.UserData, c.UserData == nil, tt.user)
			}
			if !reflect.DeepEqual(c.NetworkData, tt.network) {
				t.Errorf("network_data = %#v, want %#v", c.NetworkData, tt.network)
			}
			if !reflect.DeepEqual(c.VendorData, tt.vendor) {
				t.Errorf("vendor_data = %#v, want %#v", c.VendorData, tt.vendor)
			}
		})
	}
}

func TestFromJSONDoesNotModifyInput(t *testing.T) {
	meta := map[string]any{"hostname": "h"}
	if _, err := FromJSON(map[string]any{"meta_data": meta}, node); err != nil {
		t.Fatal(err)
	}
	if len(meta) != 1 {
		t.Errorf("input meta_data modified: %v", meta)
	}
}

func TestFromJSONRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  any
		want string
	}{
		{"string", "H4sIAAAA", "got a string"},
		{"null", nil, "got null"},
		{"array", []any{}, "got an array"},
		{"number", 1.0, "got a number"},
		{"unknown key", map[string]any{"meta_data": map[string]any{}, "userdata": "x"}, `unknown key "userdata"`},
		{"unknown keys sorted", map[string]any{"z": 1, "a": 2}, `unknown key "a", "z"`},
		{"meta_data array", map[string]any{"meta_data": []any{}}, "meta_data must be an object, got an array"},
		{"meta_data null", map[string]any{"meta_data": nil}, "meta_data must be an object, got null"},
		{"meta_data string", map[string]any{"meta_data": "{}"}, "meta_data must be an object, got a string"},
		{"network_data null", map[string]any{"network_data": nil}, "network_data must be an object, got null"},
		{"vendor_data list", map[string]any{"vendor_data": []any{}}, "vendor_data must be an object, got an array"},
		{"user_data number", map[string]any{"user_data": 1.0}, "user_data must be a string, an object, an array or null, got a number"},
		{"user_data bool", map[string]any{"user_data": true}, "got a boolean"},
		{"bad JSON", []byte(`{"meta_data": `), "not valid JSON"},
		{"JSON array", json.RawMessage(`[1]`), "got an array"},
		{"trailing JSON", json.RawMessage(`{} {}`), "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromJSON(tt.raw, node)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not match ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "Invalid configdrive format: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	tests := []struct {
		name string
		c    Contents
		want []string // per version
	}{
		{"meta_data only", Contents{}, []string{"meta_data.json"}},
		{"empty maps are omitted", Contents{NetworkData: map[string]any{}, VendorData: map[string]any{}, UserData: []byte{}}, []string{"meta_data.json"}},
		{
			"everything",
			Contents{MetaData: map[string]any{"a": 1}, UserData: []byte("x"), NetworkData: map[string]any{"b": 2}, VendorData: map[string]any{"c": 3}},
			[]string{"meta_data.json", "network_data.json", "user_data", "vendor_data2.json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := tt.c.Files()
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, v := range []string{"2012-08-10", "latest"} {
				for _, f := range tt.want {
					want = append(want, "openstack/"+v+"/"+f)
				}
			}
			if got := slices.Sorted(maps.Keys(files)); !slices.Equal(got, want) {
				t.Errorf("files = %v, want %v", got, want)
			}
		})
	}
	files, _ := Contents{}.Files()
	if got := string(files["openstack/latest/meta_data.json"]); got != "{}" {
		t.Errorf("nil meta_data written as %q, want {}", got)
	}
}
