package main

import (
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// rescueShell keeps u-root's gosh running on a spare console (kernel
// parameter ironlite-shell=tty2 or ttyS1). u-root's init only starts the
// default shell after uinit exits, and the agent never does; this gives an
// operator a shell on a running agent without stopping it.
func rescueShell(dev string, log *slog.Logger) {
	path := "/dev/" + dev
	for {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			log.Error("rescue shell: cannot open console", "console", path, "error", err)
			return
		}
		cmd := exec.Command("/bin/defaultsh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		log.Info("rescue shell started", "console", path)
		err = cmd.Run()
		f.Close()
		log.Info("rescue shell exited; respawning", "console", path, "error", err)
		time.Sleep(time.Second)
	}
}
