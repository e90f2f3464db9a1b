package protocol

// Hardware inventory in IPA's format (ironic_python_agent/hardware.py
// list_hardware_info and the inspector "default" collector; reference
// ironic.md §7.1). Field names and null-vs-missing behaviour follow IPA 9.4:
// optional values are pointers or `omitempty` only where IPA omits them.

// Inventory is what the agent reports about the machine.
type Inventory struct {
	Interfaces   []NetworkInterface `json:"interfaces"`
	CPU          CPU                `json:"cpu"`
	Disks        []BlockDevice      `json:"disks"`
	Memory       Memory             `json:"memory"`
	BMCAddress   string             `json:"bmc_address"`   // "0.0.0.0" when there is no in-band BMC
	BMCV6Address string             `json:"bmc_v6address"` // "::/0" when none
	BMCMAC       string             `json:"bmc_mac"`       // "00:00:00:00:00:00" when none
	SystemVendor SystemVendor       `json:"system_vendor"`
	Boot         BootInfo           `json:"boot"`
	Hostname     string             `json:"hostname"`
}

// Defaults IPA reports when no in-band BMC answers.
const (
	NoBMCAddress   = "0.0.0.0"
	NoBMCV6Address = "::/0"
	NoBMCMAC       = "00:00:00:00:00:00"
)

// NetworkInterface is one NIC (hardware.py NetworkInterface).
type NetworkInterface struct {
	Name        string  `json:"name"`
	MACAddress  string  `json:"mac_address"`
	IPv4Address *string `json:"ipv4_address"` // null when the NIC has no address
	IPv6Address *string `json:"ipv6_address"`
	HasCarrier  bool    `json:"has_carrier"`
	// LLDP is a list of [type, hex-value] pairs, only with ipa-collect-lldp.
	LLDP        [][2]any `json:"lldp"`
	Vendor      string   `json:"vendor,omitempty"`  // PCI vendor id, "0x8086"
	Product     string   `json:"product,omitempty"` // PCI device id, "0x1572"
	ClientID    *string  `json:"client_id"`         // InfiniBand only
	BiosDevName *string  `json:"biosdevname"`
	SpeedMbps   *int     `json:"speed_mbps,omitempty"`
	PCIAddress  string   `json:"pci_address,omitempty"`
	Driver      string   `json:"driver,omitempty"`
}

// CPU describes the processors (lscpu in IPA).
type CPU struct {
	ModelName    string   `json:"model_name"`
	Frequency    string   `json:"frequency"` // MHz as a string, e.g. "2400.0000"
	Count        int      `json:"count"`     // logical CPUs, hyper-threads included
	Architecture string   `json:"architecture"`
	Flags        []string `json:"flags"`
	SocketCount  int      `json:"socket_count,omitempty"`
}

// Memory: Total is usable bytes (psutil/MemTotal), PhysicalMB the installed
// RAM in MiB (DIMM sum in IPA; we sum online memory blocks).
type Memory struct {
	Total      int64 `json:"total"`
	PhysicalMB int64 `json:"physical_mb"`
}

// BlockDevice is one disk (hardware.py BlockDevice).
type BlockDevice struct {
	Name               string  `json:"name"` // "/dev/sda"
	Model              string  `json:"model"`
	Size               int64   `json:"size"` // bytes
	Rotational         bool    `json:"rotational"`
	WWN                *string `json:"wwn"`
	Serial             *string `json:"serial"`
	Vendor             *string `json:"vendor"`
	WWNWithExtension   *string `json:"wwn_with_extension"`
	WWNVendorExtension *string `json:"wwn_vendor_extension"`
	HCTL               *string `json:"hctl"`
	ByPath             *string `json:"by_path"`
	LogicalSectors     int     `json:"logical_sectors,omitempty"`
	PhysicalSectors    int     `json:"physical_sectors,omitempty"`
	Tran               *string `json:"tran"`
}

// SystemVendor is DMI system information.
type SystemVendor struct {
	ProductName  string    `json:"product_name"`
	SerialNumber string    `json:"serial_number"`
	Manufacturer string    `json:"manufacturer"`
	Firmware     *Firmware `json:"firmware,omitempty"`
}

// Firmware is the BIOS/UEFI firmware (DMI bios_*).
type Firmware struct {
	Vendor    string `json:"vendor"`
	Version   string `json:"version"`
	BuildDate string `json:"build_date"`
}

// BootInfo: CurrentBootMode is "uefi" when /sys/firmware/efi exists, else
// "bios"; PXEInterface is the raw BOOTIF kernel parameter (often
// "01-52-54-00-12-34-56"; consumers normalise it).
type BootInfo struct {
	CurrentBootMode string `json:"current_boot_mode"`
	PXEInterface    string `json:"pxe_interface"`
}

// InspectionData is the body IPA POSTs to ipa-inspection-callback-url
// (inspector.py: ironic-inspector /v1/continue, or Ironic's built-in
// POST /v1/continue_inspection, API 1.84).
type InspectionData struct {
	Inventory Inventory `json:"inventory"`
	// RootDisk is IPA's guess_root_disk: the smallest disk >= 4 GiB.
	RootDisk      *BlockDevice     `json:"root_disk,omitempty"`
	BootInterface string           `json:"boot_interface,omitempty"` // BOOTIF as given
	Configuration InspectionConfig `json:"configuration"`
	Error         *string          `json:"error"`
	Logs          string           `json:"logs,omitempty"`
}

// InspectionConfig says which collectors and hardware managers ran.
type InspectionConfig struct {
	Collectors []string          `json:"collectors"`
	Managers   []HardwareManager `json:"managers"`
}

// HardwareManager names a hardware manager and its version.
type HardwareManager struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// InspectionResponse is what Ironic's continue_inspection may answer (1.84):
// the node UUID, and for a node in fast-track also the lookup config.
type InspectionResponse struct {
	UUID   string        `json:"uuid,omitempty"`
	Config *LookupConfig `json:"config,omitempty"`
}

// GenericHardwareManager is the name and version the agent reports for its
// steps; Ironic echoes the version back in execute_*_step.
const (
	GenericHardwareManager        = "GenericHardwareManager"
	GenericHardwareManagerKey     = "generic_hardware_manager"
	GenericHardwareManagerVersion = "1.1"
)

// MinRootDiskSize is IPA's guess_root_disk minimum (4 GiB).
const MinRootDiskSize = 4 << 30

// GuessRootDisk returns IPA's root disk guess: the smallest disk of at least
// MinRootDiskSize, or nil.
func GuessRootDisk(disks []BlockDevice) *BlockDevice {
	var best *BlockDevice
	for i := range disks {
		d := &disks[i]
		if d.Size < MinRootDiskSize {
			continue
		}
		if best == nil || d.Size < best.Size {
			best = d
		}
	}
	return best
}
