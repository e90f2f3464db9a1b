// Command bench-api.d is the load generator behind scripts/bench-api.
//
//	bench-api.d run -url http://127.0.0.1:PORT -label ironlite -pid PID -n 1000 -out r.json
//	bench-api.d report r-ironlite.json [r-ironic.json]
//
// "run" creates N fake-hardware nodes (the first half one request at a time,
// the second half from -parallel workers), then times GET /v1/nodes/detail
// and a walk of GET /v1/nodes?limit=100 following "next", and reads the
// server's resident memory from /proc. "report" prints one or two such
// results side by side with the ratios. It measures; it asserts nothing.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const microversion = "1.82"

// Latency summarises a set of request durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Mean  float64 `json:"mean_ms"`
	Max   float64 `json:"max_ms"`
}

// Create is one creation phase.
type Create struct {
	Requests   int     `json:"requests"`
	Workers    int     `json:"workers"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
	Latency    Latency `json:"latency"`
}

// Result is what "run" writes.
type Result struct {
	Label        string  `json:"label"`
	URL          string  `json:"url"`
	N            int     `json:"n"`
	Reps         int     `json:"reps"`
	PageSize     int     `json:"page_size"`
	CreateSeq    Create  `json:"create_sequential"`
	CreatePar    Create  `json:"create_parallel"`
	Detail       Latency `json:"list_detail"`
	DetailNodes  int     `json:"list_detail_nodes"`
	DetailBytes  int     `json:"list_detail_bytes"`
	Page         Latency `json:"list_page"`
	Walk         Latency `json:"list_walk"`
	WalkPages    int     `json:"list_walk_pages"`
	WalkNodes    int     `json:"list_walk_nodes"`
	ListErrors   int     `json:"list_errors"`
	RSSIdleKiB   int64   `json:"rss_idle_kib"`
	RSSKiB       int64   `json:"rss_kib"`
	HWMKiB       int64   `json:"hwm_kib"`
	TotalSeconds float64 `json:"total_seconds"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		run(os.Args[2:])
	case "report":
		report(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bench-api.d run -url URL [-label L] [-pid PID] [-n N] [-parallel P] [-reps R] [-out FILE]")
	fmt.Fprintln(os.Stderr, "       bench-api.d report RESULT.json [BASELINE.json]")
	os.Exit(2)
}

type client struct {
	base string
	http *http.Client
}

func (c *client) do(method, path string, body []byte) (int, []byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("X-OpenStack-Ironic-API-Version", microversion)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	t0 := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, time.Since(t0), err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, b, time.Since(t0), err
}

func run(args []string) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	base := fs.String("url", "", "API endpoint, e.g. http://127.0.0.1:6385")
	label := fs.String("label", "server", "name in the report")
	pid := fs.Int("pid", 0, "server process id (for VmRSS); 0 skips")
	n := fs.Int("n", 1000, "nodes to create")
	par := fs.Int("parallel", 8, "workers for the parallel half of the creation")
	reps := fs.Int("reps", 20, "repetitions of each list measurement")
	pageSize := fs.Int("page-size", 100, "limit for the paged list")
	out := fs.String("out", "", "write the JSON result here (default stdout)")
	fs.Parse(args)
	u, err := url.Parse(*base)
	if err != nil || u.Host == "" {
		fatalf("-url: need http://127.0.0.1:PORT, got %q", *base)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		fatalf("-url: refusing a non-loopback host %q", h)
	}
	c := &client{
		base: strings.TrimRight(*base, "/"),
		http: &http.Client{
			Timeout: 5 * time.Minute,
			Transport: &http.Transport{
				MaxIdleConns:        *par + 4,
				MaxIdleConnsPerHost: *par + 4,
				DisableCompression:  true,
				IdleConnTimeout:     time.Minute,
			},
		},
	}
	r := Result{Label: *label, URL: c.base, N: *n, Reps: *reps, PageSize: *pageSize}
	start := time.Now()

	// Warm up (connection, caches, lazy imports on the Python side).
	for i := 0; i < 5; i++ {
		if code, b, _, err := c.do("GET", "/v1/nodes?limit=1", nil); err != nil || code != 200 {
			fatalf("%s: GET /v1/nodes?limit=1: %d %v %s", *label, code, err, trim(b))
		}
	}
	r.RSSIdleKiB, _ = rss(*pid)

	seq := *n / 2
	logf("%s: creating %d nodes sequentially", *label, seq)
	r.CreateSeq = create(c, 0, seq, 1)
	logf("%s: creating %d nodes with %d workers", *label, *n-seq, *par)
	r.CreatePar = create(c, seq, *n-seq, *par)

	logf("%s: GET /v1/nodes/detail x%d", *label, *reps)
	var detail []time.Duration
	for i := 0; i < *reps; i++ {
		code, b, d, err := c.do("GET", "/v1/nodes/detail", nil)
		if err != nil || code != 200 {
			r.ListErrors++
			continue
		}
		detail = append(detail, d)
		var page struct {
			Nodes []json.RawMessage `json:"nodes"`
		}
		if json.Unmarshal(b, &page) == nil {
			r.DetailNodes = len(page.Nodes)
		}
		r.DetailBytes = len(b)
	}
	r.Detail = summarize(detail)

	logf("%s: paged walk GET /v1/nodes?limit=%d following next, x%d", *label, *pageSize, *reps)
	var pages, walks []time.Duration
	for i := 0; i < *reps; i++ {
		path := fmt.Sprintf("/v1/nodes?limit=%d", *pageSize)
		var total time.Duration
		nodes, calls := 0, 0
		ok := true
		for path != "" {
			code, b, d, err := c.do("GET", path, nil)
			calls++
			if err != nil || code != 200 {
				r.ListErrors++
				ok = false
				break
			}
			pages = append(pages, d)
			total += d
			var page struct {
				Nodes []json.RawMessage `json:"nodes"`
				Next  string            `json:"next"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				r.ListErrors++
				ok = false
				break
			}
			nodes += len(page.Nodes)
			path = ""
			if page.Next != "" && len(page.Nodes) > 0 {
				nu, err := url.Parse(page.Next)
				if err != nil {
					r.ListErrors++
					ok = false
					break
				}
				path = nu.RequestURI() // always against our loopback base
			}
			if calls > 10000 {
				ok = false
				break
			}
		}
		if ok {
			walks = append(walks, total)
			r.WalkPages, r.WalkNodes = calls, nodes
		}
	}
	r.Page = summarize(pages)
	r.Walk = summarize(walks)
	r.RSSKiB, r.HWMKiB = rss(*pid)
	r.TotalSeconds = time.Since(start).Seconds()

	b, _ := json.MarshalIndent(r, "", "  ")
	if *out == "" {
		os.Stdout.Write(append(b, '\n'))
		return
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fatalf("%v", err)
	}
}

func create(c *client, from, count, workers int) Create {
	res := Create{Requests: count, Workers: workers}
	if count <= 0 {
		return res
	}
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, count)
		wg   sync.WaitGroup
		next = make(chan int)
	)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body, _ := json.Marshal(map[string]any{
					"driver": "fake-hardware",
					"name":   fmt.Sprintf("bench-%06d", i),
					"driver_info": map[string]any{
						"ipmi_address":  fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
						"ipmi_username": "admin",
						"ipmi_password": "bench-secret",
					},
					"properties": map[string]any{
						"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64",
					},
					"resource_class": "baremetal",
				})
				code, b, d, err := c.do("POST", "/v1/nodes", body)
				mu.Lock()
				lats = append(lats, d)
				if err != nil || code != 201 {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = fmt.Sprintf("HTTP %d %v %s", code, err, trim(b))
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := from; i < from+count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	res.Seconds = time.Since(t0).Seconds()
	res.PerSecond = float64(count) / res.Seconds
	res.Latency = summarize(lats)
	return res
}

func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rank := func(p float64) time.Duration { // nearest-rank percentile
		k := int(math.Ceil(p*float64(len(s)))) - 1
		if k < 0 {
			k = 0
		}
		return s[k]
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{
		Count: len(s),
		P50:   ms(rank(0.50)),
		P99:   ms(rank(0.99)),
		Mean:  ms(sum / time.Duration(len(s))),
		Max:   ms(s[len(s)-1]),
	}
}

// rss returns VmRSS and VmHWM (KiB) of pid plus all its descendants.
func rss(pid int) (rssKiB, hwmKiB int64) {
	if pid <= 0 {
		return 0, 0
	}
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 {
			continue
		}
		p, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
		pp, _ := strconv.Atoi(fields[1])
		children[pp] = append(children[pp], p)
	}
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		todo = append(todo, children[p]...)
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				rssKiB += v
			case "VmHWM:":
				hwmKiB += v
			}
		}
	}
	return rssKiB, hwmKiB
}

func report(args []string) {
	if len(args) < 1 || len(args) > 2 {
		usage()
	}
	var rs []Result
	for _, f := range args {
		b, err := os.ReadFile(f)
		if err != nil {
			fatalf("%v", err)
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			fatalf("%s: %v", f, err)
		}
		rs = append(rs, r)
	}
	a := rs[0]
	two := len(rs) == 2
	fmt.Printf("bench-api: %d fake-hardware nodes (%d sequential + %d with %d workers), lists x%d, microversion %s\n",
		a.N, a.CreateSeq.Requests, a.CreatePar.Requests, a.CreatePar.Workers, a.Reps, microversion)
	hdr := fmt.Sprintf("%-44s %14s", "", a.Label)
	if two {
		hdr += fmt.Sprintf(" %14s %9s  %s", rs[1].Label, "ratio", "target")
	}
	fmt.Println(hdr)
	type row struct {
		name   string
		get    func(Result) float64
		format string
		higher bool   // higher is better: ratio a/b, else b/a
		target string // printed next to the ratio
		goal   float64
	}
	mib := func(k int64) float64 { return float64(k) / 1024 }
	rows := []row{
		{"create, sequential (nodes/s)", func(r Result) float64 { return r.CreateSeq.PerSecond }, "%14.1f", true, ">= 20x", 20},
		{fmt.Sprintf("create, %d parallel (nodes/s)", a.CreatePar.Workers), func(r Result) float64 { return r.CreatePar.PerSecond }, "%14.1f", true, ">= 20x", 20},
		{"create, sequential: p50 latency (ms)", func(r Result) float64 { return r.CreateSeq.Latency.P50 }, "%14.2f", false, "", 0},
		{"create, sequential: p99 latency (ms)", func(r Result) float64 { return r.CreateSeq.Latency.P99 }, "%14.2f", false, "", 0},
		{"GET /v1/nodes/detail (all): p50 (ms)", func(r Result) float64 { return r.Detail.P50 }, "%14.2f", false, ">= 20x", 20},
		{"GET /v1/nodes/detail (all): p99 (ms)", func(r Result) float64 { return r.Detail.P99 }, "%14.2f", false, ">= 20x", 20},
		{"GET /v1/nodes/detail: nodes in response", func(r Result) float64 { return float64(r.DetailNodes) }, "%14.0f", true, "", 0},
		{"GET /v1/nodes/detail: response (KiB)", func(r Result) float64 { return float64(r.DetailBytes) / 1024 }, "%14.0f", true, "", 0},
		{fmt.Sprintf("GET /v1/nodes?limit=%d, per page: p50 (ms)", a.PageSize), func(r Result) float64 { return r.Page.P50 }, "%14.2f", false, ">= 20x", 20},
		{fmt.Sprintf("GET /v1/nodes?limit=%d, per page: p99 (ms)", a.PageSize), func(r Result) float64 { return r.Page.P99 }, "%14.2f", false, ">= 20x", 20},
		{"paged walk following next: p50 (ms)", func(r Result) float64 { return r.Walk.P50 }, "%14.2f", false, ">= 20x", 20},
		{"paged walk: calls / nodes seen", nil, "", false, "", 0},
		{"RSS idle, before creating (MiB)", func(r Result) float64 { return mib(r.RSSIdleKiB) }, "%14.1f", false, "", 0},
		{fmt.Sprintf("RSS with %d nodes, after the lists (MiB)", a.N), func(r Result) float64 { return mib(r.RSSKiB) }, "%14.1f", false, "ours <= 60 MiB", 0},
		{"peak RSS, VmHWM (MiB)", func(r Result) float64 { return mib(r.HWMKiB) }, "%14.1f", false, "", 0},
		{"create errors / list errors", nil, "", false, "", 0},
	}
	for _, rw := range rows {
		line := fmt.Sprintf("%-44s", rw.name)
		if rw.get == nil {
			for _, r := range rs {
				switch {
				case strings.HasPrefix(rw.name, "paged"):
					line += fmt.Sprintf(" %14s", fmt.Sprintf("%d / %d", r.WalkPages, r.WalkNodes))
				default:
					line += fmt.Sprintf(" %14s", fmt.Sprintf("%d / %d", r.CreateSeq.Errors+r.CreatePar.Errors, r.ListErrors))
				}
			}
			fmt.Println(line)
			continue
		}
		for _, r := range rs {
			line += fmt.Sprintf(rw.format, rw.get(r))
			line += " "
		}
		line = strings.TrimRight(line, " ")
		if two && rw.target != "" {
			x, y := rw.get(rs[0]), rw.get(rs[1])
			ratio := 0.0
			if rw.higher && y > 0 {
				ratio = x / y
			} else if !rw.higher && x > 0 {
				ratio = y / x
			}
			verdict := ""
			if rw.goal > 0 {
				verdict = "  met"
				if ratio < rw.goal {
					verdict = "  NOT met"
				}
			} else if strings.HasPrefix(rw.target, "ours <=") {
				verdict = "  met"
				if mib(rs[0].RSSKiB) > 60 {
					verdict = "  NOT met"
				}
			}
			line += fmt.Sprintf(" %8.1fx  %s%s", ratio, rw.target, verdict)
		} else if !two && strings.HasPrefix(rw.target, "ours <=") {
			line += "  (target <= 60 MiB)"
		}
		fmt.Println(line)
	}
	for _, r := range rs {
		if e := r.CreateSeq.FirstError + r.CreatePar.FirstError; e != "" {
			fmt.Printf("%s: first create error: %s\n", r.Label, e)
		}
		if r.DetailNodes != r.N {
			fmt.Printf("%s: note: /v1/nodes/detail returned %d of %d nodes (server page limit)\n", r.Label, r.DetailNodes, r.N)
		}
		if r.WalkNodes != r.N {
			fmt.Printf("%s: note: the paged walk saw %d of %d nodes\n", r.Label, r.WalkNodes, r.N)
		}
	}
	if two {
		fmt.Println("ratios: throughput = ours/theirs; latency = theirs/ours (how many times faster); RSS = theirs/ours")
	}
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-api: "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-api: "+format+"\n", args...)
	os.Exit(1)
}
