// Command ironlite-agent is the deploy agent: the uinit of the ironlite
// ramdisk (u-root's init starts it), speaking IPA's protocol to the
// controller.
//
// With no arguments it runs the agent. Other modes are subcommands, looked
// up in the subcommands map; files in this package add theirs from init(),
// e.g.
//
//	func init() { subcommands["write-image"] = writeImageMain }
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// subcommands maps a first argument to its implementation. args excludes
// the subcommand name itself.
var subcommands = map[string]func(args []string) error{}

func main() {
	args := os.Args[1:]
	// u-root passes uinit flags; anything starting with "-" is for the agent.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name := args[0]
		cmd, ok := subcommands[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "ironlite-agent: unknown subcommand %q; known: %s\n", name, strings.Join(names(), ", "))
			os.Exit(2)
		}
		if err := cmd(args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "ironlite-agent %s: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	runAgent(args) // never returns in the ramdisk
}

func names() []string {
	out := make([]string, 0, len(subcommands))
	for n := range subcommands {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
