package cli

import (
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// app carries what every client command needs.
type app struct {
	url    string
	client *Client
}

// NewRoot returns the `ironlite` command with the client subcommands;
// main adds `serve`.
func NewRoot() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "ironlite",
		Short: "ironlite: bare-metal provisioning with an Ironic-compatible API",
		Long: `ironlite runs the controller (ironlite serve) and is its client.

The client commands mirror "openstack baremetal ...": replace
"openstack baremetal" with "ironlite", e.g.

  ironlite node create --driver ipmi --name BM01 --driver-info ipmi_address=10.0.0.5 ...
  ironlite node power on BM01
  ironlite node boot device set BM01 pxe
  ironlite port create --node <node uuid> 52:54:00:12:34:56

The API endpoint comes from --url, IRONLITE_URL or OS_ENDPOINT
(default http://127.0.0.1:6385).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			a.client = &Client{BaseURL: a.url, HTTP: &http.Client{Timeout: 5 * time.Minute}}
		},
	}
	root.PersistentFlags().StringVar(&a.url, "url", defaultURL(), "ironlite (or Ironic) API endpoint; env IRONLITE_URL or OS_ENDPOINT")
	root.AddCommand(a.nodeCmd(), a.portCmd(), a.driverCmd(), a.imageCmd())
	return root
}

// NormalizeArgs rewrites "--wait N" into "--wait=N". --wait takes an
// optional value (as in "openstack baremetal node deploy NODE --wait
// [TIMEOUT]"), which pflag only reads in the "=" form; a bare number after
// it would otherwise be taken for another node.
func NormalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--wait" && i+1 < len(args) {
			if _, err := strconv.Atoi(args[i+1]); err == nil {
				out = append(out, "--wait="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, args[i])
	}
	return out
}
