package manager_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// newManager returns a manager over the local backend whose configured
// scanner mode is mode, and a function returning the events it emitted.
func newManager(t *testing.T, mode string) (*manager.Manager, func() []api.Event) {
	t.Helper()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.ScannerMode = mode
	cfg.DefaultBackend = "local"
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	var mu sync.Mutex
	var evs []api.Event
	m.Subscribe(func(ev api.Event, _ string) {
		mu.Lock()
		evs = append(evs, ev)
		mu.Unlock()
	})
	return m, func() []api.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(evs)
	}
}

// writes is a cell that writes outputs/<name> through open() — critical in
// the seed's rules — after an import the rules rate high.
func writes(name string) string {
	return "import os\nopen('outputs/" + name + "', 'w').write('ran')\nprint('ran')"
}

func exists(t *testing.T, s *manager.Sandbox, name string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(s.Info().WorkspacePath, "outputs", name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func types(evs []api.ExecEvent) string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return strings.Join(out, ",")
}

func execute(t *testing.T, s *manager.Sandbox, req api.ExecuteRequest) (*api.Execution, []api.ExecEvent) {
	t.Helper()
	var evs []api.ExecEvent
	e, err := s.Execute(t.Context(), req, func(ev api.ExecEvent) { evs = append(evs, ev) })
	if err != nil {
		t.Fatalf("Execute(%q): %v", req.Code, err)
	}
	return e, evs
}

func TestScannerModes(t *testing.T) {
	t.Parallel()
	m, events := newManager(t, api.ScannerOff)
	create := func(mode string) *manager.Sandbox {
		s, err := m.Create(t.Context(), api.CreateSandboxRequest{ScannerMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Info().ScannerMode; got != mode {
			t.Fatalf("sandbox scanner mode %q, want %q", got, mode)
		}
		return s
	}

	t.Run("off attaches nothing", func(t *testing.T) {
		t.Parallel()
		s := create(api.ScannerOff)
		e, evs := execute(t, s, api.ExecuteRequest{Code: writes("off.txt")})
		if e.Error != nil || e.Findings != nil || !exists(t, s, "off.txt") || strings.Contains(types(evs), api.EventScan) {
			t.Fatalf("execution %+v, events %s", e, types(evs))
		}
	})

	t.Run("warn runs and attaches findings", func(t *testing.T) {
		t.Parallel()
		s := create(api.ScannerWarn)
		e, evs := execute(t, s, api.ExecuteRequest{Code: writes("warn.txt")})
		if e.Error != nil || strings.Join(e.Logs.Stdout, "") != "ran\n" || !exists(t, s, "warn.txt") {
			t.Fatalf("the cell did not run: %+v", e)
		}
		if len(e.Findings) != 2 || e.Findings[0].Module != "os" || e.Findings[1].Function != "open" || e.Findings[1].Line != 2 {
			t.Fatalf("findings %+v", e.Findings)
		}
		if types(evs) != "scan,stdout,end" || len(evs[0].Findings) != 2 {
			t.Fatalf("events %s", types(evs))
		}
		// An execution the agent refuses at once fails before any event, as
		// without the scanner (so the REST API can still answer with a status).
		evs = nil
		_, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import os", ContextID: "nosuchcontext"}, func(ev api.ExecEvent) { evs = append(evs, ev) })
		if !errors.Is(err, api.ErrNotFound) || len(evs) != 0 {
			t.Fatalf("unknown context: %v, events %s", err, types(evs))
		}
	})

	t.Run("block does not run a critical cell", func(t *testing.T) {
		t.Parallel()
		s := create(api.ScannerBlock)
		e, evs := execute(t, s, api.ExecuteRequest{Code: writes("blocked.txt")})
		if e.Error == nil || e.Error.Name != api.ErrNameScanBlocked || !strings.Contains(e.Error.Value, "line 2") {
			t.Fatalf("error %+v", e.Error)
		}
		if len(e.Findings) != 2 || e.ExecutionCount != 0 || len(e.Logs.Stdout) != 0 || types(evs) != "scan,error,end" {
			t.Fatalf("execution %+v, events %s", e, types(evs))
		}
		// Prove nothing ran: the next cell runs, and the file is not there.
		e, _ = execute(t, s, api.ExecuteRequest{Code: "import pathlib\npathlib.Path('outputs/blocked.txt').exists()"})
		if e.Error != nil || e.Text() != "False" || exists(t, s, "blocked.txt") {
			t.Fatalf("the blocked cell ran: %+v", e)
		}
		var blocked *api.Event
		for _, ev := range events() {
			if ev.Type == api.EventCodeBlocked && ev.SandboxID == s.ID() {
				blocked = &ev
			}
		}
		if blocked == nil || blocked.Data["types"] != "dynamic_exec" || blocked.Data["findings"] != "2" || len(blocked.Data["code_sha256"]) != 64 {
			t.Fatalf("code_blocked event %+v", blocked)
		}
		// Below the blocking severity the cell runs, with its findings.
		e, _ = execute(t, s, api.ExecuteRequest{Code: "import subprocess\nprint(subprocess.__name__)"})
		if e.Error != nil || len(e.Findings) != 1 || e.Findings[0].Severity != api.SeverityHigh || len(e.Logs.Stdout) != 1 {
			t.Fatalf("a high finding blocked the cell: %+v", e)
		}
	})

	t.Run("one execution can only be stricter", func(t *testing.T) {
		t.Parallel()
		s := create(api.ScannerWarn)
		e, _ := execute(t, s, api.ExecuteRequest{Code: writes("stricter.txt"), ScannerMode: api.ScannerBlock})
		if e.Error == nil || e.Error.Name != api.ErrNameScanBlocked || exists(t, s, "stricter.txt") {
			t.Fatalf("scanner_mode block on one execution: %+v", e)
		}
		_, err := s.Execute(t.Context(), api.ExecuteRequest{Code: writes("looser.txt"), ScannerMode: api.ScannerOff}, nil)
		if !errors.Is(err, api.ErrPermission) || exists(t, s, "looser.txt") {
			t.Fatalf("scanner_mode off on a warn sandbox: %v", err)
		}
		if _, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "1", ScannerMode: "strict"}, nil); !errors.Is(err, api.ErrInvalid) {
			t.Fatalf("scanner_mode strict: %v", err)
		}
	})
}

// TestScannerModeFloor: neither a create request nor a template loosens the
// configured mode; each can make it stricter.
func TestScannerModeFloor(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t, api.ScannerWarn)
	for _, tt := range []struct {
		req  api.CreateSandboxRequest
		want string
	}{
		{api.CreateSandboxRequest{ScannerMode: api.ScannerWarn}, api.ScannerWarn},
		{api.CreateSandboxRequest{ScannerMode: api.ScannerBlock}, api.ScannerBlock},
		{api.CreateSandboxRequest{TemplateSpec: &api.Template{ID: "t", ScannerMode: api.ScannerOff}}, api.ScannerWarn},
		{api.CreateSandboxRequest{TemplateSpec: &api.Template{ID: "t", ScannerMode: api.ScannerBlock}}, api.ScannerBlock},
	} {
		s, err := m.Create(t.Context(), tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Info().ScannerMode; got != tt.want {
			t.Errorf("create %+v: scanner mode %q, want %q", tt.req, got, tt.want)
		}
		if err := m.Kill(t.Context(), s.ID()); err != nil {
			t.Fatal(err)
		}
	}
	// A looser request is refused, naming the key and the mode in force.
	for _, req := range []api.CreateSandboxRequest{
		{ScannerMode: api.ScannerOff},
		{TemplateSpec: &api.Template{ID: "t", ScannerMode: api.ScannerBlock}, ScannerMode: api.ScannerWarn},
	} {
		_, err := m.Create(t.Context(), req)
		if !errors.Is(err, api.ErrPermission) || !strings.Contains(err.Error(), `scanner_mode "`+req.ScannerMode+`" is looser than the configured`) {
			t.Errorf("create %+v: %v, want a permission error naming scanner_mode", req, err)
		}
	}
	if _, err := m.Create(t.Context(), api.CreateSandboxRequest{ScannerMode: "paranoid"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("scanner_mode paranoid: %v", err)
	}
	if _, err := m.Create(t.Context(), api.CreateSandboxRequest{TemplateSpec: &api.Template{ID: "t", ScannerMode: "x"}}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("template scanner_mode x: %v", err)
	}
}
