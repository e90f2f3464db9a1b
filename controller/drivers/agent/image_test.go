package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
	"github.com/ironlite/ironlite/images/cache"
	"github.com/ironlite/ironlite/images/catalog"
	"github.com/ironlite/ironlite/images/streamtest"
)

// TestDeployByAlias deploys "lab:centos/9-Stream" from a simplestreams
// tree on loopback: the controller imports it into its cache, the agent is
// sent the cache's URL with the stream's sha256, the cached image is
// served with Range, and it cannot be deleted while the deploy runs.
func TestDeployByAlias(t *testing.T) {
	data := bytes.Repeat([]byte("QFI\xfb centos "), 30000)
	sha := streamtest.SHA256(data)
	tree := streamtest.New(t, streamtest.Image{Alias: "centos/9-Stream", Data: data})
	dir := t.TempDir()
	srcs, err := catalog.OpenSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := srcs.Add("lab", tree.URL); err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(filepath.Join(dir, "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var st *store.Store
	imgs := imagestore.New(imagestore.Config{Catalog: catalog.New(srcs, nil), Cache: c, BaseURL: "http://10.0.0.1:6385",
		InUse: func(ctx context.Context) (map[string][]string, error) {
			ns, err := st.ListNodes(ctx, store.NodeFilter{ProvisionState: statemachine.DeployWait})
			return agent.ImagesInUse(ns), err
		}})
	t.Cleanup(imgs.Close)
	e := newEnvWith(t, envConfig{direct: func(dc *agent.DirectConfig) { dc.Images = imgs }})
	st = e.st
	f := false
	e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error { n.AutomatedClean = &f; return nil })
	e.provision("provide")

	// Bad references: refused at once (unknown source, checksum given) or
	// failing the deploy with the catalogue's message (unknown alias).
	for _, c := range []struct {
		ii   model.JSONObject
		want string
	}{
		{model.JSONObject{"image_source": "nosuch:centos/9-Stream"}, `unknown image source "nosuch"`},
		{model.JSONObject{"image_source": "lab:centos/9-Stream", "image_os_hash_value": strings.Repeat("a", 64)}, "cannot be given with the catalogue reference"},
	} {
		e.setInstance(c.ii)
		err := e.c.Provision(context.Background(), e.node.UUID, conductor.ProvisionRequest{Target: "active"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("instance_info %v: err %v, want %q", c.ii, err, c.want)
		}
	}
	e.setInstance(model.JSONObject{"image_source": "lab:debian/12"})
	e.provision("active")
	n := e.want("deploy failed")
	if !strings.Contains(n.LastError, `no image "debian/12" in source "lab"`) || n.PowerState == "power on" {
		t.Errorf("unknown alias: last_error %q, power %q", n.LastError, n.PowerState)
	}
	e.provision("deleted") // deploy failed -> cleaning -> available (automated clean off)
	e.want("available")

	e.setInstance(model.JSONObject{"image_source": "lab:centos/9-Stream"})
	e.provision("active")
	n = e.want("wait call-back")
	e.boot()
	info := e.agent.params["standby.prepare_image"]["image_info"].(map[string]any)
	url, _ := info["urls"].([]any)
	if len(url) != 1 || !strings.HasPrefix(url[0].(string), "http://10.0.0.1:6385/images/"+sha+"/") ||
		info["os_hash_algo"] != "sha256" || info["os_hash_value"] != sha || info["disk_format"] != "qcow2" {
		t.Fatalf("image_info = %v", info)
	}

	// The agent's URL, served by the cache: Range answered, bytes exact.
	srv := httptest.NewServer(imgs.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+strings.TrimPrefix(url[0].(string), "http://10.0.0.1:6385"), nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) || resp.Header.Get("ETag") != `"`+sha+`"` {
		t.Errorf("Range GET: %d %q etag %q", resp.StatusCode, body[:min(len(body), 20)], resp.Header.Get("ETag"))
	}

	// In use while the deploy runs.
	if err := imgs.Delete(context.Background(), sha); !errors.Is(err, imagestore.ErrInUse) || !strings.Contains(err.Error(), n.UUID) {
		t.Errorf("delete during deploy: %v", err)
	}
	close(e.agent.release)
	e.waitCommand()
	e.heartbeat()
	e.want("active")
	if err := imgs.Delete(context.Background(), sha); err != nil {
		t.Errorf("delete after the deploy: %v", err)
	}
}

// TestDeployExtraPartitions: instance_info's ephemeral_gb, ephemeral_format
// and swap_mb reach the agent as IPA's image_info keys.
func TestDeployExtraPartitions(t *testing.T) {
	for _, c := range []struct {
		ii   model.JSONObject
		want map[string]any
	}{
		{model.JSONObject{"ephemeral_gb": 2, "ephemeral_format": "xfs", "swap_mb": "512"},
			map[string]any{"ephemeral_mb": 2048.0, "ephemeral_format": "xfs", "swap_mb": 512.0}},
		{model.JSONObject{"ephemeral_gb": 1}, map[string]any{"ephemeral_mb": 1024.0, "ephemeral_format": "ext4", "swap_mb": nil}},
		{model.JSONObject{"swap_mb": 0, "ephemeral_gb": 0}, map[string]any{"ephemeral_mb": nil, "swap_mb": nil}},
	} {
		e := newEnv(t)
		f := false
		e.c.UpdateNode(context.Background(), e.node.UUID, func(n *model.Node) error { n.AutomatedClean = &f; return nil })
		e.provision("provide")
		c.ii["image_source"] = "file://" + e.image
		e.setInstance(c.ii)
		e.provision("active")
		e.boot()
		info := e.agent.params["standby.prepare_image"]["image_info"].(map[string]any)
		for k, v := range c.want {
			if info[k] != v {
				t.Errorf("instance_info %v: image_info[%s] = %v, want %v", c.ii, k, info[k], v)
			}
		}
	}
}
