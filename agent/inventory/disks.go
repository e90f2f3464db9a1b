package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/jaypipes/ghw"

	"github.com/ironlite/ironlite/agent/protocol"
)

// skipDisk reports block devices that are not disks in IPA's sense (lsblk
// type "disk"): loop, ram, zram, optical, device-mapper and md devices
// (software RAID volumes are reported by the RAID code, not as disks), nbd.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Disks lists the disks with IPA's fields. ghw enumerates and sizes them;
// model, serial, WWN, HCTL and by-path come from sysfs because ghw reads
// those only from udev's database, which the ramdisk does not have.
func (c *Collector) Disks() ([]protocol.BlockDevice, error) {
	names := map[string]bool{}
	if !c.DisableGHW {
		info, err := safeGHW(func() (*ghw.BlockInfo, error) { return ghw.Block(c.ghwOpts()...) })
		if err == nil && info != nil {
			for _, d := range info.Disks {
				names[d.Name] = true
			}
		} else if err != nil {
			c.log().Debug("inventory: ghw block failed, listing /sys/block", "error", err)
		}
	}
	// Add what ghw skipped or could not see (and everything when it is off).
	dir := c.path("sys/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var out []protocol.BlockDevice
	for name := range names {
		if skipDisk(name) {
			continue
		}
		d, ok := c.disk(name)
		if ok {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (c *Collector) disk(name string) (protocol.BlockDevice, bool) {
	base := c.path("sys/block", name)
	sectors, ok := readInt(filepath.Join(base, "size"))
	if !ok || sectors <= 0 {
		return protocol.BlockDevice{}, false // empty card readers, detached devices
	}
	d := protocol.BlockDevice{
		Name:       "/dev/" + name,
		Size:       sectors * 512, // sysfs size is always in 512-byte units
		Rotational: readStr(filepath.Join(base, "queue/rotational")) == "1",
		Model:      readStr(filepath.Join(base, "device/model")),
		Vendor:     strp(readStr(filepath.Join(base, "device/vendor"))),
	}
	if n, ok := readInt(filepath.Join(base, "queue/logical_block_size")); ok {
		d.LogicalSectors = int(n)
	}
	if n, ok := readInt(filepath.Join(base, "queue/physical_block_size")); ok {
		d.PhysicalSectors = int(n)
	}
	d.Serial = strp(firstNonEmpty(
		readStr(filepath.Join(base, "serial")),        // virtio-blk
		readStr(filepath.Join(base, "device/serial")), // NVMe
		vpdSerial(filepath.Join(base, "device/vpd_pg80")),
	))
	wwid := firstNonEmpty(readStr(filepath.Join(base, "wwid")), readStr(filepath.Join(base, "device/wwid")))
	d.WWN, d.WWNWithExtension, d.WWNVendorExtension = parseWWID(wwid)

	real, err := filepath.EvalSymlinks(base)
	if err == nil {
		rel := strings.TrimPrefix(real, c.path("sys"))
		hctl, byPath, tran := classify(rel, name, base)
		d.HCTL, d.Tran = strp(hctl), strp(tran)
		if byPath != "" {
			d.ByPath = strp("/dev/disk/by-path/" + byPath)
		}
	}
	return d, true
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// vpdSerial decodes SCSI VPD page 0x80 (unit serial number): 4-byte header,
// then the ASCII serial.
func vpdSerial(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return strings.TrimSpace(strings.Trim(string(b[4:4+n]), "\x00"))
}

// parseWWID turns the kernel's wwid into udev's ID_WWN fields: NAA ids
// ("naa.5000c500a1b2c3d4...") become "0x" + the first 16 hex digits, with the
// full id as wwn_with_extension and the rest as the vendor extension; other
// designators (eui., t10., nvme.) are reported as they are.
func parseWWID(w string) (wwn, withExt, vendorExt *string) {
	w = strings.TrimSpace(w)
	if w == "" {
		return nil, nil, nil
	}
	if hex, ok := strings.CutPrefix(w, "naa."); ok {
		hex = strings.ToLower(hex)
		if len(hex) <= 16 {
			return strp("0x" + hex), strp("0x" + hex), nil
		}
		return strp("0x" + hex[:16]), strp("0x" + hex), strp("0x" + hex[16:])
	}
	return strp(w), strp(w), nil
}

var hctlRE = regexp.MustCompile(`^\d+:\d+:\d+:\d+$`)
var ataRE = regexp.MustCompile(`^ata(\d+)$`)
var nvmeNSRE = regexp.MustCompile(`^nvme\d+(?:c\d+)?n(\d+)$`)

// classify derives hctl, a udev-style by-path id and the transport from the
// device's sysfs path (relative to /sys), following systemd's path_id for
// the common cases:
//
//	virtio-blk      pci-0000:00:05.0
//	virtio-scsi     pci-0000:00:04.0-scsi-0:0:0:0
//	AHCI/SATA       pci-0000:00:1f.2-ata-1
//	NVMe            pci-0000:01:00.0-nvme-1
//	SCSI/SAS HBA    pci-0000:03:00.0-scsi-0:0:1:0
func classify(rel, name, base string) (hctl, byPath, tran string) {
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	pci, ata, virtio := "", "", false
	for _, p := range parts {
		switch {
		case pciAddrRE.MatchString(p):
			pci = p
		case ataRE.MatchString(p):
			ata = ataRE.FindStringSubmatch(p)[1]
		case strings.HasPrefix(p, "virtio"):
			virtio = true
		case hctlRE.MatchString(p):
			hctl = p
		}
	}
	if pci == "" {
		return hctl, "", tran
	}
	switch {
	case strings.HasPrefix(name, "nvme"):
		tran = "nvme"
		ns := "1"
		if m := nvmeNSRE.FindStringSubmatch(name); m != nil {
			ns = m[1]
		}
		if n := readStr(filepath.Join(base, "nsid")); n != "" {
			ns = n
		}
		byPath = "pci-" + pci + "-nvme-" + ns
	case ata != "":
		tran = "sata"
		byPath = "pci-" + pci + "-ata-" + ata
	case hctl != "":
		// path_id numbers SCSI hosts from the adapter's first host, which is
		// 0 for a single HBA; keep channel:target:lun.
		f := strings.SplitN(hctl, ":", 2)
		byPath = "pci-" + pci + "-scsi-0:" + f[1]
		if strings.Contains(rel, "/end_device-") {
			tran = "sas"
		} else if !virtio {
			tran = "scsi"
		}
	default:
		byPath = "pci-" + pci
	}
	return hctl, byPath, tran
}
