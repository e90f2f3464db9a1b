package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ironlite/ironlite/controller/imagestore"
)

// The image commands talk to the controller's image service (an ironlite
// extension of the API: /v1/images, /v1/image_sources).

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "The image catalogue: import, list, show and delete cached images; manage sources",
		Long: `The controller keeps a verified, content-addressed image cache in its
data dir and serves it to the agents. Images are named by reference:

  images:centos/9-Stream     a simplestreams source and alias (the LXC images server's VM images)
  ubuntu:24.04               Ubuntu cloud images
  https://host/disk.qcow2    any URL, with --checksum sha256:<hex>
  file:///srv/disk.raw       a file on the controller

A node deploys a reference directly (the controller imports it first if
needed):

  ironlite node deploy BM01 --image images:centos/9-Stream --wait`,
	}
	cmd.AddCommand(a.imageImportCmd(), a.imageListCmd(), a.imageShowCmd(), a.imageDeleteCmd(), a.imageSourceCmd())
	return cmd
}

// imageRequest is the body of POST /v1/images.
type imageRequest struct {
	Ref        string `json:"ref"`
	Checksum   string `json:"checksum,omitempty"`
	DiskFormat string `json:"disk_format,omitempty"`
	Arch       string `json:"arch,omitempty"`
}

func (a *app) imageImportCmd() *cobra.Command {
	var (
		oc     output
		req    imageRequest
		noWait bool
	)
	cmd := &cobra.Command{
		Use:   "import REF",
		Short: "Download an image into the controller's cache, verifying its sha256 and size",
		Long: `Download an image into the controller's cache. The download runs on the
controller: it resumes after a broken connection, verifies the sha256 (and
the size the source publishes) and keeps nothing when they do not match.
Without --no-wait a progress bar follows it.`,
		Example: `  ironlite image import images:centos/9-Stream
  ironlite image import ubuntu:24.04 --arch arm64
  ironlite image import https://example.com/disk.qcow2 --checksum sha256:0123...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := oc.check(); err != nil {
				return err
			}
			req.Ref = args[0]
			img, err := a.importImage(cmd.ErrOrStderr(), req, !noWait)
			if err != nil {
				return err
			}
			return oc.printObject(cmd.OutOrStdout(), imageFields(img))
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Checksum, "checksum", "", "ALGO:HEX checksum, required for http(s) URLs (sha256 for the cache)")
	f.StringVar(&req.DiskFormat, "disk-format", "", "qcow2 or raw (default: from the source or the file name)")
	f.StringVar(&req.Arch, "arch", "", "architecture of a catalogue image: amd64 (default) or arm64")
	f.BoolVar(&noWait, "no-wait", false, "start the import and return")
	oc.register(cmd)
	return cmd
}

// importImage starts an import and, with wait, follows it to the end
// with a progress bar on w.
func (a *app) importImage(w io.Writer, req imageRequest, wait bool) (map[string]any, error) {
	var img map[string]any
	if err := a.client.Do("POST", "/v1/images", req, &img); err != nil {
		return nil, err
	}
	id, _ := img["id"].(string)
	if !wait || img["state"] == "active" {
		return img, nil
	}
	fmt.Fprintf(w, "importing %s (%s)\n", req.Ref, id)
	pb := &progressBar{w: w, tty: isTerminal(w)}
	defer pb.end()
	started := time.Now()
	for {
		switch img["state"] {
		case "active":
			pb.end()
			fmt.Fprintf(w, "imported %s in %s\n", req.Ref, time.Since(started).Round(100*time.Millisecond))
			return img, nil
		case "failed":
			pb.end()
			return nil, fmt.Errorf("import of %s failed: %v", req.Ref, img["error"])
		}
		if p, ok := img["progress"].(map[string]any); ok {
			pb.show(importProgress(p, time.Since(started)))
		}
		time.Sleep(500 * time.Millisecond)
		img = nil
		if err := a.client.Do("GET", "/v1/images/"+url.PathEscape(id), nil, &img); err != nil {
			return nil, err
		}
	}
}

// importProgress shapes an import's {done, total} like the agent's
// progress, for the bar.
func importProgress(p map[string]any, elapsed time.Duration) map[string]any {
	done, total := num(p, "done"), num(p, "total")
	out := map[string]any{"phase": "import", "bytes_done": done, "bytes_total": total}
	if total > 0 {
		out["percent"] = 100 * done / total
	}
	if s := elapsed.Seconds(); s > 1 && done > 0 {
		rate := done / s
		out["bytes_per_second"] = rate
		if total > done {
			out["eta_seconds"] = (total - done) / rate
		}
	}
	return out
}

// imageFields drops what a person does not need to see.
func imageFields(img map[string]any) map[string]any {
	delete(img, "links")
	return img
}

var imageColumns = []struct{ header, field string }{
	{"ID", "id"}, {"Name", "name"}, {"Reference", "ref"}, {"Format", "disk_format"},
	{"Size", "size"}, {"State", "state"}, {"In Use By", "in_use_by"},
}

func (a *app) imageListCmd() *cobra.Command {
	var (
		ol     output
		remote string
	)
	cmd := &cobra.Command{
		Use:   "list [--remote SOURCE]",
		Short: "List cached images and running imports, or a source's images",
		Example: `  ironlite image list
  ironlite image list --remote images`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ol.check(); err != nil {
				return err
			}
			var out struct {
				Images []map[string]any `json:"images"`
			}
			if remote != "" {
				if err := a.client.Do("GET", "/v1/image_sources/"+url.PathEscape(remote)+"/images", nil, &out); err != nil {
					return err
				}
				headers := []string{"Reference", "OS", "Release", "Arch", "Version", "Size"}
				rows := make([][]any, 0, len(out.Images))
				for _, img := range out.Images {
					rows = append(rows, []any{remote + ":" + fmt.Sprint(img["alias"]), img["os"], img["release"],
						img["arch"], img["version"], img["size"]})
				}
				return ol.printList(cmd.OutOrStdout(), headers, rows)
			}
			if err := a.client.Do("GET", "/v1/images", nil, &out); err != nil {
				return err
			}
			headers := make([]string, len(imageColumns))
			for i, c := range imageColumns {
				headers[i] = c.header
			}
			rows := make([][]any, 0, len(out.Images))
			for _, img := range out.Images {
				row := make([]any, len(imageColumns))
				for i, c := range imageColumns {
					row[i] = img[c.field]
				}
				if img["state"] == "importing" {
					if p, ok := img["progress"].(map[string]any); ok && num(p, "total") > 0 {
						row[5] = fmt.Sprintf("importing %.0f%%", 100*num(p, "done")/num(p, "total"))
					}
				}
				rows = append(rows, row)
			}
			return ol.printList(cmd.OutOrStdout(), headers, rows)
		},
	}
	cmd.Flags().StringVar(&remote, "remote", "", "list what the simplestreams source SOURCE offers instead")
	ol.register(cmd)
	return cmd
}

func (a *app) imageShowCmd() *cobra.Command {
	var oc output
	cmd := &cobra.Command{
		Use:   "show IMAGE",
		Short: "Show a cached image or an import (by sha256, a prefix of it, name or reference)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := oc.check(); err != nil {
				return err
			}
			var img map[string]any
			if err := a.client.Do("GET", "/v1/images/"+url.PathEscape(args[0]), nil, &img); err != nil {
				return err
			}
			return oc.printObject(cmd.OutOrStdout(), imageFields(img))
		},
	}
	oc.register(cmd)
	return cmd
}

func (a *app) imageDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete IMAGE [IMAGE...]",
		Short: "Delete cached images (refused while a deploy uses one)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, id := range args {
				if err := a.client.Do("DELETE", "/v1/images/"+url.PathEscape(id), nil, nil); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted image %s\n", id)
			}
			return errors.Join(errs...)
		},
	}
}

func (a *app) imageSourceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "source", Short: "Manage the simplestreams sources (SOURCE in SOURCE:ALIAS)"}
	add := &cobra.Command{
		Use:     "add NAME URL",
		Short:   "Add (or repoint) a simplestreams source",
		Example: "  ironlite image source add mirror https://mirror.example.com/images/",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client.Do("POST", "/v1/image_sources", map[string]string{"name": args[0], "url": args[1]}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Added image source %s (%s)\n", args[0], args[1])
			return nil
		},
	}
	var ol output
	list := &cobra.Command{
		Use:   "list",
		Short: "List the sources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ol.check(); err != nil {
				return err
			}
			var out struct {
				Sources []map[string]any `json:"sources"`
			}
			if err := a.client.Do("GET", "/v1/image_sources", nil, &out); err != nil {
				return err
			}
			rows := make([][]any, 0, len(out.Sources))
			for _, s := range out.Sources {
				rows = append(rows, []any{s["name"], s["url"]})
			}
			return ol.printList(cmd.OutOrStdout(), []string{"Name", "URL"}, rows)
		},
	}
	ol.register(list)
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a source (cached images stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client.Do("DELETE", "/v1/image_sources/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed image source %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

// imageKeys are the instance_info keys that describe the image; --image
// replaces all of them.
var imageKeys = []string{"image_source", "image_os_hash_algo", "image_os_hash_value", "image_checksum",
	"image_disk_format", "image_url"}

// setInstanceImage points the nodes' instance_info at ref. With wait, a
// catalogue image is imported first so its download shows a progress bar
// (the deploy would import it anyway, without one).
func (a *app) setInstanceImage(w io.Writer, nodes []string, ref, checksum string, wait bool) error {
	catalogue := imagestore.IsCatalogRef(ref)
	if catalogue && checksum != "" {
		return fmt.Errorf("--image-checksum cannot be used with the catalogue reference %s: the catalogue publishes its sha256", ref)
	}
	if catalogue && wait {
		if _, err := a.importImage(w, imageRequest{Ref: ref}, true); err != nil {
			return err
		}
	}
	for _, id := range nodes {
		var n struct {
			InstanceInfo map[string]any `json:"instance_info"`
		}
		if err := a.client.Do("GET", nodePath(id)+"?fields=instance_info", nil, &n); err != nil {
			return err
		}
		var ops patchOps
		for _, k := range imageKeys {
			if _, ok := n.InstanceInfo[k]; ok {
				ops.remove("/instance_info/" + k)
			}
		}
		ops.add("/instance_info/image_source", ref)
		if checksum != "" {
			algo, value, ok := strings.Cut(checksum, ":")
			if !ok {
				return fmt.Errorf("--image-checksum %q: want ALGO:HEX, e.g. sha256:<64 hex digits>", checksum)
			}
			ops.add("/instance_info/image_os_hash_algo", algo)
			ops.add("/instance_info/image_os_hash_value", value)
		}
		if err := a.client.Do("PATCH", nodePath(id), ops, nil); err != nil {
			return fmt.Errorf("set the image of node %s: %w", id, err)
		}
	}
	return nil
}
