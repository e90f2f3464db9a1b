// Package filesystem makes filesystems (and swap areas) on block devices
// with the mkfs tools the ramdisk carries: mke2fs for ext4, mkfs.xfs,
// mkfs.fat for vfat and mkswap. It is what the agent uses for the
// ephemeral and swap partitions it adds after a whole-disk image and for
// the RAID data volumes it formats.
//
// The tools are run, not reimplemented: the filesystems they make are the
// ones every distribution's kernel and fsck expect, with the same defaults
// an operator gets by hand. The UUID of the new filesystem is chosen here
// and passed to the tool, then read back from the superblock ([Identify]),
// so a tool that ignored it is caught rather than reported wrongly.
package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// Filesystem types Make knows, as blkid names them.
const (
	Ext4 = "ext4"
	XFS  = "xfs"
	VFAT = "vfat"
	Swap = "swap"
)

var (
	// ErrUnsupported is wrapped by the error for an fstype Make does not
	// know.
	ErrUnsupported = errors.New("unsupported filesystem type")
	// ErrToolMissing is wrapped by the error when the mkfs tool for a
	// known fstype is not installed (not in the ramdisk).
	ErrToolMissing = errors.New("mkfs tool not found")
	// ErrBadLabel is wrapped by the error for a label the filesystem
	// cannot hold.
	ErrBadLabel = errors.New("invalid filesystem label")
)

// kind describes one fstype: the tools that make it (first found wins)
// and the longest label it holds, in bytes.
type kind struct {
	tools    []string
	maxLabel int
}

var kinds = map[string]kind{
	Ext4: {tools: []string{"mkfs.ext4", "mke2fs"}, maxLabel: 16},
	XFS:  {tools: []string{"mkfs.xfs"}, maxLabel: 12},
	VFAT: {tools: []string{"mkfs.fat", "mkfs.vfat"}, maxLabel: 11},
	Swap: {tools: []string{"mkswap"}, maxLabel: 16},
}

// Supported lists the fstypes Make accepts, whether or not their tool is
// installed here.
func Supported() []string { return []string{Ext4, XFS, VFAT, Swap} }

// ValidateLabel checks that label suits fstype: at most as long as the
// filesystem stores (16 bytes for ext4 and swap, 12 for xfs, 11 for vfat)
// and made of letters, digits, '.', '_' and '-' only, so that it survives
// /dev/disk/by-label, fstab and cloud-init unquoted. An empty label is
// valid (none is set).
func ValidateLabel(fstype, label string) error {
	k, ok := kinds[fstype]
	if !ok {
		return unsupported(fstype)
	}
	if len(label) > k.maxLabel {
		return fmt.Errorf("%w: %q is %d bytes, longer than the %d a %s label holds", ErrBadLabel, label, len(label), k.maxLabel, fstype)
	}
	for _, r := range label {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: %q has %q; use letters, digits, '.', '_' and '-'", ErrBadLabel, label, r)
		}
	}
	return nil
}

func unsupported(fstype string) error {
	return fmt.Errorf("%w %q (supported: %s)", ErrUnsupported, fstype, strings.Join(Supported(), ", "))
}

// sbinDirs are searched after $PATH: the ramdisk keeps the tools in /sbin,
// and a login shell's PATH on a build host may lack the sbin directories.
var sbinDirs = []string{"/sbin", "/usr/sbin"}

// lookTool finds the first of names in $PATH or the sbin directories.
func lookTool(names []string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	for _, n := range names {
		for _, d := range sbinDirs {
			p := filepath.Join(d, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w: %s not found in the ramdisk: neither in $PATH nor in %s",
		ErrToolMissing, strings.Join(names, " or "), strings.Join(sbinDirs, ", "))
}

// Make formats dev (a block device, or a regular file standing in for
// one) as fstype ("ext4", "xfs", "vfat" or "swap") with the given label
// (may be empty) and returns the new filesystem's UUID as blkid prints it:
// a lower-case RFC 4122 UUID, or for vfat the volume id ("ABCD-1234").
// Whatever dev held is overwritten without asking: the caller owns the
// decision.
func Make(ctx context.Context, dev, fstype, label string) (uuid string, err error) {
	k, ok := kinds[fstype]
	if !ok {
		return "", unsupported(fstype)
	}
	if err := ValidateLabel(fstype, label); err != nil {
		return "", err
	}
	tool, err := lookTool(k.tools)
	if err != nil {
		return "", fmt.Errorf("make %s on %s: %w", fstype, dev, err)
	}
	st, err := os.Stat(dev)
	if err != nil {
		return "", fmt.Errorf("make %s on %s: %w", fstype, dev, err)
	}
	if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
		return "", fmt.Errorf("make %s on %s: not a block device or a regular file", fstype, dev)
	}
	want, args, err := command(fstype, dev, label)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	// mke2fs and mkfs.xfs ask before overwriting nothing when given -F/-f,
	// but never let a tool wait on a terminal that is not there.
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("make %s on %s: %s %s: %w: %s", fstype, dev, filepath.Base(tool), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	info, err := IdentifyDevice(dev)
	if err != nil {
		return "", fmt.Errorf("make %s on %s: read back the new filesystem: %w", fstype, dev, err)
	}
	if info.Type != fstype || info.UUID != want || info.Label != label {
		return "", fmt.Errorf("make %s on %s: %s reported success but the device holds %s UUID %q label %q, not %s UUID %q label %q",
			fstype, dev, filepath.Base(tool), info.Type, info.UUID, info.Label, fstype, want, label)
	}
	slog.InfoContext(ctx, "filesystem made", "device", dev, "type", fstype, "uuid", want, "label", label, "tool", tool)
	return want, nil
}

// command returns the UUID the new filesystem will carry and the tool's
// arguments. Every tool is told to format without asking (the agent has
// no terminal) and given the UUID, so the same call is reproducible in
// tests and the result is known before blkid is asked.
func command(fstype, dev, label string) (string, []string, error) {
	switch fstype {
	case Ext4:
		id := uuid.NewString()
		// -t ext4 for mke2fs (mkfs.ext4 implies it); lazy inode table
		// init leaves zeroing the inode tables to the instance's kernel
		// instead of doing it here, which on a large partition takes
		// minutes (mke2fs only does it lazily by itself when it sees the
		// ext4 module's sysfs flag, which a ramdisk may not have loaded).
		args := []string{"-F", "-q", "-t", "ext4", "-U", id, "-E", "lazy_itable_init=1"}
		if label != "" {
			args = append(args, "-L", label)
		}
		return id, append(args, dev), nil
	case XFS:
		id := uuid.NewString()
		args := []string{"-f", "-q", "-m", "uuid=" + id}
		if label != "" {
			args = append(args, "-L", label)
		}
		return id, append(args, dev), nil
	case VFAT:
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", nil, fmt.Errorf("make vfat: volume id: %w", err)
		}
		v := binary.BigEndian.Uint32(b[:])
		// -I: format a whole device too (RAID volumes), where mkfs.fat
		// would insist on a partition.
		args := []string{"-I", "-i", fmt.Sprintf("%08X", v)}
		if label != "" {
			args = append(args, "-n", label)
		}
		return fmt.Sprintf("%04X-%04X", v>>16, v&0xffff), append(args, dev), nil
	case Swap:
		id := uuid.NewString()
		args := []string{"-U", id}
		if label != "" {
			args = append(args, "-L", label)
		}
		return id, append(args, dev), nil
	}
	return "", nil, unsupported(fstype)
}
