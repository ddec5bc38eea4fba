package manager_test

import (
	"slices"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// TestStreamKeepsOnlyTheSummary: Stream passes every event of a cell on as
// Execute does, and returns the cell's summary — error, findings, execution
// count — without its stdout, stderr and results, which only went to the
// caller's onEvent.
func TestStreamKeepsOnlyTheSummary(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, api.ScannerWarn)
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	code := writes("streamed") + "\nimport sys\nprint('to stderr', file=sys.stderr)\ndisplay(42)\n1/0"
	var types []string
	var stdout string
	sum, err := s.Stream(t.Context(), api.ExecuteRequest{Code: code}, func(ev api.ExecEvent) {
		types = append(types, ev.Type)
		if ev.Type == api.EventStdout {
			stdout += ev.Text
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{api.EventScan, api.EventStdout, api.EventStderr, api.EventResult, api.EventError, api.EventEnd} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s event streamed: %v", want, types)
		}
	}
	if stdout != "ran\n" {
		t.Errorf("streamed stdout %q", stdout)
	}
	if len(sum.Logs.Stdout) != 0 || len(sum.Logs.Stderr) != 0 || len(sum.Results) != 0 {
		t.Errorf("the summary kept output: %+v %+v", sum.Logs, sum.Results)
	}
	if sum.Error == nil || sum.Error.Name != "ZeroDivisionError" || len(sum.Findings) == 0 || sum.ExecutionCount == 0 {
		t.Errorf("summary: error %+v, %d findings, execution count %d", sum.Error, len(sum.Findings), sum.ExecutionCount)
	}
	// Execute of the same cell keeps everything.
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: code}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Logs.Stdout) == 0 || len(e.Logs.Stderr) == 0 || len(e.Results) == 0 || len(e.Findings) != len(sum.Findings) {
		t.Errorf("Execute: logs %+v, %d results, %d findings", e.Logs, len(e.Results), len(e.Findings))
	}
}
