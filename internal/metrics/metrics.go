// Package metrics exposes ds-sandbox's Prometheus metrics. Prometheus types
// stay inside this package: callers use the methods below.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the daemon's metric set, on its own registry.
type Metrics struct {
	reg            *prometheus.Registry
	creates        *prometheus.CounterVec
	stops          *prometheus.CounterVec
	execs          *prometheus.CounterVec
	execDur        prometheus.Histogram
	errors         *prometheus.CounterVec
	kernelStarts   prometheus.Counter
	kernelRestarts prometheus.Counter
	httpReqs       *prometheus.CounterVec
	httpDur        *prometheus.HistogramVec
}

// SandboxCount is one (state, backend) series of the sandboxes gauge.
type SandboxCount struct {
	State, Backend string
	N              int
}

// New builds the metrics. sandboxes is called at every scrape to report the
// sandboxes by state and backend.
func New(sandboxes func() []SandboxCount) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		creates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dssandbox_sandbox_creates_total", Help: "Sandboxes created, by backend.",
		}, []string{"backend"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dssandbox_sandbox_kills_total", Help: "Sandboxes stopped, by reason (killed, timeout, sandbox exited, reaped).",
		}, []string{"reason"}),
		execs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dssandbox_executions_total", Help: "Code executions, by outcome (ok, error, timeout, oom, dead_kernel, blocked, failed, cancelled).",
		}, []string{"outcome"}),
		execDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dssandbox_execution_duration_seconds", Help: "Duration of code executions.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dssandbox_errors_total", Help: "API errors, by stable error code.",
		}, []string{"code"}),
		kernelStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dssandbox_kernel_starts_total", Help: "Jupyter kernels started (a sandbox's default context, new contexts).",
		}),
		kernelRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dssandbox_kernel_restarts_total", Help: "Kernels restarted (on request, or after a kernel died).",
		}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dssandbox_http_requests_total", Help: "HTTP requests, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dssandbox_http_request_duration_seconds", Help: "HTTP request duration (streams: until the stream ended), by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	gauge := prometheus.NewDesc("dssandbox_sandboxes", "Sandboxes, by state and backend.", []string{"state", "backend"}, nil)
	m.reg.MustRegister(m.creates, m.stops, m.execs, m.execDur, m.errors, m.kernelStarts, m.kernelRestarts,
		m.httpReqs, m.httpDur, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectorFunc{desc: gauge, collect: func(ch chan<- prometheus.Metric) {
			for _, c := range sandboxes() {
				ch <- prometheus.MustNewConstMetric(gauge, prometheus.GaugeValue, float64(c.N), c.State, c.Backend)
			}
		}})
	return m
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SandboxCreated counts a create on backend.
func (m *Metrics) SandboxCreated(backend string) { m.creates.WithLabelValues(backend).Inc() }

// SandboxStopped counts a sandbox that stopped for reason.
func (m *Metrics) SandboxStopped(reason string) { m.stops.WithLabelValues(reason).Inc() }

// Execution records one execution's outcome and duration.
func (m *Metrics) Execution(outcome string, d time.Duration) {
	m.execs.WithLabelValues(outcome).Inc()
	m.execDur.Observe(d.Seconds())
}

// Error counts an API error by code.
func (m *Metrics) Error(code string) { m.errors.WithLabelValues(code).Inc() }

// KernelStarted counts a kernel start.
func (m *Metrics) KernelStarted() { m.kernelStarts.Inc() }

// KernelRestarted counts a kernel restart.
func (m *Metrics) KernelRestarted() { m.kernelRestarts.Inc() }

// HTTPRequest records one request by route pattern.
func (m *Metrics) HTTPRequest(route, method string, status int, d time.Duration) {
	m.httpReqs.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpDur.WithLabelValues(route).Observe(d.Seconds())
}

// Starts is the start gate's state (see manager.StartStats).
type Starts struct {
	Slots, Running, Waiting int
	Admitted, Refused       uint64
	WaitSeconds             float64
}

// WatchStarts reports the sandbox start gate at every scrape: slots, starts
// running and waiting (the queue's depth), and the totals of admitted and
// refused starts and of the time admitted ones waited.
func (m *Metrics) WatchStarts(stats func() Starts) {
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	slots := desc("dssandbox_start_slots", "Sandboxes that may start at once (max_concurrent_starts).")
	running := desc("dssandbox_starts_running", "Sandboxes starting now (holding a start slot).")
	waiting := desc("dssandbox_start_queue_depth", "Creates waiting for a start slot.")
	admitted := desc("dssandbox_starts_admitted_total", "Starts let through the start gate.")
	refused := desc("dssandbox_starts_refused_total", "Creates refused for load (HTTP 429 with Retry-After).")
	waited := desc("dssandbox_start_wait_seconds_total", "Total time admitted starts waited for a slot.")
	for _, d := range []struct {
		desc *prometheus.Desc
		typ  prometheus.ValueType
		val  func(Starts) float64
	}{
		{slots, prometheus.GaugeValue, func(s Starts) float64 { return float64(s.Slots) }},
		{running, prometheus.GaugeValue, func(s Starts) float64 { return float64(s.Running) }},
		{waiting, prometheus.GaugeValue, func(s Starts) float64 { return float64(s.Waiting) }},
		{admitted, prometheus.CounterValue, func(s Starts) float64 { return float64(s.Admitted) }},
		{refused, prometheus.CounterValue, func(s Starts) float64 { return float64(s.Refused) }},
		{waited, prometheus.CounterValue, func(s Starts) float64 { return s.WaitSeconds }},
	} {
		m.reg.MustRegister(collectorFunc{desc: d.desc, collect: func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(d.desc, d.typ, d.val(stats()))
		}})
	}
}
