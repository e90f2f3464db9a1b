package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/checksum"
	"github.com/ironlite/ironlite/agent/configdrive"
	"github.com/ironlite/ironlite/agent/imagesource"
	"github.com/ironlite/ironlite/agent/imagewrite"
	"github.com/ironlite/ironlite/agent/progress"
	"github.com/ironlite/ironlite/agent/standby"
)

const writeImageUsage = `usage: ironlite-agent write-image --source URL|PATH --checksum SPEC --device DEV [flags]

Writes a disk image onto a disk (or into a file) with the same pipeline the
agent uses during a deploy: qcow2 is read straight over HTTP Range requests
and never staged, raw images stream (optionally gzip/xz/zstd compressed),
zero extents are zeroed on the disk, and the checksum of the image file is
verified. Memory stays bounded whatever the image size.

--checksum takes every form Ironic accepts:
  sha256:<hex> | sha512:<hex> | <hex>        a digest (algorithm from its length)
  http(s)://.../SHA256SUMS | /path/SUMS      a checksum file (GNU or BSD format),
                                              matched by the image's file name
  none                                        skip verification (not recommended)

Examples:
  ironlite-agent write-image --source http://10.0.0.1:8080/images/centos9.qcow2 \
      --checksum http://10.0.0.1:8080/images/SHA256SUMS --device /dev/sda
  ironlite-agent write-image --source ./disk.raw.zst --checksum sha256:9f86... --device out.img

flags:
`

func init() {
	subcommands["write-image"] = writeImageMain
}

func writeImageMain(args []string) error {
	fs := flag.NewFlagSet("write-image", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), writeImageUsage)
		fs.PrintDefaults()
	}
	var (
		source      = fs.String("source", "", "image URL (http, https, file) or local path (required)")
		sum         = fs.String("checksum", "", "expected checksum of the image file, see above (required)")
		device      = fs.String("device", "", "disk to write, e.g. /dev/sda, or a file path (created if missing) (required)")
		diskFormat  = fs.String("disk-format", "", "expected format: raw or qcow2 (default: detect, any of them)")
		configDrive = fs.String("config-drive", "", "config drive to add: an ISO file, a gzip+base64 file, or an http(s) URL")
		erase       = fs.Bool("erase-metadata", true, "wipe old partition tables and signatures on a block device first")
		workers     = fs.Int("workers", 0, "parallel read/write workers (default max(8, 2×CPUs))")
		chunk       = fs.Int64("chunk-size", 0, "bytes per unit of parallel work (default 4 MiB)")
		cacheSize   = fs.Int64("cache-size", 0, "bytes of HTTP block cache (default 64 MiB)")
		blockSize   = fs.Int64("block-size", 0, "bytes per HTTP Range request (default 4 MiB)")
		insecure    = fs.Bool("insecure", false, "do not verify the server's TLS certificate")
		caBundle    = fs.String("ca-bundle", "", "PEM file of extra CA certificates for https sources")
		allowWeak   = fs.Bool("allow-weak-checksum", false, "accept md5/sha1 checksums")
		asJSON      = fs.Bool("json", false, "print the outcome as JSON")
		quiet       = fs.Bool("quiet", false, "no progress on stderr")
		verbose     = fs.Bool("v", false, "debug logging")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var missing []string
	for name, v := range map[string]string{"--source": *source, "--checksum": *sum, "--device": *device} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("write-image: missing %s (or stray arguments %q)", strings.Join(missing, ", "), fs.Args())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	so := imagesource.Options{InsecureSkipVerify: *insecure, CABundle: *caBundle, CacheSize: *cacheSize, BlockSize: *blockSize, Logger: log}
	client, err := imagesource.NewHTTPClient(so)
	if err != nil {
		return err
	}
	so.HTTPClient = client
	// A file may be created as the target, but never under /dev: a
	// mistyped disk name must fail, not fill devtmpfs (RAM) with an image.
	create := true
	if abs, _ := filepath.Abs(*device); strings.HasPrefix(abs, "/dev/") {
		if !blockdev.IsBlockDevice(*device) {
			return fmt.Errorf("--device %s: no such block device", *device)
		}
		create = false
	}
	req := standby.Request{
		URLs: []string{*source}, Device: *device, DiskFormat: *diskFormat, CreateFile: create,
		Source: so, Write: imagewrite.Options{Workers: *workers, ChunkSize: *chunk}, Log: log,
	}
	if *sum != "none" {
		exp, err := checksum.Parse(ctx, *sum, *source, checksum.Options{HTTPClient: client, AllowWeak: *allowWeak})
		if err != nil {
			return fmt.Errorf("--checksum: %w", err)
		}
		req.Checksum = &exp
	} else {
		fmt.Fprintln(os.Stderr, "warning: --checksum none: the image will not be verified")
	}
	if *configDrive != "" {
		if req.ConfigDrive, err = loadConfigDrive(ctx, *configDrive); err != nil {
			return fmt.Errorf("--config-drive: %w", err)
		}
	}
	req.EraseMetadata = *erase && blockdev.IsBlockDevice(*device)

	tr := progress.New()
	ctx = progress.With(ctx, tr)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if *quiet {
			<-stop
			return
		}
		showProgress(tr, stop)
	}()
	out, err := standby.WriteImage(ctx, req)
	close(stop)
	<-done
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	im := out.Image
	secs := out.Timings["total"]
	fmt.Printf("wrote %s (%s%s, %s) to %s in %.2fs (%s/s)\n", out.URL, im.Format, innerSuffix(im.Inner), human(im.ImageBytes), out.Device,
		secs, human(int64(float64(im.ImageBytes)/max(secs, 1e-9))))
	fmt.Printf("  data %s, zeroed %s; fetched %s in %d requests (%s re-fetched)\n", human(im.WrittenBytes), human(im.ZeroedBytes),
		human(out.Source.BytesFetched), out.Source.Requests, human(out.Source.BytesRefetched))
	if out.Checksum != "" {
		fmt.Printf("  checksum verified: %s\n", out.Checksum)
	}
	if out.ConfigDrive != nil {
		fmt.Printf("  config drive: partition %d (%s)\n", out.ConfigDrive.Partition, out.ConfigDrive.PartUUID)
	}
	if p := out.Partitions; p != nil {
		fmt.Printf("  disk identifier %s, %d partitions\n", p.DiskIdentifier, len(p.Partitions))
	}
	return nil
}

func innerSuffix(f imagewrite.Format) string {
	if f == "" {
		return ""
	}
	return " of " + string(f)
}

// loadConfigDrive reads a config drive given as an ISO file, a file with
// the gzip+base64 form Ironic passes, or a URL.
func loadConfigDrive(ctx context.Context, ref string) ([]byte, error) {
	if strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://") {
		return configdrive.Decode(ctx, ref, configdrive.HTTPFetcher(nil))
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, err
	}
	if imagewrite.Detect(b) == imagewrite.ISO || len(b) > 32*1024+8 && string(b[32769:32774]) == "CD001" {
		return b, nil
	}
	return configdrive.Decode(ctx, string(b), nil)
}

// showProgress prints one line per second until stop: phase, percent,
// rate, ETA.
func showProgress(tr *progress.Tracker, stop <-chan struct{}) {
	tty := false
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		tty = true
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			return
		case <-t.C:
		}
		p := tr.Snapshot()
		if p.Phase == "" {
			continue
		}
		line := fmt.Sprintf("%-8s %5.1f%%  %s / %s  %s/s  eta %.0fs", p.Phase, p.Percent, human(p.BytesDone), human(p.BytesTotal),
			human(int64(p.BytesPerSecond)), p.ETASeconds)
		if tty {
			fmt.Fprintf(os.Stderr, "\r%-72s", line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	}
}

func human(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }
