package configdrive

import (
	"github.com/ironlite/ironlite/agent/blockdev"
	"github.com/ironlite/ironlite/agent/imagewrite"
)

// announcePartitions tells the kernel of the partitions a kernel without
// table parsers did not find (imagewrite.AnnouncePartitions).
func announcePartitions(d *blockdev.Device, ss int64, parts []part) error {
	var kp []imagewrite.KernelPartition
	for _, q := range parts {
		if !q.extended {
			kp = append(kp, imagewrite.KernelPartition{Number: q.number, Start: q.start * ss, Length: (q.end - q.start + 1) * ss})
		}
	}
	return imagewrite.AnnouncePartitions(d, kp)
}
