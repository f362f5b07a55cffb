package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"taskgrid.local/worker/runner"
)

// Prometheus metrics of the Go worker, served on Config.MetricsListen: the
// same names, labels and buckets as the Python worker's (worker/metrics.py;
// docs/metrics.md lists them).

// RunBuckets are the run time histogram's buckets (seconds), as the
// Python worker's and the coordinator's.
var RunBuckets = []float64{0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}

// metricsShutdown is how long the /metrics server may take to stop.
const metricsShutdown = 2 * time.Second

// workerMetrics is every metric of one worker, on a registry of its own
// (never the global default one); safe from any goroutine. A nil
// *workerMetrics (no --metrics-listen) collects and serves nothing.
type workerMetrics struct {
	registry   *prometheus.Registry
	leases     *prometheus.CounterVec
	runs       *prometheus.CounterVec
	runSeconds *prometheus.HistogramVec

	listener net.Listener // bound by New, so a bad address fails at start-up
	addr     string       // HOST:PORT actually listened on (the chosen port when 0 was asked)
	server   *http.Server
	served   chan struct{} // closed once Serve returned
}

// newMetrics builds the metrics and binds listen (HOST:PORT; port 0 picks a
// free one, an empty host is 127.0.0.1, as the Python worker's).
func newMetrics(listen string, slots int, freeSlots func() int) (*workerMetrics, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %q: %v", listen, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %q: %v", listen, err)
	}
	_, chosen, _ := net.SplitHostPort(listener.Addr().String())
	m := &workerMetrics{
		registry: prometheus.NewRegistry(),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskgrid_worker_leases_total", Help: "Leases this worker started",
		}, []string{"function"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskgrid_worker_runs_total", Help: "Runs this worker ended, by outcome",
		}, []string{"function", "outcome"}),
		runSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "taskgrid_worker_run_seconds", Help: "Run time, from the child's start to its end",
			Buckets: RunBuckets,
		}, []string{"function"}),
		listener: listener,
		addr:     net.JoinHostPort(host, chosen),
		served:   make(chan struct{}),
	}
	slotsGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "taskgrid_worker_slots", Help: "Slots (tasks run at once) of this worker",
	})
	slotsGauge.Set(float64(slots))
	free := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "taskgrid_worker_free_slots_now", Help: "Slots free at the scrape",
	}, func() float64 { return float64(freeSlots()) })
	m.registry.MustRegister(m.leases, m.runs, m.runSeconds, slotsGauge, free)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	m.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return m, nil
}

// serve answers scrapes on a goroutine until close.
func (m *workerMetrics) serve(log *slog.Logger) {
	if m == nil {
		return
	}
	go func() {
		defer close(m.served)
		if err := m.server.Serve(m.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "error", err)
		}
	}()
	log.Info(fmt.Sprintf("metrics on http://%s/metrics", m.addr))
}

// close stops serving /metrics (scrapes in progress get metricsShutdown to end).
func (m *workerMetrics) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), metricsShutdown)
	defer cancel()
	if err := m.server.Shutdown(ctx); err != nil {
		_ = m.server.Close()
	}
	_ = m.listener.Close() // when serve never ran
}

// started counts a lease whose run began.
func (m *workerMetrics) started(task runner.Task) {
	if m == nil {
		return
	}
	m.leases.WithLabelValues(task.FunctionName).Inc()
}

// finished counts a run's end (any outcome) and its run time.
func (m *workerMetrics) finished(result runner.Result) {
	if m == nil {
		return
	}
	function := result.Task.FunctionName
	m.runs.WithLabelValues(function, result.Outcome.String()).Inc()
	if !result.Started.IsZero() {
		m.runSeconds.WithLabelValues(function).Observe(time.Since(result.Started).Seconds())
	}
}
