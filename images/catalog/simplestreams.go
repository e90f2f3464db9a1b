package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
)

// The simplestreams wire types.
//
// They are plain structs with the field names and JSON tags of
// github.com/lxc/incus/v6/shared/simplestreams (Stream, StreamIndex,
// Products, Product, ProductVersion, ProductVersionItem), which are those of
// github.com/lxc/lxd/shared/simplestreams, the design card. We do not import
// either package because:
//   - their clients (ListImages, GetFiles) keep only versions carrying LXD or
//     Incus metadata (lxd.tar.xz/incus.tar.xz with combined_* fingerprints),
//     so plain cloud images such as Ubuntu's disk1.img are dropped, and the
//     product parser is unexported: only the types would be reused;
//   - lxd's package (v0.0.0-20230621171605-0c2f4271a632, the newest that
//     builds here) drags in lxd/shared and with it pongo2, robfig/cron,
//     pborman/uuid, go-shellquote and yaml.v2;
//   - incus v6.23.0 is light to build, but `go get` of it raises cobra,
//     pflag, insomniacslk/dhcp, tablewriter, netlink and others in go.mod,
//     which the rest of the tree would inherit for six small structs.
//
// Only the fields we use are declared; unknown fields are ignored, as the
// real servers add fields over time.

// Stream is streams/v1/index.json.
type Stream struct {
	Index   map[string]StreamIndex `json:"index"`
	Updated string                 `json:"updated,omitempty"`
	Format  string                 `json:"format"`
}

// StreamIndex is one entry of the index: a products file.
type StreamIndex struct {
	DataType string   `json:"datatype"`
	Path     string   `json:"path"`
	Updated  string   `json:"updated,omitempty"`
	Products []string `json:"products"`
	Format   string   `json:"format,omitempty"`
}

// Products is a products file (e.g. streams/v1/images.json or
// com.ubuntu.cloud:released:download.json).
type Products struct {
	ContentID string             `json:"content_id"`
	DataType  string             `json:"datatype"`
	Format    string             `json:"format"`
	Updated   string             `json:"updated,omitempty"`
	Products  map[string]Product `json:"products"`
}

// Product is one OS/release/arch/variant with its published versions.
type Product struct {
	Aliases         string                    `json:"aliases"`
	Architecture    string                    `json:"arch"`
	OperatingSystem string                    `json:"os"`
	Release         string                    `json:"release"`
	ReleaseCodename string                    `json:"release_codename,omitempty"`
	ReleaseTitle    string                    `json:"release_title,omitempty"`
	Variant         string                    `json:"variant,omitempty"`
	Versions        map[string]ProductVersion `json:"versions"`
}

// ProductVersion is one build of a product (key "20261120_0000" or
// "20241004").
type ProductVersion struct {
	Items      map[string]ProductVersionItem `json:"items"`
	Label      string                        `json:"label,omitempty"`
	PublicName string                        `json:"pubname,omitempty"`
}

// ProductVersionItem is one file of a version.
type ProductVersionItem struct {
	FileType   string `json:"ftype"`
	Path       string `json:"path"`
	HashSha256 string `json:"sha256,omitempty"`
	HashMd5    string `json:"md5,omitempty"`
	Size       int64  `json:"size"`
}

// diskFileTypes are the item types that are whole-disk qcow2 images:
// Ubuntu's cloud images publish "disk1.img", the LXC images server
// publishes "disk-kvm.img" for virtual-machine variants. Preferred in this
// order when a version has both.
var diskFileTypes = []string{"disk-kvm.img", "disk1.img"}

// maxJSON bounds a stream document: Ubuntu's released download.json is a
// few tens of MB; anything far larger is a broken or hostile server.
const maxJSON = 256 << 20

// Errors callers may test with errors.Is.
var (
	ErrUnknownAlias = errors.New("unknown image alias")
	ErrBadStream    = errors.New("invalid simplestreams data")
	ErrUnreachable  = errors.New("image source unreachable")
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// RemoteImage is one product of a source as [Catalog.List] reports it: its
// newest version that has a disk image.
type RemoteImage struct {
	Source  string   `json:"source"`
	Alias   string   `json:"alias"` // the first alias, the one to type
	Aliases []string `json:"aliases"`
	OS      string   `json:"os"`
	Release string   `json:"release"`
	Arch    string   `json:"arch"`
	Variant string   `json:"variant,omitempty"`
	Version string   `json:"version"`
	Format  string   `json:"format"`
	Size    int64    `json:"size"`
	// Image is what the alias resolves to.
	Image Image `json:"image"`
}

// fetchJSON GETs base+rel and decodes it into v. rel has been checked by
// checkItemPath.
func (c *Catalog) fetchJSON(ctx context.Context, src Source, rel string, v any) error {
	u, err := joinURL(src.URL, rel)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return fmt.Errorf("%w: source %q (%s): %w", ErrUnreachable, src.Name, src.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: source %q: GET %s: %s", ErrUnreachable, src.Name, u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON+1))
	if err != nil {
		return fmt.Errorf("%w: source %q: GET %s: %w", ErrUnreachable, src.Name, u, err)
	}
	if len(b) > maxJSON {
		return fmt.Errorf("%w: source %q: %s is larger than %d bytes", ErrBadStream, src.Name, u, maxJSON)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: source %q: %s: %w", ErrBadStream, src.Name, u, err)
	}
	return nil
}

// checkItemPath refuses paths that could leave the source's tree: absolute
// paths, "..", backslashes, schemes, and the same hidden behind one or more
// levels of URL escaping ("%2e%2e%2f", "%252e..."). Real servers publish
// plain relative paths such as "server/releases/noble/release-20241004/x.img"
// or "images/centos/9-Stream/amd64/cloud/20261120_07:08/disk.qcow2".
func checkItemPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	cur := p
	for range 4 {
		if strings.ContainsAny(cur, "\\\x00?#") {
			return fmt.Errorf("path %q contains a backslash, NUL, '?' or '#'", p)
		}
		if strings.HasPrefix(cur, "/") || strings.Contains(cur, "://") {
			return fmt.Errorf("path %q is absolute", p)
		}
		if slices.Contains(strings.Split(cur, "/"), "..") || slices.Contains(strings.Split(cur, "/"), ".") {
			return fmt.Errorf("path %q has a '.' or '..' segment", p)
		}
		if !strings.Contains(cur, "%") {
			return nil
		}
		next, err := url.PathUnescape(cur)
		if err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
		cur = next
	}
	return fmt.Errorf("path %q is escaped too many times", p)
}

// joinURL appends a checked relative path to a source URL (which ends in
// "/"). Each segment is escaped, so ':' in LXC version names stays a path
// character.
func joinURL(base, rel string) (string, error) {
	if err := checkItemPath(rel); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadStream, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	segs := strings.Split(rel, "/")
	for i, s := range segs {
		if s == "" && i != len(segs)-1 {
			return "", fmt.Errorf("%w: path %q has an empty segment", ErrBadStream, rel)
		}
	}
	return u.JoinPath(segs...).String(), nil
}

// products fetches every image-downloads products file of a source.
func (c *Catalog) products(ctx context.Context, src Source) ([]Products, error) {
	var st Stream
	if err := c.fetchJSON(ctx, src, "streams/v1/index.json", &st); err != nil {
		return nil, err
	}
	if st.Format != "index:1.0" {
		return nil, fmt.Errorf("%w: source %q: index format %q, want index:1.0", ErrBadStream, src.Name, st.Format)
	}
	keys := slices.Sorted(maps.Keys(st.Index))
	var out []Products
	for _, k := range keys {
		idx := st.Index[k]
		if idx.DataType != "image-downloads" {
			continue // e.g. Ubuntu's image-ids streams for clouds
		}
		var p Products
		if err := c.fetchJSON(ctx, src, idx.Path, &p); err != nil {
			return nil, err
		}
		if p.Format != "" && p.Format != "products:1.0" {
			return nil, fmt.Errorf("%w: source %q: %s: format %q, want products:1.0", ErrBadStream, src.Name, idx.Path, p.Format)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: source %q: index has no image-downloads stream", ErrBadStream, src.Name)
	}
	return out, nil
}

// newestDisk returns the newest version of p that has a disk item. Version
// names are dates ("20241004", "20261120_0000", "20261120_07:08"), so the
// lexical order is the time order.
func newestDisk(p Product) (string, ProductVersionItem, bool) {
	versions := slices.Sorted(maps.Keys(p.Versions))
	for _, v := range slices.Backward(versions) {
		items := p.Versions[v].Items
		for _, ft := range diskFileTypes {
			names := slices.Sorted(maps.Keys(items))
			for _, n := range names {
				if items[n].FileType == ft {
					return v, items[n], true
				}
			}
		}
	}
	return "", ProductVersionItem{}, false
}

func splitAliases(s string) []string {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// normArch maps kernel names to the Debian names simplestreams uses.
func normArch(a string) string {
	switch a {
	case "", "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	}
	return a
}

// toImage builds the resolved image of an item, checking what the server
// published.
func toImage(src Source, name, ref, version string, it ProductVersionItem) (Image, error) {
	u, err := joinURL(src.URL, it.Path)
	if err != nil {
		return Image{}, fmt.Errorf("source %q: %s version %s: %w", src.Name, name, version, err)
	}
	sum := strings.ToLower(it.HashSha256)
	if !hexSHA256.MatchString(sum) {
		return Image{}, fmt.Errorf("%w: source %q: %s version %s: item %s has no valid sha256 (%q)", ErrBadStream, src.Name, name, version, it.Path, it.HashSha256)
	}
	if it.Size <= 0 {
		return Image{}, fmt.Errorf("%w: source %q: %s version %s: item %s has size %d", ErrBadStream, src.Name, name, version, it.Path, it.Size)
	}
	return Image{
		Name:       name,
		Ref:        ref,
		URL:        u,
		Checksum:   Checksum{Algo: "sha256", Value: sum},
		DiskFormat: "qcow2",
		Size:       it.Size,
		Version:    version,
	}, nil
}

// imageName is a file-name-like label: "ubuntu-noble-amd64-20241004".
func imageName(p Product, version string) string {
	parts := []string{strings.ToLower(p.OperatingSystem), p.Release}
	if p.Variant != "" && p.Variant != "default" {
		parts = append(parts, p.Variant)
	}
	parts = append(parts, normArch(p.Architecture), version)
	n := strings.Join(parts, "-")
	return strings.NewReplacer("/", "_", ":", "", " ", "_").Replace(n)
}

// List returns the images of a source that have a disk image, sorted by
// alias then arch. Products whose newest disk item is malformed are
// reported as an error rather than skipped silently.
func (c *Catalog) List(ctx context.Context, source string) ([]RemoteImage, error) {
	src, err := c.Sources.Get(source)
	if err != nil {
		return nil, err
	}
	all, err := c.products(ctx, src)
	if err != nil {
		return nil, err
	}
	var out []RemoteImage
	for _, ps := range all {
		for _, id := range slices.Sorted(maps.Keys(ps.Products)) {
			p := ps.Products[id]
			v, it, ok := newestDisk(p)
			if !ok {
				continue
			}
			aliases := splitAliases(p.Aliases)
			alias := id
			if len(aliases) > 0 {
				alias = aliases[0]
			}
			img, err := toImage(src, imageName(p, v), source+":"+alias, v, it)
			if err != nil {
				return nil, err
			}
			out = append(out, RemoteImage{
				Source: source, Alias: alias, Aliases: aliases,
				OS: p.OperatingSystem, Release: p.Release, Arch: normArch(p.Architecture),
				Variant: p.Variant, Version: v, Format: img.DiskFormat, Size: it.Size,
				Image: img,
			})
		}
	}
	slices.SortStableFunc(out, func(a, b RemoteImage) int {
		if c := strings.Compare(a.Alias, b.Alias); c != 0 {
			return c
		}
		return strings.Compare(a.Arch, b.Arch)
	})
	return out, nil
}

// resolveAlias finds the product with the alias and arch and returns its
// newest disk image.
func (c *Catalog) resolveAlias(ctx context.Context, ref, source, alias, arch string) (Image, error) {
	src, err := c.Sources.Get(source)
	if err != nil {
		return Image{}, err
	}
	if alias == "" {
		return Image{}, fmt.Errorf("%w: %q has an empty alias", ErrInvalidReference, ref)
	}
	all, err := c.products(ctx, src)
	if err != nil {
		return Image{}, err
	}
	arch = normArch(arch)
	var archs []string
	aliasFound := false
	for _, ps := range all {
		for _, id := range slices.Sorted(maps.Keys(ps.Products)) {
			p := ps.Products[id]
			if !slices.Contains(splitAliases(p.Aliases), alias) {
				continue
			}
			aliasFound = true
			if normArch(p.Architecture) != arch {
				archs = append(archs, normArch(p.Architecture))
				continue
			}
			v, it, ok := newestDisk(p)
			if !ok {
				return Image{}, fmt.Errorf("%w: %q: product %s has no disk image (ftype %s)", ErrUnknownAlias, ref, id, strings.Join(diskFileTypes, " or "))
			}
			return toImage(src, imageName(p, v), ref, v, it)
		}
	}
	if aliasFound {
		slices.Sort(archs)
		return Image{}, fmt.Errorf("%w: %q has no %s image (available: %s)", ErrUnknownAlias, ref, arch, strings.Join(slices.Compact(archs), ", "))
	}
	return Image{}, fmt.Errorf("%w: no image %q in source %q (%s)", ErrUnknownAlias, alias, source, src.URL)
}

// imageBase is the last path element of a URL, for naming.
func imageBase(p string) string {
	b := path.Base(p)
	if b == "/" || b == "." {
		return ""
	}
	return b
}
