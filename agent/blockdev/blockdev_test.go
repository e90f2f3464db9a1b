package blockdev_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"testing"

	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/blockdev/blockdevtest"
)

func TestZeroRange(t *testing.T) {
	const size = 8 << 20
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	cases := []struct {
		name string
		path func(t *testing.T) string
	}{
		{"file", func(t *testing.T) string { return blockdevtest.File(t, "f.img", size, noise) }},
		{"loop", func(t *testing.T) string { return blockdevtest.LoopFile(t, size, noise) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.path(t)
			d, err := blockdev.Open(p, blockdev.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size() != size {
				t.Fatalf("size %d, want %d", d.Size(), size)
			}
			// An aligned range and an unaligned one (fallback path).
			for _, r := range [][2]int64{{1 << 20, 2 << 20}, {5<<20 + 3, 1000}} {
				if err := d.ZeroRange(context.Background(), r[0], r[1]); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := d.RereadPartitions(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat(noise, size/len(noise))
			clear(want[1<<20 : 3<<20])
			clear(want[5<<20+3 : 5<<20+1003])
			if !bytes.Equal(got, want) {
				t.Fatal("device contents differ from expectation after ZeroRange")
			}
		})
	}
}

func TestOpenExclusiveRefusesBusyDevice(t *testing.T) {
	dev := blockdevtest.LoopFile(t, 1<<20, nil)
	a, err := blockdev.Open(dev, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := blockdev.Open(dev, blockdev.Options{}); err == nil {
		t.Fatal("second exclusive open of a block device succeeded")
	}
	b, err := blockdev.Open(dev, blockdev.Options{Shared: true})
	if err != nil {
		t.Fatalf("shared open: %v", err)
	}
	b.Close()
}
