package extraparts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/filesystem"
)

// Preserved is the ephemeral partition of the previous deployment, found
// on the disk before the new image is written.
type Preserved struct {
	extent
	// Filesystem is what its superblock says (may be empty: the
	// partition's name alone identifies it on GPT).
	Filesystem filesystem.Info
	// old lists every partition of the previous table, for EraseAround.
	old []extent
	ss  int64
}

// Limit is how many bytes of the disk the new image may cover: everything
// before the kept partition.
func (p *Preserved) Limit() int64 { return p.start * p.ss }

// String describes the partition for logs and errors.
func (p *Preserved) String() string {
	return fmt.Sprintf("%s, %s UUID %s", p.extent, p.Filesystem.Type, p.Filesystem.UUID)
}

// ErrNoEphemeral is wrapped by FindEphemeral's error when there is nothing
// to preserve.
var ErrNoEphemeral = errors.New("no ephemeral partition to preserve")

// FindEphemeral finds, on the disk as the previous deployment left it, the
// one partition named ephemeral0 (GPT) or holding a filesystem labelled
// ephemeral0, which is how this agent made it and how Ironic's partition
// images label it. None, or more than one, is an error: preserve_ephemeral
// promises the instance its data back, and a deploy that cannot keep that
// promise must fail rather than quietly start afresh.
func FindEphemeral(d *blockdev.Device) (*Preserved, error) {
	ss := int64(d.LogicalSectorSize())
	t, err := readTable(d, ss)
	if errors.Is(err, errNoTable) {
		return nil, fmt.Errorf("%w: %s has no partition table", ErrNoEphemeral, d.Path())
	}
	if err != nil {
		return nil, fmt.Errorf("preserve_ephemeral: %s: %w", d.Path(), err)
	}
	var found []*Preserved
	for _, p := range t.parts {
		if p.extended {
			continue
		}
		size := (p.end - p.start + 1) * ss
		if p.start*ss+size > d.Size() {
			continue
		}
		info := filesystem.Identify(io.NewSectionReader(d, p.start*ss, size), size)
		if p.name == EphemeralLabel || info.Label == EphemeralLabel {
			found = append(found, &Preserved{extent: p, Filesystem: info, old: t.parts, ss: ss})
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: no partition on %s is named or labelled %q", ErrNoEphemeral, d.Path(), EphemeralLabel)
	case 1:
		return found[0], nil
	default:
		var s []string
		for _, f := range found {
			s = append(s, f.extent.String())
		}
		return nil, fmt.Errorf("preserve_ephemeral: more than one partition on %s is named or labelled %q (%s); refusing to guess which to keep",
			d.Path(), EphemeralLabel, strings.Join(s, "; "))
	}
}

// EraseAround destroys the old partition table and the signatures at both
// ends of the disk and of every old partition except the kept one, as
// agent/disk's EraseMetadata does for a deploy, so that nothing of the
// previous deployment but the ephemeral partition is found after the new
// image. (disk.EraseMetadataOf cannot be told to spare a partition.)
func (p *Preserved) EraseAround(ctx context.Context, d *blockdev.Device, log *slog.Logger) error {
	ss := p.ss
	keepStart, keepEnd := p.start*ss, (p.end+1)*ss
	var total int64
	zero := func(start, end int64) error {
		start, end = max(start, 0), min(end, d.Size())
		// Never into the kept partition.
		if start < keepEnd && end > keepStart {
			if start < keepStart {
				if err := zeroRange(ctx, d, start, keepStart, &total); err != nil {
					return err
				}
			}
			start = max(start, keepEnd)
		}
		return zeroRange(ctx, d, start, end, &total)
	}
	if err := zero(0, wipeSpan); err != nil {
		return err
	}
	if err := zero(d.Size()-wipeSpan, d.Size()); err != nil {
		return err
	}
	for _, q := range p.old {
		if q.number == p.number {
			continue
		}
		s, e := q.start*ss, (q.end+1)*ss
		if err := zero(s, min(e, s+wipeSpan)); err != nil {
			return err
		}
		if err := zero(max(s, e-wipeSpan), e); err != nil {
			return err
		}
	}
	if err := d.Flush(); err != nil {
		return err
	}
	if err := d.RereadPartitions(ctx); err != nil {
		return err
	}
	log.Info("old metadata erased around the preserved ephemeral partition", "device", d.Path(), "kept", p.String(), "bytes", total)
	return nil
}

func zeroRange(ctx context.Context, d *blockdev.Device, start, end int64, total *int64) error {
	if end <= start {
		return nil
	}
	if err := d.ZeroRange(ctx, start, end-start); err != nil {
		return fmt.Errorf("erase old metadata of %s: %w", d.Path(), err)
	}
	*total += end - start
	return nil
}
