package main

import (
	"log/slog"

	"github.com/ironlite/ironlite/controller/agentclient"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/drivers/ipmi"
	"github.com/ironlite/ironlite/controller/drivers/ipxe"
)

// hardwareConfig is what the real hardware types need from `serve`.
type hardwareConfig struct {
	boot   ipxe.Config
	direct agent.DirectConfig
	agents agentclient.Options
}

// registerHardware adds the real hardware types to the registry and
// returns a function that closes their BMC sessions.
func registerHardware(reg *drivers.Registry, cfg hardwareConfig, log *slog.Logger) func() {
	agent.Register(reg)
	ipxe.Register(reg, cfg.boot)
	cfg.agents.Logger = log
	cfg.direct.Log = log
	agent.RegisterDirect(reg, agentclient.New(cfg.agents), cfg.direct)
	d := ipmi.Register(reg, ipmi.Options{Logger: log})
	return func() {
		if err := d.Close(); err != nil {
			log.Warn("close IPMI sessions", "err", err)
		}
	}
}
