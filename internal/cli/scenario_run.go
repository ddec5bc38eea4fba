package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// The scenarios themselves. Each fills h.rep; a failed request or a wrong
// result is counted in h.rep.Errors and the scenario goes on; an error
// returned means the scenario could not measure at all.

// benchFirstDSCell: create → the result of dsCell, beside a bare
// `python3 -c 'import pandas, numpy, matplotlib.pyplot'`, interleaved.
func benchFirstDSCell(ctx context.Context, h *harness) error {
	ours, base := h.samples(ctx, h.o.n, "create → first cell", func() error {
		s, err := h.create(ctx)
		if err != nil {
			return err
		}
		h.afterSample(func() { h.killQuietly(ctx, s) })
		return h.run(ctx, s, dsCell, "4950")
	}, "bare import", func() error {
		return runPython(ctx, h.o, "import pandas, numpy, matplotlib.pyplot")
	})
	h.rep.Latency = append(h.rep.Latency, compare("create → result of the first pandas cell", Summarise(ours),
		"python3 -c 'import pandas, numpy, matplotlib.pyplot'", Summarise(base)))
	return nil
}

// benchCreate: create → the result of 1+1, beside jupyter_client's kernel
// start → ready.
func benchCreate(ctx context.Context, h *harness) error {
	ours, _ := h.samples(ctx, h.o.n, "create → 1+1", func() error {
		s, err := h.create(ctx)
		if err != nil {
			return err
		}
		h.afterSample(func() { h.killQuietly(ctx, s) })
		return h.run(ctx, s, "1+1", "2")
	}, "", nil)
	pr, err := jupyterPeer(ctx, h.o, h.o.n, 1)
	if err != nil {
		h.fail("baseline", err)
		pr = &peerResult{}
	}
	h.rep.Latency = append(h.rep.Latency, compare("create → result of 1+1", Summarise(ours),
		"jupyter_client kernel start → ready", pr.StartMs))
	return nil
}

// benchRTT: RunCode("1+1") round trips in one sandbox over the SDK's
// keep-alive connection, beside jupyter_client's execute("1+1").
func benchRTT(ctx context.Context, h *harness) error {
	s, err := h.create(ctx)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := h.run(ctx, s, "1+1", "2"); err != nil { // not timed: the kernel's first cell
		h.fail("first 1+1", err)
	}
	ours, _ := h.samples(ctx, h.o.n, "run_code 1+1", func() error { return h.run(ctx, s, "1+1", "2") }, "", nil)
	if err := h.kill(ctx, s); err != nil {
		h.fail("kill", err)
	}
	pr, err := jupyterPeer(ctx, h.o, 1, h.o.n)
	if err != nil {
		h.fail("baseline", err)
		pr = &peerResult{}
	}
	h.rep.Latency = append(h.rep.Latency, compare("run_code(\"1+1\") over REST, keep-alive", Summarise(ours),
		"jupyter_client execute(\"1+1\")", pr.ExecMs))
	return nil
}

// runPython runs `python -c code` and fails unless it exits 0.
func runPython(ctx context.Context, o scenarioOptions, code string) error {
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out, err := exec.CommandContext(cctx, o.python, "-c", code).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -c %q: %v: %.400s", o.python, code, err, out)
	}
	return nil
}

// peerPy is the jupyter_client baseline: kernels started until ready, and
// execute("1+1") round trips in the first one (as the shared peer script
// jupyter_client_bench.py measures them), printed raw so that the bench
// summarises both sides alike.
const peerPy = `import json, os, sys, time
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
from jupyter_client.manager import KernelManager
kernels, execs = int(sys.argv[1]), int(sys.argv[2])
starts, rtts = [], []
for i in range(kernels):
    km = KernelManager(kernel_name="python3")
    t0 = time.perf_counter()
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        starts.append((time.perf_counter() - t0) * 1000)
        if i == 0:
            for _ in range(execs):
                t1 = time.perf_counter()
                r = kc.execute_interactive("1+1", store_history=False, output_hook=lambda m: None, timeout=120)
                if r["content"]["status"] != "ok":
                    sys.exit("execute: " + r["content"]["status"])
                rtts.append((time.perf_counter() - t1) * 1000)
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
print(json.dumps({"start_ms": starts, "exec_ms": rtts}))
`

// jupyterPeer runs the jupyter_client baseline: o.peerScript when set (the
// shared peer script, which prints its own summaries), else peerPy.
func jupyterPeer(ctx context.Context, o scenarioOptions, kernels, execs int) (*peerResult, error) {
	cctx, cancel := context.WithTimeout(ctx, o.timeout+time.Duration(kernels+execs/50)*o.timeout/4)
	defer cancel()
	if o.peerScript != "" {
		return runPeer(cctx, o.python, o.peerScript, kernels, execs)
	}
	cmd := exec.CommandContext(cctx, o.python, "-c", peerPy, fmt.Sprint(kernels), fmt.Sprint(execs))
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("jupyter_client baseline: %v: %.600s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("jupyter_client baseline: %w", err)
	}
	var raw struct {
		StartMs []float64 `json:"start_ms"`
		ExecMs  []float64 `json:"exec_ms"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("jupyter_client baseline output %.200q: %w", out, err)
	}
	return &peerResult{Peer: "jupyter_client", StartMs: Summarise(msDurations(raw.StartMs)), ExecMs: Summarise(msDurations(raw.ExecMs))}, nil
}

func msDurations(ms []float64) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m * float64(time.Millisecond))
	}
	return out
}

// CyclesResult is what `bench cycles` measured: create → 1+1 → kill cycles
// by --clients concurrent clients, and by one client (the baseline), each
// for --duration.
type CyclesResult struct {
	Clients         int     `json:"clients"`
	DurationSec     float64 `json:"duration_sec"`
	Cycles          int     `json:"cycles"`
	PerSecond       float64 `json:"cycles_per_sec"`
	Cycle           Stats   `json:"cycle_ms"`
	Errors          int     `json:"errors"`
	SerialCycles    int     `json:"serial_cycles"`
	SerialPerSecond float64 `json:"serial_cycles_per_sec"`
	SerialCycle     Stats   `json:"serial_cycle_ms"`
	SerialErrors    int     `json:"serial_errors"`
	RatioPerSecond  float64 `json:"ratio_cycles_per_sec"`
}

func benchCycles(ctx context.Context, h *harness) error {
	run := func(clients int) (n int, perSec float64, st Stats, errs int) {
		before := h.errors()
		var (
			mu  sync.Mutex
			all []time.Duration
			wg  sync.WaitGroup
		)
		start := time.Now()
		end := start.Add(h.o.duration)
		for range clients {
			wg.Go(func() {
				for time.Now().Before(end) && ctx.Err() == nil {
					t0 := time.Now()
					if err := h.cycle(ctx); err != nil {
						h.fail("cycle", err)
						// A daemon that refuses every create is not
						// hammered for the whole duration.
						select {
						case <-time.After(100 * time.Millisecond):
						case <-ctx.Done():
						}
						continue
					}
					mu.Lock()
					all = append(all, time.Since(t0))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		return len(all), float64(len(all)) / el, Summarise(all), h.errors() - before
	}
	c := &CyclesResult{Clients: h.o.clients, DurationSec: h.o.duration.Seconds()}
	c.Cycles, c.PerSecond, c.Cycle, c.Errors = run(h.o.clients)
	c.SerialCycles, c.SerialPerSecond, c.SerialCycle, c.SerialErrors = run(1)
	c.RatioPerSecond = ratio(c.PerSecond, c.SerialPerSecond)
	h.rep.Cycles = c
	return nil
}

// cycle is one create → 1+1 → kill.
func (h *harness) cycle(ctx context.Context) error {
	s, err := h.create(ctx)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	rerr := h.run(ctx, s, "1+1", "2")
	if err := h.kill(ctx, s); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	return rerr
}

func (h *harness) errors() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rep.Errors
}

func printCycles(w io.Writer, c *CyclesResult) {
	fmt.Fprintf(w, "%-34s %8s %10s %9s %9s %7s\n", "create → 1+1 → kill", "cycles", "cycles/s", "p50 ms", "p99 ms", "errors")
	fmt.Fprintf(w, "%-34s %8d %10.2f %9.1f %9.1f %7d\n", fmt.Sprintf("%d concurrent clients, %.0f s", c.Clients, c.DurationSec), c.Cycles, c.PerSecond, c.Cycle.P50, c.Cycle.P99, c.Errors)
	fmt.Fprintf(w, "%-34s %8d %10.2f %9.1f %9.1f %7d\n", fmt.Sprintf("baseline: 1 client, %.0f s", c.DurationSec), c.SerialCycles, c.SerialPerSecond, c.SerialCycle.P50, c.SerialCycle.P99, c.SerialErrors)
	fmt.Fprintf(w, "ratio concurrent/serial cycles/s: %.2f\n", c.RatioPerSecond)
}

// readLine reads the first line of r, or fails when ctx ends first.
func readLine(ctx context.Context, r io.Reader) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := bufio.NewReader(r).ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case x := <-ch:
		return x.s, x.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
