package agent

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// scrape fetches url and returns its samples by series (`name{labels}`, as written).
func scrape(url string) (map[string]float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	response, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = response.Body.Close() }()
	if response.StatusCode != http.StatusOK {
		return nil, errors.New(response.Status)
	}
	samples := map[string]float64{}
	lines := bufio.NewScanner(response.Body)
	for lines.Scan() {
		line := lines.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		value, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, err
		}
		samples[line[:i]] = value
	}
	return samples, lines.Err()
}

var metricsLine = regexp.MustCompile(`metrics on (http://127\.0\.0\.1:\d+/metrics)`)

func TestMetricsCountLeasesOutcomesAndRunTimeOnTheirOwnEndpoint(t *testing.T) {
	f := startFake(t)
	g := newGate()
	h := handlers(g)
	h["fail"] = func(context.Context, []any, map[string]any) (any, error) { return nil, errors.New("boom") }
	a, exit, logs := startAgentOn(t, Config{Coordinator: f.addr, Handlers: h, MetricsListen: "127.0.0.1:0"}, nil)

	// The log line names the port picked for 0, as the Python worker's does.
	var url string
	f.waitUntil(t, "the metrics log line", func() bool {
		for _, line := range logs.matching("metrics on http://") {
			if m := metricsLine.FindStringSubmatch(line); m != nil {
				url = m[1]
				return true
			}
		}
		return false
	})
	if url != "http://"+a.metrics.addr+"/metrics" || strings.HasSuffix(url, ":0/metrics") {
		t.Fatalf("logged %s, listening on %s", url, a.metrics.addr)
	}
	samples, err := scrape(url)
	if err != nil {
		t.Fatal(err)
	}
	if samples["taskgrid_worker_slots"] != 2 || samples["taskgrid_worker_free_slots_now"] != 2 {
		t.Errorf("slots before any run: %v", samples)
	}
	if _, ok := samples[`taskgrid_worker_runs_total{function="add",outcome="COMPLETED"}`]; ok {
		t.Errorf("a run counted before any ran: %v", samples)
	}

	// A run in progress holds a slot and counts its lease, not yet its end.
	waiting := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the waiting run's lease counted and its slot taken", func() bool {
		s, err := scrape(url)
		return err == nil && s[`taskgrid_worker_leases_total{function="wait"}`] == 1 &&
			s["taskgrid_worker_free_slots_now"] == 1
	})
	added := []runner.Key{f.offer(2, "add", "[1, 2]"), f.offer(3, "add", "[3, 4]")}
	failed := f.offer(4, "fail", "[]")
	for _, key := range append(added, failed) {
		f.waitUntil(t, "the reports", func() bool { return f.report(key) != nil })
	}
	if got := f.report(failed).GetStatus(); got != pb.RunStatus_RUN_STATUS_FAILED {
		t.Fatalf("task 4 reported %v", got)
	}
	close(g.release)
	f.waitUntil(t, "the waiting run's report", func() bool { return f.report(waiting) != nil })

	// Counted when the run ended, before its report was queued: one scrape sees all.
	samples, err = scrape(url)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`taskgrid_worker_leases_total{function="add"}`:                    2,
		`taskgrid_worker_leases_total{function="fail"}`:                   1,
		`taskgrid_worker_leases_total{function="wait"}`:                   1,
		`taskgrid_worker_runs_total{function="add",outcome="COMPLETED"}`:  2,
		`taskgrid_worker_runs_total{function="fail",outcome="FAILED"}`:    1,
		`taskgrid_worker_runs_total{function="wait",outcome="COMPLETED"}`: 1,
		`taskgrid_worker_run_seconds_count{function="add"}`:               2,
		`taskgrid_worker_run_seconds_count{function="fail"}`:              1,
		`taskgrid_worker_run_seconds_count{function="wait"}`:              1,
		`taskgrid_worker_run_seconds_bucket{function="add",le="3600"}`:    2,
		`taskgrid_worker_run_seconds_bucket{function="add",le="+Inf"}`:    2,
		`taskgrid_worker_slots`:                                           2,
		`taskgrid_worker_free_slots_now`:                                  2,
	}
	for series, value := range want {
		if got, ok := samples[series]; !ok || got != value {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, value)
		}
	}
	if got := samples[`taskgrid_worker_run_seconds_sum{function="wait"}`]; got <= 0 {
		t.Errorf("wait run time %v", got)
	}
	// The buckets are the Python worker's.
	var les []string
	for series := range samples {
		if m := regexp.MustCompile(`^taskgrid_worker_run_seconds_bucket\{function="add",le="([^"]+)"\}$`).FindStringSubmatch(series); m != nil {
			les = append(les, m[1])
		}
	}
	if len(les) != len(RunBuckets)+1 {
		t.Errorf("buckets %v, want %v and +Inf", les, RunBuckets)
	}
	for _, bound := range RunBuckets {
		series := `taskgrid_worker_run_seconds_bucket{function="add",le="` + strconv.FormatFloat(bound, 'g', -1, 64) + `"}`
		if _, ok := samples[series]; !ok {
			t.Errorf("no bucket %s", series)
		}
	}

	// The endpoint goes away with the worker.
	a.RequestDrain()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not leave")
	}
	if _, err := scrape(url); err == nil {
		t.Error("/metrics still served after the worker exited")
	}
}

func TestNoMetricsWithoutMetricsListenAndABadAddressFailsNew(t *testing.T) {
	f := startFake(t)
	a, _ := startAgent(t, f, handlers(newGate()))
	if a.metrics != nil {
		t.Error("metrics collected without MetricsListen")
	}
	for _, bad := range []string{"no-port", "127.0.0.1:notaport"} {
		if _, err := New(Config{Coordinator: f.addr, MetricsListen: bad}); err == nil ||
			!strings.Contains(err.Error(), "--metrics-listen") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
