package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlite/ironlite/controller/api"
	"github.com/ironlite/ironlite/controller/cli"
	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/fake"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/store"
	"github.com/ironlite/ironlite/images/streamtest"
)

// controller runs the API with an image service over SQLite.
func controller(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	imgs, err := imagestore.Open(dir, imagestore.Config{BaseURL: "http://192.0.2.1:6385"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	reg := drivers.NewRegistry()
	fake.Register(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cond := conductor.New(st, reg, conductor.Config{Host: "test-host"}, log)
	cond.Start()
	srv := httptest.NewServer(api.New(cond, api.Config{Images: imgs}, log))
	t.Cleanup(func() { srv.Close(); imgs.Close(); cond.Stop(); st.Close() })
	return srv.URL
}

// run runs one ironlite command and returns its stdout and stderr.
func run(t *testing.T, url string, args ...string) (string, string, error) {
	t.Helper()
	root := cli.NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(cli.NormalizeArgs(append([]string{"--url", url}, args...)))
	err := root.Execute()
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, url string, args ...string) (string, string) {
	t.Helper()
	out, errOut, err := run(t, url, args...)
	if err != nil {
		t.Fatalf("ironlite %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out, errOut
}

func TestImageCommands(t *testing.T) {
	data := bytes.Repeat([]byte("centos "), 100000)
	sha := streamtest.SHA256(data)
	tree := streamtest.New(t, streamtest.Image{Alias: "centos/9-Stream", Data: data})
	url := controller(t)

	mustRun(t, url, "image", "source", "add", "lab", tree.URL)
	if out, _ := mustRun(t, url, "image", "source", "list", "-f", "value"); !strings.Contains(out, "lab "+tree.URL+"/") {
		t.Errorf("source list:\n%s", out)
	}
	if out, _ := mustRun(t, url, "image", "list", "--remote", "lab", "-f", "value"); !strings.Contains(out, "lab:centos/9-Stream/cloud") {
		t.Errorf("list --remote:\n%s", out)
	}
	out, errOut := mustRun(t, url, "image", "import", "lab:centos/9-Stream", "-f", "json")
	var img map[string]any
	if err := json.Unmarshal([]byte(out), &img); err != nil || img["id"] != sha || img["state"] != "active" {
		t.Fatalf("import output: %v\n%s", err, out)
	}
	if !strings.Contains(errOut, "imported lab:centos/9-Stream") {
		t.Errorf("import progress:\n%s", errOut)
	}
	if out, _ := mustRun(t, url, "image", "list", "-f", "value", "-c", "ID", "-c", "State"); strings.TrimSpace(out) != sha+" active" {
		t.Errorf("image list:\n%s", out)
	}
	if out, _ := mustRun(t, url, "image", "show", "lab:centos/9-Stream", "-f", "value", "-c", "size"); strings.TrimSpace(out) != "700000" {
		t.Errorf("image show size: %q", out)
	}
	if _, _, err := run(t, url, "image", "import", "lab:nothing/here"); err == nil || !strings.Contains(err.Error(), `no image "nothing/here"`) {
		t.Errorf("import of an unknown alias: %v", err)
	}

	// deploy --image replaces the image keys of instance_info.
	mustRun(t, url, "node", "create", "--driver", "fake-hardware", "--name", "n1",
		"--instance-info", "image_source=http://old/x.qcow2", "--instance-info", "image_os_hash_algo=sha256")
	mustRun(t, url, "node", "manage", "n1", "--wait", "30")
	mustRun(t, url, "node", "provide", "n1", "--wait", "30")
	if _, _, err := run(t, url, "node", "deploy", "n1", "--image", "lab:centos/9-Stream", "--image-checksum", "sha256:00"); err == nil {
		t.Errorf("--image-checksum with a catalogue reference was accepted")
	}
	mustRun(t, url, "node", "deploy", "n1", "--image", "lab:centos/9-Stream", "--wait", "30")
	out, _ = mustRun(t, url, "node", "show", "n1", "-f", "json", "-c", "instance_info")
	var n struct {
		InstanceInfo map[string]any `json:"instance_info"`
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil || n.InstanceInfo["image_source"] != "lab:centos/9-Stream" || n.InstanceInfo["image_os_hash_algo"] != nil {
		t.Errorf("instance_info after deploy --image: %v (%v)\n%s", n.InstanceInfo, err, out)
	}

	if out, _ := mustRun(t, url, "image", "delete", sha[:12]); !strings.Contains(out, "Deleted image") {
		t.Errorf("delete: %q", out)
	}
	if _, _, err := run(t, url, "image", "show", sha); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("show after delete: %v", err)
	}
	mustRun(t, url, "image", "source", "remove", "lab")
}
