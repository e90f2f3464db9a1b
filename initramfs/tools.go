//go:build tools

// Package initramfs pins the u-root commands that initramfs/build.sh bakes
// into the ramdisk, so that their dependencies stay in go.mod/go.sum (u-root
// resolves command packages with `go list` in this module). It is never
// compiled.
package initramfs

import (
	_ "github.com/u-root/u-root"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/init"
)
