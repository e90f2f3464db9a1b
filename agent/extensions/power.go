package extensions

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SystemPower acts on the real machine with reboot(2). The ramdisk has no
// init system to hand over to, and everything worth keeping is on disk
// after sync, so the direct syscall is the right tool.
type SystemPower struct{}

// Sync flushes all filesystems and block devices.
func (SystemPower) Sync() { unix.Sync() }

// PowerOff powers the machine off.
func (SystemPower) PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("reboot(POWER_OFF): %w", err)
	}
	return nil
}

// Reboot restarts the machine.
func (SystemPower) Reboot() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot(RESTART): %w", err)
	}
	return nil
}
