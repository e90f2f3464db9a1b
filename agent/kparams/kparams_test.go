package kparams

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSplit(t *testing.T) {
	got := Split(`console=ttyS0  foo="a b c" bar  "x y"=z` + "\n")
	want := []string{"console=ttyS0", "foo=a b c", "bar", "x y=z"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Split = %q, want %q", got, want)
	}
}

func TestParseIronicTemplate(t *testing.T) {
	// What Ironic's iPXE template produces (ironic.md §3.1).
	cmd := `nofb nomodeset vga=normal ipa-debug=1 ipa-api-url=http://192.0.2.1:6385/ ` +
		`ipa-global-request-id=req-1234 selinux=0 troubleshoot=0 text ` +
		`BOOTIF=01-52-54-00-AA-BB-CC initrd=deploy_ramdisk ipa-inspection-callback-url=http://192.0.2.1:6385/v1/continue_inspection`
	p, err := Parse(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.APIURLs, []string{"http://192.0.2.1:6385"}) {
		t.Errorf("APIURLs = %q (trailing slash must be stripped)", p.APIURLs)
	}
	if !p.Debug || p.Insecure {
		t.Errorf("Debug=%v Insecure=%v", p.Debug, p.Insecure)
	}
	if p.GlobalRequestID != "req-1234" {
		t.Errorf("GlobalRequestID = %q", p.GlobalRequestID)
	}
	if p.BootMAC() != "52:54:00:aa:bb:cc" {
		t.Errorf("BootMAC = %q", p.BootMAC())
	}
	if p.InspectionCallbackURL != "http://192.0.2.1:6385/v1/continue_inspection" {
		t.Errorf("InspectionCallbackURL = %q", p.InspectionCallbackURL)
	}
	// IPA defaults.
	if p.ListenPort != 9999 || p.AdvertisePort != 9999 || p.AdvertiseProtocol != "http" ||
		p.LookupTimeout != 300*time.Second || p.LookupInterval != time.Second {
		t.Errorf("defaults wrong: %+v", p)
	}
	if !reflect.DeepEqual(p.InspectionCollectors, []string{"default", "logs"}) {
		t.Errorf("collectors = %q", p.InspectionCollectors)
	}
}

func TestParseOptions(t *testing.T) {
	p, err := Parse(`ipa-api-url=http://a:1,https://b:2/ ipa-insecure ipa-debug=0 ipa-listen-port=8999 ` +
		`ipa-advertise-host=10.0.0.5 ipa-lookup-interval=0.5 ipa-agent-token=tok ipa-agent-token-required=true ` +
		`ipa-inspection-collectors= ipa-ironic-api-version=1.68`)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.APIURLs, []string{"http://a:1", "https://b:2"}) {
		t.Errorf("APIURLs = %q", p.APIURLs)
	}
	if !p.Insecure || p.Debug {
		t.Errorf("bare ipa-insecure must be true, ipa-debug=0 false: %v %v", p.Insecure, p.Debug)
	}
	if p.ListenPort != 8999 || p.AdvertiseHost != "10.0.0.5" || p.LookupInterval != 500*time.Millisecond {
		t.Errorf("%+v", p)
	}
	if p.AgentToken != "tok" || !p.AgentTokenRequired || p.IronicAPIVersion != "1.68" {
		t.Errorf("%+v", p)
	}
	if len(p.InspectionCollectors) != 0 {
		t.Errorf("empty collectors = %q", p.InspectionCollectors)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []string{
		"ipa-api-url=ftp://x",
		"ipa-api-url=http://",
		"ipa-debug=maybe",
		"ipa-listen-port=abc",
		"ipa-lookup-timeout=-3",
		"ipa-advertise-protocol=gopher",
	} {
		if _, err := Parse(c); err == nil || !strings.Contains(err.Error(), strings.SplitN(c, "=", 2)[0]) {
			t.Errorf("Parse(%q) err = %v, want one naming the key", c, err)
		}
	}
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"01-52-54-00-12-34-56": "52:54:00:12:34:56",
		"52:54:00:12:34:56":    "52:54:00:12:34:56",
		"52-54-00-AB-CD-EF":    "52:54:00:ab:cd:ef",
		"":                     "",
		"zz:54:00:12:34:56":    "",
		"52:54:00:12:34":       "",
	} {
		if got := NormalizeMAC(in); got != want {
			t.Errorf("NormalizeMAC(%q) = %q, want %q", in, got, want)
		}
	}
}
