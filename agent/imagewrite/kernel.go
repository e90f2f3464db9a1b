package imagewrite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
)

// KernelPartition is a partition as the kernel is told of it.
type KernelPartition struct {
	Number        int
	Start, Length int64 // bytes
}

// AnnouncePartitions makes sure the kernel knows every partition of the
// table just written, adding the ones it lacks with BLKPG, after the table
// was re-read.
//
// BLKRRPART only finds partitions through the kernel's own table parsers;
// a kernel built without them (CONFIG_EFI_PARTITION, CONFIG_MSDOS_PARTITION
// unset, as in some minimal VM kernels) "succeeds", drops the partitions it
// had and finds none. partprobe, which IPA runs, adds partitions with BLKPG
// the same way, so /dev/sdaN exists for whoever looks next. A regular file
// has no kernel partitions: nothing to do.
func AnnouncePartitions(d *blockdev.Device, parts []KernelPartition) error {
	if !d.IsBlockDevice() {
		return nil
	}
	known, err := kernelPartitions(d)
	if err != nil {
		return err
	}
	for _, q := range parts {
		if _, ok := known[q.Number]; ok {
			continue
		}
		p := unix.BlkpgPartition{Start: q.Start, Length: q.Length, Pno: int32(q.Number)}
		arg := unix.BlkpgIoctlArg{
			Op:      unix.BLKPG_ADD_PARTITION,
			Datalen: int32(unsafe.Sizeof(p)),
			Data:    (*byte)(unsafe.Pointer(&p)),
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.File().Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
		if errno != 0 {
			return fmt.Errorf("add partition %d to the kernel's view of %s (BLKPG): %w", q.Number, d.Path(), errno)
		}
	}
	return nil
}

// sysDir is the disk's directory in sysfs, /sys/dev/block/MAJ:MIN.
func sysDir(d *blockdev.Device) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.File().Fd()), &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", d.Path(), err)
	}
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

// kernelPartitions maps the partition numbers the kernel has for the open
// disk to their sysfs (and /dev) names: /sys/dev/block/MAJ:MIN/<name>/partition
// holds each one's number.
func kernelPartitions(d *blockdev.Device) (map[int]string, error) {
	dir, err := sysDir(d)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", d.Path(), err)
	}
	known := map[int]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			known[n] = e.Name()
		}
	}
	return known, nil
}

// PartitionDevice returns the device node of partition n of the disk d,
// which the kernel must know (after RereadPartitions/AnnouncePartitions):
// /dev/<name> as sysfs names it (sda3, nvme0n1p3, loop0p3, md126p3).
// devtmpfs creates the node when the kernel adds the partition; it is
// waited for briefly, then made here if still missing (a /dev without
// devtmpfs), after checking that whatever has the name is that partition.
func PartitionDevice(ctx context.Context, d *blockdev.Device, n int) (string, error) {
	if !d.IsBlockDevice() {
		return "", fmt.Errorf("%s is not a block device: its partitions have no device nodes", d.Path())
	}
	known, err := kernelPartitions(d)
	if err != nil {
		return "", err
	}
	name, ok := known[n]
	if !ok {
		return "", fmt.Errorf("the kernel does not know partition %d of %s", n, d.Path())
	}
	dir, err := sysDir(d)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, name, "dev"))
	if err != nil {
		return "", fmt.Errorf("partition %d of %s: %w", n, d.Path(), err)
	}
	var maj, min uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err != nil {
		return "", fmt.Errorf("partition %d of %s: sysfs dev %q: %w", n, d.Path(), b, err)
	}
	want := unix.Mkdev(maj, min)
	node := filepath.Join("/dev", name)
	for attempt := 0; ; attempt++ {
		var st unix.Stat_t
		err := unix.Stat(node, &st)
		if err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != want {
				return "", fmt.Errorf("%s is not partition %d of %s (device %d:%d)", node, n, d.Path(), maj, min)
			}
			return node, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("partition %d of %s: %w", n, d.Path(), err)
		}
		if attempt == 25 {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(want)); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("make the device node of partition %d of %s: %w", n, d.Path(), err)
	}
	return node, nil
}
