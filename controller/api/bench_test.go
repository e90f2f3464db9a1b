package api_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// BenchmarkListDetail measures GET /v1/nodes/detail with 1000 nodes
// through the real HTTP stack and SQLite (scripts/bench-api compares the
// same call with Ironic).
func BenchmarkListDetail(b *testing.B) {
	e := newEnv(&testing.T{})
	for i := 0; i < 1000; i++ {
		e.create(map[string]any{"driver": "fake-hardware", "name": fmt.Sprintf("n%04d", i),
			"driver_info": map[string]any{"ipmi_address": "10.0.0.1", "ipmi_password": "x"},
			"properties":  map[string]any{"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/nodes/detail", nil)
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.82")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}
