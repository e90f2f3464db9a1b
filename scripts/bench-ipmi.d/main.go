// Command bench-ipmi.d is the helper of scripts/bench-ipmi: it starts N
// simulated BMCs (ipmi_sim on 127.0.0.1), then times "power status of all
// BMCs" twice:
//
//   - ironlite: the ipmi driver, all BMCs concurrently, as a power-sync
//     round does (a cold round that opens the sessions, then warm rounds
//     reusing them);
//   - ipmitool: one `ipmitool -I lanplus -C 3 ... power status` process per
//     BMC, sequentially, as Ironic's ipmitool driver runs them.
//
// It prints both times and the ratio, and stops every simulator on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/drivers/ipmi"
	"github.com/ironlite/ironlite/controller/drivers/ipmi/ipmisim"
	"github.com/ironlite/ironlite/controller/model"
)

func main() {
	n := flag.Int("n", 50, "number of simulated BMCs")
	rounds := flag.Int("rounds", 3, "measurement rounds (the median is reported)")
	flag.Parse()
	if err := ipmisim.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-ipmi:", err)
		os.Exit(2)
	}
	os.Exit(run(*n, *rounds))
}

func run(n, rounds int) int {
	var sims []*ipmisim.Sim
	var mu sync.Mutex
	stopAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range sims {
			_ = s.Stop()
		}
		sims = nil
	}
	defer stopAll()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(130) }()

	start := time.Now()
	var wg sync.WaitGroup
	var startErr error
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := ipmisim.Launch(ipmisim.Options{PowerOn: i%2 == 0})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				startErr = err
				return
			}
			sims = append(sims, s)
		}()
	}
	wg.Wait()
	if startErr != nil {
		fmt.Fprintln(os.Stderr, "bench-ipmi: starting simulators:", startErr)
		return 1
	}
	fmt.Printf("started %d simulated BMCs (ipmi_sim on 127.0.0.1) in %s\n", n, time.Since(start).Round(time.Millisecond))

	nodes := make([]*model.Node, n)
	want := map[string]string{}
	for i, s := range sims {
		nodes[i] = &model.Node{UUID: fmt.Sprintf("bench-%02d", i), Driver: "ipmi", DriverInfo: s.DriverInfo()}
		want[nodes[i].UUID] = map[bool]string{true: drivers.PowerOn, false: drivers.PowerOff}[s.Power()]
	}

	var cold, warm, tool []time.Duration
	for r := 0; r < rounds; r++ {
		d := ipmi.New(ipmi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		el, err := driverRound(d, nodes, want)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-ipmi: driver round:", err)
			return 1
		}
		cold = append(cold, el)
		el, err = driverRound(d, nodes, want)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-ipmi: driver round:", err)
			return 1
		}
		warm = append(warm, el)
		_ = d.Close()

		el, err = ipmitoolRound(sims)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-ipmi: ipmitool round:", err)
			return 1
		}
		tool = append(tool, el)
		fmt.Printf("round %d: ironlite cold %s, warm %s; ipmitool sequential %s\n", r+1,
			cold[r].Round(time.Millisecond), warm[r].Round(time.Millisecond), tool[r].Round(time.Millisecond))
	}
	c, w, t := median(cold), median(warm), median(tool)
	fmt.Printf("\npower status of %d BMCs (median of %d rounds):\n", n, rounds)
	fmt.Printf("  ironlite ipmi driver, concurrent, new sessions:   %8s\n", c.Round(time.Millisecond))
	fmt.Printf("  ironlite ipmi driver, concurrent, reused sessions: %7s\n", w.Round(time.Millisecond))
	fmt.Printf("  ipmitool -C 3 power status, one process per BMC:  %8s  (%s per BMC)\n", t.Round(time.Millisecond), (t / time.Duration(n)).Round(time.Millisecond))
	fmt.Printf("  ratio ipmitool/ironlite: %.1fx (new sessions), %.1fx (reused sessions); target >= 10x\n",
		float64(t)/float64(c), float64(t)/float64(w))
	if float64(t)/float64(c) < 10 {
		fmt.Println("  WARNING: below the 10x target")
	}
	return 0
}

func driverRound(d *ipmi.Driver, nodes []*model.Node, want map[string]string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := d.Power.PowerState(ctx, n)
			if err == nil && st != want[n.UUID] {
				err = fmt.Errorf("%s: got %q, want %q", n.UUID, st, want[n.UUID])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	el := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return el, nil
}

func ipmitoolRound(sims []*ipmisim.Sim) (time.Duration, error) {
	start := time.Now()
	for _, s := range sims {
		// The password goes through a file, as Ironic does (-f), not argv.
		pw, err := os.CreateTemp("", "bench-ipmi-pw-")
		if err != nil {
			return 0, err
		}
		_, _ = pw.WriteString(s.Password)
		pw.Close()
		out, err := exec.Command("ipmitool", "-I", "lanplus", "-C", "3", "-H", s.Addr, "-p", fmt.Sprint(s.Port),
			"-U", s.User, "-f", pw.Name(), "-L", "ADMINISTRATOR", "-R", "1", "-N", "1", "power", "status").CombinedOutput()
		os.Remove(pw.Name())
		if err != nil || !strings.HasPrefix(string(out), "Chassis Power is") {
			return 0, fmt.Errorf("ipmitool on port %d: %v: %s", s.Port, err, out)
		}
	}
	return time.Since(start), nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
