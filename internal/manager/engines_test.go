package manager_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// zygotes returns the pids of this process's children that are zygotes.
func zygotes(t *testing.T) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) && strings.Contains(string(cmd), "zygote") {
			out = append(out, pid)
		}
	}
	return out
}

// forkedIn reports whether the sandbox's default engine was forked in from
// outside (its parent is outside the sandbox's pid namespace).
func forkedIn(t *testing.T, m *manager.Manager) bool {
	t.Helper()
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(t.Context(), s.ID())
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import os; print(os.getppid())"}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e.Error)
	}
	return strings.TrimSpace(strings.Join(e.Logs.Stdout, "")) == "0"
}

// TestZygoteRestart: lean sandboxes on oci get engines forked from the
// daemon's zygote; when the zygote dies, the next create waits for a new one
// and still gets a forked engine — it never fails.
//
// Not parallel: it counts and kills this process's zygotes.
func TestZygoteRestart(t *testing.T) {
	m := poolManager(t, stateDir(t), "oci", false, func(c *config.Config) { c.Engine = api.EngineLean })
	if !forkedIn(t, m) {
		t.Fatal("the first lean sandbox's engine was not forked in from the daemon's zygote")
	}
	zs := zygotes(t)
	if len(zs) != 1 {
		t.Fatalf("zygotes of this process: %v, want one", zs)
	}
	if err := syscall.Kill(zs[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the zygote to be gone", func() bool { return len(zygotes(t)) == 0 || zygotes(t)[0] != zs[0] })
	if !forkedIn(t, m) {
		t.Fatal("after the zygote died, a create did not get an engine forked from a new one")
	}
	if now := zygotes(t); len(now) != 1 || now[0] == zs[0] {
		t.Fatalf("zygotes after the restart: %v (the killed one was %d)", now, zs[0])
	}
}

// TestCallerPreloadStaysInside: a preload list a caller chose (an inline
// template) is never imported by the daemon's zygote — which runs as root on
// the host — but by the sandbox's own, inside it; no daemon zygote is made
// for it.
//
// Not parallel: it counts this process's zygotes.
func TestCallerPreloadStaysInside(t *testing.T) {
	m := poolManager(t, stateDir(t), "oci", false, func(c *config.Config) { c.Engine = api.EngineLean })
	before := len(zygotes(t))
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{TemplateSpec: &api.Template{Engine: api.EngineLean, Preload: []string{"wave"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(t.Context(), s.ID())
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import os, sys; print(os.getppid() != 0, 'wave' in sys.modules)"}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e.Error)
	}
	if got := strings.TrimSpace(strings.Join(e.Logs.Stdout, "")); got != "True True" {
		t.Fatalf("engine started inside the sandbox, wave preloaded: %s, want True True", got)
	}
	if after := len(zygotes(t)); after > max(before, 1) {
		t.Fatalf("daemon zygotes: %d before, %d after a caller's preload list", before, after)
	}
}
