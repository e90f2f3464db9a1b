package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressLines(t *testing.T) {
	p := map[string]any{"phase": "write", "percent": 62.0, "bytes_done": 1.3e9, "bytes_total": 2.1e9, "bytes_per_second": 96e6, "eta_seconds": 8.0}
	got := formatProgress(p)
	for _, want := range []string{"write", "[##############----------]", "62%", "1.3 GB / 2.1 GB", "96 MB/s", "ETA 8s"} {
		if !strings.Contains(got, want) {
			t.Errorf("formatProgress = %q, lacks %q", got, want)
		}
	}
	if got := formatProgress(map[string]any{"phase": "download", "bytes_done": 5e6}); !strings.Contains(got, "5.0 MB") || strings.Contains(got, "[") {
		t.Errorf("unknown total: %q", got)
	}

	// Not a terminal: one line per 10% step and per phase, no carriage returns.
	var buf bytes.Buffer
	pb := &progressBar{w: &buf}
	for _, pct := range []float64{1, 5, 12, 15, 27, 99} {
		pb.show(map[string]any{"phase": "write", "percent": pct, "bytes_total": 100.0, "bytes_done": pct})
	}
	pb.show(map[string]any{"phase": "verify", "percent": 100.0, "bytes_total": 100.0, "bytes_done": 100.0})
	pb.end()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 || strings.Contains(buf.String(), "\r") {
		t.Errorf("non-terminal output:\n%s", buf.String())
	}
}
