package ipmi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		info    string // JSON driver_info
		wantErr string // substring; "" = valid
		missing bool
		check   func(*testing.T, *BMCInfo)
	}{
		{name: "empty", info: `{}`, wantErr: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address'].", missing: true},
		{name: "empty address", info: `{"ipmi_address": ""}`, wantErr: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address'].", missing: true},
		{name: "minimal", info: `{"ipmi_address": "10.0.0.5"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.Port != 623 || b.CipherSuite != 3 || b.PrivLevel != "ADMINISTRATOR" || b.ProtocolVersion != "2.0" || b.Username != "" || b.ForceBootDevice || b.DisableBootTimeout != nil {
				t.Errorf("defaults: %+v", b)
			}
		}},
		{name: "port as number", info: `{"ipmi_address": "h", "ipmi_port": 6230}`, check: func(t *testing.T, b *BMCInfo) {
			if b.Port != 6230 {
				t.Errorf("port %d", b.Port)
			}
		}},
		{name: "port as string", info: `{"ipmi_address": "h", "ipmi_port": "6231"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.Port != 6231 {
				t.Errorf("port %d", b.Port)
			}
		}},
		{name: "port not int", info: `{"ipmi_address": "h", "ipmi_port": "abc"}`, wantErr: `ipmi_port "abc" is not a valid integer.`},
		{name: "port fraction", info: `{"ipmi_address": "h", "ipmi_port": 62.5}`, wantErr: `ipmi_port "62.5" is not a valid integer.`},
		{name: "port range", info: `{"ipmi_address": "h", "ipmi_port": 70000}`, wantErr: `ipmi_port "70000" is out of range. Valid port numbers must be between 1 and 65535.`},
		{name: "terminal port", info: `{"ipmi_address": "h", "ipmi_terminal_port": "x"}`, wantErr: `ipmi_terminal_port "x" is not a valid integer.`},
		{name: "priv level", info: `{"ipmi_address": "h", "ipmi_priv_level": "ROOT"}`, wantErr: "Invalid privilege level value:ROOT, the valid value can be one of ADMINISTRATOR, CALLBACK, OPERATOR, USER"},
		{name: "priv operator", info: `{"ipmi_address": "h", "ipmi_priv_level": "OPERATOR"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.PrivLevel != "OPERATOR" {
				t.Error(b.PrivLevel)
			}
		}},
		{name: "protocol", info: `{"ipmi_address": "h", "ipmi_protocol_version": "3.0"}`, wantErr: "Invalid IPMI protocol version value 3.0, the valid value can be one of 2.0, 1.5"},
		{name: "protocol 1.5", info: `{"ipmi_address": "h", "ipmi_protocol_version": "1.5"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.ProtocolVersion != "1.5" {
				t.Error(b.ProtocolVersion)
			}
		}},
		{name: "protocol number", info: `{"ipmi_address": "h", "ipmi_protocol_version": 2.0}`},
		{name: "cipher string", info: `{"ipmi_address": "h", "ipmi_cipher_suite": "17"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.CipherSuite != 17 {
				t.Error(b.CipherSuite)
			}
		}},
		{name: "cipher number", info: `{"ipmi_address": "h", "ipmi_cipher_suite": 1}`, check: func(t *testing.T, b *BMCInfo) {
			if b.CipherSuite != 1 {
				t.Error(b.CipherSuite)
			}
		}},
		{name: "cipher not int", info: `{"ipmi_address": "h", "ipmi_cipher_suite": "aes"}`, wantErr: "Invalid ipmi_cipher_suite aes, expected an integer."},
		{name: "cipher with 1.5", info: `{"ipmi_address": "h", "ipmi_cipher_suite": 3, "ipmi_protocol_version": "1.5"}`, wantErr: "only allowed with ipmi_protocol_version 2.0"},
		{name: "kg odd", info: `{"ipmi_address": "h", "ipmi_hex_kg_key": "abc"}`, wantErr: "Number of ipmi_hex_kg_key characters is not even"},
		{name: "kg unsupported", info: `{"ipmi_address": "h", "ipmi_hex_kg_key": "abcd"}`, wantErr: "ipmi_hex_kg_key is not supported"},
		{name: "bridging bad", info: `{"ipmi_address": "h", "ipmi_bridging": "triple"}`, wantErr: "Invalid value for ipmi_bridging: triple, the valid value can be one of: ['single', 'dual', 'no']"},
		{name: "bridging missing", info: `{"ipmi_address": "h", "ipmi_bridging": "dual", "ipmi_target_channel": 7}`, wantErr: "['ipmi_target_address', 'ipmi_transit_channel', 'ipmi_transit_address'] not provided", missing: true},
		{name: "bridging bad address", info: `{"ipmi_address": "h", "ipmi_bridging": "single", "ipmi_target_channel": 7, "ipmi_target_address": "zz"}`, wantErr: `Invalid ipmi_target_address "zz"`},
		{name: "bridging unsupported", info: `{"ipmi_address": "h", "ipmi_bridging": "single", "ipmi_target_channel": 7, "ipmi_target_address": "0x72"}`, wantErr: "IPMI bridging is not supported"},
		{name: "bridging no", info: `{"ipmi_address": "h", "ipmi_bridging": "no", "ipmi_target_channel": "junk"}`},
		{name: "force boot", info: `{"ipmi_address": "h", "ipmi_force_boot_device": "True", "ipmi_disable_boot_timeout": false}`, check: func(t *testing.T, b *BMCInfo) {
			if !b.ForceBootDevice || b.DisableBootTimeout == nil || *b.DisableBootTimeout {
				t.Errorf("%+v", b)
			}
		}},
		{name: "force boot bad", info: `{"ipmi_address": "h", "ipmi_force_boot_device": "maybe"}`, wantErr: "Invalid value for ipmi_force_boot_device"},
		{name: "address with space", info: `{"ipmi_address": "a b"}`, wantErr: "Invalid ipmi_address"},
		{name: "ipv6", info: `{"ipmi_address": "[fd00::5]", "ipmi_username": "admin", "ipmi_password": "pw"}`, check: func(t *testing.T, b *BMCInfo) {
			if b.Address != "fd00::5" || b.Endpoint() != "[fd00::5]:623" {
				t.Errorf("%s %s", b.Address, b.Endpoint())
			}
		}},
		{name: "long user", info: `{"ipmi_address": "h", "ipmi_username": "abcdefghijklmnopq"}`, wantErr: "16 characters"},
	}
	p := &Power{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var info model.JSONObject
			if err := json.Unmarshal([]byte(c.info), &info); err != nil {
				t.Fatal(err)
			}
			n := &model.Node{UUID: "u", DriverInfo: info}
			err := p.Validate(n)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.check != nil {
					b, _ := ParseDriverInfo(n)
					c.check(t, b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Missing != c.missing {
				t.Errorf("ValidationError missing=%v, want %v", ve, c.missing)
			}
		})
	}
}

func TestPasswordNeverInErrors(t *testing.T) {
	n := &model.Node{DriverInfo: model.JSONObject{"ipmi_address": "h", "ipmi_password": "s3cr3t-pw", "ipmi_hex_kg_key": "zz"}}
	if err := (&Power{}).Validate(n); err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "zz") {
		t.Errorf("%v", err)
	}
}

func TestRegister(t *testing.T) {
	r := drivers.NewRegistry()
	d := Register(r, Options{})
	defer d.Close()
	ht, ok := r.HardwareType("ipmi")
	if !ok {
		t.Fatal("ipmi hardware type missing")
	}
	defaults := map[string]string{"bios": "no-bios", "boot": "ipxe", "console": "no-console", "deploy": "direct", "inspect": "no-inspect",
		"management": "ipmitool", "network": "noop", "power": "ipmitool", "raid": "no-raid", "rescue": "no-rescue", "storage": "noop", "vendor": "no-vendor"}
	for kind, want := range defaults {
		if got := ht.Default(kind); got != want {
			t.Errorf("default %s = %q, want %q", kind, got, want)
		}
	}
	if !ht.Supports("management", "noop") || !ht.Supports("network", "flat") || !ht.Supports("raid", "agent") || !ht.Supports("boot", "pxe") {
		t.Error("supported lists incomplete")
	}
	set, err := r.Interfaces(&model.Node{Driver: "ipmi", Interfaces: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if set.Power == nil || set.Management == nil {
		t.Fatal("power/management not resolved")
	}
	if _, ok := set.Management.(drivers.Indicators); !ok {
		t.Error("management does not implement Indicators")
	}
	if _, ok := set.Management.(drivers.BMCReader); !ok {
		t.Error("management does not implement BMCReader")
	}
	props := r.Properties(ht)
	if props["ipmi_address"] != "IP address or hostname of the node. Required." || props["ipmi_port"] != "remote IPMI RMCP port. Optional." || len(props) != 16 {
		t.Errorf("properties: %d keys: %v", len(props), props)
	}
	if got := set.Management.SupportedBootDevices(nil); strings.Join(got, ",") != "pxe,disk,cdrom,bios,safe" {
		t.Errorf("boot devices %v", got)
	}
	if got := set.Power.SupportedPowerStates(nil); len(got) != 5 {
		t.Errorf("power states %v", got)
	}
}

func TestIsUEFI(t *testing.T) {
	for _, c := range []struct {
		n    model.Node
		want bool
	}{
		{model.Node{BootMode: "uefi"}, true},
		{model.Node{BootMode: "bios", Properties: model.JSONObject{"capabilities": "boot_mode:uefi"}}, false},
		{model.Node{Properties: model.JSONObject{"capabilities": "secure_boot:true, boot_mode:uefi"}}, true},
		{model.Node{Properties: model.JSONObject{"capabilities": map[string]any{"boot_mode": "uefi"}}}, true},
		{model.Node{Properties: model.JSONObject{"capabilities": "boot_mode:bios"}}, false},
		{model.Node{}, false},
	} {
		if got := IsUEFI(&c.n); got != c.want {
			t.Errorf("IsUEFI(%+v) = %v", c.n, got)
		}
	}
}
