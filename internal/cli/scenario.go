package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// The bench scenarios of issue #12 (`ds-sandbox bench SCENARIO`): each
// starts a daemon of its own (this binary's `serve` on a loopback port, a
// fresh state directory), measures through its REST API with the Go SDK's
// remote mode, runs its baseline in the same job, kills every sandbox it
// made and stops the daemon — also when its context ends (Ctrl-C) — and
// then checks that no sandbox and no sandbox process is left.

// scenarios are the scenario names with a line of help each, in the order
// `bench -h` lists them.
var scenarios = []struct{ name, help string }{
	{"first-ds-cell", "create → result of a first pandas+numpy+matplotlib cell; baseline: a bare python3 -c 'import pandas, numpy, matplotlib.pyplot'"},
	{"create-1+1", "create → result of 1+1; baseline: jupyter_client kernel start → ready"},
	{"rtt", "run_code(\"1+1\") round trips over REST (keep-alive); baseline: jupyter_client's execute(\"1+1\")"},
	{"density", "memory per idle sandbox that ran the pandas cell (PSS, MemAvailable drop); baseline: one ipykernel after the same cell"},
	{"cycles", "--clients concurrent clients doing create → 1+1 → kill for --duration; baseline: the same with one client"},
	{"load", "the load and fault suite (bench load -h)"},
}

func isScenario(name string) bool {
	for _, s := range scenarios {
		if s.name == name && name != "load" {
			return true
		}
	}
	return false
}

func scenarioHelp() string {
	var b strings.Builder
	b.WriteString("\nScenarios (ds-sandbox bench SCENARIO [flags]; each starts a daemon of its own on\nloopback, measures through its REST API and runs its baseline in the same job):\n")
	for _, s := range scenarios {
		fmt.Fprintf(&b, "  %-14s %s\n", s.name, s.help)
	}
	return b.String()
}

// dsCell is the first cell of a data-science agent (issue #12).
const dsCell = "import pandas as pd, numpy as np, matplotlib.pyplot as plt; pd.DataFrame({'a': range(100)}).sum()"

// ScenarioReport is what a scenario measured (`--json` prints it).
type ScenarioReport struct {
	Scenario string  `json:"scenario"`
	Machine  Machine `json:"machine"`
	Backend  string  `json:"backend"`
	Network  string  `json:"network"`
	Template string  `json:"template,omitempty"`
	// Notes say what the bench chose that the flags did not say.
	Notes   []string       `json:"notes,omitempty"`
	Latency []Compared     `json:"latency,omitempty"`
	Density *DensityResult `json:"density,omitempty"`
	Cycles  *CyclesResult  `json:"cycles,omitempty"`
	// Errors counts failed requests and wrong results (of ours and of the
	// baseline); ErrorSample is the first.
	Errors      int    `json:"errors"`
	ErrorSample string `json:"error_sample,omitempty"`
	// Sandboxes counts the sandboxes made; Leftovers lists what remained
	// after the bench killed them and stopped its daemon.
	Sandboxes int      `json:"sandboxes"`
	Leftovers []string `json:"leftovers"`
	StateDir  string   `json:"state_dir"`
	Seconds   float64  `json:"seconds"`
}

// Compared is one latency of ours beside its baseline, in milliseconds.
type Compared struct {
	Measure  string  `json:"measure"`
	Ours     Stats   `json:"ours_ms"`
	Baseline string  `json:"baseline"`
	Base     Stats   `json:"baseline_ms"`
	RatioP50 float64 `json:"ratio_p50"`
	RatioP99 float64 `json:"ratio_p99"`
}

func compare(measure string, ours Stats, baseline string, base Stats) Compared {
	return Compared{Measure: measure, Ours: ours, Baseline: baseline, Base: base, RatioP50: ratio(ours.P50, base.P50), RatioP99: ratio(ours.P99, base.P99)}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

type scenarioOptions struct {
	name               string
	backend, network   string
	networkSet         bool // --network was given: never changed
	whitelist          []string
	template           string
	configPath         string
	n, clients         int
	duration, timeout  time.Duration
	python, peerScript string
	log                io.Writer
	selfPath           string // tests: the binary whose serve is the daemon
}

func scenarioCmd(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	fl := newCommand("bench "+name, "usage: ds-sandbox bench "+name+" [flags]\n\n"+scenarioUsage(name), stdout, stderr)
	o := scenarioOptions{name: name, log: stderr}
	fl.StringVar(&o.backend, "backend", "", "backend of the sandboxes (default: the configured one)")
	fl.StringVar(&o.network, "network", api.NetworkDeny, "network policy of the sandboxes: allow | deny | whitelist")
	whitelist := fl.String("whitelist", "", "comma-separated destinations under --network whitelist")
	fl.StringVar(&o.template, "template", "", "template of the sandboxes (found in the configured template directories)")
	fl.StringVar(&o.configPath, "config", "", "config file: the base of the bench daemon's config (its state directory, quotas and listen address are the bench's)")
	fl.DurationVar(&o.timeout, "timeout", 3*time.Minute, "bound on each create, cell and kill")
	fl.StringVar(&o.python, "python", "/usr/bin/python3", "interpreter of the baselines (with Debian's jupyter_client, ipykernel, pandas, matplotlib)")
	asJSON := fl.Bool("json", false, "print JSON")
	switch name {
	case "first-ds-cell":
		fl.IntVar(&o.n, "n", 5, "samples (sandboxes created, bare imports)")
	case "create-1+1":
		fl.IntVar(&o.n, "n", 10, "samples (sandboxes created, kernels started)")
		fl.StringVar(&o.peerScript, "peer", "", "the peer script jupyter_client_bench.py to run as the baseline ('': the bench's own equivalent)")
	case "rtt":
		fl.IntVar(&o.n, "n", 200, "round trips (of ours and of the baseline)")
		fl.StringVar(&o.peerScript, "peer", "", "the peer script jupyter_client_bench.py to run as the baseline ('': the bench's own equivalent)")
	case "density":
		fl.IntVar(&o.n, "n", 20, "idle sandboxes")
	case "cycles":
		fl.IntVar(&o.clients, "clients", 8, "concurrent clients")
		fl.DurationVar(&o.duration, "duration", 20*time.Second, "how long each run (concurrent, then serial) starts cycles")
	}
	if st, ok := fl.parse(args); !ok {
		return st
	}
	if st, ok := fl.wantArgs(0, 0); !ok {
		return st
	}
	fl.Visit(func(f *flag.Flag) { o.networkSet = o.networkSet || f.Name == "network" })
	o.whitelist = splitList(*whitelist)
	switch {
	case o.network != api.NetworkAllow && o.network != api.NetworkDeny && o.network != api.NetworkWhitelist:
		return fl.usageError("--network %q: want allow, deny or whitelist", o.network)
	case name == "cycles" && (o.clients < 1 || o.clients > 1000):
		return fl.usageError("--clients %d: want 1..1000", o.clients)
	case name == "cycles" && o.duration <= 0:
		return fl.usageError("--duration %v: want more than 0", o.duration)
	case name != "cycles" && (o.n < 1 || o.n > 100000):
		return fl.usageError("--n %d: want 1..100000", o.n)
	case o.timeout <= 0:
		return fl.usageError("--timeout %v: want more than 0", o.timeout)
	}
	rep, err := runScenario(ctx, o)
	if err != nil {
		return fl.fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printScenario(stdout, rep)
	}
	if rep.Errors > 0 || len(rep.Leftovers) > 0 {
		return 1
	}
	return 0
}

func scenarioUsage(name string) string {
	for _, s := range scenarios {
		if s.name == name {
			return "Measures " + s.help + ".\n" +
				"Starts a daemon of its own on loopback (this binary's serve, a fresh state\n" +
				"directory), measures through its REST API, kills every sandbox it made and\n" +
				"stops the daemon, then checks that nothing is left. Exits 1 on any error or\n" +
				"leftover.\n"
		}
	}
	return ""
}

// runScenario runs scenario o.name with its daemon and cleans up after it.
func runScenario(ctx context.Context, o scenarioOptions) (rep *ScenarioReport, err error) {
	rep = &ScenarioReport{Scenario: o.name, Machine: machineNow(), Backend: o.backend, Network: o.network, Template: o.template, Leftovers: []string{}}
	start := time.Now()
	h, err := startHarness(ctx, o, rep)
	if err != nil {
		return nil, err
	}
	defer func() {
		if ctx.Err() != nil {
			rep.Notes = append(rep.Notes, "interrupted: "+ctx.Err().Error()+"; the numbers cover what ran until then")
		}
		h.close()
		rep.Seconds = time.Since(start).Seconds()
		if err != nil && len(rep.Leftovers) > 0 {
			err = fmt.Errorf("%w (left behind: %s)", err, strings.Join(rep.Leftovers, "; "))
		}
		if err != nil {
			rep = nil
		}
	}()
	switch o.name {
	case "first-ds-cell":
		err = benchFirstDSCell(ctx, h)
	case "create-1+1":
		err = benchCreate(ctx, h)
	case "rtt":
		err = benchRTT(ctx, h)
	case "density":
		err = benchDensity(ctx, h)
	case "cycles":
		err = benchCycles(ctx, h)
	default:
		err = fmt.Errorf("unknown scenario %q", o.name)
	}
	return rep, err
}

func printScenario(w io.Writer, r *ScenarioReport) {
	tmpl := r.Template
	if tmpl == "" {
		tmpl = "default"
	}
	fmt.Fprintf(w, "%s on %s, network %s, template %s (%.1f s)\n", r.Scenario, r.Backend, r.Network, tmpl, r.Seconds)
	fmt.Fprintln(w, r.Machine)
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	if len(r.Latency) > 0 {
		width := len("measure")
		for _, c := range r.Latency {
			width = max(width, utf8.RuneCountInString(c.Measure), utf8.RuneCountInString("baseline: "+c.Baseline))
		}
		fmt.Fprintf(w, "%-*s %6s %9s %9s %9s\n", width, "measure", "n", "p50 ms", "p99 ms", "max ms")
		for _, c := range r.Latency {
			row := func(name string, s Stats) {
				fmt.Fprintf(w, "%-*s %6d %9.2f %9.2f %9.2f\n", width, name, s.N, s.P50, s.P99, s.Max)
			}
			row(c.Measure, c.Ours)
			row("baseline: "+c.Baseline, c.Base)
			fmt.Fprintf(w, "ratio ours/baseline: p50 %.2f  p99 %.2f\n", c.RatioP50, c.RatioP99)
		}
	}
	if d := r.Density; d != nil {
		printDensity(w, d)
	}
	if c := r.Cycles; c != nil {
		printCycles(w, c)
	}
	fmt.Fprintf(w, "errors: %d%s; sandboxes made: %d\n", r.Errors, sampleSuffix(r.ErrorSample), r.Sandboxes)
	left := "nothing"
	if len(r.Leftovers) > 0 {
		sort.Strings(r.Leftovers)
		left = strings.Join(r.Leftovers, "; ")
	}
	fmt.Fprintf(w, "left behind: %s\n", left)
}
