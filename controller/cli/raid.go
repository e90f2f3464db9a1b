package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// nodeRAID is `ironlite node raid set|show|clear`: the node's
// target_raid_config (PUT /v1/nodes/{node}/states/raid, as `openstack
// baremetal node set --target-raid-config` sends it) and the raid_config
// that cleaning built.
func (a *app) nodeRAID() *cobra.Command {
	cmd := &cobra.Command{Use: "raid", Short: "Set, show or clear a node's target RAID configuration"}
	cmd.AddCommand(a.nodeRAIDSet(), a.nodeRAIDShow(), a.nodeRAIDClear())
	return cmd
}

func (a *app) nodeRAIDSet() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "set NODE --config FILE|-|JSON",
		Short: "Set the target RAID configuration (built by the next cleaning)",
		Long: `Set the node's target_raid_config. The configuration is Ironic's
({"logical_disks": [...]}); with raid_interface "agent" every logical disk needs
"controller": "software", and the next cleaning (provide, undeploy, or a manual
clean with raid.create_configuration) builds it in the ramdisk.`,
		Example: `  ironlite node raid set BM01 --config '{"logical_disks": [
    {"size_gb": 10, "raid_level": "1", "controller": "software", "is_root_volume": true, "volume_name": "root"},
    {"size_gb": "MAX", "raid_level": "0", "controller": "software", "volume_name": "data", "filesystem": "xfs"}]}'
  ironlite node raid set BM01 --config raid.json
  ironlite node raid set BM01 --config - < raid.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := readRAIDConfig(config, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return a.client.Do("PUT", nodePath(args[0])+"/states/raid", cfg, nil)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the configuration: a JSON file, - for standard input, or the JSON itself (required)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func (a *app) nodeRAIDClear() *cobra.Command {
	return &cobra.Command{
		Use:   "clear NODE",
		Short: "Clear the target RAID configuration (the next cleaning deletes the arrays)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.client.Do("PUT", nodePath(args[0])+"/states/raid", map[string]any{}, nil)
		},
	}
}

func (a *app) nodeRAIDShow() *cobra.Command {
	var format string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NODE",
		Short: "Show the target RAID configuration and the one built on the node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				format = "json"
			}
			switch format {
			case "table", "json", "yaml":
			default:
				return fmt.Errorf("invalid format %q: choose table, json or yaml", format)
			}
			var node map[string]any
			if err := a.client.Do("GET", nodePath(args[0])+"?fields=uuid,target_raid_config,raid_config", nil, &node); err != nil {
				return err
			}
			out := map[string]any{"target_raid_config": objectOrEmpty(node["target_raid_config"]),
				"raid_config": objectOrEmpty(node["raid_config"])}
			if format != "table" {
				return encode(cmd.OutOrStdout(), format, out)
			}
			printRAIDTables(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table, json or yaml")
	cmd.Flags().BoolVar(&asJSON, "json", false, "same as --format json")
	return cmd
}

// readRAIDConfig reads --config: inline JSON, - (stdin) or a file name,
// and checks that it is a JSON object (numbers kept as written).
func readRAIDConfig(arg string, stdin io.Reader) (map[string]any, error) {
	var data []byte
	var err error
	switch trimmed := strings.TrimSpace(arg); {
	case trimmed == "":
		return nil, fmt.Errorf("--config is empty: give a JSON file, - for standard input, or the JSON itself")
	case trimmed == "-":
		data, err = io.ReadAll(stdin)
	case strings.HasPrefix(trimmed, "{"):
		data = []byte(trimmed)
	default:
		data, err = os.ReadFile(arg)
	}
	if err != nil {
		return nil, fmt.Errorf("read the RAID configuration: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil || dec.More() || cfg == nil {
		if err == nil {
			err = fmt.Errorf("not a single JSON object")
		}
		return nil, fmt.Errorf("the RAID configuration is not a JSON object: %w", err)
	}
	return cfg, nil
}

func objectOrEmpty(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{}
}

// printRAIDTables prints one table per configuration: the target as
// asked for, the current one as the agent built it (device, members).
func printRAIDTables(w io.Writer, cfgs map[string]any) {
	target := cfgs["target_raid_config"].(map[string]any)
	current := cfgs["raid_config"].(map[string]any)
	fmt.Fprintln(w, "Target RAID configuration (target_raid_config):")
	if rows := raidRows(target, false); len(rows) > 0 {
		table(w, []string{"#", "Volume", "Level", "Size (GiB)", "Root", "Physical disks", "Filesystem"}, rows)
	} else {
		fmt.Fprintln(w, "  none")
	}
	fmt.Fprintln(w)
	heading := "Current RAID configuration (raid_config)"
	if t, ok := current["last_updated"].(string); ok {
		heading += ", built " + t
	}
	fmt.Fprintln(w, heading+":")
	if rows := raidRows(current, true); len(rows) > 0 {
		table(w, []string{"#", "Volume", "Level", "Size (GiB)", "Root", "Device", "Members", "Filesystem"}, rows)
	} else {
		fmt.Fprintln(w, "  none")
	}
}

func raidRows(cfg map[string]any, built bool) [][]string {
	list, _ := cfg["logical_disks"].([]any)
	var rows [][]string
	for i, item := range list {
		ld, _ := item.(map[string]any)
		root := "no"
		if b, _ := ld["is_root_volume"].(bool); b {
			root = "yes"
		}
		fs := "-"
		if f, ok := ld["filesystem"].(string); ok {
			fs = f
			if l, ok := ld["label"].(string); ok {
				fs += " (" + l + ")"
			}
		}
		row := []string{fmt.Sprint(i), orDash(ld["volume_name"]), orDash(ld["raid_level"]), orDash(ld["size_gb"]), root}
		if built {
			dev := orDash(ld["name"])
			if link, ok := ld["device_link"].(string); ok {
				dev += " (" + link + ")"
			}
			members := ld["members"]
			if members == nil {
				members = ld["physical_disks"]
			}
			row = append(row, dev, list2str(members))
		} else {
			row = append(row, list2str(ld["physical_disks"]))
		}
		rows = append(rows, append(row, fs))
	}
	return rows
}

func orDash(v any) string {
	if v == nil {
		return "-"
	}
	return cell(v)
}

// list2str renders a list of names (or hint objects) comma-separated; no
// list means every disk.
func list2str(v any) string {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return "(all disks)"
	}
	var parts []string
	for _, p := range list {
		parts = append(parts, cell(p))
	}
	return strings.Join(parts, ", ")
}
