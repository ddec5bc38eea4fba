package docker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
)

// TestPidsAndOpenFiles: a sandbox's pids_limit is its container's, and
// max_open_files is the code's RLIMIT_NOFILE (the agent keeps more).
func TestPidsAndOpenFiles(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	s := spec(t)
	s.PidsLimit, s.MaxOpenFiles = 300, 256
	_, c := start(t, b, s)
	r := run(t, c, "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; ulimit -Sn; ulimit -Hn; grep 'open files' /proc/1/limits")
	f := strings.Fields(r.Stdout)
	if len(f) < 3 || f[0] != "300" || f[1] != "256" || f[2] != "256" || !strings.Contains(r.Stdout, "4096") {
		t.Fatalf("pids.max, soft and hard open files, init's limits = %q (stderr %q)", r.Stdout, r.Stderr)
	}
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import resource; resource.getrlimit(resource.RLIMIT_NOFILE)"}, nil)
	if err != nil || e.Text() != "(256, 256)" {
		t.Fatalf("kernel's open files: %v %+v", err, e)
	}
	s = spec(t)
	s.PidsLimit = 10
	if _, err := b.Create(t.Context(), s); !strings.Contains(api.CodeOf(err), "invalid") {
		t.Fatalf("pids_limit 10: %v, want invalid", err)
	}
}

// TestForkBombLeavesTheSandboxUsable: a fork bomb in a cell fills the pids
// limit; the agent (which keeps idle threads in reserve, and creates none
// while the bomb holds every task) survives, and after a context restart
// the same sandbox runs code again.
func TestForkBombLeavesTheSandboxUsable(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	s := spec(t)
	s.PidsLimit = 256
	s.Network = api.NetworkPolicy{Policy: api.NetworkDeny}
	inst, c := start(t, b, s)
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", TimeoutMs: 5000}, nil)
	if err != nil {
		t.Fatalf("the agent failed during the bomb: %v", err)
	}
	t.Logf("bomb cell: error %+v", e.Error)
	select {
	case <-inst.Done():
		t.Fatal("the sandbox died")
	default:
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := c.RestartContext(ctx, agent.DefaultContextID); err != nil {
		t.Fatalf("restart the context: %v", err)
	}
	e, err = c.Execute(ctx, api.ExecuteRequest{Code: "6*7"}, nil)
	if err != nil || e.Error != nil || e.Text() != "42" {
		t.Fatalf("run_code after the bomb: %v %+v", err, e)
	}
}
