package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	b := local.New(local.Config{CacheDir: t.TempDir()})
	backendtest.ForEachEngine(t, func(t *testing.T, engine string) {
		backendtest.Run(t, b, backendtest.Options{
			EnforcesNetwork: []string{api.NetworkAllow},
			// The workdir where the host gives the agent a mount namespace to
			// bind the workspace there; else (the sandbox warns) its host path.
			WorkspaceEnvRoot: func(s backend.Spec, inst backend.Instance) string {
				if w, ok := inst.(interface{ Warnings() []string }); ok && len(w.Warnings()) > 0 {
					return s.WorkspaceDir
				}
				return s.Workdir
			},
			Engine: engine,
		})
	})
}

// TestWorkdirIsTheWorkspace: code finds its workspace at the workdir, as
// the files API does: a file written through the API at /home/user/x.csv is
// read by open('/home/user/x.csv') in a cell whose cwd is /home/user, and
// nothing appears at /home/user on the host. Where the host allows no
// private mount namespace the sandbox says so instead.
func TestWorkdirIsTheWorkspace(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	const workdir = "/home/dss-test-user"
	if _, err := os.Lstat(workdir); err == nil {
		t.Fatalf("%s exists on the host", workdir)
	}
	b := local.New(local.Config{CacheDir: t.TempDir()})
	ws := t.TempDir()
	inst, err := b.Create(t.Context(), backend.Spec{ID: "bind", User: "user", Workdir: workdir, WorkspaceDir: ws,
		Network: api.NetworkPolicy{Policy: api.NetworkAllow}, Python: "/usr/bin/python3"})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	if w := inst.(backend.Warner).Warnings(); len(w) > 0 {
		if !strings.Contains(w[0], "cannot show the workspace at "+workdir) {
			t.Fatalf("warning %q", w)
		}
		testenv.Require(t, "a private mount namespace", false, w[0])
	}
	c := agentclient.NewClient(inst.AgentSocket())
	defer c.Close()
	if _, err := c.WriteFile(t.Context(), workdir+"/x.csv", strings.NewReader("a,b\n1,2\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "x.csv")); err != nil || string(b) != "a,b\n1,2\n" {
		t.Fatalf("the files API's file is not in the workspace: %q %v", b, err)
	}
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import os\nprint(open('" + workdir + "/x.csv').read(), end='')\n" +
		"print(os.getcwd())\nopen('" + workdir + "/from-code.txt', 'w').write('y')"}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e)
	}
	if got, want := strings.Join(e.Logs.Stdout, ""), "a,b\n1,2\n"+workdir+"\n"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(ws, "from-code.txt")); err != nil {
		t.Fatalf("a file the code wrote at the workdir is not in the workspace: %v", err)
	}
	if _, err := os.Lstat(workdir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s appeared on the host: %v", workdir, err)
	}
}

// TestWorkdirNotBound: where the workdir cannot be shown (here: none of its
// parents exists on the host but /, which is never replaced), the sandbox
// still starts, as before, with a warning saying where code finds its
// workspace.
func TestWorkdirNotBound(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	const workdir = "/dss-no-such-dir/user"
	b := local.New(local.Config{CacheDir: t.TempDir()})
	for range 2 {
		ws := t.TempDir()
		inst, err := b.Create(t.Context(), backend.Spec{ID: "nobind", User: "user", Workdir: workdir, WorkspaceDir: ws,
			Network: api.NetworkPolicy{Policy: api.NetworkAllow}, Python: "/usr/bin/python3"})
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Destroy(context.Background())
		w := inst.(backend.Warner).Warnings()
		if len(w) != 1 || !strings.Contains(w[0], "cannot show the workspace at "+workdir) || !strings.Contains(w[0], "code finds it at "+ws) {
			t.Fatalf("warnings %q", w)
		}
		c := agentclient.NewClient(inst.AgentSocket())
		defer c.Close()
		e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import os; print(os.getcwd())"}, nil)
		if err != nil || strings.Join(e.Logs.Stdout, "") != ws+"\n" {
			t.Fatalf("execute: %v %+v", err, e)
		}
	}
}
