package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"go.yaml.in/yaml/v3"
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

// harness is a scenario's daemon, client and the sandboxes made so far.
type harness struct {
	o     scenarioOptions
	rep   *ScenarioReport
	d     *loadDaemon
	state string
	c     *dssandbox.Client
	opts  dssandbox.Options

	mu    sync.Mutex
	live  map[string]*dssandbox.Sandbox // created and not (yet) killed
	roots []sandboxRoot                 // of every sandbox made
}

func startHarness(ctx context.Context, o scenarioOptions, rep *ScenarioReport) (*harness, error) {
	bin := o.selfPath
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	base, err := config.Load(o.configPath)
	if err != nil {
		return nil, err
	}
	conf := map[string]any{}
	if o.configPath != "" {
		b, err := os.ReadFile(o.configPath)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(b, &conf); err != nil {
			return nil, fmt.Errorf("%s: %w", o.configPath, err)
		}
		if conf == nil {
			conf = map[string]any{}
		}
	}
	opts := dssandbox.Options{Backend: o.backend, Template: o.template, Network: &dssandbox.NetworkPolicy{Policy: o.network, Whitelist: o.whitelist}}
	if o.template != "" {
		// The daemon's state directory is fresh: it finds the template
		// where the configured daemon would.
		dir, err := templateDir(base.TemplateDirs(), o.template)
		if err != nil {
			return nil, err
		}
		conf["templates_dir"] = dir
	}
	state, err := os.MkdirTemp("", "dss-bench-")
	if err != nil {
		return nil, err
	}
	os.Chmod(state, 0o711)
	rep.StateDir = state
	// The per-key quotas would refuse the bench's own clients (they share
	// the open daemon's one identity): they are not what is measured.
	delete(conf, "state_dir")
	delete(conf, "api_keys")
	delete(conf, "listen")
	conf["max_sandboxes_per_key"] = o.n + o.clients + 8
	conf["creates_per_minute"] = 0
	conf["max_streams_per_key"] = 0
	b, err := yaml.Marshal(conf)
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	confPath := filepath.Join(state, "bench.yaml")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	log := o.log
	if log == nil {
		log = io.Discard
	}
	d := &loadDaemon{bin: bin, state: state, conf: confPath, addr: addr, backend: o.backend, log: log}
	if err := d.start(); err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	c, err := dssandbox.NewClient("http://"+addr, "")
	if err != nil {
		d.kill9()
		os.RemoveAll(state)
		return nil, err
	}
	if rep.Backend == "" {
		rep.Backend = defaultBackend(addr)
	}
	if rep.Backend == "local" && !o.networkSet && o.network == api.NetworkDeny {
		// The local backend cannot enforce deny (it refuses such creates);
		// its sandboxes share the host's network.
		opts.Network.Policy, rep.Network = api.NetworkAllow, api.NetworkAllow
		rep.Notes = append(rep.Notes, "network allow: the local backend cannot enforce deny (its sandboxes share the host's network)")
	}
	return &harness{o: o, rep: rep, d: d, state: state, c: c, opts: opts, live: map[string]*dssandbox.Sandbox{}}, nil
}

// defaultBackend asks the daemon at addr which backend it gives sandboxes
// that name none ("" when it does not say).
func defaultBackend(addr string) string {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var rz struct {
		DefaultBackend string `json:"default_backend"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rz)
	return rz.DefaultBackend
}

// templateDir is the first of dirs holding template id.
func templateDir(dirs []string, id string) (string, error) {
	for _, dir := range dirs {
		for _, ext := range []string{".yaml", ".yml"} {
			if _, err := os.Stat(filepath.Join(dir, id+ext)); err == nil {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("template %q: no %s.yaml or %s.yml in %s", id, id, id, strings.Join(dirs, ", "))
}

// fail counts an error; the first is kept as the sample.
func (h *harness) fail(what string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.Errors++
	if h.rep.ErrorSample == "" {
		h.rep.ErrorSample = fmt.Sprintf("%s: %v", what, err)
	}
}

// create makes a sandbox (bounded by --timeout) and notes how to find its
// processes.
func (h *harness) create(ctx context.Context) (*dssandbox.Sandbox, error) {
	cctx, cancel := context.WithTimeout(ctx, h.o.timeout)
	defer cancel()
	s, err := h.c.Create(cctx, h.opts)
	if err != nil {
		return nil, err
	}
	root, rerr := readSandboxRoot(h.state, s.ID)
	h.mu.Lock()
	h.live[s.ID] = s
	h.rep.Sandboxes++
	if rerr == nil {
		h.roots = append(h.roots, root)
	}
	if h.rep.Backend == "" {
		h.rep.Backend = root.Backend
	}
	h.mu.Unlock()
	if rerr != nil {
		if err := h.kill(ctx, s); err != nil {
			h.fail("kill", err)
		}
		return nil, rerr
	}
	return s, nil
}

// run runs code in s (bounded by --timeout) and checks that its result
// holds want.
func (h *harness) run(ctx context.Context, s *dssandbox.Sandbox, code, want string) error {
	cctx, cancel := context.WithTimeout(ctx, h.o.timeout)
	defer cancel()
	e, err := s.RunCode(cctx, code)
	switch {
	case err != nil:
		return err
	case e.Error != nil:
		return fmt.Errorf("%s: %s: %s", code, e.Error.Name, e.Error.Value)
	case !strings.Contains(e.Text(), want):
		return fmt.Errorf("%s gave %q, want %q in it", code, e.Text(), want)
	}
	return nil
}

// kill kills s; it runs on even when ctx ended (bounded by --timeout).
func (h *harness) kill(ctx context.Context, s *dssandbox.Sandbox) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.o.timeout)
	defer cancel()
	err := s.Kill(cctx)
	if errors.Is(err, api.ErrNotFound) {
		err = nil
	}
	if err == nil {
		h.mu.Lock()
		delete(h.live, s.ID)
		h.mu.Unlock()
	}
	return err
}

// close kills every sandbox of the daemon (those the bench holds, and any
// whose create answer it never got), stops the daemon and lists what is left:
// sandboxes, their processes, records, workspaces, mounts, runtime state.
func (h *harness) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.o.timeout)
	defer cancel()
	h.mu.Lock()
	live := make([]*dssandbox.Sandbox, 0, len(h.live))
	for _, s := range h.live {
		live = append(live, s)
	}
	h.mu.Unlock()
	for _, s := range live {
		if err := h.kill(ctx, s); err != nil {
			h.fail("kill "+s.ID, err)
		}
	}
	if list, err := h.c.List(ctx, nil); err != nil {
		h.fail("list", err)
	} else {
		for _, info := range list {
			s, err := h.c.Connect(ctx, info.SandboxID)
			if err == nil {
				err = h.kill(ctx, s)
			}
			if err != nil {
				h.fail("kill "+info.SandboxID, err)
			}
		}
	}
	if err := h.d.stop(); err != nil {
		h.rep.Leftovers = append(h.rep.Leftovers, "daemon: "+err.Error())
	}
	ids := make([]string, 0, len(h.roots))
	for _, r := range h.roots {
		ids = append(ids, r.ID)
	}
	h.rep.Leftovers = append(h.rep.Leftovers, leftovers(h.state, ids)...)
	procs := readProcs()
	for _, r := range h.roots {
		if r.alive(procs) {
			h.rep.Leftovers = append(h.rep.Leftovers, fmt.Sprintf("sandbox %s: its process %d (or container %q) still runs", r.ID, r.Pid, r.Container))
		}
	}
	if len(h.rep.Leftovers) == 0 {
		os.RemoveAll(h.state)
	}
}

// samples runs fn n times, interleaved with base when it is not nil, so a
// machine that gets busier midway slows both alike. Failed samples count
// as errors and are not timed.
func (h *harness) samples(ctx context.Context, n int, what string, fn func() error, baseWhat string, base func() error) (ours, baseline []time.Duration) {
	for range n {
		if ctx.Err() != nil {
			return ours, baseline
		}
		t0 := time.Now()
		if err := fn(); err != nil {
			h.fail(what, err)
		} else {
			ours = append(ours, time.Since(t0))
		}
		if base != nil {
			t0 = time.Now()
			if err := base(); err != nil {
				h.fail(baseWhat, err)
			} else {
				baseline = append(baseline, time.Since(t0))
			}
		}
	}
	return ours, baseline
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
