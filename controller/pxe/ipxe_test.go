package pxe

import (
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s mismatch:\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func TestBootScriptGolden(t *testing.T) {
	for _, base := range []string{"http://10.0.0.1:8080", "http://10.0.0.1:8080/"} {
		got, err := BootScript(base)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "boot.ipxe.golden", got)
	}
}

func TestNodeScriptGolden(t *testing.T) {
	agent, err := AgentParams("http://10.0.0.1:6385/", "52:54:00:AB:CD:EF",
		"console=ttyS0,115200n8", "ipa-insecure=1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		golden string
		ns     NodeScript
	}{
		{"deploy.ipxe.golden", NodeScript{
			Mode:         ModeDeploy,
			KernelURL:    "http://10.0.0.1:8080/images/vmlinuz",
			InitrdURL:    "http://10.0.0.1:8080/images/ironlite-agent.cpio.gz",
			KernelParams: agent,
		}},
		{"deploy-runtime-bootif.ipxe.golden", NodeScript{
			Mode:         ModeDeploy,
			KernelURL:    "https://boot.example.com/vmlinuz",
			InitrdURL:    "https://boot.example.com/initrd?v=3",
			KernelParams: []string{"ipa-api-url=http://10.0.0.1:6385", "nomodeset"},
		}},
		{"disk.ipxe.golden", NodeScript{Mode: ModeDisk}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := RenderNodeScript(tt.ns)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
		})
	}
}

func TestAgentParams(t *testing.T) {
	tests := []struct {
		name    string
		api     string
		mac     string
		extra   []string
		want    []string
		wantErr string
	}{
		{
			name: "api and bootif",
			api:  "http://10.0.0.1:6385/", mac: "52:54:00:AB:CD:EF",
			want: []string{"ipa-api-url=http://10.0.0.1:6385", "BOOTIF=01-52-54-00-ab-cd-ef"},
		},
		{
			name: "no mac, extras kept in order",
			api:  "https://ctl.example.com", extra: []string{"ipa-debug=1", "console=tty0"},
			want: []string{"ipa-api-url=https://ctl.example.com", "ipa-debug=1", "console=tty0"},
		},
		{name: "bad mac", api: "http://h", mac: "52:54:00", wantErr: "BOOTIF"},
		{name: "bad api scheme", api: "ftp://h", wantErr: "scheme must be http or https"},
		{name: "api with variable", api: "http://${next-server}:6385", wantErr: "'$'"},
		{name: "unsafe extra", api: "http://h", extra: []string{"a=b c"}, wantErr: "whitespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AgentParams(tt.api, tt.mac, tt.extra...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRenderNodeScriptRefusesInjection feeds values an operator could set
// and checks that none of them reaches a script.
func TestRenderNodeScriptRefusesInjection(t *testing.T) {
	ok := NodeScript{
		Mode:         ModeDeploy,
		KernelURL:    "http://10.0.0.1:8080/vmlinuz",
		InitrdURL:    "http://10.0.0.1:8080/initrd",
		KernelParams: []string{"ipa-api-url=http://10.0.0.1:6385"},
	}
	with := func(f func(*NodeScript)) NodeScript {
		ns := ok
		ns.KernelParams = slices.Clone(ok.KernelParams)
		f(&ns)
		return ns
	}
	tests := []struct {
		name string
		ns   NodeScript
		want string // in the error message
	}{
		{"newline in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "quiet\nshell")
		}), "line break"},
		{"CR in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "quiet\rshell")
		}), "line break"},
		{"space in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "root=/dev/sda || shell")
		}), "whitespace"},
		{"tab in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "a=b\tc")
		}), "whitespace"},
		{"variable in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "x=${root-path}")
		}), "'$'"},
		{"NUL in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "a=b\x00")
		}), "NUL"},
		{"quote in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, `a="b c"`)
		}), `'"'`},
		{"option-like param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "--timeout=1")
		}), "must not start with '-'"},
		{"empty param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "")
		}), "empty"},
		{"shebang smuggled in param", with(func(ns *NodeScript) {
			ns.KernelParams = append(ns.KernelParams, "x\n#!ipxe\nshell")
		}), "line break"},
		{"variable in URL", with(func(ns *NodeScript) {
			ns.KernelURL = "http://${next-server}/vmlinuz"
		}), "'$'"},
		{"newline in URL", with(func(ns *NodeScript) {
			ns.InitrdURL = "http://h/initrd\nshell"
		}), "line break"},
		{"space in URL", with(func(ns *NodeScript) {
			ns.KernelURL = "http://h/vmlinuz console=tty0"
		}), "whitespace"},
		{"operator in URL", with(func(ns *NodeScript) {
			ns.KernelURL = "http://h/vmlinuz || shell"
		}), "whitespace"},
		{"shebang smuggled in URL", with(func(ns *NodeScript) {
			ns.KernelURL = "http://h/#!ipxe"
		}), "'#'"},
		{"backslash in URL", with(func(ns *NodeScript) {
			ns.KernelURL = `http://h/a\nb`
		}), `'\\'`},
		{"non-http URL", with(func(ns *NodeScript) { ns.KernelURL = "tftp://h/vmlinuz" }), "scheme"},
		{"relative URL", with(func(ns *NodeScript) { ns.KernelURL = "vmlinuz" }), "scheme"},
		{"no host", with(func(ns *NodeScript) { ns.KernelURL = "http:///vmlinuz" }), "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderNodeScript(tt.ns)
			if err == nil {
				t.Fatalf("rendered:\n%s\nwant an error", got)
			}
			if !errors.Is(err, ErrUnsafeValue) {
				t.Errorf("err = %v, does not wrap ErrUnsafeValue", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "template:") {
				t.Errorf("err = %v, leaks text/template internals", err)
			}
		})
	}
}

func TestRenderNodeScriptInvalid(t *testing.T) {
	tests := []struct {
		name string
		ns   NodeScript
		want string
	}{
		{"unknown mode", NodeScript{Mode: "ramdisk"}, `unknown script mode "ramdisk"`},
		{"empty mode", NodeScript{}, `unknown script mode ""`},
		{"deploy without kernel", NodeScript{Mode: ModeDeploy, InitrdURL: "http://h/i"}, "kernel and initrd URLs are required"},
		{"disk with kernel", NodeScript{Mode: ModeDisk, KernelURL: "http://h/k"}, "takes no kernel"},
		{"disk with params", NodeScript{Mode: ModeDisk, KernelParams: []string{"a=b"}}, "takes no kernel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RenderNodeScript(tt.ns)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBootScriptRefuses(t *testing.T) {
	tests := []struct{ base, want string }{
		{"http://h/\n#!ipxe\nshell", "line break"},
		{"http://${next-server}", "'$'"},
		{"http://h/boot dir", "whitespace"},
		{"http://h/?x=1", "query"},
		{"h:8080", "scheme"},
		{"", "empty"},
	}
	for _, tt := range tests {
		_, err := BootScript(tt.base)
		if err == nil || !errors.Is(err, ErrUnsafeValue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("BootScript(%q) err = %v, want ErrUnsafeValue mentioning %s", tt.base, err, tt.want)
		}
	}
}

func TestCheckKernelParamAccepts(t *testing.T) {
	for _, p := range []string{
		"nomodeset", "console=ttyS0,115200n8", "ipa-api-url=https://[fd00::1]:6385",
		"BOOTIF=01-52-54-00-ab-cd-ef", "ipa-global-request-id=req-0f3e", "rd.shell=0",
		"ip=dhcp", "a=b=c", "x=50%", "user@host", "a+b",
	} {
		if err := CheckKernelParam(p); err != nil {
			t.Errorf("CheckKernelParam(%q) = %v, want nil", p, err)
		}
	}
}

func TestHexHyp(t *testing.T) {
	mac, err := net.ParseMAC("52:54:00:AB:CD:EF")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := HexHyp(mac), "52-54-00-ab-cd-ef"; got != want {
		t.Errorf("HexHyp = %q, want %q", got, want)
	}
}
