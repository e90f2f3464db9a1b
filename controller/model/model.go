// Package model holds the controller's persistent resources — nodes and
// ports — as plain Go values shared by the store, the conductor, the drivers
// and the API. It has no behaviour beyond small helpers; rules live in the
// packages that own them (statemachine, conductor, api).
package model

import "time"

// JSONObject is a free-form JSON object (driver_info, properties, extra, ...).
type JSONObject = map[string]any

// Node is one bare-metal machine, with Ironic's field names.
type Node struct {
	ID   int64  `json:"id"` // store-internal, default sort key (Ironic's "id")
	UUID string `json:"uuid"`
	Name string `json:"name"` // "" means null

	Driver             string     `json:"driver"`
	DriverInfo         JSONObject `json:"driver_info"`
	DriverInternalInfo JSONObject `json:"driver_internal_info"`
	Properties         JSONObject `json:"properties"`
	InstanceInfo       JSONObject `json:"instance_info"`
	InstanceUUID       string     `json:"instance_uuid"` // "" means null
	Extra              JSONObject `json:"extra"`

	PowerState           string     `json:"power_state"` // "" means null
	TargetPowerState     string     `json:"target_power_state"`
	ProvisionState       string     `json:"provision_state"`
	TargetProvisionState string     `json:"target_provision_state"`
	ProvisionUpdatedAt   *time.Time `json:"provision_updated_at"`

	Maintenance       bool   `json:"maintenance"`
	MaintenanceReason string `json:"maintenance_reason"`
	Fault             string `json:"fault"`
	LastError         string `json:"last_error"`
	Reservation       string `json:"reservation"` // host holding the node's lock; "" when free
	ConsoleEnabled    bool   `json:"console_enabled"`

	CleanStep        JSONObject `json:"clean_step"`
	DeployStep       JSONObject `json:"deploy_step"`
	RAIDConfig       JSONObject `json:"raid_config"`
	TargetRAIDConfig JSONObject `json:"target_raid_config"`

	InspectionStartedAt  *time.Time `json:"inspection_started_at"`
	InspectionFinishedAt *time.Time `json:"inspection_finished_at"`

	// Interfaces, by kind ("boot", "power", ...) -> implementation name.
	Interfaces map[string]string `json:"interfaces"`

	ResourceClass   string     `json:"resource_class"`
	ConductorGroup  string     `json:"conductor_group"`
	AutomatedClean  *bool      `json:"automated_clean"`
	Protected       bool       `json:"protected"`
	ProtectedReason string     `json:"protected_reason"`
	Owner           string     `json:"owner"`
	Lessee          string     `json:"lessee"`
	Description     string     `json:"description"`
	Retired         bool       `json:"retired"`
	RetiredReason   string     `json:"retired_reason"`
	NetworkData     JSONObject `json:"network_data"`
	BootMode        string     `json:"boot_mode"`
	SecureBoot      *bool      `json:"secure_boot"`
	Shard           string     `json:"shard"`
	Traits          []string   `json:"traits"`
	ChassisUUID     string     `json:"chassis_uuid"`
	AllocationUUID  string     `json:"allocation_uuid"`

	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt *time.Time `json:"updated_at"`
}

// Port is a NIC of a node, identified by its MAC address.
type Port struct {
	ID                  int64      `json:"id"`
	UUID                string     `json:"uuid"`
	Address             string     `json:"address"` // normalised lower-case aa:bb:cc:dd:ee:ff
	NodeID              int64      `json:"node_id"`
	NodeUUID            string     `json:"node_uuid"`
	PXEEnabled          bool       `json:"pxe_enabled"`
	LocalLinkConnection JSONObject `json:"local_link_connection"`
	PhysicalNetwork     string     `json:"physical_network"`
	PortgroupUUID       string     `json:"portgroup_uuid"`
	IsSmartNIC          bool       `json:"is_smartnic"`
	Extra               JSONObject `json:"extra"`
	InternalInfo        JSONObject `json:"internal_info"`
	Name                string     `json:"name"`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           *time.Time `json:"updated_at"`
}

// InterfaceKinds lists the node interface kinds in Ironic's order; each has a
// "<kind>_interface" field on the node.
var InterfaceKinds = []string{
	"bios", "boot", "console", "deploy", "inspect", "management",
	"network", "power", "raid", "rescue", "storage", "vendor",
}

// Str returns m[key] as a string ("" when absent or not a string).
func Str(m JSONObject, key string) string {
	s, _ := m[key].(string)
	return s
}
