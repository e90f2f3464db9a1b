package extensions

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// LogSource says what log.collect_system_logs gathers. IPA tars journal or
// dmesg output plus the output of a list of commands; the ramdisk has no
// such tools, so we read the kernel and /proc directly.
type LogSource struct {
	// Files maps archive names to files to include ("cmdline" ->
	// "/proc/cmdline"). Missing files are skipped.
	Files map[string]string
	// Generated maps archive names to functions producing content (e.g. the
	// agent's own log buffer, dmesg).
	Generated map[string]func() ([]byte, error)
}

// DefaultLogSource is what the agent collects on a real machine.
func DefaultLogSource(agentLog func() []byte) LogSource {
	return LogSource{
		Files: map[string]string{
			"cmdline":    "/proc/cmdline",
			"mounts":     "/proc/mounts",
			"modules":    "/proc/modules",
			"meminfo":    "/proc/meminfo",
			"cpuinfo":    "/proc/cpuinfo",
			"partitions": "/proc/partitions",
			"mdstat":     "/proc/mdstat",
			"net-dev":    "/proc/net/dev",
			"net-route":  "/proc/net/route",
		},
		Generated: map[string]func() ([]byte, error){
			"dmesg":     Dmesg,
			"agent.log": func() ([]byte, error) { return agentLog(), nil },
		},
	}
}

// Dmesg reads the kernel ring buffer (syslog(2) READ_ALL).
func Dmesg() ([]byte, error) {
	n, err := unix.Klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, nil)
	if err != nil {
		return nil, fmt.Errorf("klogctl size: %w", err)
	}
	if n <= 0 {
		n = 1 << 20
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf)
	if err != nil {
		return nil, fmt.Errorf("klogctl read: %w", err)
	}
	return buf[:m], nil
}

// CollectLogs builds IPA's system_logs value: a base64-encoded tar.gz. A
// source that fails adds "<name>.error" with the reason instead of failing
// the whole collection; logs are wanted most when things are broken.
func CollectLogs(ctx context.Context, src LogSource) (string, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	now := time.Now()
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, name := range sortedKeys(src.Files) {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		data, err := os.ReadFile(src.Files[name])
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			data, name = []byte(err.Error()), name+".error"
		}
		if err := add(name, data); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
	}
	for _, name := range sortedKeys(src.Generated) {
		data, err := src.Generated[name]()
		if err != nil {
			data, name = []byte(err.Error()), name+".error"
		}
		if err := add(name, data); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
