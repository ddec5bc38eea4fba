package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestBenchScenarios runs each scenario of `ds-sandbox bench` briefly on the
// local backend as users run it (the real binary, which starts its own
// daemon, --json): the report has its fields, its numbers are positive,
// nothing failed and nothing is left behind (no sandbox, no record, no
// agent process). No timing is asserted.
func TestBenchScenarios(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import jupyter_client, ipykernel, pandas, numpy, matplotlib").CombinedOutput(); err != nil {
		t.Skipf("the baselines need Debian's python3 with jupyter_client, ipykernel, pandas, numpy, matplotlib: %v: %s", err, out)
	}
	bin, _ := realCLI(t)
	tests := []struct {
		name   string
		args   []string
		fields []string // JSON keys the report must have beside the common ones
		text   []string // what its text form must show
		check  func(t *testing.T, r *ScenarioReport)
	}{
		{"first-ds-cell", []string{"--n", "2"}, []string{"latency"}, []string{"pandas cell", "import pandas", "ratio ours/baseline"}, checkLatency(2)},
		{"create-1+1", []string{"--n", "2"}, []string{"latency"}, []string{"create → result of 1+1", "kernel start", "ratio ours/baseline"}, checkLatency(2)},
		{"rtt", []string{"--n", "5"}, []string{"latency"}, []string{"keep-alive", "execute", "ratio ours/baseline"}, checkLatency(5)},
		{"density", []string{"--n", "2"}, []string{"density"}, []string{"PSS", "daemon's own tree", "MemAvailable", "per 24 GiB", "ipykernel"}, func(t *testing.T, r *ScenarioReport) {
			d := r.Density
			// MemAvailable is not checked: other programs move it, it may even rise.
			if d == nil || d.N != 2 || d.Processes < 2 || d.PSSPerSandboxMiB <= 0 || d.PSSSandboxMiB.Min <= 0 ||
				d.BaselineKernelPSSMiB <= 0 || d.BaselinePythonPSSMiB <= 0 || d.RatioPSS <= 0 || d.Per24GiBPSS <= 0 ||
				len(d.FoundBy) != 1 || d.FoundBy[0] != "process tree" || d.DaemonTreeProcesses < 1 || d.DaemonTreeMiB <= 0 || d.PSSWithDaemonTreeMiB <= d.PSSPerSandboxMiB {
				t.Errorf("density: %+v", d)
			}
			if r.Sandboxes != 2 {
				t.Errorf("%d sandboxes made, want 2", r.Sandboxes)
			}
		}},
		{"cycles", []string{"--clients", "2", "--duration", "2s"}, []string{"cycles"}, []string{"concurrent clients", "baseline: 1 client", "cycles/s"}, func(t *testing.T, r *ScenarioReport) {
			c := r.Cycles
			if c == nil || c.Clients != 2 || c.Cycles < 1 || c.PerSecond <= 0 || c.Cycle.P50 <= 0 ||
				c.SerialCycles < 1 || c.SerialPerSecond <= 0 || c.SerialCycle.P50 <= 0 || c.RatioPerSecond <= 0 || c.Errors != 0 || c.SerialErrors != 0 {
				t.Errorf("cycles: %+v", c)
			}
			if r.Sandboxes != c.Cycles+c.SerialCycles {
				t.Errorf("%d sandboxes made, want one per cycle (%d)", r.Sandboxes, c.Cycles+c.SerialCycles)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"bench", tt.name, "--backend", "local", "--json"}, tt.args...)
			cmd := exec.CommandContext(t.Context(), bin, args...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("ds-sandbox %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
			}
			var keys map[string]json.RawMessage
			if err := json.Unmarshal(out.Bytes(), &keys); err != nil {
				t.Fatalf("output is no JSON object: %v\n%s", err, out.Bytes())
			}
			for _, k := range append([]string{"scenario", "machine", "backend", "network", "errors", "sandboxes", "leftovers", "seconds"}, tt.fields...) {
				if _, ok := keys[k]; !ok {
					t.Errorf("the report has no %q: %s", k, out.Bytes())
				}
			}
			var r ScenarioReport
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			m := r.Machine
			if r.Scenario != tt.name || r.Backend != "local" || r.Network != "allow" || m.NProc < 1 || m.MemTotalMiB <= 0 || m.Kernel == "" || m.LoadAvg == "" || r.Seconds <= 0 {
				t.Errorf("report: %+v", r)
			}
			if r.Errors != 0 || len(r.Leftovers) != 0 {
				t.Errorf("%d errors (%s), left behind %v\nstderr: %s", r.Errors, r.ErrorSample, r.Leftovers, errb.Bytes())
			}
			if _, err := os.Stat(r.StateDir); !os.IsNotExist(err) {
				t.Errorf("the bench's state directory %s is still there (%v)", r.StateDir, err)
			}
			tt.check(t, &r)
			var text strings.Builder
			printScenario(&text, &r)
			for _, want := range append([]string{"machine: ", "loadavg", "errors: 0", "left behind: nothing"}, tt.text...) {
				if !strings.Contains(text.String(), want) {
					t.Errorf("the text report has no %q:\n%s", want, text.String())
				}
			}
		})
	}
}

func checkLatency(n int) func(t *testing.T, r *ScenarioReport) {
	return func(t *testing.T, r *ScenarioReport) {
		t.Helper()
		if len(r.Latency) != 1 {
			t.Fatalf("latency: %+v", r.Latency)
		}
		c := r.Latency[0]
		if c.Ours.N != n || c.Base.N != n || c.Ours.P50 <= 0 || c.Ours.P99 <= 0 || c.Base.P50 <= 0 || c.Base.P99 <= 0 || c.RatioP50 <= 0 || c.RatioP99 <= 0 || c.Baseline == "" {
			t.Errorf("latency: %+v", c)
		}
	}
}

// TestBenchScenarioUsage: -h lists the scenarios; bad flags are refused
// before anything starts.
func TestBenchScenarioUsage(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"bench", "-h"}, nil, &out, &errb); code != 0 {
		t.Fatalf("bench -h: exit %d: %s", code, errb.String())
	}
	for _, s := range scenarios {
		if !strings.Contains(out.String(), "  "+s.name+" ") {
			t.Errorf("bench -h does not list %s:\n%s", s.name, out.String())
		}
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no clients", []string{"cycles", "--clients", "0"}, "--clients 0"},
		{"no duration", []string{"cycles", "--duration", "0s"}, "--duration 0s"},
		{"unknown policy", []string{"density", "--network", "open"}, `--network "open"`},
		{"no samples", []string{"first-ds-cell", "--n", "0"}, "--n 0"},
		{"flag of another scenario", []string{"rtt", "--clients", "2"}, "flag provided but not defined: -clients"},
		{"arguments", []string{"create-1+1", "extra"}, "unexpected arguments"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), append([]string{"bench"}, tt.args...), nil, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("bench %q: exit %d, stderr %q; want exit %d and %q", tt.args, code, errb.String(), exitUsage, tt.want)
			}
		})
	}
}
