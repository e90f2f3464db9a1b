package main

import (
	"log/slog"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/agent"
	"github.com/ironlite/ironlite/controller/drivers/ipmi"
)

// registerHardware adds the real hardware types to the registry and
// returns a function that closes their BMC sessions.
func registerHardware(reg *drivers.Registry, log *slog.Logger) func() {
	agent.Register(reg)
	d := ipmi.Register(reg, ipmi.Options{Logger: log})
	return func() {
		if err := d.Close(); err != nil {
			log.Warn("close IPMI sessions", "err", err)
		}
	}
}
