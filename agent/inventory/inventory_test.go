package inventory

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/agent/protocol"
)

// tree builds a fake root filesystem: files map paths to contents, links map
// symlink paths to targets (relative, as in sysfs).
func tree(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	virtioBlk = "sys/devices/pci0000:00/0000:00:05.0/virtio2"
	sata      = "sys/devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0"
	nvme      = "sys/devices/pci0000:00/0000:00:06.0/nvme/nvme0"
	vscsi     = "sys/devices/pci0000:00/0000:00:04.0/virtio1/host0/target0:0:1/0:0:1:0"
	nic       = "sys/devices/pci0000:00/0000:00:03.0/virtio0"
	nic2      = "sys/devices/pci0000:00/0000:00:19.0"
)

func machineTree(t *testing.T, efi bool) string {
	vpd := "\x00\x80\x00\x0c  WD-123456  "
	files := map[string]string{
		"proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU version 2.5+\ncpu MHz\t\t: 2399.998\nphysical id\t: 0\nflags\t\t: fpu vme de pse sse2 vmx\n\n" +
			"processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU version 2.5+\ncpu MHz\t\t: 2399.998\nphysical id\t: 0\nflags\t\t: fpu vme de pse sse2 vmx\n\n",
		"proc/meminfo": "MemTotal:         492168 kB\nMemFree:          400000 kB\n",
		"sys/devices/system/memory/block_size_bytes": "8000000\n",
		"sys/devices/system/memory/memory0/state":    "online\n",
		"sys/devices/system/memory/memory1/state":    "online\n",
		"sys/devices/system/memory/memory2/state":    "online\n",
		"sys/devices/system/memory/memory3/state":    "online\n",
		"sys/devices/system/memory/memory4/state":    "offline\n",
		"sys/class/dmi/id/product_name":              "Standard PC (i440FX + PIIX, 1996)\n",
		"sys/class/dmi/id/product_serial":            "SN-VM-1\n",
		"sys/class/dmi/id/sys_vendor":                "QEMU\n",
		"sys/class/dmi/id/bios_vendor":               "SeaBIOS\n",
		"sys/class/dmi/id/bios_version":              "1.16.2-debian-1.16.2-1\n",
		"sys/class/dmi/id/bios_date":                 "04/01/2014\n",

		virtioBlk + "/vendor":                              "0x1af4\n",
		virtioBlk + "/block/vda/size":                      "2097152\n",
		virtioBlk + "/block/vda/serial":                    "SN-ABC123\n",
		virtioBlk + "/block/vda/queue/rotational":          "1\n",
		virtioBlk + "/block/vda/queue/logical_block_size":  "512\n",
		virtioBlk + "/block/vda/queue/physical_block_size": "512\n",

		sata + "/model":                      "WDC WD10EZEX-00B\n",
		sata + "/vendor":                     "ATA     \n",
		sata + "/wwid":                       "naa.50014ee2b5c5d6e7\n",
		sata + "/vpd_pg80":                   vpd,
		sata + "/block/sda/size":             "1953525168\n",
		sata + "/block/sda/queue/rotational": "1\n",

		nvme + "/serial":                   "S4EWNX0N123456  \n",
		nvme + "/model":                    "Samsung SSD 970 EVO Plus 500GB\n",
		nvme + "/nvme0n1/size":             "976773168\n",
		nvme + "/nvme0n1/nsid":             "1\n",
		nvme + "/nvme0n1/wwid":             "eui.0025385b91b12345\n",
		nvme + "/nvme0n1/queue/rotational": "0\n",

		vscsi + "/model":                      "QEMU HARDDISK   \n",
		vscsi + "/vendor":                     "QEMU    \n",
		vscsi + "/block/sdb/size":             "16777216\n",
		vscsi + "/block/sdb/queue/rotational": "1\n",

		"sys/devices/virtual/block/loop0/size": "1000\n",
		"sys/devices/virtual/block/ram0/size":  "1000\n",

		nic + "/vendor":                           "0x1af4\n",
		nic + "/device":                           "0x0001\n",
		nic + "/net/eth0/address":                 "52:54:00:12:34:56\n",
		nic + "/net/eth0/carrier":                 "1\n",
		nic + "/net/eth0/speed":                   "-1\n",
		nic2 + "/vendor":                          "0x8086\n",
		nic2 + "/device":                          "0x15b8\n",
		nic2 + "/net/eno1/address":                "AA:BB:CC:DD:EE:FF\n",
		nic2 + "/net/eno1/carrier":                "0\n",
		nic2 + "/net/eno1/speed":                  "1000\n",
		"sys/devices/virtual/net/lo/address":      "00:00:00:00:00:00\n",
		"sys/devices/virtual/net/br0/address":     "52:54:00:00:00:01\n",
		"sys/bus/virtio/drivers/virtio_net/.keep": "",
		"sys/bus/pci/drivers/e1000e/.keep":        "",
	}
	if efi {
		files["sys/firmware/efi/fw_platform_size"] = "64\n"
	}
	links := map[string]string{
		"sys/block/vda":                 "../devices/pci0000:00/0000:00:05.0/virtio2/block/vda",
		virtioBlk + "/block/vda/device": "../../../virtio2",
		"sys/block/sda":                 "../devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sda",
		sata + "/block/sda/device":      "../../../2:0:0:0",
		"sys/block/nvme0n1":             "../devices/pci0000:00/0000:00:06.0/nvme/nvme0/nvme0n1",
		nvme + "/nvme0n1/device":        "../../nvme0",
		"sys/block/sdb":                 "../devices/pci0000:00/0000:00:04.0/virtio1/host0/target0:0:1/0:0:1:0/block/sdb",
		vscsi + "/block/sdb/device":     "../../../0:0:1:0",
		"sys/block/loop0":               "../devices/virtual/block/loop0",
		"sys/block/ram0":                "../devices/virtual/block/ram0",
		"sys/class/net/eth0":            "../../devices/pci0000:00/0000:00:03.0/virtio0/net/eth0",
		nic + "/net/eth0/device":        "../../../virtio0",
		nic + "/driver":                 "../../../../bus/virtio/drivers/virtio_net",
		"sys/class/net/eno1":            "../../devices/pci0000:00/0000:00:19.0/net/eno1",
		nic2 + "/net/eno1/device":       "../../../0000:00:19.0",
		nic2 + "/driver":                "../../../bus/pci/drivers/e1000e",
		"sys/class/net/lo":              "../../devices/virtual/net/lo",
		"sys/class/net/br0":             "../../devices/virtual/net/br0",
	}
	return tree(t, files, links)
}

func collector(root string) *Collector {
	return &Collector{
		Root:   root,
		BootIF: "01-52-54-00-12-34-56",
		Arch:   "x86_64",
		Addrs: func(n string) (string, string) {
			if n == "eth0" {
				return "10.0.2.15", "fe80::5054:ff:fe12:3456%eth0"
			}
			return "", ""
		},
		Hostname: func() string { return "localhost" },
	}
}

func TestCollectFakeMachine(t *testing.T) {
	for _, disableGHW := range []bool{false, true} {
		t.Run(map[bool]string{false: "ghw", true: "sysfs-only"}[disableGHW], func(t *testing.T) {
			root := machineTree(t, false)
			c := collector(root)
			c.DisableGHW = disableGHW
			inv, err := c.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkInventory(t, inv)
		})
	}
}

func checkInventory(t *testing.T, inv *protocol.Inventory) {
	t.Helper()
	if inv.CPU.Count != 2 || inv.CPU.ModelName != "QEMU Virtual CPU version 2.5+" || inv.CPU.Architecture != "x86_64" ||
		inv.CPU.Frequency != "2399.9980" || len(inv.CPU.Flags) != 6 || inv.CPU.Flags[5] != "vmx" {
		t.Errorf("cpu = %+v", inv.CPU)
	}
	if inv.Memory.Total != 492168*1024 || inv.Memory.PhysicalMB != 512 {
		t.Errorf("memory = %+v", inv.Memory)
	}
	if inv.SystemVendor.Manufacturer != "QEMU" || inv.SystemVendor.SerialNumber != "SN-VM-1" ||
		inv.SystemVendor.Firmware == nil || inv.SystemVendor.Firmware.Vendor != "SeaBIOS" {
		t.Errorf("system_vendor = %+v", inv.SystemVendor)
	}
	if inv.Boot.CurrentBootMode != "bios" || inv.Boot.PXEInterface != "01-52-54-00-12-34-56" {
		t.Errorf("boot = %+v", inv.Boot)
	}
	if inv.BMCAddress != "0.0.0.0" || inv.BMCMAC != "00:00:00:00:00:00" || inv.BMCV6Address != "::/0" {
		t.Errorf("bmc defaults = %q %q %q", inv.BMCAddress, inv.BMCMAC, inv.BMCV6Address)
	}

	disks := map[string]protocol.BlockDevice{}
	for _, d := range inv.Disks {
		disks[d.Name] = d
	}
	if len(disks) != 4 {
		t.Fatalf("disks = %v", names(inv.Disks))
	}
	s := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	vda := disks["/dev/vda"]
	if vda.Size != 1<<30 || s(vda.Serial) != "SN-ABC123" || s(vda.Vendor) != "0x1af4" || !vda.Rotational ||
		s(vda.ByPath) != "/dev/disk/by-path/pci-0000:00:05.0" || vda.HCTL != nil || vda.LogicalSectors != 512 {
		t.Errorf("vda = %+v serial=%s by_path=%s", vda, s(vda.Serial), s(vda.ByPath))
	}
	sda := disks["/dev/sda"]
	if sda.Model != "WDC WD10EZEX-00B" || s(sda.Vendor) != "ATA" || s(sda.Serial) != "WD-123456" ||
		s(sda.WWN) != "0x50014ee2b5c5d6e7" || s(sda.WWNWithExtension) != "0x50014ee2b5c5d6e7" ||
		s(sda.HCTL) != "2:0:0:0" || s(sda.ByPath) != "/dev/disk/by-path/pci-0000:00:1f.2-ata-3" || s(sda.Tran) != "sata" {
		t.Errorf("sda = %+v serial=%s wwn=%s hctl=%s by_path=%s", sda, s(sda.Serial), s(sda.WWN), s(sda.HCTL), s(sda.ByPath))
	}
	nv := disks["/dev/nvme0n1"]
	if nv.Rotational || s(nv.Serial) != "S4EWNX0N123456" || nv.Model != "Samsung SSD 970 EVO Plus 500GB" ||
		s(nv.WWN) != "eui.0025385b91b12345" || s(nv.ByPath) != "/dev/disk/by-path/pci-0000:00:06.0-nvme-1" || s(nv.Tran) != "nvme" {
		t.Errorf("nvme = %+v serial=%s by_path=%s", nv, s(nv.Serial), s(nv.ByPath))
	}
	sdb := disks["/dev/sdb"]
	if s(sdb.HCTL) != "0:0:1:0" || s(sdb.ByPath) != "/dev/disk/by-path/pci-0000:00:04.0-scsi-0:0:1:0" || sdb.Model != "QEMU HARDDISK" {
		t.Errorf("sdb = %+v hctl=%s by_path=%s", sdb, s(sdb.HCTL), s(sdb.ByPath))
	}
	if rd := protocol.GuessRootDisk(inv.Disks); rd == nil || rd.Name != "/dev/sdb" {
		t.Errorf("root disk guess = %+v", rd)
	}

	if len(inv.Interfaces) != 2 {
		t.Fatalf("interfaces = %+v", inv.Interfaces)
	}
	eno, eth := inv.Interfaces[0], inv.Interfaces[1]
	if eth.Name != "eth0" || eth.MACAddress != "52:54:00:12:34:56" || !eth.HasCarrier || eth.Driver != "virtio_net" ||
		eth.SpeedMbps != nil || s(eth.IPv4Address) != "10.0.2.15" || eth.PCIAddress != "0000:00:03.0" || eth.Vendor != "0x1af4" {
		t.Errorf("eth0 = %+v", eth)
	}
	if eno.Name != "eno1" || eno.MACAddress != "aa:bb:cc:dd:ee:ff" || eno.HasCarrier || eno.Driver != "e1000e" ||
		eno.SpeedMbps == nil || *eno.SpeedMbps != 1000 || eno.IPv4Address != nil || eno.PCIAddress != "0000:00:19.0" {
		t.Errorf("eno1 = %+v", eno)
	}

	// Wire shape: IPA's keys, nulls where IPA has nulls.
	b, _ := json.Marshal(inv)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"interfaces", "cpu", "disks", "memory", "bmc_address", "bmc_v6address", "bmc_mac", "system_vendor", "boot", "hostname"} {
		if _, ok := m[k]; !ok {
			t.Errorf("inventory JSON lacks %q", k)
		}
	}
	ifc := m["interfaces"].([]any)[0].(map[string]any)
	if v, ok := ifc["ipv4_address"]; !ok || v != nil {
		t.Errorf("eno1 ipv4_address must be null, got %v (present=%v)", v, ok)
	}
	for _, k := range []string{"name", "mac_address", "ipv6_address", "has_carrier", "lldp", "client_id", "biosdevname"} {
		if _, ok := ifc[k]; !ok {
			t.Errorf("interface JSON lacks %q: %s", k, b)
		}
	}
	dj := m["disks"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "model", "size", "rotational", "wwn", "serial", "vendor", "wwn_with_extension", "wwn_vendor_extension", "hctl", "by_path"} {
		if _, ok := dj[k]; !ok {
			t.Errorf("disk JSON lacks %q", k)
		}
	}
}

func names(ds []protocol.BlockDevice) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

func TestUEFIAndBMC(t *testing.T) {
	root := machineTree(t, true)
	c := collector(root)
	c.BMC = func(context.Context) (BMCInfo, error) {
		return BMCInfo{Address: "10.0.0.5", MAC: "aa:bb:cc:00:11:22"}, nil
	}
	inv, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.Boot.CurrentBootMode != "uefi" || inv.BMCAddress != "10.0.0.5" || inv.BMCMAC != "aa:bb:cc:00:11:22" || inv.BMCV6Address != "::/0" {
		t.Errorf("boot=%+v bmc=%s/%s/%s", inv.Boot, inv.BMCAddress, inv.BMCMAC, inv.BMCV6Address)
	}
}

func TestEmptyTreeFails(t *testing.T) {
	c := &Collector{Root: t.TempDir(), DisableGHW: true}
	if _, err := c.Collect(context.Background()); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("err = %v", err)
	}
}

func TestParseWWID(t *testing.T) {
	w, x, v := parseWWID("naa.600508b1001c5d0a2a7c3f0e1b4d9e8f")
	if *w != "0x600508b1001c5d0a" || *x != "0x600508b1001c5d0a2a7c3f0e1b4d9e8f" || *v != "0x2a7c3f0e1b4d9e8f" {
		t.Errorf("%s %s %s", *w, *x, *v)
	}
	if w, _, _ := parseWWID(""); w != nil {
		t.Error("empty wwid")
	}
}

// TestLiveMachine runs the collector against the machine running the test;
// it only checks that it works and finds something.
func TestLiveMachine(t *testing.T) {
	inv, err := (&Collector{}).Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.CPU.Count < 1 || inv.Memory.Total <= 0 {
		t.Errorf("live inventory: cpu=%+v mem=%+v", inv.CPU, inv.Memory)
	}
}
