package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// waitProvision prints state changes with the running step, and the
// flow's phase timings once the node is there.
func TestWaitProvisionPrintsStepsAndTimings(t *testing.T) {
	answers := []string{
		`{"provision_state":"wait call-back","target_provision_state":"active","deploy_step":{"interface":"deploy","step":"write_image"},"driver_internal_info":{"ironlite_progress":{"phase":"write","percent":50,"bytes_done":50,"bytes_total":100}}}`,
		`{"provision_state":"active","target_provision_state":null,"deploy_step":{},"driver_internal_info":{"ironlite_deploy":{"phase":"done","timings":{"boot":14.6,"write":5,"reboot":1.4,"total":21}}}}`,
	}
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(answers[min(i, len(answers)-1)]))
		i++
	}))
	defer srv.Close()
	a := &app{client: &Client{BaseURL: srv.URL, HTTP: srv.Client()}}
	var out bytes.Buffer
	if err := a.waitProvision(&out, "BM01", "active", time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"BM01: wait call-back [deploy.write_image]", "write    [############------------]  50%", "BM01: active", "BM01: deploy timings: boot 14.6s, write 5.0s, reboot 1.4s, total 21.0s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
