package imagewrite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
	"github.com/ironlite/ironlite/agent/imagewrite"
	"github.com/ironlite/ironlite/agent/progress"
)

// fileSource is the simplest Source: a local file.
type fileSource struct{ *os.File }

func (f fileSource) Size() int64 {
	st, err := f.Stat()
	if err != nil {
		return -1
	}
	return st.Size()
}

func (f fileSource) Stream(context.Context) (io.ReadCloser, error) { return os.Open(f.Name()) }

func openSource(t *testing.T, p string) fileSource {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return fileSource{f}
}

func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

const imageSize = 48 << 20

// corpus is a set of images built once: a raw disk with a GPT, partitions
// holding real binaries, random data, zero runs and text, and every form
// of it the agent accepts, each made by the tool operators use.
type corpus struct {
	dir  string
	raw  string
	want [sha256.Size]byte
}

var (
	corpusOnce sync.Once
	theCorpus  corpus
	corpusErr  error
)

func getCorpus(t *testing.T) corpus {
	t.Helper()
	need(t, "qemu-img", "sfdisk", "gzip", "xz", "zstd")
	corpusOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imagewrite-corpus-")
		if err != nil {
			corpusErr = err
			return
		}
		corpusErr = buildCorpus(dir)
		theCorpus = corpus{dir: dir, raw: filepath.Join(dir, "disk.raw")}
		if corpusErr == nil {
			b, err := os.ReadFile(theCorpus.raw)
			corpusErr = err
			theCorpus.want = sha256.Sum256(b)
		}
	})
	if corpusErr != nil {
		t.Fatalf("build test images: %v", corpusErr)
	}
	return theCorpus
}

func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func buildCorpus(dir string) error {
	raw := filepath.Join(dir, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	if err := f.Truncate(imageSize); err != nil {
		return err
	}
	// Content: real binaries (compressible like an OS image), random
	// blocks (incompressible), and long zero runs in between.
	off := int64(1 << 20)
	bins, _ := filepath.Glob("/usr/bin/*")
	for _, b := range bins {
		if off > imageSize/2 {
			break
		}
		data, err := os.ReadFile(b)
		if err != nil || len(data) == 0 || off+int64(len(data)) > imageSize/2 {
			continue
		}
		if _, err := f.WriteAt(data, off); err != nil {
			return err
		}
		off += int64(len(data))
	}
	noise := make([]byte, 3<<20)
	rand.Read(noise)
	if _, err := f.WriteAt(noise, imageSize*3/4); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("ironlite test image\n", 1000)), imageSize-(2<<20)); err != nil {
		return err
	}
	f.Close()
	// A GPT over it, as a whole-disk image has.
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", raw)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=16384, type=uefi\nstart=18432, type=linux\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v: %s", err, out)
	}
	steps := [][]string{
		{"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, filepath.Join(dir, "plain.qcow2")},
		{"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, filepath.Join(dir, "zlib.qcow2")},
		{"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", raw, filepath.Join(dir, "zstd.qcow2")},
		{"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=2M", raw, filepath.Join(dir, "bigcluster.qcow2")},
		{"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", raw, filepath.Join(dir, "v2.qcow2")},
		{"qemu-img", "convert", "-f", "raw", "-O", "raw", "-S", "4k", raw, filepath.Join(dir, "sparse.raw")},
		{"sh", "-c", "gzip -c " + raw + " > " + filepath.Join(dir, "disk.raw.gz")},
		{"sh", "-c", "xz -T0 -c " + raw + " > " + filepath.Join(dir, "disk.raw.xz")},
		{"sh", "-c", "zstd -q -c " + raw + " > " + filepath.Join(dir, "disk.raw.zst")},
	}
	for _, s := range steps {
		if err := sh(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if theCorpus.dir != "" && os.Getenv("KEEP_CORPUS") == "" {
		os.RemoveAll(theCorpus.dir)
	}
	os.Exit(code)
}

func randomFill() []byte {
	b := make([]byte, 1<<20)
	rand.Read(b)
	return b
}

func sha256File(t *testing.T, p string, n int64) [sha256.Size]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	var s [sha256.Size]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestWriteMatchesQemuImg writes every form of the image onto targets
// full of random bytes and checks the result is byte-identical to the raw
// image (which qemu-img convert of each qcow2 reproduces; checked below).
func TestWriteMatchesQemuImg(t *testing.T) {
	c := getCorpus(t)
	images := []struct {
		file   string
		format imagewrite.Format
		inner  imagewrite.Format
	}{
		{"disk.raw", imagewrite.Raw, ""},
		{"sparse.raw", imagewrite.Raw, ""},
		{"plain.qcow2", imagewrite.QCOW2, ""},
		{"zlib.qcow2", imagewrite.QCOW2, ""},
		{"zstd.qcow2", imagewrite.QCOW2, ""},
		{"bigcluster.qcow2", imagewrite.QCOW2, ""},
		{"v2.qcow2", imagewrite.QCOW2, ""},
		{"disk.raw.gz", imagewrite.Gzip, imagewrite.Raw},
		{"disk.raw.xz", imagewrite.XZ, imagewrite.Raw},
		{"disk.raw.zst", imagewrite.Zstd, imagewrite.Raw},
	}
	targets := []struct {
		name string
		make func(t *testing.T) string
	}{
		{"loop", func(t *testing.T) string { return blockdevtest.LoopFile(t, imageSize, randomFill()) }},
		{"file", func(t *testing.T) string { return blockdevtest.File(t, "target.img", imageSize, randomFill()) }},
	}
	for _, im := range images {
		for _, tg := range targets {
			t.Run(im.file+"/"+tg.name, func(t *testing.T) {
				p := filepath.Join(c.dir, im.file)
				if im.format == imagewrite.QCOW2 {
					// qemu-img's own reading of the file is the reference.
					out := filepath.Join(t.TempDir(), "ref.raw")
					run(t, "qemu-img", "convert", "-O", "raw", p, out)
					if sha256File(t, out, imageSize) != c.want {
						t.Fatal("qemu-img convert output differs from the source raw image")
					}
				}
				target := tg.make(t)
				dev, err := blockdev.Open(target, blockdev.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer dev.Close()
				tr := progress.New()
				ctx := progress.With(context.Background(), tr)
				res, err := imagewrite.Write(ctx, openSource(t, p), dev, imagewrite.Options{Workers: 4, ChunkSize: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				if res.Format != im.format || res.Inner != im.inner {
					t.Errorf("format %s/%s, want %s/%s", res.Format, res.Inner, im.format, im.inner)
				}
				if res.ImageBytes != imageSize || res.WrittenBytes+res.ZeroedBytes != imageSize {
					t.Errorf("image %d bytes, written %d + zeroed %d; want %d in all", res.ImageBytes, res.WrittenBytes, res.ZeroedBytes, imageSize)
				}
				if res.ZeroedBytes == 0 {
					t.Error("no zero extents were zeroed: the image has large zero runs")
				}
				if got := sha256File(t, target, imageSize); got != c.want {
					t.Fatal("target differs from the image")
				}
				p1 := tr.Snapshot()
				if p1.Phase != "write" || p1.BytesDone != p1.BytesTotal || p1.Percent != 100 {
					t.Errorf("progress at the end: %+v", p1)
				}
			})
		}
	}
}

// TestGPTMovedToEndOfLargerDisk writes a 48 MiB GPT image onto a 96 MiB
// disk: the backup header must end up in the disk's last sector, so that
// sfdisk (like firmware) sees a clean table, and partitions are readable.
func TestGPTMovedToEndOfLargerDisk(t *testing.T) {
	c := getCorpus(t)
	target := blockdevtest.LoopFile(t, 2*imageSize, randomFill())
	dev, err := blockdev.Open(target, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagewrite.Write(context.Background(), openSource(t, filepath.Join(c.dir, "zlib.qcow2")), dev, imagewrite.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := imagewrite.Finish(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	info, err := imagewrite.ReadPartitions(dev)
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if len(info.Partitions) != 2 || info.DiskGUID == "" || info.Partitions[0].Start != 2048*512 {
		t.Fatalf("partitions: %+v", info)
	}
	out, err := exec.Command("sfdisk", "--verify", target).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Fatalf("sfdisk --verify after write: %v\n%s", err, out)
	}
	out, _ = exec.Command("sfdisk", "-d", target).CombinedOutput()
	if !strings.Contains(string(out), fmt.Sprintf("last-lba: %d", 2*imageSize/512-34)) {
		t.Fatalf("GPT does not span the larger disk:\n%s", out)
	}
}

// TestRefusals: images the agent must not write fail before touching the
// disk, with an error that says why.
func TestRefusals(t *testing.T) {
	c := getCorpus(t)
	dir := t.TempDir()
	backed := filepath.Join(dir, "backed.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Join(c.dir, "plain.qcow2"), backed)
	datafile := filepath.Join(dir, "datafile.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), datafile, "16M")
	vmdk := filepath.Join(dir, "disk.vmdk")
	run(t, "qemu-img", "convert", "-O", "vmdk", c.raw, vmdk)
	qcowgz := filepath.Join(dir, "plain.qcow2.gz")
	run(t, "sh", "-c", "gzip -c "+filepath.Join(c.dir, "plain.qcow2")+" > "+qcowgz)
	big := filepath.Join(dir, "big.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", big, "1G")

	cases := []struct {
		name, file, format, want string
	}{
		{"backing file", backed, "", "backing file"},
		{"external data file", datafile, "", "external data file"},
		{"vmdk", vmdk, "", "the image is vmdk"},
		{"qcow2 in gzip", qcowgz, "", "qcow2 inside gzip"},
		{"declared raw is qcow2", filepath.Join(c.dir, "plain.qcow2"), "raw", `disk_format is "raw" but the image content is qcow2`},
		{"declared qcow2 is raw", c.raw, "qcow2", `disk_format is "qcow2" but the image content is raw`},
		{"unknown disk_format", c.raw, "vhd", `disk_format "vhd" is not supported`},
		{"larger than the disk", big, "", "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fill := bytes.Repeat([]byte{0xa5}, 1<<20)
			target := blockdevtest.LoopFile(t, 32<<20, fill)
			dev, err := blockdev.Open(target, blockdev.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			_, err = imagewrite.Write(context.Background(), openSource(t, tc.file), dev, imagewrite.Options{DiskFormat: tc.format,
				BeforeWrite: func(context.Context) error {
					t.Error("BeforeWrite (the metadata wipe) ran for a refused image")
					return nil
				}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !errors.Is(err, imagewrite.ErrUnsupportedImage) && !errors.Is(err, imagewrite.ErrTooLarge) {
				t.Errorf("error %v does not wrap ErrUnsupportedImage/ErrTooLarge", err)
			}
			b, _ := os.ReadFile(target)
			if !bytes.Equal(b, bytes.Repeat(fill, 32)) {
				t.Error("the disk was modified by a refused image")
			}
		})
	}
}

// TestCorruptImages: damaged files fail with an error instead of writing
// garbage silently or panicking.
func TestCorruptImages(t *testing.T) {
	c := getCorpus(t)
	orig, err := os.ReadFile(filepath.Join(c.dir, "zlib.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile(filepath.Join(c.dir, "disk.raw.gz"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"truncated qcow2", orig[:len(orig)/2]},
		{"qcow2 header only", orig[:512]},
		{"garbage compressed clusters", func() []byte {
			b := bytes.Clone(orig)
			r := mrand.New(mrand.NewPCG(1, 2))
			for i := len(b) / 3; i < len(b); i += 4096 {
				b[i] ^= byte(r.Uint32()) | 1
			}
			return b
		}()},
		{"truncated gzip", gz[:len(gz)/2]},
		{"gzip with flipped bytes", func() []byte {
			b := bytes.Clone(gz)
			for i := len(b) / 2; i < len(b)/2+64; i++ {
				b[i] ^= 0xff
			}
			return b
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			target := blockdevtest.File(t, "t.img", imageSize, nil)
			dev, err := blockdev.Open(target, blockdev.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			_, err = imagewrite.Write(context.Background(), openSource(t, p), dev, imagewrite.Options{})
			if err == nil {
				t.Fatal("corrupt image written without error")
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestTinyImage: an image smaller than one sector (no room for any
// partition table) is written as is, and reported as having no partitions.
func TestTinyImage(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tiny.raw")
	if err := os.WriteFile(src, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.Open(filepath.Join(t.TempDir(), "out.img"), blockdev.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := imagewrite.Write(context.Background(), openSource(t, src), dev, imagewrite.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := imagewrite.Finish(context.Background(), dev); err != nil {
		t.Fatalf("Finish on a 10-byte disk: %v", err)
	}
	if _, err := imagewrite.ReadPartitions(dev); !errors.Is(err, imagewrite.ErrNoPartitions) {
		t.Fatalf("ReadPartitions: %v, want ErrNoPartitions", err)
	}
	got, _ := os.ReadFile(dev.Path())
	if string(got) != "0123456789" {
		t.Fatalf("target holds %q", got)
	}
}
