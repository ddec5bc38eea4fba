package manager

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// TestPoolDropsDeadSandboxes: a pooled sandbox whose kernel died is not
// handed out (the create starts cold), one whose agent died is dropped by
// its watcher, and the pool replaces both.
func TestPoolDropsDeadSandboxes(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.DefaultBackend, cfg.Python = "local", "/usr/bin/python3"
	cfg.Pools = []config.Pool{{Size: 1}}
	m, err := New(cfg, nil, local.New(local.Config{CacheDir: filepath.Join(cfg.StateDir, "cache")}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	m.StartPools()
	p := m.pools[0]
	ready := func() *Sandbox {
		t.Helper()
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			p.mu.Lock()
			if len(p.ready) == 1 {
				s := p.ready[0].s
				p.mu.Unlock()
				return s
			}
			p.mu.Unlock()
			if time.Now().After(end) {
				t.Fatal("the pool did not fill")
			}
		}
	}

	// The kernel dies while pooled.
	dead := ready()
	if e, err := dead.agent.Execute(t.Context(), api.ExecuteRequest{Code: "import os; os._exit(1)"}, nil); err != nil || e.Error == nil {
		t.Fatalf("killing the pooled kernel: %v %+v", err, e)
	}
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), s.ID())
	if s == dead || s.ID() == dead.ID() {
		t.Fatal("a pooled sandbox whose kernel died was handed out")
	}
	if st := m.PoolStats()[0]; st.Hits != 0 || st.Misses != 1 || st.Dropped != 1 {
		t.Fatalf("after claiming a dead one: %+v, want a miss and a drop", st)
	}
	if e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Text() != "2" {
		t.Fatalf("the cold-started sandbox: %v %+v", err, e)
	}

	// The agent dies while pooled.
	gone := ready()
	if err := gone.inst.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if next := ready(); next == gone {
		t.Fatal("the pool kept a sandbox whose agent died")
	}
	if st := m.PoolStats()[0]; st.Dropped != 2 {
		t.Fatalf("after an agent died: %+v, want 2 drops", st)
	}
}

// TestPoolRecyclesOldSandboxes: a ready sandbox older than max_age_sec is
// replaced by a fresh one, and destroyed.
func TestPoolRecyclesOldSandboxes(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.DefaultBackend, cfg.Python = "local", "/usr/bin/python3"
	cfg.Pools = []config.Pool{{Size: 1, MaxAgeSec: 10}}
	m, err := New(cfg, nil, local.New(local.Config{CacheDir: filepath.Join(cfg.StateDir, "cache")}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	m.StartPools()
	p := m.pools[0]
	current := func() *Sandbox {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.ready) == 0 {
			return nil
		}
		return p.ready[0].s
	}
	var first *Sandbox
	for end := time.Now().Add(60 * time.Second); first == nil; time.Sleep(5 * time.Millisecond) {
		if first = current(); time.Now().After(end) {
			t.Fatal("the pool did not fill")
		}
	}
	for end := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s := current(); s != nil && s != first {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the first sandbox was not replaced: %+v", m.PoolStats())
		}
	}
	select {
	case <-first.inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the recycled sandbox still runs")
	}
	if st := m.PoolStats()[0]; st.Recycled < 1 {
		t.Fatalf("%+v, want a recycled sandbox", st)
	}
}
