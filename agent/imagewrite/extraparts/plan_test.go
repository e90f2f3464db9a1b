package extraparts

import (
	"errors"
	"strings"
	"testing"
)

// TestPlan places partitions on paper: no disk involved.
func TestPlan(t *testing.T) {
	const ss, sectors = 512, 1 << 21 // 1 GiB disk
	gpt := func(parts ...extent) *table {
		return &table{kind: "gpt", slots: 128, firstUsable: 34, arrayLBAs: 32, parts: parts}
	}
	mbr := func(parts ...extent) *table {
		return &table{kind: "dos", slots: 4, firstUsable: 2048, parts: parts}
	}
	root := extent{number: 1, start: 2048, end: 22527}
	for _, tc := range []struct {
		name       string
		t          *table
		imageBytes int64
		spec       Spec
		keep       *Preserved
		config2    bool
		want       []extent // number, start, end
		err        string
		is         error
	}{
		{name: "after the last partition", t: gpt(root), spec: Spec{SwapMB: 16, EphemeralMB: 64},
			want: []extent{{number: 2, start: 22528, end: 22528 + 32768 - 1}, {number: 3, start: 55296, end: 55296 + 131072 - 1}}},
		{name: "after the image's bytes when later", t: gpt(root), imageBytes: 32 << 20, spec: Spec{EphemeralMB: 64},
			want: []extent{{number: 2, start: 65536, end: 65536 + 131072 - 1}}},
		{name: "aligned up", t: gpt(extent{number: 1, start: 2048, end: 22600}), spec: Spec{SwapMB: 1},
			want: []extent{{number: 2, start: 24576, end: 24576 + 2048 - 1}}},
		{name: "lowest free number", t: gpt(extent{number: 1, start: 2048, end: 4095}, extent{number: 3, start: 4096, end: 6143}), spec: Spec{SwapMB: 1, EphemeralMB: 1},
			want: []extent{{number: 2, start: 6144, end: 8191}, {number: 4, start: 8192, end: 10239}}},
		// The backup GPT takes the disk's last 33 sectors, so the config
		// drive region starts 65 MiB before the end once aligned down.
		{name: "exactly up to the config drive region", t: gpt(root), spec: Spec{EphemeralMB: 1024 - 11 - 65},
			want: []extent{{number: 2, start: 22528, end: 22528 + (1024-11-65)*2048 - 1}}},
		{name: "one MiB too many", t: gpt(root), spec: Spec{EphemeralMB: 1024 - 11 - 65 + 1}, is: ErrNoSpace,
			err: "only 948 MiB are free there before the last 64 MiB"},
		{name: "swap after a kept ephemeral", t: gpt(root), spec: Spec{SwapMB: 16, EphemeralMB: 64},
			keep: &Preserved{extent: extent{number: 3, start: 24576, end: 24576 + 131072 - 1, name: EphemeralLabel}},
			want: []extent{{number: 3, start: 24576, end: 24576 + 131072 - 1}, {number: 2, start: 155648, end: 155648 + 32768 - 1}}},
		{name: "kept ephemeral overlapped by the image", t: gpt(extent{number: 1, start: 2048, end: 30000}), spec: Spec{},
			keep: &Preserved{extent: extent{number: 2, start: 24576, end: 40000}}, err: "overlaps the ephemeral partition to preserve"},
		{name: "mbr: config drive needs a slot", t: mbr(root, extent{number: 2, start: 22528, end: 43007}), spec: Spec{SwapMB: 1, EphemeralMB: 1, ConfigDrive: true},
			err: "the config drive would need one more"},
		{name: "mbr: image has its own config-2", t: mbr(root, extent{number: 2, start: 22528, end: 43007}), spec: Spec{SwapMB: 1, EphemeralMB: 1, ConfigDrive: true}, config2: true,
			want: []extent{{number: 3, start: 43008, end: 45055}, {number: 4, start: 45056, end: 47103}}},
		{name: "mbr: extended partition is in the way", t: mbr(root, extent{number: 2, start: 22528, end: 43007, extended: true}), spec: Spec{SwapMB: 1},
			want: []extent{{number: 3, start: 43008, end: 45055}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := plan(tc.t, sectors, ss, tc.imageBytes, tc.spec, tc.keep, tc.config2)
			if tc.err != "" || tc.is != nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) || (tc.is != nil && !errors.Is(err, tc.is)) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d placements %+v, want %+v", len(got), got, tc.want)
			}
			for i, w := range tc.want {
				if g := got[i]; g.number != w.number || g.start != w.start || g.end != w.end {
					t.Errorf("placement %d = %d %d-%d, want %d %d-%d", i, g.number, g.start, g.end, w.number, w.start, w.end)
				}
			}
		})
	}
}
