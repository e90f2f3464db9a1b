package main

import (
	"log/slog"
	"sync"

	"github.com/ironlite/ironlite/agent/disk"
	"github.com/ironlite/ironlite/agent/imagesource"
	"github.com/ironlite/ironlite/agent/kparams"
	"github.com/ironlite/ironlite/agent/protocol"
	"github.com/ironlite/ironlite/agent/standby"
)

// nodeCache holds the node from the last lookup (IPA's cached node): the
// image commands take root device hints from it.
type nodeCache struct {
	mu   sync.Mutex
	node map[string]any
}

func (c *nodeCache) set(lr *protocol.LookupResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.node = map[string]any{
		"uuid":                 lr.Node.UUID,
		"properties":           lr.Node.Properties,
		"instance_info":        lr.Node.InstanceInfo,
		"driver_internal_info": lr.Node.DriverInternalInfo,
		"target_raid_config":   lr.Node.TargetRAIDConfig,
		"raid_config":          lr.Node.RAIDConfig,
	}
}

func (c *nodeCache) get() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

var lookedUp nodeCache

// registerImageCommands installs the disk clean steps and the image
// commands (standby.prepare_image & co., deploy.write_image).
func registerImageCommands(p *kparams.Params, log *slog.Logger) {
	disk.RegisterSteps(disk.Options{Log: log})
	standby.Register(Registry, standby.Options{
		Node:   lookedUp.get,
		Source: imagesource.Options{InsecureSkipVerify: p.Insecure, Logger: log},
		Log:    log,
	})
}
