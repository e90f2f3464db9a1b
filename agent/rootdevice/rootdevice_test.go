package rootdevice

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/protocol"
)

func sp(s string) *string { return &s }

// machine is a realistic storage server as disk.List reports it, in name
// order: an md RAID1 over two SSD partitions, an NVMe drive, a SATA SSD,
// a SATA HDD, a SAS HDD, a USB stick and a small virtio disk.
var machine = []protocol.BlockDevice{
	{Name: "/dev/md0", Size: 479832768512},
	{
		Name: "/dev/nvme0n1", Model: "SAMSUNG MZQL2960HCJR-00A07", Size: 960197124096,
		Serial: sp("S64FNE0R700123"), WWN: sp("eui.36344830526001230025384500000001"),
		WWNWithExtension: sp("eui.36344830526001230025384500000001"),
		ByPath:           sp("/dev/disk/by-path/pci-0000:01:00.0-nvme-1"),
	},
	{
		Name: "/dev/sda", Model: "SAMSUNG MZ7LH480HAHQ-00005", Size: 480103981056,
		Vendor: sp("ATA"), Serial: sp("S45PNA0M123456"),
		WWN: sp("0x5002538e40a1b2c3"), WWNWithExtension: sp("0x5002538e40a1b2c3"),
		HCTL: sp("0:0:0:0"), ByPath: sp("/dev/disk/by-path/pci-0000:00:1f.2-ata-1"),
	},
	{
		Name: "/dev/sdb", Model: "ST4000NM0035-1V4107", Size: 4000787030016, Rotational: true,
		Vendor: sp("ATA"), Serial: sp("ZC1B2C3D"),
		WWN: sp("0x5000c500a1b2c3d4"), WWNWithExtension: sp("0x5000c500a1b2c3d4"),
		HCTL: sp("1:0:0:0"), ByPath: sp("/dev/disk/by-path/pci-0000:00:1f.2-ata-2"),
	},
	{
		Name: "/dev/sdc", Model: "HUS726T4TALS204", Size: 4000787030016, Rotational: true,
		Vendor: sp("HGST"), Serial: sp("V6G1ABCD"),
		WWN: sp("0x5000cca0a1b2c3d4"), WWNWithExtension: sp("0x5000cca0a1b2c3d4a1b2c3d400000001"),
		WWNVendorExtension: sp("0xa1b2c3d400000001"),
		HCTL:               sp("2:0:1:0"), ByPath: sp("/dev/disk/by-path/pci-0000:03:00.0-sas-0x5000cca0a1b2c3d5-lun-0"),
	},
	{
		Name: "/dev/sdd", Model: "Cruzer Blade", Size: 16008609792,
		Vendor: sp("SanDisk"), Serial: sp("4C530001230517115133"), HCTL: sp("6:0:0:0"),
	},
	{Name: "/dev/vda", Size: 20 << 30, Rotational: true, Vendor: sp("0x1af4"), ByPath: sp("/dev/disk/by-path/pci-0000:00:05.0")},
}

// matchCases are run by TestMatch and, against the real ironic-lib, by
// TestAgainstIronicLib; upstreamDiffers marks our deliberate extensions.
var matchCases = []struct {
	name            string
	hints           string // JSON, decoded like the node dict
	want            string
	upstreamDiffers bool
}{
	// size: integer GiB; device size / 2^30 as a float.
	{"size int", `{"size": 20}`, "/dev/vda", false},
	{"size string", `{"size": "20"}`, "/dev/vda", false},
	{"size ==", `{"size": "== 20"}`, "/dev/vda", false},
	{"size != ", `{"size": "!= 20"}`, "/dev/md0", false},
	{"size <", `{"size": "< 20"}`, "/dev/sdd", false},
	{"size <=", `{"size": "<= 20"}`, "/dev/sdd", false},
	{"size >", `{"size": "> 3000"}`, "/dev/sdb", false},
	{"size >=", `{"size": ">= 894"}`, "/dev/nvme0n1", false},
	{"size = means >=", `{"size": "= 894"}`, "/dev/nvme0n1", false},
	{"size no space", `{"size": ">=3726"}`, "/dev/sdb", false},
	// model: lower-cased, URL-quoted on both sides.
	{"model", `{"model": "samsung mz7lh480hahq-00005"}`, "/dev/sda", false},
	{"model case", `{"model": "SAMSUNG MZ7LH480HAHQ-00005"}`, "/dev/sda", false},
	{"model space", `{"model": "Cruzer Blade"}`, "/dev/sdd", false},
	{"model s==", `{"model": "s== ST4000NM0035-1V4107"}`, "/dev/sdb", false},
	{"model s!=", `{"model": "s!= SAMSUNG MZQL2960HCJR-00A07"}`, "/dev/sda", false},
	{"model <in>", `{"model": "<in> samsung"}`, "/dev/nvme0n1", false},
	{"model <in> with space", `{"model": "<in> cruzer bl"}`, "/dev/sdd", false},
	{"model <or>", `{"model": "<or> HUS726T4TALS204 <or> ST4000NM0035-1V4107"}`, "/dev/sdb", false},
	{"model <or> with space", `{"model": "<or> nothing <or> cruzer blade"}`, "/dev/sdd", false},
	{"model <all-in>", `{"model": "<all-in> samsung 00a07"}`, "/dev/nvme0n1", true},
	{"model s<", `{"model": "s< d"}`, "/dev/sdd", false},
	{"model s<=", `{"model": "s<= cruzer%20blade"}`, "/dev/sdd", false},
	{"model s>", `{"model": "s> st"}`, "/dev/sdb", false},
	{"model s>=", `{"model": "s>= st4000nm0035-1v4107"}`, "/dev/sdb", false},
	// vendor; an unknown (None) attribute compares as "none" upstream.
	{"vendor", `{"vendor": "hgst"}`, "/dev/sdc", false},
	{"vendor first ATA", `{"vendor": "ATA"}`, "/dev/sda", false},
	{"vendor s!= matches unknown", `{"vendor": "s!= ATA"}`, "/dev/md0", false},
	{"serial", `{"serial": "S45PNA0M123456"}`, "/dev/sda", false},
	{"serial <in>", `{"serial": "<in> 0517"}`, "/dev/sdd", false},
	{"wwn", `{"wwn": "0x5000C500A1B2C3D4"}`, "/dev/sdb", false},
	{"wwn eui <in>", `{"wwn": "<in> eui."}`, "/dev/nvme0n1", false},
	{"wwn_with_extension", `{"wwn_with_extension": "0x5000cca0a1b2c3d4a1b2c3d400000001"}`, "/dev/sdc", false},
	{"wwn_vendor_extension", `{"wwn_vendor_extension": "0xa1b2c3d400000001"}`, "/dev/sdc", false},
	// name: "sda" means /dev/sda.
	{"name", `{"name": "/dev/sdb"}`, "/dev/sdb", false},
	{"name short", `{"name": "sdb"}`, "/dev/sdb", true},
	{"name md", `{"name": "/dev/md0"}`, "/dev/md0", false},
	{"name md short", `{"name": "md0"}`, "/dev/md0", true},
	{"name <in>", `{"name": "<in> nvme"}`, "/dev/nvme0n1", false},
	{"name <or> short", `{"name": "<or> sdc <or> sdb"}`, "/dev/sdb", true},
	{"name <or> long", `{"name": "<or> /dev/sdc <or> /dev/sdb"}`, "/dev/sdb", false},
	{"name s!=", `{"name": "s!= md0"}`, "/dev/nvme0n1", true},
	{"hctl", `{"hctl": "1:0:0:0"}`, "/dev/sdb", false},
	{"hctl <in>", `{"hctl": "<in> :0:1:"}`, "/dev/sdc", false},
	{"by_path", `{"by_path": "/dev/disk/by-path/pci-0000:01:00.0-nvme-1"}`, "/dev/nvme0n1", false},
	{"by_path <in>", `{"by_path": "<in> -ata-2"}`, "/dev/sdb", false},
	// rotational: bool or oslo's bool strings.
	{"rotational true", `{"rotational": true}`, "/dev/sdb", false},
	{"rotational false", `{"rotational": false}`, "/dev/md0", false},
	{"rotational string", `{"rotational": "true"}`, "/dev/sdb", false},
	{"rotational 1", `{"rotational": "1"}`, "/dev/sdb", false},
	{"rotational number", `{"rotational": 1}`, "/dev/sdb", false},
	{"rotational no", `{"rotational": "No"}`, "/dev/md0", false},
	// All hints must match.
	{"ssd over 800", `{"model": "<in> samsung", "rotational": false, "size": ">= 800"}`, "/dev/nvme0n1", false},
	{"ata ssd", `{"vendor": "ATA", "rotational": false}`, "/dev/sda", false},
	{"big sas", `{"size": ">= 1000", "rotational": true, "vendor": "hgst"}`, "/dev/sdc", false},
	// No hints: smallest device >= 4 GiB.
	{"no hints", `{}`, "/dev/sdd", false},
	{"null hints", `null`, "/dev/sdd", false},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.name, func(t *testing.T) {
			var hints map[string]any
			if err := json.Unmarshal([]byte(tc.hints), &hints); err != nil {
				t.Fatal(err)
			}
			got, err := Match(machine, hints)
			if err != nil {
				t.Fatalf("Match(%s): %v", tc.hints, err)
			}
			if got.Name != tc.want {
				t.Errorf("Match(%s) = %s, want %s", tc.hints, got.Name, tc.want)
			}
		})
	}
}

func TestMatchNotFound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hints map[string]any
		devs  []protocol.BlockDevice
		want  []string // substrings of the error
	}{
		{
			name:  "size not integral GiB",
			hints: map[string]any{"size": 447},
			devs:  machine,
			want: []string{`using these hints {"size":447}`, "/dev/sda (447.13 GiB", `size 447.13 GiB does not satisfy "447"`,
				`model "SAMSUNG MZ7LH480HAHQ-00005"`, `serial "S45PNA0M123456"`},
		},
		{
			name:  "serial typo",
			hints: map[string]any{"serial": "S45PNA0M12345"},
			devs:  machine,
			want:  []string{`serial "S45PNA0M123456" does not match "S45PNA0M12345"`, "serial unknown", "Found 7:"},
		},
		{
			name:  "empty attribute skips device",
			hints: map[string]any{"model": "<in> a"},
			devs:  []protocol.BlockDevice{{Name: "/dev/md0", Size: 10 << 30}},
			want:  []string{"/dev/md0 (10 GiB", "model is empty"},
		},
		{
			name:  "wwn shown when hinted",
			hints: map[string]any{"wwn": "0x1", "rotational": true},
			devs:  machine[2:3],
			want:  []string{`wwn "0x5002538e40a1b2c3"`, "rotational false", `wwn "0x5002538e40a1b2c3" does not match "0x1"`},
		},
		{
			name:  "rotational",
			hints: map[string]any{"rotational": true},
			devs:  machine[2:3],
			want:  []string{"rotational is false, the hint wants true"},
		},
		{
			name: "no hints, all small",
			devs: []protocol.BlockDevice{{Name: "/dev/sda", Size: 2 << 30}, {Name: "/dev/sdb", Size: 4<<30 - 512}},
			want: []string{"root device hints were not provided and all found block devices are smaller than 4294967296B.",
				"/dev/sda (2 GiB", "/dev/sdb (3.99 GiB"},
		},
		{
			name: "no devices",
			want: []string{"smaller than 4294967296B. No block devices were found."},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Match(tc.devs, tc.hints)
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Match: %v, want ErrNotFound", err)
			}
			var nf *NotFoundError
			if !errors.As(err, &nf) || len(nf.Devices) != len(tc.devs) {
				t.Errorf("NotFoundError %+v does not carry the %d devices", nf, len(tc.devs))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestMatchNoHintsOrder(t *testing.T) {
	devs := []protocol.BlockDevice{
		{Name: "/dev/sdc", Size: 100 << 30},
		{Name: "/dev/sdb", Size: 50 << 30},
		{Name: "/dev/sda", Size: 50 << 30},
		{Name: "/dev/sdd", Size: 1 << 30},
	}
	got, err := Match(devs, nil)
	if err != nil || got.Name != "/dev/sda" {
		t.Errorf("Match = %s, %v; want the smallest >= 4 GiB, ties by name: /dev/sda", got.Name, err)
	}
	if devs[0].Name != "/dev/sdc" {
		t.Error("Match reordered its argument")
	}
	exact := []protocol.BlockDevice{{Name: "/dev/sdb", Size: MinSize}, {Name: "/dev/sda", Size: MinSize - 512}}
	if got, err := Match(exact, nil); err != nil || got.Name != "/dev/sdb" {
		t.Errorf("Match = %s, %v; want /dev/sdb of exactly 4 GiB", got.Name, err)
	}
}

var invalidCases = []struct {
	name  string
	hints string
	want  string
}{
	{"unknown", `{"size": 10, "disk": "sda", "colour": "red"}`, `the hints "colour, disk" are invalid; valid hints are: size, model, wwn, serial, vendor, wwn_with_extension, wwn_vendor_extension, name, rotational, hctl, by_path`},
	{"size word", `{"size": "big"}`, `hint "size" is not an integer value: "big"`},
	{"size zero", `{"size": 0}`, `hint "size" should be a positive integer`},
	{"size negative", `{"size": ">= -1"}`, `hint "size" should be a positive integer`},
	{"size fraction", `{"size": 10.5}`, `hint "size" is not an integer value: 10.5`},
	{"size bool", `{"size": true}`, `hint "size" is not an integer value: true`},
	{"size null", `{"size": null}`, `hint "size" is not an integer value: null`},
	{"size empty", `{"size": " "}`, `hint "size" expression is empty`},
	{"size string op", `{"size": "s== 10"}`, `operator "s==" does not compare integers`},
	{"size <in>", `{"size": "<in> 10"}`, `operator "<in>" does not compare integers`},
	{"size <or>", `{"size": "<or> 10 <or> 20"}`, `operator "<or>" does not compare integers`},
	{"model number", `{"model": 123}`, `hint "model" is not a string value: 123`},
	{"model list", `{"model": ["a"]}`, `hint "model" is not a string value: ["a"]`},
	{"model empty", `{"model": ""}`, `hint "model" expression is empty`},
	{"model blank", `{"model": "   "}`, `hint "model" expression is empty`},
	{"model op only", `{"model": "s=="}`, `operator s== without a value`},
	{"model numeric op", `{"model": ">= 10"}`, `hint "model": operator ">=" compares numbers`},
	{"model numeric =", `{"serial": "=abc"}`, `operator "=" compares numbers`},
	{"model empty <or>", `{"model": "<or> a <or>   <or> b"}`, `operator <or> without a value`},
	{"range-in", `{"model": "<range-in> [ 1 2 ]"}`, `<range-in> is not supported`},
	{"rotational word", `{"rotational": "maybe"}`, `hint "rotational" is not a Boolean value`},
	{"rotational 2", `{"rotational": 2}`, `hint "rotational" is not a Boolean value`},
	{"rotational op", `{"rotational": "== 1"}`, `hint "rotational" is not a Boolean value`},
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			var hints map[string]any
			if err := json.Unmarshal([]byte(tc.hints), &hints); err != nil {
				t.Fatal(err)
			}
			_, err := Parse(hints)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%s) = %v, want ErrInvalid", tc.hints, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%s) error %q\ndoes not contain %q", tc.hints, err, tc.want)
			}
			_, err = Match(machine, hints)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "failed to validate") {
				t.Errorf("Match(%s) = %v, want a validation error", tc.hints, err)
			}
		})
	}
}

func TestHintsString(t *testing.T) {
	h, err := Parse(map[string]any{
		"model": "Samsung SSD", "size": ">=100", "name": "<or> sda <or> nvme0n1",
		"rotational": "off", "serial": "<all-in> abc  def", "hctl": "1:0:0:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"size": ">= 100", "model": "s== samsung%20ssd", "serial": "<all-in> abc def", "name": "<or> /dev/sda <or> /dev/nvme0n1", "rotational": "false", "hctl": "s== 1%3A0%3A0%3A0"}`
	if got := h.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
	if s := (*Hints)(nil).String(); s != "{}" {
		t.Errorf("nil String() = %s", s)
	}
}

func TestQuote(t *testing.T) {
	// Expected values from Python's urllib.parse.quote.
	for in, want := range map[string]string{
		"samsung ssd 860":           "samsung%20ssd%20860",
		"/dev/disk/by-path/pci-0:1": "/dev/disk/by-path/pci-0%3A1",
		"a_b.c-d~e":                 "a_b.c-d~e",
		"<in>&=+$,;@!'()*":          "%3Cin%3E%26%3D%2B%24%2C%3B%40%21%27%28%29%2A",
		"é":                         "%C3%A9",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFind(t *testing.T) {
	h, err := Parse(map[string]any{"vendor": "ata"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range h.Find(machine) {
		names = append(names, d.Name)
	}
	if strings.Join(names, " ") != "/dev/sda /dev/sdb" {
		t.Errorf("Find = %v", names)
	}
	if n := len((&Hints{}).Find(machine)); n != len(machine) {
		t.Errorf("empty hints found %d devices, want all", n)
	}
}

func TestSkipList(t *testing.T) {
	var v any
	if err := json.Unmarshal([]byte(`[{"name": "/dev/sdd"}, {"vendor": "hgst", "rotational": true}, {"volume_name": "root"}]`), &v); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSkipList(v)
	if err != nil {
		t.Fatal(err)
	}
	kept, skipped := s.Apply(machine)
	if strings.Join(skipped, " ") != "/dev/sdc /dev/sdd" || len(kept) != len(machine)-2 {
		t.Errorf("Apply: skipped %v, kept %d", skipped, len(kept))
	}
	if len(s.VolumeNames) != 1 || s.VolumeNames[0] != "root" {
		t.Errorf("VolumeNames = %v", s.VolumeNames)
	}
	if (*SkipList)(nil).Skips(machine[0]) {
		t.Error("nil SkipList skips")
	}

	for _, tc := range []struct{ name, in, want string }{
		{"not a list", `{"name": "sda"}`, "must be a list"},
		{"not a dict", `["sda"]`, "entry 0 must be a dict"},
		{"empty dict", `[{"name": "sda"}, {}]`, "entry 1 is empty"},
		{"bad hint", `[{"size": "huge"}]`, `skip_block_devices entry 0: invalid root device hints: hint "size"`},
		{"unknown hint", `[{"label": "x"}]`, `the hints "label" are invalid`},
		{"bad volume", `[{"volume_name": 1}]`, "volume_name must be a non-empty string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tc.in), &v); err != nil {
				t.Fatal(err)
			}
			_, err := ParseSkipList(v)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseSkipList(%s) = %v, want ErrInvalid containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestForNode(t *testing.T) {
	withMD(t, nil) // /dev/md0 of machine is not running here
	node := func(js string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name, node, want, err string
	}{
		{"properties", `{"properties": {"root_device": {"rotational": true}}}`, "/dev/sdb", ""},
		{"instance_info wins", `{"instance_info": {"root_device": {"name": "sdc"}}, "properties": {"root_device": {"name": "sdb"}}}`, "/dev/sdc", ""},
		{"empty instance_info falls back", `{"instance_info": {"root_device": {}}, "properties": {"root_device": {"name": "sdb"}}}`, "/dev/sdb", ""},
		{"no hints", `{"properties": {}}`, "/dev/sdd", ""},
		{"skip list then size rule", `{"properties": {"skip_block_devices": [{"name": "/dev/sdd"}]}}`, "/dev/vda", ""},
		{"skip list then hints", `{"properties": {"root_device": {"rotational": true}, "skip_block_devices": [{"model": "<in> st4000"}]}}`, "/dev/sdc", ""},
		{"skipped device named", `{"properties": {"root_device": {"name": "sdb"}, "skip_block_devices": [{"name": "sdb"}]}}`, "", "Excluded by properties.skip_block_devices: /dev/sdb."},
		{"invalid hints", `{"properties": {"root_device": {"size": "x"}}}`, "", "failed to validate"},
		{"invalid skip list", `{"properties": {"skip_block_devices": {}}}`, "", "must be a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node(tc.node)
			got, err := ForNode(machine, n)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ForNode = %s, %v; want error containing %q", got.Name, err, tc.err)
				}
				if strings.Contains(tc.name, "invalid") && !errors.Is(Validate(n), ErrInvalid) {
					t.Errorf("Validate = %v, want ErrInvalid", Validate(n))
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("ForNode = %s, %v; want %s", got.Name, err, tc.want)
			}
			if err := Validate(n); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// ironicLibScript runs ironic-lib's match_root_device_hints over the
// devices and hint sets given as JSON on stdin and prints, per hint set,
// the matched name, null, or the exception.
const ironicLibScript = `
import json, logging, sys
logging.disable(logging.CRITICAL)
from ironic_lib import utils
inp = json.load(sys.stdin)
out = []
for hints in inp["hints"]:
    try:
        d = utils.match_root_device_hints(inp["devices"], hints)
        out.append({"name": d["name"] if d else None})
    except Exception as e:
        out.append({"error": type(e).__name__ + ": " + str(e)})
json.dump(out, sys.stdout)
`

// TestAgainstIronicLib cross-checks Match with the real ironic-lib 5.3.0
// (Debian's python3-ironic-lib) when it is installed.
func TestAgainstIronicLib(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import ironic_lib.utils").Run(); err != nil {
		t.Skip("ironic-lib not installed (Debian python3-ironic-lib)")
	}
	type result struct {
		Name  *string `json:"name"`
		Error string  `json:"error"`
	}
	run := func(hints []string) []result {
		var in struct {
			Devices []protocol.BlockDevice `json:"devices"`
			Hints   []json.RawMessage      `json:"hints"`
		}
		in.Devices = machine
		for _, h := range hints {
			in.Hints = append(in.Hints, json.RawMessage(h))
		}
		b, _ := json.Marshal(in)
		cmd := exec.Command(py, "-c", ironicLibScript)
		cmd.Stdin = bytes.NewReader(b)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ironic-lib: %v", err)
		}
		var res []result
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("ironic-lib output %s: %v", out, err)
		}
		return res
	}

	var hints []string
	for _, tc := range matchCases {
		hints = append(hints, tc.hints)
	}
	for i, r := range run(hints) {
		tc := matchCases[i]
		got := "<none>"
		if r.Name != nil {
			got = *r.Name
		}
		if r.Error != "" {
			got = r.Error
		}
		if tc.upstreamDiffers {
			if got == tc.want {
				t.Errorf("%s: ironic-lib also gives %s; drop upstreamDiffers", tc.name, got)
			}
			continue
		}
		if !strings.HasSuffix(tc.name, "hints") && got != tc.want {
			t.Errorf("%s %s: ironic-lib gives %s, we %s", tc.name, tc.hints, got, tc.want)
		}
	}

	// Corner cases of the grammar and of unknown (None) attributes: we
	// must pick what ironic-lib picks, or reject what it rejects.
	edge := []string{
		`{"model": "s== samsung mz7lh480hahq-00005 s== x"}`,
		`{"model": "<in>samsung"}`,
		`{"model": "<or> a <or> cruzer blade <or>"}`,
		`{"model": "  samsung  mz7lh480hahq-00005 "}`,
		`{"serial": "<or> zc1b2c3d"}`,
		`{"serial": "<in> NON"}`,
		`{"vendor": "none"}`,
		`{"wwn": "s!= 0x5000c500a1b2c3d4", "rotational": true}`,
		`{"hctl": "s>= 2:0:0:0"}`,
		`{"hctl": "s< 1:0:0:1"}`,
		`{"by_path": "<in> 0000:00:1f.2"}`,
		`{"name": "/dev/sda", "size": 447}`,
		`{"rotational": "t"}`,
		`{"rotational": "OFF", "size": "< 500"}`,
		`{"size": "+20"}`,
		`{"size": "020"}`,
		`{"size": "> 10 20"}`,
		`{"size": ">= 3726", "model": "s> hus"}`,
	}
	for i, r := range run(edge) {
		var hints map[string]any
		if err := json.Unmarshal([]byte(edge[i]), &hints); err != nil {
			t.Fatal(err)
		}
		got, err := Match(machine, hints)
		switch {
		case r.Error != "":
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: ironic-lib fails (%s), we give %s, %v", edge[i], r.Error, got.Name, err)
			}
		case r.Name == nil:
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: ironic-lib finds nothing, we give %s, %v", edge[i], got.Name, err)
			}
		case err != nil || got.Name != *r.Name:
			t.Errorf("%s: ironic-lib picks %s, we %s, %v", edge[i], *r.Name, got.Name, err)
		}
	}

	// Hints we reject must never be ones ironic-lib would have matched a
	// device with.
	hints = nil
	for _, tc := range invalidCases {
		hints = append(hints, tc.hints)
	}
	for i, r := range run(hints) {
		if r.Name != nil {
			t.Errorf("%s %s: we reject, ironic-lib picks %s", invalidCases[i].name, invalidCases[i].hints, *r.Name)
		}
	}
}
