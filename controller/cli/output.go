package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// output holds the formatting options shared by list and show commands
// (-f table|json|yaml|value, -c COLUMN), as cliff has them.
type output struct {
	format  string
	columns []string
}

func (o *output) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.format, "format", "f", "table", "output format: table, json, yaml or value")
	cmd.Flags().StringArrayVarP(&o.columns, "column", "c", nil, "show only this column (repeatable)")
}

func (o *output) check() error {
	switch o.format {
	case "table", "json", "yaml", "value", "shell":
		return nil
	}
	return fmt.Errorf("invalid format %q: choose table, json, yaml or value", o.format)
}

// pick narrows headers to the -c selection, in the order given.
func (o *output) pick(headers []string) ([]int, error) {
	if len(o.columns) == 0 {
		idx := make([]int, len(headers))
		for i := range headers {
			idx[i] = i
		}
		return idx, nil
	}
	var idx []int
	for _, c := range o.columns {
		i := slices.IndexFunc(headers, func(h string) bool { return strings.EqualFold(h, c) })
		if i < 0 {
			return nil, fmt.Errorf("no column %q; columns are: %s", c, strings.Join(headers, ", "))
		}
		idx = append(idx, i)
	}
	return idx, nil
}

// cell renders one value as the OpenStack client prints it.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case json.Number:
		return x.String()
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

// printList prints rows under headers.
func (o *output) printList(w io.Writer, headers []string, rows [][]any) error {
	idx, err := o.pick(headers)
	if err != nil {
		return err
	}
	switch o.format {
	case "json", "yaml":
		out := make([]map[string]any, len(rows))
		for r, row := range rows {
			m := map[string]any{}
			for _, i := range idx {
				m[headers[i]] = row[i]
			}
			out[r] = m
		}
		return encode(w, o.format, out)
	case "value":
		for _, row := range rows {
			var cells []string
			for _, i := range idx {
				cells = append(cells, cell(row[i]))
			}
			fmt.Fprintln(w, strings.Join(cells, " "))
		}
		return nil
	}
	var hs []string
	var cells [][]string
	for _, i := range idx {
		hs = append(hs, headers[i])
	}
	for _, row := range rows {
		var line []string
		for _, i := range idx {
			line = append(line, cell(row[i]))
		}
		cells = append(cells, line)
	}
	table(w, hs, cells)
	return nil
}

// printObject prints one resource as Field/Value rows (keys sorted).
func (o *output) printObject(w io.Writer, obj map[string]any) error {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	idx, err := o.pick(keys)
	if err != nil {
		return err
	}
	switch o.format {
	case "json", "yaml":
		m := map[string]any{}
		for _, i := range idx {
			m[keys[i]] = obj[keys[i]]
		}
		return encode(w, o.format, m)
	case "value":
		for _, i := range idx {
			fmt.Fprintln(w, cell(obj[keys[i]]))
		}
		return nil
	case "shell":
		for _, i := range idx {
			fmt.Fprintf(w, "%s=%q\n", keys[i], cell(obj[keys[i]]))
		}
		return nil
	}
	var rows [][]string
	for _, i := range idx {
		rows = append(rows, []string{keys[i], cell(obj[keys[i]])})
	}
	table(w, []string{"Field", "Value"}, rows)
	return nil
}

func encode(w io.Writer, format string, v any) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	// Round-trip through JSON so json.Number values print as numbers.
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var plain any
	if err := yaml.Unmarshal(b, &plain); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	return enc.Encode(plain)
}

// table draws a cliff/prettytable style box.
func table(w io.Writer, headers []string, rows [][]string) {
	widths := make([]int, len(headers))
	for i, h := range headers {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	sep := "+"
	for _, wd := range widths {
		sep += strings.Repeat("-", wd+2) + "+"
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			fmt.Fprintf(&b, " %-*s |", widths[i], c)
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintln(w, sep)
	line(headers)
	fmt.Fprintln(w, sep)
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(w, sep)
}
