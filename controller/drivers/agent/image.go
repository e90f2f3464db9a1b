package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
)

// Images is the controller's image catalogue as the deploy needs it: a
// catalogue reference (SOURCE:ALIAS) is imported into the cache, if it is
// not there yet, and the agent downloads it from the controller.
type Images interface {
	// Check tells, without network access, whether ref can be resolved
	// at all (its source is configured).
	Check(ref string) error
	Fetch(ctx context.Context, ref string, opt catalog.Options, progress func(done, total int64)) (cache.Entry, error)
	URL(e cache.Entry) (string, error)
}

// imageKey in driver_internal_info holds what the deploy resolved about the
// instance image: for a file:// source the local path, its size and the
// sha256 computed by the controller.
const imageKey = "ironlite_image"

// strongAlgos are the os_hash_algo values the agent verifies. md5 and
// sha1 are refused by the ramdisk (collisions are practical), so they are
// refused here already, before the machine is booted for nothing.
var strongAlgos = []string{"sha256", "sha384", "sha512", "sha224"}

// rootDeviceHints are Ironic's root device hint names.
var rootDeviceHints = []string{"size", "model", "vendor", "serial", "wwn", "wwn_with_extension",
	"wwn_vendor_extension", "name", "hctl", "by_path", "rotational"}

// ValidateInstance checks the node's instance_info for a direct deploy of
// a whole-disk image.
func (d *Direct) ValidateInstance(n *model.Node) error {
	ii := n.InstanceInfo
	src := model.Str(ii, "image_source")
	if src == "" {
		return fmt.Errorf("instance_info image_source is required: the http(s):// URL or file:// path of a whole-disk image (raw or qcow2), e.g. openstack baremetal node set %s --instance-info image_source=http://server/image.qcow2 --instance-info image_os_hash_algo=sha256 --instance-info image_os_hash_value=<hex>", nodeRef(n))
	}
	if _, err := extraPartitions(ii); err != nil {
		return err
	}
	if imagestore.IsCatalogRef(src) {
		if err := d.checkCatalogRef(ii, src); err != nil {
			return err
		}
		return checkRootDevices(n)
	}
	u, err := url.Parse(src)
	if err != nil {
		return fmt.Errorf("instance_info image_source %q is not a URL: %v", src, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("instance_info image_source %q has no host", src)
		}
		if err := checksumGiven(ii); err != nil {
			return err
		}
	case "file":
		if _, err := localImage(u); err != nil {
			return err
		}
		if _, ok := ii["image_os_hash_algo"]; ok {
			if err := checksumGiven(ii); err != nil {
				return err
			}
		}
	case "":
		return fmt.Errorf("instance_info image_source %q: ironlite has no Glance image service; use an http(s):// URL, a file:// path or a catalogue reference such as images:centos/9-Stream (see `ironlite image list --remote images`)", src)
	default:
		return fmt.Errorf("instance_info image_source %q: unsupported scheme %q (use http, https or file)", src, u.Scheme)
	}
	switch f := model.Str(ii, "image_disk_format"); f {
	case "", "raw", "qcow2":
	default:
		return fmt.Errorf("instance_info image_disk_format %q is not supported: the agent writes raw (optionally gzip/xz/zstd compressed) and qcow2 whole-disk images", f)
	}
	if t := model.Str(ii, "image_type"); t != "" && t != "whole-disk" {
		return fmt.Errorf("instance_info image_type %q is not supported: ironlite deploys whole-disk images only", t)
	}
	return checkRootDevices(n)
}

// checkCatalogRef validates a SOURCE:ALIAS image_source: the catalogue
// gives the checksum and format, so instance_info must not contradict it.
func (d *Direct) checkCatalogRef(ii model.JSONObject, src string) error {
	if d.cfg.Images == nil {
		return fmt.Errorf("instance_info image_source %q is a catalogue reference, but this controller has no image service", src)
	}
	if err := d.cfg.Images.Check(src); err != nil {
		return fmt.Errorf("instance_info image_source: %w", err)
	}
	for _, k := range []string{"image_os_hash_algo", "image_os_hash_value", "image_checksum", "image_disk_format"} {
		if _, ok := ii[k]; ok {
			return fmt.Errorf("instance_info %s cannot be given with the catalogue reference %q: the catalogue publishes the image's sha256 and format", k, src)
		}
	}
	return nil
}

// ephemeralFormats are the filesystems the agent can put on the
// ephemeral partition.
var ephemeralFormats = []string{"ext4", "xfs", "vfat"}

// extraPartitions reads Ironic's partition-image keys, which ironlite also
// honours after a whole-disk image (an extension): ephemeral_gb,
// ephemeral_format, swap_mb and preserve_ephemeral. It returns the
// image_info keys the agent takes (IPA's names: ephemeral_mb,
// ephemeral_format, swap_mb, preserve_ephemeral), only those in use.
func extraPartitions(ii model.JSONObject) (map[string]any, error) {
	out := map[string]any{}
	num := func(key string) (int64, error) {
		v, ok := ii[key]
		if !ok || v == nil || v == "" {
			return 0, nil
		}
		n, ok := asInt(v)
		if str, isStr := v.(string); isStr {
			// The CLIs send --instance-info KEY=VALUE as strings.
			i, err := strconv.ParseInt(strings.TrimSpace(str), 10, 64)
			n, ok = i, err == nil
		}
		if !ok {
			return 0, fmt.Errorf("instance_info %s must be a whole number, not %v", key, v)
		}
		if n < 0 {
			return 0, fmt.Errorf("instance_info %s must not be negative (%d)", key, n)
		}
		return n, nil
	}
	eph, err := num("ephemeral_gb")
	if err != nil {
		return nil, err
	}
	swap, err := num("swap_mb")
	if err != nil {
		return nil, err
	}
	format := model.Str(ii, "ephemeral_format")
	if format != "" && !slices.Contains(ephemeralFormats, format) {
		return nil, fmt.Errorf("instance_info ephemeral_format %q is not supported: use one of %s", format, strings.Join(ephemeralFormats, ", "))
	}
	if eph > 0 {
		out["ephemeral_mb"] = eph * 1024
		out["ephemeral_format"] = cmp.Or(format, "ext4")
	}
	if swap > 0 {
		out["swap_mb"] = swap
	}
	if v, ok := ii["preserve_ephemeral"]; ok && v != nil {
		b, err := strconv.ParseBool(fmt.Sprint(v))
		if err != nil {
			return nil, fmt.Errorf("instance_info preserve_ephemeral must be true or false, not %v", v)
		}
		if b {
			out["preserve_ephemeral"] = true
		}
	}
	return out, nil
}

func checkRootDevices(n *model.Node) error {
	for _, src := range []model.JSONObject{n.InstanceInfo, n.Properties} {
		if rd, ok := src["root_device"]; ok {
			if err := checkRootDevice(rd); err != nil {
				return err
			}
		}
	}
	return nil
}

func nodeRef(n *model.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.UUID
}

func checksumGiven(ii model.JSONObject) error {
	algo, value := model.Str(ii, "image_os_hash_algo"), model.Str(ii, "image_os_hash_value")
	switch {
	case algo != "" || value != "":
		if algo == "" || value == "" {
			return fmt.Errorf("instance_info image_os_hash_algo and image_os_hash_value must be given together")
		}
		if !slices.Contains(strongAlgos, strings.ToLower(algo)) {
			return fmt.Errorf("instance_info image_os_hash_algo %q is not accepted: use one of %s (md5 and sha1 are refused by the agent)", algo, strings.Join(strongAlgos, ", "))
		}
		if _, err := hex.DecodeString(value); err != nil {
			return fmt.Errorf("instance_info image_os_hash_value is not a hex digest")
		}
		return nil
	case model.Str(ii, "image_checksum") != "":
		c := model.Str(ii, "image_checksum")
		if strings.Contains(c, "://") || strings.Contains(c, ":") {
			return nil // a checksum file URL or "algo:hex"
		}
		if len(c) == 32 || len(c) == 40 {
			return fmt.Errorf("instance_info image_checksum looks like an md5/sha1 digest, which the agent refuses: give image_os_hash_algo=sha256 and image_os_hash_value, or image_checksum as a URL of a SHA256SUMS file")
		}
		return nil
	}
	return fmt.Errorf("an image checksum is required for an http(s) image_source: set instance_info image_os_hash_algo (e.g. sha256) and image_os_hash_value, or image_checksum (a URL of a checksum file, or algo:hex)")
}

func checkRootDevice(rd any) error {
	m, ok := rd.(map[string]any)
	if !ok {
		return fmt.Errorf("root_device must be a JSON object of root device hints (e.g. {\"name\": \"/dev/vda\"}), not %T", rd)
	}
	for k := range m {
		if !slices.Contains(rootDeviceHints, k) {
			return fmt.Errorf("root_device: unknown hint %q (valid: %s)", k, strings.Join(rootDeviceHints, ", "))
		}
	}
	return nil
}

// localImage returns the path of a file:// image after checking it is a
// readable regular file.
func localImage(u *url.URL) (string, error) {
	p := u.Path
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("instance_info image_source file://%s%s: a file URL must name a path on the controller (file:///path)", u.Host, u.Path)
	}
	if !path.IsAbs(p) {
		return "", fmt.Errorf("instance_info image_source %q: the path must be absolute (file:///path)", u.String())
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("instance_info image_source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("instance_info image_source: %s is not a regular file", p)
	}
	return p, nil
}

// resolveImage records what the agent will be sent. A file:// image is
// served by the controller at <BootURL>/boot/nodes/<uuid>/image/<name>; its
// sha256 is computed here unless instance_info gives one. A catalogue
// reference is imported into the image cache first (waiting for the
// download) and served from there.
func (d *Direct) resolveImage(ctx context.Context, n *model.Node) error {
	src := model.Str(n.InstanceInfo, "image_source")
	dii := internal(n)
	delete(dii, imageKey)
	if imagestore.IsCatalogRef(src) {
		return d.resolveCatalogRef(ctx, n, src)
	}
	u, err := url.Parse(src)
	if err != nil {
		return err
	}
	if u.Scheme != "file" {
		n.InstanceInfo["image_url"] = src
		return nil
	}
	p, err := localImage(u)
	if err != nil {
		return err
	}
	info := map[string]any{"path": p}
	if model.Str(n.InstanceInfo, "image_os_hash_value") == "" {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("read image %s: %w", p, err)
		}
		defer f.Close()
		h := sha256.New()
		size, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("checksum image %s: %w", p, err)
		}
		info["os_hash_algo"], info["os_hash_value"], info["size"] = "sha256", hex.EncodeToString(h.Sum(nil)), size
	}
	dii[imageKey] = info
	n.InstanceInfo["image_url"] = fmt.Sprintf("%s/boot/nodes/%s/image/%s", d.cfg.BootURL, n.UUID, url.PathEscape(path.Base(p)))
	return nil
}

func (d *Direct) resolveCatalogRef(ctx context.Context, n *model.Node, src string) error {
	log := d.log.With("node", n.UUID, "image", src)
	log.Info("resolving and caching the catalogue image")
	started := time.Now()
	next := 0.0
	e, err := d.cfg.Images.Fetch(ctx, src, catalog.Options{Arch: model.Str(n.Properties, "cpu_arch")}, func(done, total int64) {
		if total > 0 && float64(done)/float64(total) >= next {
			log.Info("image import", "percent", int(100*float64(done)/float64(total)), "bytes", done)
			next += 0.25
		}
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", src, err)
	}
	u, err := d.cfg.Images.URL(e)
	if err != nil {
		return err
	}
	internal(n)[imageKey] = map[string]any{"ref": src, "sha256": e.SHA256, "name": e.Name, "size": e.Size,
		"disk_format": e.DiskFormat, "os_hash_algo": "sha256", "os_hash_value": e.SHA256}
	n.InstanceInfo["image_url"] = u
	log.Info("image ready", "sha256", e.SHA256, "size", e.Size, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// ImagesInUse returns the cached images the running deploys among ns
// use: node UUIDs by sha256 (the image service refuses to delete them).
func ImagesInUse(ns []*model.Node) map[string][]string {
	out := map[string][]string{}
	for _, n := range ns {
		local, _ := n.DriverInternalInfo[imageKey].(map[string]any)
		if sha, _ := local["sha256"].(string); deploying(n) && sha != "" {
			out[sha] = append(out[sha], n.UUID)
		}
	}
	return out
}

// imageInfo builds IPA's image_info (reference §3.9) for a whole-disk image.
func imageInfo(n *model.Node) map[string]any {
	ii := n.InstanceInfo
	src := model.Str(ii, "image_source")
	info := map[string]any{
		"id":                path.Base(strings.TrimRight(src, "/")),
		"urls":              []string{model.Str(ii, "image_url")},
		"disk_format":       nilIfEmpty(diskFormat(n)),
		"container_format":  nilIfEmpty(model.Str(ii, "image_container_format")),
		"stream_raw_images": true,
		"node_uuid":         n.UUID,
	}
	if algo := model.Str(ii, "image_os_hash_algo"); algo != "" {
		info["os_hash_algo"], info["os_hash_value"] = strings.ToLower(algo), model.Str(ii, "image_os_hash_value")
	} else if c := model.Str(ii, "image_checksum"); c != "" {
		info["checksum"] = c
	} else if local, ok := n.DriverInternalInfo[imageKey].(map[string]any); ok {
		info["os_hash_algo"], info["os_hash_value"] = local["os_hash_algo"], local["os_hash_value"]
	}
	extra, _ := extraPartitions(ii) // validated before the deploy started
	maps.Copy(info, extra)
	proxies := map[string]any{}
	for k, key := range map[string]string{"http": "image_http_proxy", "https": "image_https_proxy"} {
		if v := model.Str(n.DriverInfo, key); v != "" {
			proxies[k] = v
		}
	}
	if len(proxies) > 0 {
		info["proxies"] = proxies
		if v := model.Str(n.DriverInfo, "image_no_proxy"); v != "" {
			info["no_proxy"] = v
		}
	}
	return info
}

// diskFormat is instance_info's image_disk_format, or the catalogue's.
func diskFormat(n *model.Node) string {
	if f := model.Str(n.InstanceInfo, "image_disk_format"); f != "" {
		return f
	}
	local, _ := n.DriverInternalInfo[imageKey].(map[string]any)
	f, _ := local["disk_format"].(string)
	return f
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ServeFile serves a file:// instance image to the node while it is being
// deployed (and only then: instance images may be private).
func (d *Direct) ServeFile(n *model.Node, name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "image/")
	if !ok || !deploying(n) {
		return "", false
	}
	local, _ := n.DriverInternalInfo[imageKey].(map[string]any)
	p, _ := local["path"].(string)
	if p == "" || url.PathEscape(path.Base(p)) != url.PathEscape(rest) {
		return "", false
	}
	return p, true
}
