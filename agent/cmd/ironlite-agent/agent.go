package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/daemon"
	"github.com/ironlite/ironlite/agent/extensions"
	"github.com/ironlite/ironlite/agent/kparams"
	"github.com/ironlite/ironlite/agent/raid"
)

// Registry is the command registry the agent serves; other files of this
// package (and packages they import) add commands to it before the agent
// starts.
var Registry = api.NewRegistry()

// ring keeps the last bytes of the agent's log for log.collect_system_logs;
// the ramdisk has no persistent log and the console may not be captured.
type ring struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		r.buf = append([]byte(nil), r.buf[over:]...)
	}
	return len(p), nil
}

func (r *ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...)
}

// shellStarted makes the rescue shell start once across agent restarts.
var shellStarted bool

// inRamdisk: u-root's init is PID 1 and runs uinit as its child.
func inRamdisk() bool {
	_, err := os.Stat("/init")
	return os.Getppid() == 1 && err == nil
}

func runAgent(args []string) {
	fs := flag.NewFlagSet("ironlite-agent", flag.ExitOnError)
	cmdlineFile := fs.String("cmdline", "/proc/cmdline", "file to read the kernel parameters from")
	ramdisk := fs.String("ramdisk", "auto", "load modules and run DHCP: auto (when started by init as PID 1's child), true or false")
	_ = fs.Parse(args)

	logs := &ring{max: 4 << 20}
	var out io.Writer = io.MultiWriter(os.Stderr, logs)
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	isRamdisk := *ramdisk == "true" || (*ramdisk == "auto" && inRamdisk())
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	// Nothing restarts us in the ramdisk: on any failure, log, wait, retry.
	for attempt := 1; ; attempt++ {
		err := runOnce(ctx, *cmdlineFile, isRamdisk, level, log, logs)
		if ctx.Err() != nil {
			log.Info("agent stopped", "reason", ctx.Err())
			if !isRamdisk {
				return
			}
			// As init's child, exiting would end in a kernel panic.
			select {}
		}
		log.Error("agent failed; restarting in 10s", "attempt", attempt, "error", err)
		time.Sleep(10 * time.Second)
	}
}

func runOnce(ctx context.Context, cmdlineFile string, isRamdisk bool, level *slog.LevelVar, log *slog.Logger, logs *ring) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	b, err := os.ReadFile(cmdlineFile)
	if err != nil {
		return fmt.Errorf("reading kernel parameters: %w", err)
	}
	p, perr := kparams.Parse(string(b))
	if perr != nil {
		// Run with what parsed: a bad optional value must not strand the node.
		log.Error("kernel parameters", "error", perr)
	}
	if p.Debug {
		level.Set(slog.LevelDebug)
	}
	if tty := p.Raw["ironlite-shell"]; tty != "" && isRamdisk && !shellStarted {
		shellStarted = true
		go rescueShell(tty, log)
	}
	registerImageCommands(p, log)
	raid.RegisterSteps(raid.Options{Log: log})
	return daemon.Run(ctx, daemon.Config{
		Params:   p,
		Log:      log,
		Ramdisk:  isRamdisk,
		Registry: Registry,
		OnLookup: lookedUp.set,
		Power:    extensions.SystemPower{},
		Logs:     extensions.DefaultLogSource(logs.Bytes),
	})
}
