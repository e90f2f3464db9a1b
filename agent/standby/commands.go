package standby

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/ironlite/ironlite/agent/api"
	"github.com/ironlite/ironlite/agent/checksum"
	"github.com/ironlite/ironlite/agent/configdrive"
	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/imagesource"
	"github.com/ironlite/ironlite/agent/imagewrite"
	"github.com/ironlite/ironlite/agent/imagewrite/extraparts"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/raid"
	"github.com/ironlite/ironlite/agent/rootdevice"
	"github.com/ironlite/ironlite/agent/steps"
)

// Options wires the commands to the machine.
type Options struct {
	// Node returns the node as the lookup returned it (root device hints
	// live in its properties/instance_info); nil before lookup.
	Node func() map[string]any
	// ListDevices lists candidate disks (default: disk.List on "/").
	ListDevices func(ctx context.Context) ([]protocol.BlockDevice, error)
	// Source is the base download configuration (TLS trust from the
	// kernel command line); image_info's proxies are added per image.
	Source imagesource.Options
	// AllowWeakChecksums accepts md5/sha1 image checksums.
	AllowWeakChecksums bool
	Log                *slog.Logger
}

// Commands holds the state the image commands share: what was written
// last (get_partition_uuids reports it; cache_image lets prepare_image
// skip the download).
type Commands struct {
	o Options

	mu      sync.Mutex
	last    *Outcome
	cached  string // image id written by cache_image
	written string // device it went to
}

// Register adds the standby image commands and the deploy.write_image
// step, replacing the placeholder the steps package advertises.
func Register(reg *api.Registry, o Options) *Commands {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ListDevices == nil {
		log := o.Log
		o.ListDevices = func(ctx context.Context) ([]protocol.BlockDevice, error) {
			// A fresh ramdisk assembles nothing by itself: start the
			// arrays cleaning built, so a software RAID root volume is
			// there to be chosen as the install device.
			if _, err := raid.Assemble(ctx, raid.Options{Log: log}); err != nil {
				log.Warn("assemble software RAID arrays", "err", err)
			}
			return disk.List(ctx, "/")
		}
	}
	c := &Commands{o: o}
	reg.Register("standby.prepare_image", api.Command{Async: true, Validate: validateImageParams, Run: func(ctx context.Context, p map[string]any) (any, error) {
		return c.prepare(ctx, p, c.node(), false)
	}})
	reg.Register("standby.cache_image", api.Command{Async: true, Validate: validateImageParams, Run: func(ctx context.Context, p map[string]any) (any, error) {
		force, _ := p["force"].(bool)
		return c.cache(ctx, p, force)
	}})
	reg.Register("standby.get_partition_uuids", api.Command{Run: func(context.Context, map[string]any) (any, error) {
		return c.partitionUUIDs()
	}})
	steps.Register(steps.Deploy, steps.Definition{
		Step: protocol.Step{Step: "write_image", Interface: "deploy", Priority: 0,
			ArgsInfo: map[string]any{"image_info": map[string]any{"description": "image to write (IPA image_info)", "required": true},
				"configdrive": map[string]any{"description": "gzip+base64 config drive or its URL", "required": false}}},
		Run: func(ctx context.Context, req steps.Request) (any, error) {
			if err := validateImageParams(req.Step.Args); err != nil {
				return nil, err
			}
			node := req.Node
			if node == nil {
				node = c.node()
			}
			res, err := c.prepare(ctx, req.Step.Args, node, false)
			if err != nil {
				return nil, err
			}
			return map[string]any{"result": res}, nil
		},
	})
	return c
}

func (c *Commands) node() map[string]any {
	if c.o.Node == nil {
		return nil
	}
	return c.o.Node()
}

// validateImageParams is IPA's _validate_image_info.
func validateImageParams(p map[string]any) error {
	info, ok := p["image_info"].(map[string]any)
	if !ok {
		return api.InvalidCommandParams("image_info is required and must be an object")
	}
	if id, _ := info["id"].(string); id == "" {
		return api.InvalidCommandParams("Image is missing the 'id' field.")
	}
	urls, _ := info["urls"].([]any)
	if len(urls) == 0 {
		return api.InvalidCommandParams("Image 'urls' must be a list with at least one element.")
	}
	for _, u := range urls {
		if s, _ := u.(string); s == "" {
			return api.InvalidCommandParams("Image 'urls' must be a list of non-empty strings.")
		}
	}
	sum, _ := info["checksum"].(string)
	algo, _ := info["os_hash_algo"].(string)
	val, _ := info["os_hash_value"].(string)
	if sum == "" && (algo == "" || val == "") {
		return api.InvalidCommandParams("Image checksum is not available, either the 'checksum' field or the 'os_hash_algo' and 'os_hash_value' fields must be provided in the image_info")
	}
	if _, err := extraSpec(info); err != nil {
		return api.InvalidCommandParams("%s", err)
	}
	if cd, ok := p["configdrive"]; ok && cd != nil {
		if _, ok := cd.(string); !ok {
			return api.InvalidCommandParams("configdrive must be a string (gzip+base64 image or URL)")
		}
	}
	return nil
}

func (c *Commands) prepare(ctx context.Context, p map[string]any, node map[string]any, cacheOnly bool) (string, error) {
	info := p["image_info"].(map[string]any)
	id, _ := info["id"].(string)
	cd, _ := p["configdrive"].(string)
	if cd == "" {
		cd, _ = info["configdrive"].(string) // IPA: image_info duplicate
	}

	devs, err := c.o.ListDevices(ctx)
	if err != nil {
		return "", deviceNotFound("listing block devices: %v", err)
	}
	root, err := rootdevice.ForNode(devs, node)
	if err != nil {
		return "", deviceNotFound("%v", err)
	}

	c.mu.Lock()
	reuse := !cacheOnly && c.cached == id && c.written == root.Name
	cachedOut := c.last
	if !reuse {
		// Whatever happens next, the disk no longer holds a cached image.
		c.cached, c.written, c.last = "", "", nil
	}
	c.mu.Unlock()

	var iso []byte
	if cd != "" && !cacheOnly {
		if iso, err = configdrive.Decode(ctx, cd, configdrive.HTTPFetcher(nil)); err != nil {
			return "", &api.Error{Type: "InstanceDeployFailure", Code: 500, Message: "Failed to deploy instance", Details: fmt.Sprintf("config drive: %v", err)}
		}
	}

	var out *Outcome
	if reuse {
		c.o.Log.Info("image already written by cache_image; only adding the config drive", "image", id, "device", root.Name)
		out, err = addConfigDrive(ctx, root.Name, iso)
		if err == nil && cachedOut != nil {
			out.Extra = cachedOut.Extra // made by cache_image
		}
	} else {
		req, rerr := c.request(ctx, info, root.Name)
		if rerr != nil {
			return "", rerr
		}
		req.ConfigDrive = iso
		out, err = WriteImage(ctx, req)
	}
	if err == nil {
		// On a RAID-1 root over partitions, give every member disk a copy
		// of the image's ESP (a no-op for anything but an md device).
		err = raid.PrepareRootMembers(ctx, root.Name, raid.Options{Log: c.o.Log})
	}
	if err != nil {
		return "", asIPAError(id, root.Name, err)
	}
	c.mu.Lock()
	c.last = out
	if cacheOnly {
		c.cached, c.written = id, root.Name
	} else {
		c.cached, c.written = "", ""
	}
	c.mu.Unlock()
	rootUUID := ""
	if out.Partitions != nil {
		rootUUID = out.Partitions.DiskIdentifier
	}
	return fmt.Sprintf("image (%s) written to device %s root_uuid=%s", id, root.Name, rootUUID), nil
}

func (c *Commands) cache(ctx context.Context, p map[string]any, force bool) (string, error) {
	info := p["image_info"].(map[string]any)
	id, _ := info["id"].(string)
	c.mu.Lock()
	already := c.cached == id
	c.mu.Unlock()
	if already && !force {
		return fmt.Sprintf("image (%s) already present on device %s", id, c.written), nil
	}
	return c.prepare(ctx, p, c.node(), true)
}

// request turns image_info into a write request.
func (c *Commands) request(ctx context.Context, info map[string]any, dev string) (Request, error) {
	so := c.o.Source
	if px, ok := info["proxies"].(map[string]any); ok {
		so.Proxies = map[string]string{}
		for k, v := range px {
			if s, _ := v.(string); s != "" {
				so.Proxies[k] = s
			}
		}
		so.NoProxy, _ = info["no_proxy"].(string)
	}
	client, err := imagesource.NewHTTPClient(so)
	if err != nil {
		return Request{}, imageDownloadError(fmt.Sprint(info["id"]), err)
	}
	so.HTTPClient = client
	var urls []string
	for _, u := range info["urls"].([]any) {
		urls = append(urls, u.(string))
	}
	exp, err := checksum.FromImageInfo(ctx, info, urls[0], checksum.Options{HTTPClient: client, AllowWeak: c.o.AllowWeakChecksums})
	if err != nil {
		var he *imagesource.HTTPError
		if errors.As(err, &he) || strings.Contains(err.Error(), "fetch") {
			return Request{}, imageDownloadError(fmt.Sprint(info["id"]), err)
		}
		return Request{}, &api.Error{Type: "ImageChecksumError", Code: 500, Message: "Error verifying image checksum", Details: err.Error()}
	}
	format, _ := info["disk_format"].(string)
	extra, err := extraSpec(info)
	if err != nil {
		return Request{}, api.InvalidCommandParams("%s", err)
	}
	return Request{
		URLs: urls, Checksum: &exp, Device: dev, DiskFormat: format, Extra: extra,
		EraseMetadata: true, RequirePartitions: true, Source: so, Log: c.o.Log,
	}, nil
}

// partitionUUIDs answers standby.get_partition_uuids for the last write.
func (c *Commands) partitionUUIDs() (map[string]any, error) {
	c.mu.Lock()
	out := c.last
	c.mu.Unlock()
	if out == nil || out.Partitions == nil {
		return map[string]any{}, nil
	}
	res := map[string]any{"root uuid": out.Partitions.DiskIdentifier}
	// ironlite extension: the GPT disk GUID, the partitions and the
	// config drive's partition, under one additive key.
	ext := map[string]any{"disk_guid": out.Partitions.DiskGUID, "partitions": out.Partitions.Partitions, "device": out.Device}
	if out.ConfigDrive != nil {
		ext["config_drive_partuuid"] = out.ConfigDrive.PartUUID
	}
	res["ironlite"] = ext
	// ironlite extension: the swap and ephemeral partitions added after
	// the whole-disk image (docs/partitions.md).
	if x := out.Extra; x != nil {
		parts := map[string]any{}
		for role, p := range map[string]*extraparts.Partition{"swap": x.Swap, "ephemeral": x.Ephemeral} {
			if p != nil {
				parts[role] = map[string]any{"partition_uuid": p.PartitionUUID, "filesystem_uuid": p.FilesystemUUID, "device": p.Device,
					"format": p.Format, "label": p.Label, "number": p.Number, "size_bytes": p.SizeBytes, "preserved": p.Preserved}
			}
		}
		res["partitions"] = parts
	}
	return res, nil
}

func addConfigDrive(ctx context.Context, dev string, iso []byte) (*Outcome, error) {
	out := &Outcome{Device: dev, Timings: map[string]float64{}}
	if len(iso) > 0 {
		cd, err := configdrive.Write(ctx, dev, iso)
		if err != nil {
			return nil, fmt.Errorf("%w: config drive: %v", ErrWrite, err)
		}
		out.ConfigDrive = &cd
	}
	d, err := openRead(dev)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if out.Partitions, err = imagewrite.ReadPartitions(d); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return out, nil
}

func deviceNotFound(format string, args ...any) *api.Error {
	return &api.Error{Type: "DeviceNotFound", Code: 404, Message: "Error finding the disk or partition device to deploy the image onto", Details: fmt.Sprintf(format, args...)}
}

func imageDownloadError(id string, err error) *api.Error {
	return &api.Error{Type: "ImageDownloadError", Code: 500, Message: "Error downloading image", Details: fmt.Sprintf("Download of image %s failed: %v", id, err)}
}

// asIPAError names a failed write the way IPA's errors do, so the
// conductor's last_error reads the same.
func asIPAError(id, dev string, err error) error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, ErrChecksum):
		return &api.Error{Type: "ImageChecksumError", Code: 500, Message: "Error verifying image checksum", Details: err.Error()}
	case errors.Is(err, imagewrite.ErrUnsupportedImage):
		return &api.Error{Type: "InvalidImage", Code: 500, Message: "Invalid image", Details: err.Error()}
	case errors.Is(err, ErrDownload):
		return imageDownloadError(id, err)
	default:
		return &api.Error{Type: "ImageWriteError", Code: 500, Message: "Error writing image to device", Details: fmt.Sprintf("Writing image to device %s failed: %v", dev, err)}
	}
}
