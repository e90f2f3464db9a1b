// Package standby implements IPA's image commands on top of the image
// pipeline: standby.prepare_image, standby.cache_image,
// standby.get_partition_uuids and the deploy.write_image step, plus the
// WriteImage call that `ironlite-agent write-image` uses outside the
// ramdisk.
//
// A write is: resolve the expected checksum, open the image (HTTP Range or
// a local file), pick the disk (root-device hints), wipe its old metadata,
// stream the image onto it (agent/imagewrite), verify the checksum of what
// was read, add swap and ephemeral partitions if asked, write the config
// drive, and record the partition UUIDs.
package standby

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/checksum"
	"github.com/ironlite/ironlite/agent/configdrive"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/imagesource"
	"github.com/ironlite/ironlite/agent/imagewrite"
	"github.com/ironlite/ironlite/agent/imagewrite/extraparts"
	"github.com/ironlite/ironlite/agent/progress"
)

// Request is one image write.
type Request struct {
	// URLs are tried in order until one opens (IPA's image_info urls);
	// local paths and file:// work too.
	URLs []string
	// Checksum is the expected digest of the image file. A nil Checksum
	// skips verification (only `write-image --checksum none`).
	Checksum *checksum.Expected
	// Device is the disk to write, e.g. /dev/sda (or a regular file).
	Device string
	// CreateFile lets Device be a new regular file (write-image to an
	// image file); never set for deploys, where a mistyped /dev path must
	// fail rather than fill the ramdisk.
	CreateFile bool
	// DiskFormat is image_info's disk_format ("", "raw", "qcow2").
	DiskFormat string
	// ConfigDrive is the ISO to put in a config-2 partition (nil: none).
	ConfigDrive []byte
	// EraseMetadata wipes old partition tables and signatures on Device
	// once the image has been vetted, before it is written (deploys; IPA's
	// destroy_disk_metadata).
	EraseMetadata bool
	// RequirePartitions fails a write whose image has no partition table,
	// as IPA does for whole-disk deploys.
	RequirePartitions bool
	// Extra asks for swap and ephemeral partitions after the image
	// (image_info's swap_mb, ephemeral_mb, ephemeral_format,
	// preserve_ephemeral); agent/imagewrite/extraparts says where they go.
	// They need Device to be a block device.
	Extra extraparts.Spec
	// Source configures the download (client, proxies, TLS, cache).
	Source imagesource.Options
	// Write tunes the writer (workers, chunk size).
	Write imagewrite.Options
	Log   *slog.Logger
}

// Outcome is what a successful write reports.
type Outcome struct {
	URL         string                    `json:"url"`
	Device      string                    `json:"device"`
	Image       *imagewrite.Result        `json:"image"`
	Checksum    string                    `json:"checksum,omitempty"` // algo:value verified
	Source      imagesource.Stats         `json:"source"`
	Partitions  *imagewrite.PartitionInfo `json:"partitions,omitempty"`
	ConfigDrive *configdrive.Result       `json:"config_drive,omitempty"`
	Extra       *extraparts.Result        `json:"extra_partitions,omitempty"`
	Timings     map[string]float64        `json:"timings_seconds"`
}

// Kinds of failure, for callers that must name them the way IPA does.
var (
	ErrDownload = errors.New("image download failed")
	ErrChecksum = errors.New("image checksum mismatch")
	ErrWrite    = errors.New("image write failed")
)

// WriteImage writes an image onto a disk and verifies it.
func WriteImage(ctx context.Context, r Request) (_ *Outcome, err error) {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	r.Write.Log = log
	out := &Outcome{Device: r.Device, Timings: map[string]float64{}}
	prog := progress.From(ctx)
	t0 := time.Now()

	if r.Checksum != nil {
		r.Source.Hash = r.Checksum.New()
	}
	prog.SetPhase("download", 0)
	src, url, err := openFirst(ctx, r.URLs, r.Source, log)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	out.URL = url

	dev, err := blockdev.Open(r.Device, blockdev.Options{Create: r.CreateFile})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrite, err)
	}
	// dev is reopened after the partition and config drive steps, which
	// open the disk themselves: close whichever is open at the end.
	defer func() { dev.Close() }()
	// Swap and ephemeral partitions are planned before anything is
	// written (against the image's own table when it can be read ahead),
	// so that an image they do not fit after is refused with the disk as
	// it was; a kept ephemeral partition bounds what the image may cover.
	var keep *extraparts.Preserved
	if r.Extra.Wanted() {
		if err := r.Extra.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrWrite, err)
		}
		if !dev.IsBlockDevice() {
			return nil, fmt.Errorf("%w: %s is not a block device: swap and ephemeral partitions need one", ErrWrite, r.Device)
		}
		r.Extra.ConfigDrive = len(r.ConfigDrive) > 0
		if r.Extra.PreserveEphemeral {
			if keep, err = extraparts.FindEphemeral(dev); err != nil {
				return nil, fmt.Errorf("%w: preserve_ephemeral: %w", ErrWrite, err)
			}
			log.Info("keeping the ephemeral partition", "device", r.Device, "partition", keep.String())
			r.Write.Limit = keep.Limit()
		}
		r.Write.Check = func(_ context.Context, img io.ReaderAt, size int64) error {
			return extraparts.Check(img, size, dev, r.Extra, keep)
		}
	}
	// From the first byte written until the image is verified and the
	// config drive is on, any failure leaves a disk that must not boot.
	touched := false
	defer func() {
		if err != nil && touched {
			spoil(dev, log)
		}
	}()
	r.Write.BeforeWrite = func(ctx context.Context) error {
		touched = true
		if r.EraseMetadata && keep != nil {
			if err := keep.EraseAround(ctx, dev, log); err != nil {
				return fmt.Errorf("wipe old metadata on %s: %w", r.Device, err)
			}
		} else if r.EraseMetadata {
			if err := disk.EraseMetadataOf(ctx, dev); err != nil {
				return fmt.Errorf("wipe old metadata on %s: %w", r.Device, err)
			}
		}
		return nil
	}

	res, err := imagewrite.Write(ctx, src, dev, r.Write)
	out.Source = src.Stats()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	out.Image = res
	out.Timings["write"] = time.Since(t0).Seconds()

	if r.Checksum != nil {
		t1 := time.Now()
		prog.SetPhase("verify", 0)
		sum, herr := src.FinishHash(ctx)
		out.Source = src.Stats()
		if herr != nil {
			return nil, fmt.Errorf("%w: read %s to verify its checksum: %v", ErrDownload, url, herr)
		}
		if verr := r.Checksum.Verify(sum, url, out.Source.BytesHashed); verr != nil {
			return nil, kindError{ErrChecksum, verr}
		}
		out.Checksum = r.Checksum.String()
		out.Timings["verify"] = time.Since(t1).Seconds()
	}
	// Only a verified image gets its GPT completed and shown to the kernel.
	if err = imagewrite.Finish(ctx, dev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}

	// Swap and ephemeral go right after the image's partitions, before
	// the config drive claims the end of the disk (agent/imagewrite/extraparts).
	if r.Extra.Wanted() {
		t3 := time.Now()
		prog.SetPhase("partitions", 0)
		dev.Close() // extraparts opens the disk itself, exclusively
		extra, xerr := extraparts.Create(ctx, r.Device, res.ImageBytes, r.Extra, keep)
		if dev, err = blockdev.Open(r.Device, blockdev.Options{}); err != nil {
			touched = false
			return nil, fmt.Errorf("%w: %v", ErrWrite, err)
		}
		if xerr != nil {
			err = fmt.Errorf("%w: swap/ephemeral partitions: %w", ErrWrite, xerr)
			return nil, err
		}
		out.Extra = extra
		out.Timings["partitions"] = time.Since(t3).Seconds()
	}

	// configdrive.Write refuses a disk without a partition table itself;
	// the table is read once, after it.
	if len(r.ConfigDrive) > 0 {
		t2 := time.Now()
		prog.SetPhase("configdrive", int64(len(r.ConfigDrive)))
		// configdrive.Write opens the disk itself, exclusively.
		dev.Close()
		cd, cerr := configdrive.Write(ctx, r.Device, r.ConfigDrive)
		if dev, err = blockdev.Open(r.Device, blockdev.Options{}); err != nil {
			touched = false // nothing left open to wipe with
			return nil, fmt.Errorf("%w: %v", ErrWrite, err)
		}
		if cerr != nil {
			err = fmt.Errorf("%w: config drive: %v", ErrWrite, cerr)
			return nil, err
		}
		prog.Complete()
		out.ConfigDrive = &cd
		out.Timings["configdrive"] = time.Since(t2).Seconds()
	}
	parts, perr := imagewrite.ReadPartitions(dev)
	if perr != nil && (r.RequirePartitions || !errors.Is(perr, imagewrite.ErrNoPartitions)) {
		err = fmt.Errorf("%w: %w", ErrWrite, perr)
		return nil, err
	}
	out.Partitions = parts
	out.Timings["total"] = time.Since(t0).Seconds()
	log.Info("image written", "url", url, "device", r.Device, "format", res.Format, "bytes", res.ImageBytes,
		"seconds", out.Timings["total"], "checksum", out.Checksum, "requests", out.Source.Requests, "refetched", out.Source.BytesRefetched)
	return out, nil
}

// spoil wipes both ends of a disk whose image failed or was not verified
// (primary and backup partition tables, boot sectors), so that a machine
// booted from it by mistake, or firmware restoring a GPT from its backup,
// finds nothing to run. It runs even when the command was cancelled.
func spoil(dev *blockdev.Device, log *slog.Logger) {
	ctx := context.Background()
	n := min(dev.Size(), 1<<20)
	for _, off := range []int64{0, dev.Size() - n} {
		if err := dev.ZeroRange(ctx, off, n); err != nil {
			log.Error("could not wipe the unverified image", "device", dev.Path(), "error", err)
			return
		}
	}
	_ = dev.Flush()
	_ = dev.RereadPartitions(ctx)
	log.Warn("wiped the partition tables of the failed image", "device", dev.Path())
}

// openFirst opens the first URL that works (IPA tries each of image_info's
// urls in turn).
func openFirst(ctx context.Context, urls []string, o imagesource.Options, log *slog.Logger) (*imagesource.Source, string, error) {
	if len(urls) == 0 {
		return nil, "", fmt.Errorf("%w: no image URL given", ErrDownload)
	}
	var errs []error
	for _, u := range urls {
		src, err := imagesource.Open(ctx, u, o)
		if err == nil {
			return src, u, nil
		}
		log.Warn("image source failed", "url", u, "error", err)
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("%w: %w", ErrDownload, errors.Join(errs...))
}

func openRead(dev string) (*blockdev.Device, error) {
	d, err := blockdev.Open(dev, blockdev.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrite, err)
	}
	return d, nil
}

// kindError marks err as a kind without repeating the kind in the message.
type kindError struct{ kind, err error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }
