package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

func (a *app) portCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Manage node ports (NICs by MAC address)"}

	var (
		oc          output
		node        string
		extra       []string
		pxeDisabled bool
		physnet     string
	)
	create := &cobra.Command{
		Use:     "create --node NODE_UUID MAC",
		Short:   "Register a NIC of a node",
		Example: "  ironlite port create --node e6423e53-740a-46f6-8c24-06fe8f21e53a 52:54:84:00:00:f7",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := oc.check(); err != nil {
				return err
			}
			body := map[string]any{"node_uuid": node, "address": args[0]}
			if m, err := kvPairs("extra", extra); err != nil {
				return err
			} else if len(m) > 0 {
				body["extra"] = m
			}
			if pxeDisabled {
				body["pxe_enabled"] = false
			}
			if physnet != "" {
				body["physical_network"] = physnet
			}
			var port map[string]any
			if err := a.client.Do("POST", "/v1/ports", body, &port); err != nil {
				return err
			}
			delete(port, "links")
			return oc.printObject(cmd.OutOrStdout(), port)
		},
	}
	create.Flags().StringVar(&node, "node", "", "UUID of the node the port belongs to (required)")
	create.Flags().StringArrayVar(&extra, "extra", nil, "extra KEY=VALUE (repeatable)")
	create.Flags().BoolVar(&pxeDisabled, "pxe-disabled", false, "this NIC does not PXE boot")
	create.Flags().StringVar(&physnet, "physical-network", "", "physical network name")
	_ = create.MarkFlagRequired("node")
	oc.register(create)

	var (
		ol       output
		listNode string
		long     bool
		address  string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List ports",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ol.check(); err != nil {
				return err
			}
			q := url.Values{}
			if listNode != "" {
				q.Set("node", listNode)
			}
			if address != "" {
				q.Set("address", address)
			}
			headers, fields := []string{"UUID", "Address"}, []string{"uuid", "address"}
			if long {
				q.Set("detail", "true")
				headers = []string{"UUID", "Address", "Created At", "Extra", "Node UUID", "PXE boot enabled", "Physical Network"}
				fields = []string{"uuid", "address", "created_at", "extra", "node_uuid", "pxe_enabled", "physical_network"}
			}
			ports, err := a.listAll("/v1/ports", "ports", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]any, len(ports))
			for i, p := range ports {
				for _, f := range fields {
					rows[i] = append(rows[i], p[f])
				}
			}
			return ol.printList(cmd.OutOrStdout(), headers, rows)
		},
	}
	list.Flags().StringVar(&listNode, "node", "", "only ports of this node (UUID or name)")
	list.Flags().StringVar(&address, "address", "", "only the port with this MAC")
	list.Flags().BoolVar(&long, "long", false, "show detailed information")
	ol.register(list)

	var os output
	show := &cobra.Command{
		Use:   "show PORT_UUID",
		Short: "Show a port",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.check(); err != nil {
				return err
			}
			var port map[string]any
			if err := a.client.Do("GET", "/v1/ports/"+url.PathEscape(args[0]), nil, &port); err != nil {
				return err
			}
			delete(port, "links")
			return os.printObject(cmd.OutOrStdout(), port)
		},
	}
	os.register(show)

	del := &cobra.Command{
		Use:   "delete PORT_UUID [PORT_UUID...]",
		Short: "Delete ports",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				if err := a.client.Do("DELETE", "/v1/ports/"+url.PathEscape(id), nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted port %s\n", id)
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func (a *app) driverCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "driver", Short: "Show hardware types (drivers)"}
	var ol, os, op output
	list := &cobra.Command{
		Use:   "list",
		Short: "List enabled drivers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ol.check(); err != nil {
				return err
			}
			var res struct{ Drivers []map[string]any }
			if err := a.client.Do("GET", "/v1/drivers", nil, &res); err != nil {
				return err
			}
			var rows [][]any
			for _, d := range res.Drivers {
				rows = append(rows, []any{d["name"], d["hosts"]})
			}
			return ol.printList(cmd.OutOrStdout(), []string{"Supported driver(s)", "Active host(s)"}, rows)
		},
	}
	ol.register(list)
	show := &cobra.Command{
		Use:   "show DRIVER",
		Short: "Show a driver's interfaces",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.check(); err != nil {
				return err
			}
			var d map[string]any
			if err := a.client.Do("GET", "/v1/drivers/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			delete(d, "links")
			delete(d, "properties")
			return os.printObject(cmd.OutOrStdout(), d)
		},
	}
	os.register(show)
	property := &cobra.Command{Use: "property", Short: "Driver properties"}
	plist := &cobra.Command{
		Use:   "list DRIVER",
		Short: "List the driver_info properties a driver reads",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := op.check(); err != nil {
				return err
			}
			var props map[string]any
			if err := a.client.Do("GET", "/v1/drivers/"+url.PathEscape(args[0])+"/properties", nil, &props); err != nil {
				return err
			}
			var rows [][]any
			for _, k := range sortedKeys(props) {
				rows = append(rows, []any{k, props[k]})
			}
			return op.printList(cmd.OutOrStdout(), []string{"Property", "Description"}, rows)
		},
	}
	op.register(plist)
	property.AddCommand(plist)
	cmd.AddCommand(list, show, property)
	return cmd
}
