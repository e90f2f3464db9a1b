package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/pxe"
	"github.com/ironlite/ironlite/controller/store"
)

type serveOptions struct {
	listen, dataDir, host, logLevel, logFormat, publicURL, config   string
	workers                                                         int
	automatedClean                                                  bool
	deployCallbackTimeout, cleanCallbackTimeout, inspectWaitTimeout time.Duration
	checkStateInterval, syncPowerInterval, powerRecoveryInterval    time.Duration
	syncWorkers, syncMaxRetries                                     int
	forcePowerSync, fastTrack                                       bool
	lockRetries                                                     int
	lockRetryInterval                                               time.Duration
	netboot                                                         netbootOptions
}

// defaultDataDir is per user: $XDG_DATA_HOME/ironlite or
// ~/.local/share/ironlite.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "ironlite")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "ironlite")
	}
	return "ironlite-data"
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the controller: the Ironic-compatible API and the conductor",
		Long: `Run the ironlite controller.

Every option can also come from the environment (IRONLITE_<OPTION>, e.g.
IRONLITE_LISTEN=0.0.0.0:6385, IRONLITE_DATA_DIR=/var/lib/ironlite) or from a
YAML config file given with --config (keys are the option names, e.g.
"listen: 127.0.0.1:6385"). Command-line flags win over the environment,
which wins over the file.

The API has no authentication ("noauth"), so it listens on loopback by
default; put it behind a reverse proxy or a firewall before exposing it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd.Flags(), o.config); err != nil {
				return err
			}
			return serve(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "YAML config file")
	f.StringVar(&o.listen, "listen", "127.0.0.1:6385", "address:port of the API")
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the database and caches")
	f.StringVar(&o.host, "host", "", "this controller's name in node reservations (default: the hostname)")
	f.StringVar(&o.publicURL, "public-url", "", "base URL in API links (default: from each request)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.IntVar(&o.workers, "workers", 100, "concurrent node tasks")
	f.BoolVar(&o.automatedClean, "automated-clean", true, "clean nodes on provide and undeploy")
	f.DurationVar(&o.deployCallbackTimeout, "deploy-callback-timeout", 1800*time.Second, "fail a deploy when the agent is silent this long")
	f.DurationVar(&o.cleanCallbackTimeout, "clean-callback-timeout", 1800*time.Second, "fail cleaning when the agent is silent this long")
	f.DurationVar(&o.inspectWaitTimeout, "inspect-wait-timeout", 1800*time.Second, "fail inspection after this long")
	f.DurationVar(&o.checkStateInterval, "check-provision-state-interval", 60*time.Second, "how often the wait timeouts are checked")
	f.DurationVar(&o.syncPowerInterval, "sync-power-state-interval", 60*time.Second, "power-state sync period (0 disables)")
	f.IntVar(&o.syncWorkers, "sync-power-state-workers", 8, "parallel BMC reads per power sync round")
	f.IntVar(&o.syncMaxRetries, "power-state-sync-max-retries", 3, "failed syncs before a node goes to maintenance")
	f.BoolVar(&o.forcePowerSync, "force-power-state-during-sync", true, "re-apply the stored power state when the hardware differs (false: record the hardware's)")
	f.DurationVar(&o.powerRecoveryInterval, "power-failure-recovery-interval", 300*time.Second, "how often nodes in power-failure maintenance are retried")
	f.BoolVar(&o.fastTrack, "fast-track", false, "let a running agent look up and heartbeat in enroll/manageable/available (skips a reboot after inspection)")
	f.IntVar(&o.lockRetries, "node-locked-retry-attempts", 3, "attempts to lock a busy node before answering 409")
	f.DurationVar(&o.lockRetryInterval, "node-locked-retry-interval", time.Second, "pause between those attempts")
	o.netboot.flags(f)
	return cmd
}

// applyConfig fills flags not given on the command line from IRONLITE_*
// variables, then from the YAML file.
func applyConfig(fs *pflag.FlagSet, file string) error {
	fileVals := map[string]any{}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &fileVals); err != nil {
			return fmt.Errorf("parse config file %s: %w", file, err)
		}
		for k := range fileVals {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config file %s: unknown option %q (see ironlite serve --help)", file, k)
			}
		}
	}
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" {
			return
		}
		env := "IRONLITE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
			return
		}
		if v, ok := fileVals[fl.Name]; ok {
			if err := fl.Value.Set(fmt.Sprint(v)); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %q: %w", fl.Name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func serve(ctx context.Context, o *serveOptions) error {
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	dbPath := filepath.Join(o.dataDir, "ironlite.sqlite")
	st, err := store.OpenSQLite(ctx, dbPath)
	if err != nil {
		return err
	}
	defer st.Close()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another controller running? choose another --listen)", o.listen, err)
	}
	defer ln.Close()
	bootURL, err := o.netboot.resolveBootURL(ln.Addr().String())
	if err != nil {
		return err
	}
	hw, err := o.netboot.hardware(bootURL)
	if err != nil {
		return err
	}
	imgs, err := openImages(o.dataDir, bootURL, st, log)
	if err != nil {
		return err
	}
	defer imgs.Close()
	hw.direct.Images = imgs
	reg := drivers.NewRegistry()
	fake.Register(reg)
	defer registerHardware(reg, hw, log)()

	ac, force := o.automatedClean, o.forcePowerSync
	syncInterval := o.syncPowerInterval
	if syncInterval == 0 {
		syncInterval = -1
	}
	cond := conductor.New(st, reg, conductor.Config{
		Host: o.host, Workers: o.workers, AutomatedClean: &ac,
		LockRetries: o.lockRetries, LockRetryInterval: o.lockRetryInterval,
		DeployCallbackTimeout: o.deployCallbackTimeout, CleanCallbackTimeout: o.cleanCallbackTimeout,
		InspectWaitTimeout: o.inspectWaitTimeout, CheckStateInterval: o.checkStateInterval,
		SyncPowerStateInterval: syncInterval, SyncPowerStateWorkers: o.syncWorkers,
		PowerStateSyncMaxRetries: o.syncMaxRetries, ForcePowerStateDuringSync: &force,
		PowerFailureRecoveryInterval: o.powerRecoveryInterval, FastTrack: o.fastTrack,
	}, log)
	if err := cond.Recover(ctx); err != nil {
		return err
	}
	cond.Start()
	defer cond.Stop()

	mux := http.NewServeMux()
	mux.Handle("/", api.New(cond, api.Config{PublicURL: o.publicURL, Images: imgs}, log))
	if bootURL != "" {
		boot, err := pxe.NewHTTPHandler(bootURL, bootResolver{cond}, log)
		if err != nil {
			return fmt.Errorf("--boot-url: %w", err)
		}
		for _, route := range pxe.Routes() {
			mux.Handle(route, boot)
		}
		mux.Handle("GET /images/", imgs.Handler())
	} else {
		log.Warn("network boot is off: --listen is a wildcard address; set --boot-url to the address machines reach this controller at")
	}
	if err := o.netboot.startTFTP(ctx, o.dataDir, log); err != nil {
		return err
	}
	if err := o.netboot.startDHCP(ctx, bootURL, o.dataDir, cond, log); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("ironlite controller listening", "url", "http://"+ln.Addr().String(), "data_dir", o.dataDir,
		"host", cond.Host(), "drivers", driverNames(reg), "boot_url", bootURL)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func driverNames(reg *drivers.Registry) []string {
	var out []string
	for _, ht := range reg.HardwareTypes() {
		out = append(out, ht.Name)
	}
	return out
}
