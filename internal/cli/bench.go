package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// Stats summarises latencies in milliseconds.
type Stats struct {
	N   int     `json:"n"`
	Min float64 `json:"min"`
	P50 float64 `json:"median"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Summarise computes Stats over durations, picking quantiles the way the peer
// script does (index q·n), so the two are comparable.
func Summarise(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	return summariseValues(ms)
}

// summariseValues computes Stats over values of any unit, as Summarise does.
func summariseValues(vs []float64) Stats {
	if len(vs) == 0 {
		return Stats{}
	}
	ms := slices.Clone(vs)
	slices.Sort(ms)
	pick := func(q float64) float64 { return ms[min(len(ms)-1, int(q*float64(len(ms))))] }
	med := ms[len(ms)/2]
	if len(ms)%2 == 0 {
		med = (ms[len(ms)/2-1] + ms[len(ms)/2]) / 2
	}
	return Stats{N: len(ms), Min: ms[0], P50: med, P90: pick(0.9), P99: pick(0.99), Max: ms[len(ms)-1]}
}

type peerResult struct {
	Peer    string `json:"peer"`
	StartMs Stats  `json:"start_ms"`
	ExecMs  Stats  `json:"exec_ms"`
}

type benchReport struct {
	Backend     string      `json:"backend"`
	CreateFirst Stats       `json:"create_to_first_result_ms"`
	Exec        Stats       `json:"run_code_1plus1_ms"`
	Peer        *peerResult `json:"peer,omitempty"`
	PeerError   string      `json:"peer_error,omitempty"`
}

const benchUsage = `usage: ds-sandbox bench [flags]
       ds-sandbox bench SCENARIO [flags]

Without a scenario: measures, embedded, how long creating a sandbox until its
first result takes and RunCode("1+1") round trips, beside a bare
jupyter_client (--peer).
`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := newCommand("bench", benchUsage+scenarioHelp(), stdout, stderr)
	var (
		backend   = fl.String("backend", "", "backend to measure (default: the configured one)")
		network   = fl.String("network", "", "network policy of the sandboxes (allow | deny | whitelist; default: the configured one)")
		whitelist = fl.String("whitelist", "", "comma-separated destinations under --network whitelist")
		creates   = fl.Int("creates", 5, "sandboxes to create (create → first result samples)")
		execs     = fl.Int("execs", 200, "RunCode(\"1+1\") round trips")
		peer      = fl.String("peer", "", "path of the peer script jupyter_client_bench.py ('' skips the peer)")
		python    = fl.String("peer-python", "/usr/bin/python3", "interpreter for the peer script")
		asJSON    = fl.Bool("json", false, "print JSON")
		cfgPath   = fl.String("config", "", "config file")
	)
	if st, ok := fl.parse(args); !ok {
		return st
	}
	if st, ok := fl.wantArgs(0, 0); !ok {
		return st
	}
	if *creates < 1 || *execs < 1 {
		fmt.Fprintln(stderr, "ds-sandbox bench: --creates and --execs must be at least 1")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox bench:", err)
		return 1
	}
	var policy *api.NetworkPolicy
	if *network != "" || *whitelist != "" {
		p := *network
		if p == "" {
			p = api.NetworkWhitelist
		}
		policy = &api.NetworkPolicy{Policy: p, Whitelist: splitList(*whitelist)}
	}
	rep, err := bench(ctx, cfg, *backend, policy, *creates, *execs)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox bench:", err)
		return 1
	}
	if *peer != "" {
		pr, err := runPeer(ctx, *python, *peer, *creates, *execs)
		if err != nil {
			rep.PeerError = err.Error()
		} else {
			rep.Peer = pr
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return 0
	}
	printReport(stdout, rep)
	return 0
}

// bench measures create → first result over n sandboxes and RunCode("1+1")
// round trips in one of them.
func bench(ctx context.Context, cfg config.Config, backend string, policy *api.NetworkPolicy, creates, execs int) (*benchReport, error) {
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		return nil, err
	}
	defer m.Close(context.WithoutCancel(ctx))
	rep := &benchReport{Backend: backend}
	if rep.Backend == "" {
		rep.Backend = m.Config().DefaultBackend
	}
	var createDur, execDur []time.Duration
	for i := range creates {
		t0 := time.Now()
		s, err := m.Create(ctx, api.CreateSandboxRequest{Backend: backend, Network: policy})
		if err != nil {
			return nil, err
		}
		ex, err := s.Agent().Execute(ctx, api.ExecuteRequest{Code: "1+1"}, nil)
		if err == nil && ex.Text() != "2" {
			err = fmt.Errorf("1+1 gave %q (error %v)", ex.Text(), ex.Error)
		}
		if err != nil {
			_ = m.Kill(ctx, s.ID())
			return nil, err
		}
		createDur = append(createDur, time.Since(t0))
		if i == 0 {
			for range execs {
				t1 := time.Now()
				if _, err := s.Agent().Execute(ctx, api.ExecuteRequest{Code: "1+1"}, nil); err != nil {
					_ = m.Kill(ctx, s.ID())
					return nil, err
				}
				execDur = append(execDur, time.Since(t1))
			}
		}
		if err := m.Kill(ctx, s.ID()); err != nil {
			return nil, err
		}
	}
	rep.CreateFirst = Summarise(createDur)
	rep.Exec = Summarise(execDur)
	return rep, nil
}

func runPeer(ctx context.Context, python, script string, kernels, execs int) (*peerResult, error) {
	if _, err := os.Stat(script); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, script, "--kernels", fmt.Sprint(kernels), "--execs", fmt.Sprint(execs))
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("peer: %v: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("peer: %w", err)
	}
	var pr peerResult
	if err := json.Unmarshal(out, &pr); err != nil {
		return nil, fmt.Errorf("peer output: %w", err)
	}
	return &pr, nil
}

func printReport(w io.Writer, r *benchReport) {
	fmt.Fprintf(w, "backend %s\n", r.Backend)
	fmt.Fprintf(w, "%-34s %6s %9s %9s %9s\n", "measure", "n", "p50 ms", "p99 ms", "max ms")
	row := func(name string, s Stats) {
		fmt.Fprintf(w, "%-34s %6d %9.2f %9.2f %9.2f\n", name, s.N, s.P50, s.P99, s.Max)
	}
	row("ds-sandbox create→first result", r.CreateFirst)
	row("ds-sandbox RunCode(\"1+1\")", r.Exec)
	if r.Peer == nil {
		if r.PeerError != "" {
			fmt.Fprintf(w, "peer failed: %s\n", r.PeerError)
		}
		return
	}
	row("jupyter_client kernel start→ready", r.Peer.StartMs)
	row("jupyter_client execute(\"1+1\")", r.Peer.ExecMs)
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	fmt.Fprintf(w, "ratio ours/peer  create→first result vs kernel start: p50 %.2f  p99 %.2f\n",
		ratio(r.CreateFirst.P50, r.Peer.StartMs.P50), ratio(r.CreateFirst.P99, r.Peer.StartMs.P99))
	fmt.Fprintf(w, "ratio ours/peer  run_code 1+1:                        p50 %.2f  p99 %.2f\n",
		ratio(r.Exec.P50, r.Peer.ExecMs.P50), ratio(r.Exec.P99, r.Peer.ExecMs.P99))
}
