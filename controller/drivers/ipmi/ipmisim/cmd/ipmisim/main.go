// Command ipmisim runs one simulated BMC (OpenIPMI's ipmi_sim with a
// recording chassis program) on a free loopback UDP port until it is
// interrupted. It prints one JSON line: the node driver_info to use and the
// directory holding the recorded power and boot device. Scripts use it
// (scripts/test-cli); Go tests use the ipmisim package directly.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ironlite/ironlite/controller/drivers/ipmi/ipmisim"
)

func main() {
	if err := ipmisim.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "ipmisim:", err)
		os.Exit(1)
	}
	sim, err := ipmisim.Launch(ipmisim.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipmisim:", err)
		os.Exit(1)
	}
	defer sim.Stop()
	out, _ := json.Marshal(map[string]any{"driver_info": sim.DriverInfo(), "dir": sim.Dir})
	fmt.Println(string(out))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
