package ipmi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlite/ironlite/controller/model"
)

// properties are the driver_info keys of Ironic's ipmitool power and
// management interfaces, with Ironic's descriptions (GET
// /v1/drivers/ipmi/properties).
var properties = map[string]string{
	"ipmi_address":              "IP address or hostname of the node. Required.",
	"ipmi_password":             "password. Optional.",
	"ipmi_hex_kg_key":           "Kg key for IPMIv2 authentication. The key is expected in hexadecimal format. Optional.",
	"ipmi_port":                 "remote IPMI RMCP port. Optional.",
	"ipmi_priv_level":           "privilege level; default is ADMINISTRATOR. One of ADMINISTRATOR, CALLBACK, OPERATOR, USER. Optional.",
	"ipmi_username":             "username; default is NULL user. Optional.",
	"ipmi_bridging":             "bridging_type; default is \"no\". One of \"single\", \"dual\", \"no\". Optional.",
	"ipmi_transit_channel":      "transit channel for bridged request. Required only if ipmi_bridging is set to \"dual\".",
	"ipmi_transit_address":      "transit address for bridged request. Required only if ipmi_bridging is set to \"dual\".",
	"ipmi_target_channel":       "destination channel for bridged request. Required only if ipmi_bridging is set to \"single\" or \"dual\".",
	"ipmi_target_address":       "destination address for bridged request. Required only if ipmi_bridging is set to \"single\" or \"dual\".",
	"ipmi_local_address":        "local IPMB address for bridged requests. Used only if ipmi_bridging is set to \"single\" or \"dual\". Optional.",
	"ipmi_protocol_version":     "the version of the IPMI protocol; default is \"2.0\". One of \"1.5\", \"2.0\". Optional.",
	"ipmi_force_boot_device":    "Whether Ironic should specify the boot device to the BMC each time the server is turned on, eg. because the BMC is not capable of remembering the selected boot device across power cycles; default value is False. Optional.",
	"ipmi_disable_boot_timeout": "By default ironic will send a raw IPMI command to disable the 60 second timeout for booting. Setting this option to False will NOT send that command on this node. The [ipmi]disable_boot_timeout will be used if this option is not set. Optional.",
	"ipmi_cipher_suite":         "The number of a cipher suite to use. Only 3 (AES-128 with SHA1) or 17 (AES-128 with SHA256) should ever be used; 17 is preferred. The default value depends on the ipmitool version, some recent versions have switched from 3 to 17.",
}

var validPrivLevels = []string{"ADMINISTRATOR", "CALLBACK", "OPERATOR", "USER"}

// DefaultCipherSuite is used when driver_info has no ipmi_cipher_suite:
// cipher-suite discovery is skipped (ipmi_sim and many BMCs do not answer it).
const DefaultCipherSuite = 3

// BMCInfo is a node's parsed, validated driver_info.
type BMCInfo struct {
	Address            string
	Port               int
	Username           string
	Password           string // never logged or put in errors
	PrivLevel          string // ADMINISTRATOR, CALLBACK, OPERATOR, USER
	ProtocolVersion    string // "2.0" or "1.5"
	CipherSuite        int
	HexKgKey           string
	Bridging           string // "no" (only value go-ipmi can drive)
	ForceBootDevice    bool
	DisableBootTimeout *bool // nil: use Options
}

// Endpoint is "address:port", used in errors and logs.
func (b *BMCInfo) Endpoint() string {
	if strings.Contains(b.Address, ":") {
		return fmt.Sprintf("[%s]:%d", b.Address, b.Port)
	}
	return fmt.Sprintf("%s:%d", b.Address, b.Port)
}

// sessionKey identifies a BMC session: address, port, user, plus a
// fingerprint of everything else that shapes the session (so a corrected
// password never reuses a session opened with the old one).
func (b *BMCInfo) sessionKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%s", b.Password, b.PrivLevel, b.ProtocolVersion, b.CipherSuite, b.HexKgKey)
	return fmt.Sprintf("%s/%s#%s", b.Endpoint(), b.Username, hex.EncodeToString(h.Sum(nil))[:16])
}

func (b *BMCInfo) privilege() types.PrivilegeLevel {
	switch b.PrivLevel {
	case "CALLBACK":
		return types.PrivilegeLevelCallback
	case "OPERATOR":
		return types.PrivilegeLevelOperator
	case "USER":
		return types.PrivilegeLevelUser
	}
	return types.PrivilegeLevelAdministrator
}

// ValidationError is a driver_info problem (Ironic's InvalidParameterValue
// or MissingParameterValue): the API answers 400 with its text.
type ValidationError struct {
	Missing bool // MissingParameterValue rather than InvalidParameterValue
	Msg     string
}

func (e *ValidationError) Error() string { return e.Msg }

func invalid(format string, a ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, a...)}
}

// pyList renders names as Python prints a list of strings: ['a', 'b'].
func pyList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// str renders a driver_info value (string, JSON number, bool) as text.
func str(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10), true
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case float32:
		return str(float64(x))
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case uint8:
		return strconv.Itoa(int(x)), true
	case uint16:
		return strconv.Itoa(int(x)), true
	case bool:
		if x {
			return "True", true
		}
		return "False", true
	}
	return fmt.Sprint(v), true
}

// truthy reports whether a driver_info value is set (Python truthiness).
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case bool:
		return x
	case float64:
		return x != 0
	case int:
		return x != 0
	}
	return true
}

// parseBool accepts what oslo's bool_from_string(strict=True) accepts.
func parseBool(key string, v any) (bool, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	s, _ := str(v)
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "on", "y", "yes":
		return true, nil
	case "0", "f", "false", "off", "n", "no":
		return false, nil
	}
	return false, invalid("Invalid value for %s: %q is not a boolean; use true or false.", key, s)
}

// parseInt accepts an integer given as a JSON number or a decimal (or
// 0x-prefixed hexadecimal) string.
func parseInt(v any) (int, bool) {
	if f, ok := v.(float64); ok {
		if f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
			return 0, false
		}
		return int(f), true
	}
	switch x := v.(type) {
	case int:
		return x, true
	case int64:
		return int(x), true
	}
	s, ok := str(v)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	if err != nil || n > math.MaxInt32 || n < math.MinInt32 {
		return 0, false
	}
	return int(n), true
}

// ParseDriverInfo validates a node's driver_info for the ipmitool
// interfaces, with Ironic's messages where Ironic has them.
func ParseDriverInfo(n *model.Node) (*BMCInfo, error) {
	info := n.DriverInfo
	if info == nil {
		info = model.JSONObject{}
	}
	if !truthy(info["ipmi_address"]) {
		return nil, &ValidationError{Missing: true, Msg: fmt.Sprintf("Missing the following IPMI credentials in node's driver_info: %s.", pyList([]string{"ipmi_address"}))}
	}
	b := &BMCInfo{Port: 623, PrivLevel: "ADMINISTRATOR", ProtocolVersion: "2.0", Bridging: "no"}
	b.Address, _ = str(info["ipmi_address"])
	b.Address = strings.TrimSpace(b.Address)
	if strings.ContainsAny(b.Address, " \t/") {
		return nil, invalid("Invalid ipmi_address %q: expected an IP address or a host name.", b.Address)
	}
	b.Address = strings.TrimSuffix(strings.TrimPrefix(b.Address, "["), "]")
	if v, ok := info["ipmi_username"]; ok && v != nil {
		b.Username, _ = str(v)
	}
	if v, ok := info["ipmi_password"]; ok && v != nil {
		b.Password, _ = str(v)
	}
	if v, ok := info["ipmi_protocol_version"]; ok && v != nil {
		s, _ := str(v)
		if f, isNum := v.(float64); isNum { // JSON 2.0 arrives as 2
			s = strconv.FormatFloat(f, 'f', 1, 64)
		}
		if s != "2.0" && s != "1.5" {
			return nil, invalid("Invalid IPMI protocol version value %s, the valid value can be one of 2.0, 1.5", s)
		}
		b.ProtocolVersion = s
	}
	if v, ok := info["ipmi_terminal_port"]; ok && v != nil {
		if _, err := validatePort(v, "ipmi_terminal_port"); err != nil {
			return nil, err
		}
	}
	if v, ok := info["ipmi_port"]; ok && v != nil {
		p, err := validatePort(v, "ipmi_port")
		if err != nil {
			return nil, err
		}
		b.Port = p
	}
	if err := validateBridging(info, b); err != nil {
		return nil, err
	}
	if v, ok := info["ipmi_priv_level"]; ok && v != nil {
		s, _ := str(v)
		valid := false
		for _, l := range validPrivLevels {
			valid = valid || s == l
		}
		if !valid {
			return nil, invalid("Invalid privilege level value:%s, the valid value can be one of %s", s, strings.Join(validPrivLevels, ", "))
		}
		b.PrivLevel = s
	}
	if v, ok := info["ipmi_hex_kg_key"]; ok && truthy(v) {
		s, _ := str(v)
		if len(s)%2 != 0 {
			return nil, invalid("Number of ipmi_hex_kg_key characters is not even")
		}
		if _, err := hex.DecodeString(s); err != nil {
			return nil, invalid("ipmi_hex_kg_key is not a hexadecimal string.")
		}
		// go-ipmi v0.9.1 has no way to set the BMC key (Kg): refuse rather
		// than silently authenticate with the wrong key.
		return nil, invalid("ipmi_hex_kg_key is not supported by the ipmitool interfaces of ironlite (the IPMI library cannot use a Kg key); remove it or disable the BMC key.")
	}
	b.CipherSuite = DefaultCipherSuite
	if v, ok := info["ipmi_cipher_suite"]; ok && v != nil {
		cs, ok := parseInt(v)
		s, _ := str(v)
		if !ok {
			return nil, invalid("Invalid ipmi_cipher_suite %s, expected an integer.", s)
		}
		if b.ProtocolVersion == "1.5" {
			return nil, invalid("ipmi_cipher_suite is only allowed with ipmi_protocol_version 2.0.")
		}
		if cs < 0 || cs > 19 {
			return nil, invalid("Unsupported ipmi_cipher_suite %d, the valid values are 0 to 19 (3 or 17 recommended).", cs)
		}
		b.CipherSuite = cs
	}
	if v, ok := info["ipmi_force_boot_device"]; ok && v != nil {
		f, err := parseBool("ipmi_force_boot_device", v)
		if err != nil {
			return nil, err
		}
		b.ForceBootDevice = f
	}
	if v, ok := info["ipmi_disable_boot_timeout"]; ok && v != nil {
		f, err := parseBool("ipmi_disable_boot_timeout", v)
		if err != nil {
			return nil, err
		}
		b.DisableBootTimeout = &f
	}
	if len(b.Username) > 16 {
		return nil, invalid("ipmi_username is longer than the 16 characters IPMI allows.")
	}
	if len(b.Password) > 20 {
		return nil, invalid("ipmi_password is longer than the 20 characters IPMI allows.")
	}
	return b, nil
}

func validatePort(v any, name string) (int, error) {
	s, _ := str(v)
	p, ok := parseInt(v)
	if !ok {
		return 0, invalid("%s \"%s\" is not a valid integer.", name, s)
	}
	if p < 1 || p > 65535 {
		return 0, invalid("%s \"%s\" is out of range. Valid port numbers must be between 1 and 65535.", name, s)
	}
	return p, nil
}

func validateBridging(info model.JSONObject, b *BMCInfo) error {
	bt := "no"
	if v, ok := info["ipmi_bridging"]; ok && v != nil {
		bt, _ = str(v)
	}
	switch bt {
	case "no":
		return nil
	case "single", "dual":
	default:
		return invalid("Invalid value for ipmi_bridging: %s, the valid value can be one of: ['single', 'dual', 'no']", bt)
	}
	need := []string{"ipmi_target_channel", "ipmi_target_address"}
	if bt == "dual" {
		need = append(need, "ipmi_transit_channel", "ipmi_transit_address")
	}
	var missing []string
	for _, k := range need {
		if v, ok := info[k]; !ok || v == nil {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return &ValidationError{Missing: true, Msg: fmt.Sprintf("%s not provided", pyList(missing))}
	}
	for _, k := range append(need, "ipmi_local_address") {
		if v, ok := info[k]; ok && v != nil {
			if n, ok := parseInt(v); !ok || n < 0 || n > 255 {
				s, _ := str(v)
				return invalid("Invalid %s %q: expected an integer 0-255 (decimal or 0x-prefixed hex).", k, s)
			}
		}
	}
	return invalid("Value for ipmi_bridging is provided as %s, but IPMI bridging is not supported by ironlite's IPMI library (go-ipmi has no Send Message bridging); use ipmi_bridging \"no\".", bt)
}
