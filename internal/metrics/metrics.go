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

// Pool is one warm pool's state (see manager.PoolStats).
type Pool struct {
	Index                     int
	Template, Backend         string
	Size, Ready, Starting     int
	Hits, Misses              uint64
	Dropped, Recycled, Failed uint64
	Failing                   bool
}

// WatchPools reports the warm pools at every scrape, labelled by the pool's
// index in the configuration, its template and backend: configured size,
// ready and starting sandboxes, hits, misses, dropped and recycled
// sandboxes, refill failures and whether it is failing now; unmatched
// counts creates that matched no pool.
func (m *Metrics) WatchPools(pools func() []Pool, unmatched func() uint64) {
	labels := []string{"pool", "template", "backend"}
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, labels, nil) }
	series := []struct {
		desc *prometheus.Desc
		typ  prometheus.ValueType
		val  func(Pool) float64
	}{
		{desc("dssandbox_pool_size", "Ready sandboxes a warm pool keeps (pools[].size)."), prometheus.GaugeValue, func(p Pool) float64 { return float64(p.Size) }},
		{desc("dssandbox_pool_ready", "Ready sandboxes in a warm pool now."), prometheus.GaugeValue, func(p Pool) float64 { return float64(p.Ready) }},
		{desc("dssandbox_pool_starting", "Sandboxes a warm pool is starting now."), prometheus.GaugeValue, func(p Pool) float64 { return float64(p.Starting) }},
		{desc("dssandbox_pool_hits_total", "Creates that took a warm pool's ready sandbox."), prometheus.CounterValue, func(p Pool) float64 { return float64(p.Hits) }},
		{desc("dssandbox_pool_misses_total", "Creates that matched a warm pool while it had none ready (started cold)."), prometheus.CounterValue, func(p Pool) float64 { return float64(p.Misses) }},
		{desc("dssandbox_pool_dropped_total", "Pooled sandboxes found dead and dropped."), prometheus.CounterValue, func(p Pool) float64 { return float64(p.Dropped) }},
		{desc("dssandbox_pool_recycled_total", "Pooled sandboxes replaced (max_age_sec, a changed template, room for a create)."), prometheus.CounterValue, func(p Pool) float64 { return float64(p.Recycled) }},
		{desc("dssandbox_pool_refill_failures_total", "Failed refills of a warm pool."), prometheus.CounterValue, func(p Pool) float64 { return float64(p.Failed) }},
		{desc("dssandbox_pool_failing", "1 while a warm pool's last refill failed (it backs off; creates start cold)."), prometheus.GaugeValue, func(p Pool) float64 {
			if p.Failing {
				return 1
			}
			return 0
		}},
	}
	for _, s := range series {
		m.reg.MustRegister(collectorFunc{desc: s.desc, collect: func(ch chan<- prometheus.Metric) {
			for _, p := range pools() {
				ch <- prometheus.MustNewConstMetric(s.desc, s.typ, s.val(p), strconv.Itoa(p.Index), p.Template, p.Backend)
			}
		}})
	}
	um := prometheus.NewDesc("dssandbox_pool_unmatched_creates_total", "Creates, while warm pools are configured, that matched no pool or could not take a pooled sandbox (a named workspace, a template with files or commands).", nil, nil)
	m.reg.MustRegister(collectorFunc{desc: um, collect: func(ch chan<- prometheus.Metric) {
		ch <- prometheus.MustNewConstMetric(um, prometheus.CounterValue, float64(unmatched()))
	}})
}
