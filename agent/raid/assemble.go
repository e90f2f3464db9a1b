package raid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ironlite/ironlite/agent/rootdevice"
)

// Assemble starts the md arrays found on the machine's disks (with
// Options.Devices: on those devices and their partitions), as IPA does
// when it starts (mdadm --assemble --scan): a deploy after the cleaning
// that built the arrays boots a fresh ramdisk, where the root volume must
// be running to be chosen as the install device (rootdevice.ForNode) and
// written to. The ramdisk's own /etc/mdadm/mdadm.conf assembles nothing
// ("AUTO -all"); this passes mdadm a configuration that assembles every
// array whatever its metadata and homehost, degraded ones too. Finding
// nothing is not an error. It returns the arrays running afterwards, with their names.
//
// Stale /dev/md/<name> links (mdadm leaves them behind when an array
// stops, and then will not give the name to the array assembled next)
// are removed first, and links are made for the arrays mdadm left
// without one.
func Assemble(ctx context.Context, o Options) ([]rootdevice.MDArray, error) {
	log := o.log()
	removeStaleLinks(o.root())
	devices := "partitions"
	if len(o.Devices) > 0 {
		var list []string
		for _, d := range o.Devices {
			list = append(list, d)
			list = append(list, partitionsOf(o.root(), d)...)
		}
		devices = strings.Join(list, " ")
	}
	conf, err := os.CreateTemp("", "ironlite-mdadm-*.conf")
	if err != nil {
		return nil, fmt.Errorf("assemble md arrays: %w", err)
	}
	defer os.Remove(conf.Name())
	_, err = fmt.Fprintf(conf, "DEVICE %s\nAUTO +all\n", devices)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("assemble md arrays: %w", err)
	}
	// --run: a mirror missing a member (a failed disk) starts degraded.
	out, err := exec.CommandContext(ctx, "mdadm", "--assemble", "--scan", "--run", "--config="+conf.Name()).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("assemble md arrays: mdadm is not installed")
		}
		// Exit status 1 and "No arrays found..." when there is nothing to
		// assemble, or when everything already runs.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 && ee.ExitCode() != 2 {
			return nil, fmt.Errorf("assemble md arrays: mdadm --assemble --scan: %w: %s", err, text)
		}
		log.Debug("raid: mdadm --assemble --scan found nothing new", "output", text)
	}
	arrays := rootdevice.MDArrays(o.root())
	if len(o.Devices) > 0 {
		arrays = onDevices(arrays, o.Devices)
	}
	for _, a := range arrays {
		makeLink(o.root(), a)
	}
	if len(arrays) > 0 {
		log.Info("raid: md arrays running", "arrays", describeArrays(arrays))
	}
	return arrays, nil
}

// onDevices keeps the arrays with a member on one of devs.
func onDevices(arrays []rootdevice.MDArray, devs []string) []rootdevice.MDArray {
	mine := map[string]bool{}
	for _, d := range devs {
		mine[sysName(d)] = true
	}
	var out []rootdevice.MDArray
	for _, a := range arrays {
		for _, d := range a.Disks {
			if mine[sysName(d)] {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func describeArrays(arrays []rootdevice.MDArray) string {
	var s []string
	for _, a := range arrays {
		n := a.Name
		if n == "" {
			n = "unnamed"
		}
		s = append(s, a.Device+" ("+n+")")
	}
	return strings.Join(s, ", ")
}

// partitionsOf lists the partition nodes of a disk from sysfs.
func partitionsOf(sysRoot, dev string) []string {
	name := sysName(dev)
	ents, _ := os.ReadDir(filepath.Join(sysRoot, "sys/class/block", name))
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(sysRoot, "sys/class/block", name, e.Name(), "partition")); err == nil {
			out = append(out, "/dev/"+e.Name())
		}
	}
	return out
}

// removeStaleLinks removes the /dev/md/ links whose array is not running.
func removeStaleLinks(sysRoot string) {
	dir := filepath.Join(sysRoot, "dev/md")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		slaves, _ := os.ReadDir(filepath.Join(sysRoot, "sys/block", filepath.Base(target), "slaves"))
		if len(slaves) == 0 {
			os.Remove(p)
		}
	}
}

// makeLink makes /dev/md/<name> for a running array that has none.
func makeLink(sysRoot string, a rootdevice.MDArray) {
	if a.Name == "" || strings.Contains(a.Name, "/") {
		return
	}
	dir := filepath.Join(sysRoot, "dev/md")
	p := filepath.Join(dir, a.Name)
	if _, err := os.Lstat(p); err == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.Symlink(a.Device, p)
	}
}
