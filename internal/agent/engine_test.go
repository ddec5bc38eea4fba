package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// TestEngineConfig: an engine this build does not have, an unknown one or a
// preload list that is not module names fails the agent's start, saying why.
func TestEngineConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		engine  string
		preload []string
		want    error  // nil: New succeeds
		says    string // in the error
	}{
		{"default is ipykernel", "", nil, nil, ""},
		{"ipykernel", api.EngineIPykernel, []string{"numpy", "matplotlib.pyplot", "_x1"}, nil, ""},
		{"lean", api.EngineLean, []string{"json"}, nil, ""},
		{"unknown engine", "jupyter", nil, api.ErrInvalid, `engine "jupyter": want one of ipykernel, lean`},
		{"code as a module", "", []string{"os; os.system('x')"}, nil, `preload module "os; os.system('x')"`},
		{"empty part", "", []string{"a..b"}, nil, `preload module "a..b"`},
		{"leading digit", "", []string{"1abc"}, nil, `preload module "1abc"`},
		{"too long", "", []string{strings.Repeat("a", api.MaxPreloadModule+1)}, nil, "at most 200 characters"},
		{"too many", "", make([]string, maxPreload+1), nil, "at most 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(Config{Workdir: "/home/user", Engine: tc.engine, Preload: tc.preload,
				Mounts: []Mount{{Path: "/home/user", HostPath: t.TempDir()}}})
			if s != nil {
				defer s.Close()
			}
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.says == "":
				want := tc.engine
				if want == "" {
					want = api.EngineIPykernel
				}
				if s.cfg.Engine != want {
					t.Fatalf("engine %q, want %s", s.cfg.Engine, want)
				}
			case err == nil || !strings.Contains(err.Error(), tc.says):
				t.Fatalf("New: %v, want an error saying %q", err, tc.says)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("New: %v (code %s), want %v", err, api.CodeOf(err), tc.want)
			}
		})
	}
}

// TestPreloadInFreshKernel: every fresh kernel of every context has the
// preload list imported before its first cell, without a name of ours left
// in the user's namespace; after a restart too.
func TestPreloadInFreshKernel(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	a := startAgent(t, Config{Workdir: "/home/user", Preload: []string{"json", "xml.dom.minidom"},
		Mounts: []Mount{{Path: "/home/user", HostPath: t.TempDir()}}})
	a.s.ctxs.startDefault()
	const probe = "import sys\nprint(sorted(m for m in ('json', 'xml.dom.minidom') if m in sys.modules), " +
		"[n for n in dir() if n.startswith('_ds')], 'json' in dir())"
	const want = "['json', 'xml.dom.minidom'] [] False\n"
	check := func(what, ctxID string) {
		t.Helper()
		e, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: probe, ContextID: ctxID}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("%s: %v %+v", what, err, e.Error)
		}
		if got := strings.Join(e.Logs.Stdout, ""); got != want {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
	}
	check("default context", "")
	c, err := a.c.CreateContext(t.Context(), api.CreateContextRequest{})
	if err != nil {
		t.Fatal(err)
	}
	check("a new context", c.ID)
	if _, err := a.c.RestartContext(t.Context(), c.ID); err != nil {
		t.Fatal(err)
	}
	check("after a restart", c.ID)
}

// TestPreloadFailureSaysWhich: a preload module that cannot be imported
// fails the cell (not the user's code) naming the module and the setting.
func TestPreloadFailureSaysWhich(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	a := startAgent(t, Config{Workdir: "/home/user", Preload: []string{"json", "dss_no_such_module"},
		Mounts: []Mount{{Path: "/home/user", HostPath: t.TempDir()}}})
	a.s.ctxs.startDefault()
	_, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "1"}, nil)
	for _, s := range []string{"ModuleNotFoundError", "dss_no_such_module", "fix preload"} {
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), s) {
			t.Fatalf("err = %v (code %s), want invalid saying %q", err, api.CodeOf(err), s)
		}
	}
}
