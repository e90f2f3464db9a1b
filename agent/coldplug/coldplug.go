// Package coldplug loads kernel modules for the hardware that is present,
// the way udev does at boot: read every device's modalias under
// /sys/devices, match it against modules.alias, and load the matching
// modules with their dependencies (u-root's kmodule resolves modules.dep).
//
// The ramdisk has no udev, and a fixed module list would miss whatever NIC
// or HBA the next machine has; with coldplug, shipping a driver in the
// initramfs is enough for it to be used.
package coldplug

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Options configures a coldplug run.
type Options struct {
	// Root is the filesystem root holding lib/modules and sys ("/" if empty).
	Root string
	// KVer is the kernel release (default: uname -r).
	KVer string
	// Always lists modules to load whether or not a device asks for them
	// (e.g. ipmi_devintf, which has no modalias).
	Always []string
	// Rounds bounds the repeat-until-nothing-new loop: loading a bus driver
	// (virtio_pci) creates devices (virtio0) that need more drivers.
	Rounds int
	// Load loads one module by name with its dependencies; default kmodule.
	Load func(name string) error
	Log  *slog.Logger
}

// Alias is one "alias <pattern> <module>" line of modules.alias.
type Alias struct {
	Pattern, Module string
}

// Aliases indexes modules.alias by bus (the text before the first ':'), so
// that each modalias is only matched against its own bus's patterns; the
// full table has ~26,000 entries and this runs under slow emulation too.
type Aliases map[string][]Alias

// ReadAliases parses a modules.alias file.
func ReadAliases(file string) (Aliases, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading module aliases: %w", err)
	}
	defer f.Close()
	a := Aliases{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 || fs[0] != "alias" {
			continue
		}
		bus, _, _ := strings.Cut(fs[1], ":")
		if strings.ContainsAny(bus, "*?[") {
			bus = "" // e.g. "acpi*:IPI0001:*": checked against every bus
		}
		a[bus] = append(a[bus], Alias{Pattern: fs[1], Module: fs[2]})
	}
	return a, sc.Err()
}

// Match returns the modules whose patterns match a modalias (fnmatch
// semantics, as modprobe; modaliases contain no '/').
func (a Aliases) Match(modalias string) []string {
	bus, _, _ := strings.Cut(modalias, ":")
	var out []string
	seen := map[string]bool{}
	for _, list := range [][]Alias{a[bus], a[""]} {
		for _, al := range list {
			if ok, _ := path.Match(al.Pattern, modalias); ok && !seen[al.Module] {
				seen[al.Module] = true
				out = append(out, al.Module)
			}
		}
	}
	return out
}

// Modaliases returns the distinct modalias values of all devices under
// root/sys/devices.
func Modaliases(root string) ([]string, error) {
	set := map[string]bool{}
	dir := filepath.Join(root, "sys/devices")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // devices come and go while we walk
		}
		if d.Name() != "modalias" || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			set[s] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", dir, err)
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// Run loads drivers for all present devices and returns the modules it
// loaded (or tried). A module that fails to load is logged, not fatal:
// one bad driver must not keep the NIC driver from loading.
func Run(ctx context.Context, o Options) ([]string, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Rounds == 0 {
		o.Rounds = 5
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.KVer == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return nil, fmt.Errorf("uname: %w", err)
		}
		o.KVer = unix.ByteSliceToString(u.Release[:])
	}
	modDir := filepath.Join(o.Root, "lib/modules", o.KVer)
	aliases, err := ReadAliases(filepath.Join(modDir, "modules.alias"))
	if err != nil {
		return nil, err
	}
	load := o.Load
	if load == nil {
		load = func(name string) error {
			p, err := kmodule.NewProber(kmodule.ProbeOpts{RootDir: o.Root, KVer: o.KVer})
			if err != nil {
				return err
			}
			return p.Probe(name, "")
		}
	}
	tried := map[string]bool{}
	var loaded []string
	try := func(mod, why string) {
		if tried[mod] {
			return
		}
		tried[mod] = true
		start := time.Now()
		if err := load(mod); err != nil {
			o.Log.Warn("coldplug: module failed to load", "module", mod, "for", why, "error", err)
			return
		}
		loaded = append(loaded, mod)
		o.Log.Debug("coldplug: loaded", "module", mod, "for", why, "took", time.Since(start).Round(time.Millisecond))
	}
	seenAlias := map[string]bool{}
	for round := 0; round < o.Rounds; round++ {
		if ctx.Err() != nil {
			return loaded, ctx.Err()
		}
		mas, err := Modaliases(o.Root)
		if err != nil {
			return loaded, err
		}
		before := len(tried)
		for _, ma := range mas {
			if seenAlias[ma] {
				continue
			}
			seenAlias[ma] = true
			for _, mod := range aliases.Match(ma) {
				try(mod, ma)
			}
		}
		if round == 0 {
			for _, mod := range o.Always {
				try(mod, "always")
			}
		}
		if len(tried) == before {
			break
		}
	}
	return loaded, nil
}
