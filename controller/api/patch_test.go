package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestApplyPatch(t *testing.T) {
	root := func(k string) bool { return k == "extra" || k == "name" || k == "list" }
	doc := func() map[string]any {
		return map[string]any{"extra": map[string]any{"a": map[string]any{"b": "c"}}, "name": "n", "list": []any{"x"}}
	}
	cases := []struct {
		name, ops, want, err string
	}{
		{"add nested", `[{"op":"add","path":"/extra/a/d","value":1}]`, `{"extra":{"a":{"b":"c","d":1}},"list":["x"],"name":"n"}`, ""},
		{"replace", `[{"op":"replace","path":"/name","value":"m"}]`, `{"extra":{"a":{"b":"c"}},"list":["x"],"name":"m"}`, ""},
		{"remove top resets", `[{"op":"remove","path":"/extra"}]`, `{"extra":{},"list":["x"],"name":"n"}`, ""},
		{"remove nested", `[{"op":"remove","path":"/extra/a/b"}]`, `{"extra":{"a":{}},"list":["x"],"name":"n"}`, ""},
		{"replace missing", `[{"op":"replace","path":"/extra/zz","value":1}]`, "", "can't replace non-existent"},
		{"walk through scalar", `[{"op":"add","path":"/name/x","value":1}]`, "", "not an object"},
		{"missing value", `[{"op":"add","path":"/extra/q"}]`, "", "'value' is a required property"},
		{"tilde path", `[{"op":"add","path":"/extra/a~1b","value":1}]`, "", "Invalid patch path"},
		{"empty path", `[{"op":"add","path":"","value":1}]`, "", "Invalid patch path"},
		{"unknown root", `[{"op":"add","path":"/zzz","value":1}]`, "", "Adding a new attribute"},
		{"array element", `[{"op":"add","path":"/list/0","value":1}]`, "", "arrays"},
		{"array index walk", `[{"op":"add","path":"/list/5/x","value":1}]`, "", "out of range"},
		{"test op", `[{"op":"test","path":"/name","value":"n"}]`, "", "not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ops []PatchOp
			if err := json.Unmarshal([]byte(tc.ops), &ops); err != nil {
				t.Fatal(err)
			}
			got, err := ApplyPatch(doc(), ops, root)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Fatalf("got %s, want %s", b, tc.want)
			}
		})
	}
}

// FuzzApplyPatch feeds arbitrary patch documents to the node patch path:
// it must never panic, and must either fail or return a JSON-encodable
// document whose top-level keys are still the allowed ones.
func FuzzApplyPatch(f *testing.F) {
	f.Add(`[{"op":"add","path":"/extra/a","value":{"b":[1,2]}}]`)
	f.Add(`[{"op":"remove","path":"/driver_info/ipmi_password"}]`)
	f.Add(`[{"op":"replace","path":"/properties/cpus/x/y","value":null}]`)
	f.Add(`[{"op":"add","path":"/","value":1},{"op":"remove","path":"//"}]`)
	f.Add(`[{"op":"add","path":"/extra/0/1/2","value":"x"}]`)
	f.Fuzz(func(t *testing.T, patch string) {
		var ops []PatchOp
		if json.Unmarshal([]byte(patch), &ops) != nil {
			return
		}
		doc := map[string]any{
			"extra":       map[string]any{"a": []any{map[string]any{"b": 1}}},
			"driver_info": map[string]any{"ipmi_password": "x"},
			"properties":  map[string]any{"cpus": 2},
			"name":        nil,
		}
		got, err := ApplyPatch(doc, ops, func(k string) bool { return patchable[k] })
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Couldn't apply patch") && !strings.HasPrefix(err.Error(), "Invalid patch") {
				t.Fatalf("unexpected error shape: %v", err)
			}
			return
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("patched document does not encode: %v", err)
		}
		for k := range got {
			if !patchable[k] {
				t.Fatalf("patch added non-patchable root key %q", k)
			}
		}
	})
}
