// Command ironlite is the ironlite controller (`ironlite serve`) and its
// command-line client (`ironlite node ...`, `ironlite port ...`).
package main

import (
	"fmt"
	"os"

	"github.com/ironlite/ironlite/controller/cli"
)

func main() {
	root := cli.NewRoot()
	root.AddCommand(newServeCmd())
	root.SetArgs(cli.NormalizeArgs(os.Args[1:]))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlite:", err)
		os.Exit(1)
	}
}
