package coldplug

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func write(t *testing.T, root, p, c string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

const aliasFile = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias acpi*:IPI0001:* ipmi_si
`

func TestColdplugRounds(t *testing.T) {
	root := t.TempDir()
	write(t, root, "lib/modules/6.1.0-test/modules.alias", aliasFile)
	write(t, root, "sys/devices/pci0000:00/0000:00:03.0/modalias", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n")
	write(t, root, "sys/devices/pci0000:00/0000:00:1f.2/modalias", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01\n")
	write(t, root, "sys/devices/pci0000:00/0000:00:19.0/modalias", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00\n")
	write(t, root, "sys/devices/platform/serial8250/modalias", "platform:serial8250\n")

	var order []string
	load := func(name string) error {
		order = append(order, name)
		// Loading virtio_pci makes the virtio devices appear, as in a VM.
		if name == "virtio_pci" {
			write(t, root, "sys/devices/pci0000:00/0000:00:03.0/virtio0/modalias", "virtio:d00000001v00001AF4\n")
		}
		return nil
	}
	loaded, err := Run(context.Background(), Options{Root: root, KVer: "6.1.0-test", Load: load, Always: []string{"ipmi_devintf"}})
	if err != nil {
		t.Fatal(err)
	}
	got := append([]string(nil), loaded...)
	sort.Strings(got)
	want := []string{"ahci", "e1000e", "ipmi_devintf", "virtio_net", "virtio_pci"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
	if order[len(order)-1] != "virtio_net" {
		t.Errorf("virtio_net must come in a later round, after virtio_pci: %v", order)
	}
}

func TestMatch(t *testing.T) {
	root := t.TempDir()
	write(t, root, "a", aliasFile)
	a, err := ReadAliases(filepath.Join(root, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Match("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"); !reflect.DeepEqual(got, []string{"virtio_pci"}) {
		t.Errorf("match = %v", got)
	}
	if got := a.Match("acpi:IPI0001:"); !reflect.DeepEqual(got, []string{"ipmi_si"}) {
		t.Errorf("acpi match = %v", got)
	}
	if got := a.Match("usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00"); got != nil {
		t.Errorf("usb match = %v", got)
	}
}

func TestMissingAliasesIsAnError(t *testing.T) {
	if _, err := Run(context.Background(), Options{Root: t.TempDir(), KVer: "x", Load: func(string) error { return nil }}); err == nil {
		t.Error("no error without modules.alias")
	}
}
