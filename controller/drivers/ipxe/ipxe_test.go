package ipxe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/pxe"
)

func setup(t *testing.T) (*Boot, string, string) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("k"), 0o644)
	os.WriteFile(initrd, []byte("i"), 0o644)
	b := Register(drivers.NewRegistry(), Config{BootURL: "http://10.0.0.1:6385/", DeployKernel: kernel, DeployRamdisk: initrd,
		KernelParams: []string{"console=ttyS0,115200n8"}})
	return b, kernel, initrd
}

func TestScriptFollowsPrepareAndCleanUp(t *testing.T) {
	b, kernel, _ := setup(t)
	n := &model.Node{UUID: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", Name: "bm01"}
	if _, err := b.Script(n, "52:54:00:aa:bb:cc"); !errors.Is(err, drivers.ErrNoBootConfig) {
		t.Fatalf("script before PrepareRamdisk: %v", err)
	}
	if err := b.PrepareRamdisk(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	s, err := b.Script(n, "52:54:00:aa:bb:cc")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"kernel --name vmlinuz http://10.0.0.1:6385/boot/nodes/" + n.UUID + "/deploy_kernel ",
		"ipa-api-url=http://10.0.0.1:6385 BOOTIF=01-52-54-00-aa-bb-cc console=ttyS0,115200n8 initrd=initrd",
		"initrd --name initrd http://10.0.0.1:6385/boot/nodes/" + n.UUID + "/deploy_ramdisk",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("deploy script lacks %q:\n%s", want, s)
		}
	}
	if p, ok := b.ServeFile(n, "deploy_kernel"); !ok || p != kernel {
		t.Errorf("ServeFile(deploy_kernel) = %q, %v", p, ok)
	}
	if _, ok := b.ServeFile(n, "../etc/passwd"); ok {
		t.Errorf("ServeFile serves an arbitrary name")
	}
	b.PrepareInstance(context.Background(), n)
	if s, _ := b.Script(n, "52:54:00:aa:bb:cc"); !strings.Contains(s, "sanboot") {
		t.Errorf("instance script:\n%s", s)
	}
	b.CleanUpInstance(context.Background(), n)
	if _, err := b.Script(n, "52:54:00:aa:bb:cc"); !errors.Is(err, drivers.ErrNoBootConfig) {
		t.Errorf("script after clean-up: %v", err)
	}
}

// Nothing an operator sets on a node can add iPXE commands to its script.
func TestNodeValuesCannotInject(t *testing.T) {
	b, _, _ := setup(t)
	for _, di := range []model.JSONObject{
		{"kernel_append_params": "a=${net0/mac}"},
		{"kernel_append_params": "-n x"},
		{"kernel_append_params": "a=b #comment"},
		{"deploy_kernel": "http://evil/k\nchain http://evil/x"},
		{"deploy_ramdisk": "http://h/r ${x}"},
		{"deploy_kernel": "relative/path"},
		{"deploy_kernel": "ftp://h/k"},
	} {
		n := &model.Node{UUID: "u1", Name: "name with spaces\n#!ipxe shell", DriverInfo: di}
		err := b.PrepareRamdisk(context.Background(), n)
		if err == nil {
			n.DriverInternalInfo = model.JSONObject{"ironlite_netboot": "ramdisk"}
			s, serr := b.Script(n, "52:54:00:aa:bb:cc")
			t.Errorf("driver_info %q accepted; script error %v:\n%s", di, serr, s)
			continue
		}
		if strings.Contains(err.Error(), "kernel_append_params") || strings.Contains(err.Error(), "deploy_") {
			continue
		}
		if !errors.Is(err, pxe.ErrUnsafeValue) {
			t.Errorf("driver_info %q: error %v does not say why", di, err)
		}
	}
}

// kernel_append_params is split on any whitespace, newlines included, so
// a newline only separates two parameters on the same kernel line.
func TestKernelParamsNewlineIsASeparator(t *testing.T) {
	b, _, _ := setup(t)
	n := &model.Node{UUID: "u1", DriverInfo: model.JSONObject{"kernel_append_params": "quiet\nshell"}}
	if err := b.PrepareRamdisk(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	s, err := b.Script(n, "52:54:00:aa:bb:cc")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "shell") {
			t.Fatalf("a newline in kernel_append_params started a script line:\n%s", s)
		}
	}
	if !strings.Contains(s, " quiet shell initrd=initrd") {
		t.Errorf("parameters not on the kernel line:\n%s", s)
	}
}

func TestValidateSaysWhatToSet(t *testing.T) {
	b := Register(drivers.NewRegistry(), Config{BootURL: "http://10.0.0.1:6385"})
	err := b.Validate(&model.Node{UUID: "u1"})
	if err == nil || !strings.Contains(err.Error(), "--deploy-kernel") || !strings.Contains(err.Error(), "driver_info deploy_kernel") {
		t.Errorf("Validate without a kernel: %v", err)
	}
	b = Register(drivers.NewRegistry(), Config{})
	if err := b.Validate(&model.Node{UUID: "u1"}); err == nil || !strings.Contains(err.Error(), "--boot-url") {
		t.Errorf("Validate without a boot URL: %v", err)
	}
}
