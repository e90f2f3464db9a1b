package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dustin/go-humanize"
	"golang.org/x/term"
)

// progressBar shows the agent's progress (protocol.Progress as JSON) for
// `--wait`: redrawn in place on a terminal, one line per 10% otherwise so
// logs stay readable.
type progressBar struct {
	w        io.Writer
	tty      bool
	drawn    bool   // a bar is on the current terminal line
	lastKey  string // phase of the last printed line (non-terminal)
	lastTens int
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func num(p map[string]any, k string) float64 {
	v, _ := toFloat(p[k])
	return v
}

// toFloat reads a JSON number, decoded as float64 or (the client decodes
// with UseNumber) json.Number.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// format renders one progress line:
// "write  [##########----------]  52%  1.1 GB / 2.1 GB  96 MB/s  ETA 11s".
func formatProgress(p map[string]any) string {
	phase, _ := p["phase"].(string)
	pct := num(p, "percent")
	done, total := num(p, "bytes_done"), num(p, "bytes_total")
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s", phase)
	if total > 0 {
		const width = 24
		fill := int(pct / 100 * width)
		fill = max(0, min(width, fill))
		fmt.Fprintf(&b, " [%s%s] %3.0f%%  %s / %s", strings.Repeat("#", fill), strings.Repeat("-", width-fill), pct,
			humanize.Bytes(uint64(done)), humanize.Bytes(uint64(total)))
	} else {
		fmt.Fprintf(&b, " %s", humanize.Bytes(uint64(done)))
	}
	if r := num(p, "bytes_per_second"); r > 0 {
		fmt.Fprintf(&b, "  %s/s", humanize.Bytes(uint64(r)))
	}
	if eta := num(p, "eta_seconds"); eta > 0 {
		fmt.Fprintf(&b, "  ETA %.0fs", eta)
	}
	return b.String()
}

func (pb *progressBar) show(p map[string]any) {
	line := formatProgress(p)
	if pb.tty {
		fmt.Fprintf(pb.w, "\r\033[K  %s", line)
		pb.drawn = true
		return
	}
	phase, _ := p["phase"].(string)
	tens := int(num(p, "percent") / 10)
	if phase != pb.lastKey || tens > pb.lastTens {
		fmt.Fprintf(pb.w, "  %s\n", line)
		pb.lastKey, pb.lastTens = phase, tens
	}
}

// end finishes a bar drawn in place, so the next line starts clean.
func (pb *progressBar) end() {
	if pb.drawn {
		fmt.Fprintln(pb.w)
		pb.drawn = false
	}
}
