package configdrive

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ironlite/ironlite/agent/blockdev"
)

// announcePartitions makes sure the kernel knows every partition of the
// table just written, adding the ones it lacks with BLKPG, after the table
// was re-read.
//
// BLKRRPART only finds partitions through the kernel's own table parsers;
// a kernel built without them (CONFIG_EFI_PARTITION, CONFIG_MSDOS_PARTITION
// unset, as in some minimal VM kernels) "succeeds", drops the partitions it
// had and finds none. partprobe, which IPA runs, adds partitions with BLKPG
// the same way, so /dev/sdaN exists for whoever looks next.
func announcePartitions(d *blockdev.Device, ss int64, parts []part) error {
	if !d.IsBlockDevice() {
		return nil
	}
	known, err := kernelPartitions(d)
	if err != nil {
		return err
	}
	for _, q := range parts {
		if q.extended || known[q.number] {
			continue
		}
		p := unix.BlkpgPartition{Start: q.start * ss, Length: (q.end - q.start + 1) * ss, Pno: int32(q.number)}
		arg := unix.BlkpgIoctlArg{
			Op:      unix.BLKPG_ADD_PARTITION,
			Datalen: int32(unsafe.Sizeof(p)),
			Data:    (*byte)(unsafe.Pointer(&p)),
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.File().Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
		if errno != 0 {
			return fmt.Errorf("add partition %d to the kernel's view of %s (BLKPG): %w", q.number, d.Path(), errno)
		}
	}
	return nil
}

// kernelPartitions lists the partition numbers the kernel has for the
// open disk: /sys/dev/block/MAJ:MIN/<name>/partition holds each one's.
func kernelPartitions(d *blockdev.Device) (map[int]bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.File().Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", d.Path(), err)
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", d.Path(), err)
	}
	known := map[int]bool{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			known[n] = true
		}
	}
	return known, nil
}
