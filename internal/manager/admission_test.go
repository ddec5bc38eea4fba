package manager_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// TestOOMIsNamed: a cell killed by the sandbox's memory limit ends with a
// DeadKernelError that says so, in the Execution and in the stream, and the
// Execution is marked OOMKilled (before: "kernel died (kernel process
// exited: signal: killed)", indistinguishable from a crash).
func TestOOMIsNamed(t *testing.T) {
	t.Parallel()
	m := ociManager(t)
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{Backend: "oci", MemoryMB: 512, Network: &api.NetworkPolicy{Policy: api.NetworkDeny}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var streamed *api.ExecutionError
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "a = []\nwhile True: a.append(b'\\x01' * (8 << 20))"}, func(ev api.ExecEvent) {
		if ev.Type == api.EventError && ev.OOMKilled {
			mu.Lock()
			streamed = ev.Error
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = "memory limit of 512 MiB (memory_mb) was reached"
	if !e.OOMKilled || e.Error == nil || e.Error.Name != api.ErrNameDeadKernel || !strings.Contains(e.Error.Value, want) {
		t.Fatalf("memory bomb: oom_killed %v, error %+v; want a DeadKernelError saying %q", e.OOMKilled, e.Error, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if streamed == nil || !strings.Contains(streamed.Value, want) {
		t.Fatalf("the streamed error: %+v", streamed)
	}
	// A kernel that dies otherwise is not called an OOM kill.
	e, err = s.Execute(t.Context(), api.ExecuteRequest{Code: "import os; os._exit(3)"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.OOMKilled || e.Error == nil || e.Error.Name != api.ErrNameDeadKernel || strings.Contains(e.Error.Value, "memory limit") {
		t.Fatalf("os._exit: oom_killed %v, error %+v", e.OOMKilled, e.Error)
	}
}

// TestQuotaUnderRace: with max_sandboxes_per_key 2, 12 creates of one key
// at once give exactly 2 sandboxes (the count is taken under the manager's
// lock with the creates in flight; before, each create listed, saw room, and
// all went ahead); an in-process caller is not metered.
func TestQuotaUnderRace(t *testing.T) {
	t.Parallel()
	m := localManager(t, func(c *config.Config) { c.MaxSandboxesPerKey = 2 })
	ctx := auth.WithIdentity(t.Context(), auth.Open)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, limited := 0, 0
	for range 12 {
		wg.Go(func() {
			_, err := m.Create(ctx, api.CreateSandboxRequest{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, api.ErrLimit):
				limited++
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 2 || limited != 10 {
		t.Fatalf("12 racing creates under max_sandboxes_per_key 2: %d made, %d refused", ok, limited)
	}
	if _, err := m.Create(context.Background(), api.CreateSandboxRequest{}); err != nil {
		t.Fatalf("an in-process create past the quota: %v", err)
	}
}

// localManager is a manager over the local backend alone, its config
// changed by mod.
func localManager(t *testing.T, mod func(*config.Config)) *manager.Manager {
	t.Helper()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.DefaultBackend = "local"
	cfg.Python = "/usr/bin/python3"
	if mod != nil {
		mod(&cfg)
	}
	m, err := manager.New(cfg, nil, local.New(local.Config{CacheDir: filepath.Join(cfg.StateDir, "cache")}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}
