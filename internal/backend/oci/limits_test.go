package oci_test

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// forkBombCell forks until it cannot, in every child too.
const forkBombCell = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"

// TestForkBombInACellLeavesTheSandboxUsable: the code's RLIMIT_NPROC, below
// the pids limit, stops the bomb before the agent runs out of tasks; the
// same sandbox then answers, and after a context restart (which kills the
// kernel's process group, the bomb with it) runs code again.
func TestForkBombInACellLeavesTheSandboxUsable(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	inst, c, _ := sandbox(t, b, func(s *backend.Spec) { s.PidsLimit = 256 })
	want := "256"
	if gvisor() {
		want = "1536" // room for the Sentry: the sandbox's 256 are its RLIMIT_NPROC
	}
	if got := cgroupFile(t, inst, "pids", "pids.max"); got != want {
		t.Fatalf("pids.max = %s, want %s", got, want)
	}
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: forkBombCell, TimeoutMs: 5000}, nil)
	t.Logf("bomb cell: %v %+v; pids.current %s, pids.events %s", err, e, cgroupFile(t, inst, "pids", "pids.current"), cgroupFile(t, inst, "pids", "pids.events"))
	if err != nil {
		t.Fatalf("the agent failed during the bomb: %v", err)
	}
	limit, _ := strconv.Atoi(want)
	if cur, _ := strconv.Atoi(cgroupFile(t, inst, "pids", "pids.current")); cur > limit {
		t.Fatalf("pids.current %d past the limit %d", cur, limit)
	}
	if err := exec.Command("true").Run(); err != nil {
		t.Fatalf("host cannot fork: %v", err)
	}
	assertUsableAfterBomb(t, inst, c)
	assertDestroyLeavesNothing(t, b, inst)
}

// TestForkBombInACommandLeavesTheSandboxUsable: the same for a shell bomb
// started as a command that runs into its timeout, which kills its whole
// tree.
func TestForkBombInACommandLeavesTheSandboxUsable(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	inst, c, _ := sandbox(t, b, nil)
	before, _ := strconv.Atoi(cgroupFile(t, inst, "pids", "pids.current"))
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "bomb() { bomb | bomb & }; bomb; sleep 60", TimeoutMs: 5000}, nil)
	after, _ := strconv.Atoi(cgroupFile(t, inst, "pids", "pids.current"))
	t.Logf("bomb command: exit %d %s %v; pids.events %s; pids.current %d before, %d after", r.ExitCode, r.Error, err, cgroupFile(t, inst, "pids", "pids.events"), before, after)
	if err != nil {
		t.Fatalf("the agent failed during the bomb: %v", err)
	}
	// The end of a killed command comes once its tree is gone and reaped:
	// what runs next must not find the process limit still taken by it.
	// (Under gVisor the cgroup holds the Sentry's threads, not the tasks.)
	if !gvisor() && after > before+16 {
		t.Errorf("%d tasks in the sandbox when the killed bomb's end arrived, %d before it", after, before)
	}
	assertUsableAfterBomb(t, inst, c)
	assertDestroyLeavesNothing(t, b, inst)
}

// assertUsableAfterBomb: the agent is alive, and after a context restart a
// cell runs and a command starts.
func assertUsableAfterBomb(t *testing.T, inst backend.Instance, c *agentclient.Client) {
	t.Helper()
	select {
	case <-inst.Done():
		t.Fatal("the sandbox died")
	default:
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := c.Health(ctx); err != nil {
		t.Fatalf("the agent does not answer after the bomb: %v", err)
	}
	if _, err := c.RestartContext(ctx, agent.DefaultContextID); err != nil {
		t.Fatalf("restart the context: %v", err)
	}
	e, err := c.Execute(ctx, api.ExecuteRequest{Code: "6*7"}, nil)
	if err != nil || e.Error != nil || e.Text() != "42" {
		t.Fatalf("run_code after the bomb: %v %+v", err, e)
	}
	// The code's process limit is below the pids limit and cannot be raised.
	r, err := c.RunCommand(ctx, api.ProcessRequest{Cmd: "ulimit -u; ulimit -Hu; ulimit -u unlimited"}, nil)
	if err != nil {
		t.Fatalf("command after the bomb: %v", err)
	}
	t.Logf("process limit of the code: %q, raising it: exit %d", r.Stdout, r.ExitCode)
	if r.ExitCode == 0 {
		t.Error("the code raised its process limit")
	}
}
