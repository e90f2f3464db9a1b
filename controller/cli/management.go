package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) setPower(ident, target string, timeout int) error {
	body := map[string]any{"target": target}
	if timeout > 0 {
		body["timeout"] = timeout
	}
	return a.client.Do("PUT", nodePath(ident)+"/states/power", body, nil)
}

func (a *app) nodePower() *cobra.Command {
	cmd := &cobra.Command{Use: "power", Short: "Power a node on or off"}
	for _, on := range []bool{true, false} {
		var soft bool
		var timeout int
		word, target := "on", "power on"
		if !on {
			word, target = "off", "power off"
		}
		sub := &cobra.Command{
			Use:   word + " NODE [NODE...]",
			Short: "Power nodes " + word,
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				t := target
				if soft {
					if on {
						return fmt.Errorf("--soft applies to power off and reboot only")
					}
					t = "soft power off"
				}
				for _, id := range args {
					if err := a.setPower(id, t, timeout); err != nil {
						return err
					}
				}
				return nil
			},
		}
		sub.Flags().IntVar(&timeout, "power-timeout", 0, "seconds to wait for the power state change")
		if !on {
			sub.Flags().BoolVar(&soft, "soft", false, "ask the OS to shut down (ACPI) before forcing it")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func (a *app) nodeReboot() *cobra.Command {
	var soft bool
	var timeout int
	cmd := &cobra.Command{
		Use:   "reboot NODE [NODE...]",
		Short: "Reboot nodes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := "rebooting"
			if soft {
				t = "soft rebooting"
			}
			for _, id := range args {
				if err := a.setPower(id, t, timeout); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&soft, "soft", false, "ask the OS to reboot (ACPI) before forcing it")
	cmd.Flags().IntVar(&timeout, "power-timeout", 0, "seconds to wait for the power state change")
	return cmd
}

func (a *app) nodeBoot() *cobra.Command {
	boot := &cobra.Command{Use: "boot", Short: "Boot device and boot mode"}
	device := &cobra.Command{Use: "device", Short: "Set or show the boot device"}
	var persistent bool
	set := &cobra.Command{
		Use:   "set NODE DEVICE",
		Short: "Set the boot device (pxe, disk, cdrom, bios, safe)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.client.Do("PUT", nodePath(args[0])+"/management/boot_device",
				map[string]any{"boot_device": args[1], "persistent": persistent}, nil)
		},
	}
	set.Flags().BoolVar(&persistent, "persistent", false, "keep the device for every boot, not only the next")
	var o output
	var supported bool
	show := &cobra.Command{
		Use:   "show NODE",
		Short: "Show the boot device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			path := nodePath(args[0]) + "/management/boot_device"
			if supported {
				path += "/supported"
			}
			var res map[string]any
			if err := a.client.Do("GET", path, nil, &res); err != nil {
				return err
			}
			return o.printObject(cmd.OutOrStdout(), res)
		},
	}
	show.Flags().BoolVar(&supported, "supported", false, "show the supported boot devices")
	o.register(show)
	device.AddCommand(set, show)
	boot.AddCommand(device)
	return boot
}

func (a *app) nodeMaintenance() *cobra.Command {
	cmd := &cobra.Command{Use: "maintenance", Short: "Set or unset maintenance mode"}
	var reason string
	set := &cobra.Command{
		Use:   "set NODE [NODE...]",
		Short: "Put nodes in maintenance mode",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				var body any
				if reason != "" {
					body = map[string]any{"reason": reason}
				}
				if err := a.client.Do("PUT", nodePath(id)+"/maintenance", body, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	set.Flags().StringVar(&reason, "reason", "", "why the node is in maintenance")
	unset := &cobra.Command{
		Use:   "unset NODE [NODE...]",
		Short: "Take nodes out of maintenance mode",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				if err := a.client.Do("DELETE", nodePath(id)+"/maintenance", nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.AddCommand(set, unset)
	return cmd
}

// nodeBMC groups the ironlite extensions that read the BMC directly.
func (a *app) nodeBMC() *cobra.Command {
	cmd := &cobra.Command{Use: "bmc", Short: "BMC sensors, event log and identify LED (ironlite extension)"}
	var o1, o2 output
	sensors := &cobra.Command{
		Use:   "sensors NODE",
		Short: "Read the BMC's sensors",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o1.check(); err != nil {
				return err
			}
			var res struct{ Sensors []map[string]any }
			if err := a.client.Do("GET", nodePath(args[0])+"/bmc/sensors", nil, &res); err != nil {
				return err
			}
			var rows [][]any
			for _, s := range res.Sensors {
				rows = append(rows, []any{s["name"], s["type"], s["reading"], s["unit"], s["status"]})
			}
			return o1.printList(cmd.OutOrStdout(), []string{"Name", "Type", "Reading", "Unit", "Status"}, rows)
		},
	}
	o1.register(sensors)
	var clear bool
	sel := &cobra.Command{
		Use:   "sel NODE",
		Short: "Read (or --clear) the BMC's system event log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clear {
				return a.client.Do("DELETE", nodePath(args[0])+"/bmc/sel", nil, nil)
			}
			if err := o2.check(); err != nil {
				return err
			}
			var res struct{ Entries []map[string]any }
			if err := a.client.Do("GET", nodePath(args[0])+"/bmc/sel", nil, &res); err != nil {
				return err
			}
			var rows [][]any
			for _, e := range res.Entries {
				rows = append(rows, []any{e["id"], e["time"], e["sensor_type"], e["sensor"], e["event"], e["direction"]})
			}
			return o2.printList(cmd.OutOrStdout(), []string{"ID", "Time", "Sensor Type", "Sensor", "Event", "Direction"}, rows)
		},
	}
	sel.Flags().BoolVar(&clear, "clear", false, "clear the event log")
	o2.register(sel)
	identify := &cobra.Command{
		Use:       "identify NODE on|off|blinking",
		Short:     "Switch the chassis identify LED",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"on", "off", "blinking"},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.client.Do("PUT", nodePath(args[0])+"/management/indicators/identify@system",
				map[string]any{"state": args[1]}, nil)
		},
	}
	cmd.AddCommand(sensors, sel, identify)
	return cmd
}
