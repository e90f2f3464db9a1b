package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/ironlite/ironlite/agent/coldplug"
	"github.com/ironlite/ironlite/agent/inventory"
	"github.com/ironlite/ironlite/agent/protocol"
)

// Debugging subcommands, handy from the rescue shell.
func init() {
	subcommands["version"] = func([]string) error {
		fmt.Printf("%s (IPA-compatible %s)\n", protocol.Implementation, protocol.AgentVersion)
		return nil
	}
	subcommands["inventory"] = func(args []string) error {
		fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
		root := fs.String("root", "/", "filesystem root to inspect")
		if err := fs.Parse(args); err != nil {
			return err
		}
		inv, err := (&inventory.Collector{Root: *root}).Collect(context.Background())
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(inv)
	}
	subcommands["coldplug"] = func(args []string) error {
		fs := flag.NewFlagSet("coldplug", flag.ContinueOnError)
		dry := fs.Bool("n", false, "only print the modules that would be loaded")
		if err := fs.Parse(args); err != nil {
			return err
		}
		o := coldplug.Options{}
		if *dry {
			o.Load = func(string) error { return nil }
			o.Rounds = 1
		}
		mods, err := coldplug.Run(context.Background(), o)
		for _, m := range mods {
			fmt.Println(m)
		}
		return err
	}
}
