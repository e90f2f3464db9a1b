// Package drivers defines Ironic-style hardware types: a hardware type is a
// named set of supported interface implementations (power, management, boot,
// deploy, raid, inspect, console, ...), each implementation a small Go
// interface. The conductor picks a node's implementations from its
// "*_interface" fields, hands them the node and takes back results; drivers
// know nothing of HTTP handlers or the store.
package drivers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/ironlite/ironlite/controller/model"
)

// Power states as Ironic spells them.
const (
	PowerOn       = "power on"
	PowerOff      = "power off"
	PowerError    = "error"
	Rebooting     = "rebooting"
	SoftPowerOff  = "soft power off"
	SoftRebooting = "soft rebooting"
)

// Interface is what every interface implementation provides.
type Interface interface {
	// Properties describes the driver_info keys this implementation reads
	// (key -> human description), as GET /v1/drivers/{name}/properties shows.
	Properties() map[string]string
	// Validate checks the node's configuration for this interface and says
	// exactly what is missing or wrong.
	Validate(n *model.Node) error
}

// Power turns a machine on and off and reads its power state.
type Power interface {
	Interface
	// PowerState reads the current state: PowerOn, PowerOff or PowerError.
	PowerState(ctx context.Context, n *model.Node) (string, error)
	// SetPowerState drives the machine to PowerOn, PowerOff or SoftPowerOff
	// and returns once the state is reached (verified by reading it back)
	// or timeout passes (0 means the implementation's default).
	SetPowerState(ctx context.Context, n *model.Node, target string, timeout time.Duration) error
	// Reboot power-cycles the machine; soft asks the OS first (ACPI) and
	// falls back to a hard cycle after timeout.
	Reboot(ctx context.Context, n *model.Node, soft bool, timeout time.Duration) error
	// SupportedPowerStates lists the targets PUT .../states/power accepts.
	SupportedPowerStates(n *model.Node) []string
}

// BootDevice is a boot device setting; nil fields mean "unknown".
type BootDevice struct {
	Device     *string `json:"boot_device"`
	Persistent *bool   `json:"persistent"`
}

// Boot device names (ironic/common/boot_devices.py).
const (
	BootPXE   = "pxe"
	BootDisk  = "disk"
	BootCDROM = "cdrom"
	BootBIOS  = "bios"
	BootSafe  = "safe"
)

// Management sets and reads the boot device.
type Management interface {
	Interface
	SupportedBootDevices(n *model.Node) []string
	SetBootDevice(ctx context.Context, n *model.Node, device string, persistent bool) error
	BootDevice(ctx context.Context, n *model.Node) (BootDevice, error)
}

// Indicator is an LED a BMC exposes (Ironic's management/indicators shape).
type Indicator struct {
	Name      string   `json:"name"`
	Component string   `json:"component"`
	Readonly  bool     `json:"readonly"`
	States    []string `json:"states"`
}

// Indicators is implemented by management interfaces that drive LEDs
// (ironlite implements chassis identify for ipmi).
type Indicators interface {
	Indicators(ctx context.Context, n *model.Node) ([]Indicator, error)
	IndicatorState(ctx context.Context, n *model.Node, component, name string) (string, error)
	SetIndicatorState(ctx context.Context, n *model.Node, component, name, state string) error
}

// Sensor is one reading from the BMC's sensor repository.
type Sensor struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Reading *float64 `json:"reading"`
	Unit    string   `json:"unit"`
	Status  string   `json:"status"`
}

// SELEntry is one record of the BMC's system event log.
type SELEntry struct {
	ID          int       `json:"id"`
	Time        time.Time `json:"time"`
	SensorType  string    `json:"sensor_type"`
	Sensor      string    `json:"sensor"`
	Event       string    `json:"event"`
	Direction   string    `json:"direction"`
	Description string    `json:"description"`
}

// BMCReader is implemented by management interfaces that read the BMC's
// sensors and system event log (ironlite extension).
type BMCReader interface {
	Sensors(ctx context.Context, n *model.Node) ([]Sensor, error)
	SEL(ctx context.Context, n *model.Node) ([]SELEntry, error)
	ClearSEL(ctx context.Context, n *model.Node) error
}

// HardwareType is a named driver (e.g. "ipmi", "fake-hardware"): the
// implementations it supports per interface kind, the first one being its
// default.
type HardwareType struct {
	Name      string
	Supported map[string][]string
}

// Registry holds the hardware types and the interface implementations.
type Registry struct {
	types map[string]*HardwareType
	impls map[string]map[string]Interface // kind -> name -> impl
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{types: map[string]*HardwareType{}, impls: map[string]map[string]Interface{}}
}

// AddInterface registers an implementation of an interface kind.
func (r *Registry) AddInterface(kind, name string, impl Interface) {
	if r.impls[kind] == nil {
		r.impls[kind] = map[string]Interface{}
	}
	r.impls[kind][name] = impl
}

// AddHardwareType registers a hardware type.
func (r *Registry) AddHardwareType(ht *HardwareType) { r.types[ht.Name] = ht }

// HardwareType returns the named hardware type.
func (r *Registry) HardwareType(name string) (*HardwareType, bool) {
	ht, ok := r.types[name]
	return ht, ok
}

// HardwareTypes returns every hardware type, sorted by name.
func (r *Registry) HardwareTypes() []*HardwareType {
	out := make([]*HardwareType, 0, len(r.types))
	for _, ht := range r.types {
		out = append(out, ht)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Impl returns the implementation of kind called name, or nil.
func (r *Registry) Impl(kind, name string) Interface { return r.impls[kind][name] }

// Default returns the hardware type's default implementation name for kind.
func (ht *HardwareType) Default(kind string) string {
	if l := ht.Supported[kind]; len(l) > 0 {
		return l[0]
	}
	return ""
}

// Supports says whether the hardware type accepts impl for kind.
func (ht *HardwareType) Supports(kind, impl string) bool {
	return slices.Contains(ht.Supported[kind], impl)
}

// Properties merges the driver_info properties of the hardware type's
// default implementations.
func (r *Registry) Properties(ht *HardwareType) map[string]string {
	out := map[string]string{}
	for _, kind := range model.InterfaceKinds {
		if impl := r.Impl(kind, ht.Default(kind)); impl != nil {
			for k, v := range impl.Properties() {
				out[k] = v
			}
		}
	}
	return out
}

// Interfaces resolves the node's implementations. Unset kinds take the
// hardware type's default; an unsupported name is an error.
func (r *Registry) Interfaces(n *model.Node) (*Set, error) {
	ht, ok := r.types[n.Driver]
	if !ok {
		return nil, fmt.Errorf("driver %q is not enabled", n.Driver)
	}
	s := &Set{Type: ht, ByKind: map[string]Interface{}}
	for _, kind := range model.InterfaceKinds {
		name := n.Interfaces[kind]
		if name == "" {
			name = ht.Default(kind)
		}
		if !ht.Supports(kind, name) {
			return nil, fmt.Errorf("%s interface %q is not supported by hardware type %q (supported: %v)", kind, name, ht.Name, ht.Supported[kind])
		}
		if impl := r.Impl(kind, name); impl != nil {
			s.ByKind[kind] = impl
		}
	}
	s.Power, _ = s.ByKind["power"].(Power)
	s.Management, _ = s.ByKind["management"].(Management)
	s.Deploy, _ = s.ByKind["deploy"].(Deploy)
	s.Boot, _ = s.ByKind["boot"].(Boot)
	s.Inspect, _ = s.ByKind["inspect"].(Inspect)
	s.RAID, _ = s.ByKind["raid"].(RAID)
	return s, nil
}

// Set is one node's resolved interfaces. A nil field means the interface is
// a no-op ("no-raid", "noop", ...) for this node.
type Set struct {
	Type       *HardwareType
	ByKind     map[string]Interface
	Power      Power
	Management Management
	Boot       Boot
	Deploy     Deploy
	Inspect    Inspect
	RAID       RAID
}
