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
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// poolManager is a manager with warm pools over the named backend ("local"
// or "oci" with runc), its state in dir, its pools started. With daemon
// set, local sandboxes outlive the manager (as the daemon runs them) and
// records are kept (Persist, Recover).
func poolManager(t testing.TB, dir, name string, daemon bool, mod func(*config.Config)) *manager.Manager {
	t.Helper()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Python = "/usr/bin/python3"
	cfg.DefaultBackend = name
	cfg.MaxConcurrentStarts = 4
	cfg.Resolve()
	if mod != nil {
		mod(&cfg)
	}
	var b backend.Backend = local.New(local.Config{CacheDir: filepath.Join(dir, "cache"), Detach: daemon})
	if name == "oci" {
		testenv.Require(t, "root", agentBin != "", "the oci backend needs root")
		cfg.AgentPath = agentBin
		ob := oci.New(oci.Config{AgentPath: agentBin, StateDir: filepath.Join(dir, "oci")})
		testenv.RequireNoError(t, "the oci backend", ob.Available(t.Context()))
		b = ob
	}
	m, err := manager.New(cfg, nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if daemon {
		if err := m.Persist(); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	m.StartPools()
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func stateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dss-pool-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func poolStats(m *manager.Manager) manager.PoolStats { return m.PoolStats()[0] }

func waitReady(t *testing.T, m *manager.Manager, n int) {
	t.Helper()
	waitFor(t, "the pool to be ready", func() bool { return poolStats(m).Ready == n })
}

var poolBackends = []string{"local", "oci"}

// TestPoolClaim: a matching create takes a ready sandbox (a hit) that is
// then the key's like a cold-created one — envs in the default kernel's
// os.environ and in commands, metadata, timeout, owner, events — and the
// pool refills; pooled sandboxes are nobody's (List shows none) and count
// against no key; a create with a named workspace or other limits misses.
func TestPoolClaim(t *testing.T) {
	for _, name := range poolBackends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			policy := api.NetworkDeny // local enforces none: allow
			if name == "local" {
				policy = api.NetworkAllow
			}
			m := poolManager(t, stateDir(t), name, false, func(c *config.Config) {
				c.MaxSandboxesPerKey = 1
				c.APIKeys = []config.APIKey{{ID: "alice", Key: "alice-key-0123456789", Backends: []string{"local", "oci"}}, {ID: "bob", Key: "bob-key-0123456789ab", Backends: []string{"local", "oci"}}}
				c.Pools = []config.Pool{{Size: 2, Network: policy}}
			})
			var mu sync.Mutex
			var events []api.Event
			m.Subscribe(func(ev api.Event, owner string) {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			})
			waitReady(t, m, 2)
			if got := m.List(t.Context(), nil); len(got) != 0 {
				t.Fatalf("pooled sandboxes are listed before anyone claimed them: %+v", got)
			}
			alice := auth.WithIdentity(t.Context(), auth.Identity{KeyID: "alice"})
			bob := auth.WithIdentity(t.Context(), auth.Identity{KeyID: "bob"})
			begin := time.Now()
			s, err := m.Create(alice, api.CreateSandboxRequest{Envs: map[string]string{"CLAIMED": "by alice"},
				Metadata: map[string]string{"k": "v"}, TimeoutSeconds: 120, Network: &api.NetworkPolicy{Policy: policy}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Kill(context.Background(), s.ID())
			if st := poolStats(m); st.Hits != 1 || st.Misses != 0 {
				t.Fatalf("after a matching create: %+v, want one hit", st)
			}
			info := s.Info()
			if info.Owner != "alice" || info.Metadata["k"] != "v" || info.EndAt.Before(begin.Add(119*time.Second)) || info.EndAt.After(time.Now().Add(121*time.Second)) {
				t.Fatalf("claimed sandbox: %+v", info)
			}
			e, err := s.Execute(alice, api.ExecuteRequest{Code: "import os; os.environ.get('CLAIMED')"}, nil)
			if err != nil || e.Text() != "'by alice'" || e.ExecutionCount != 1 {
				t.Fatalf("the default kernel after the claim: %v %+v", err, e)
			}
			res, err := s.Agent().RunCommand(alice, api.ProcessRequest{Cmd: `echo "$CLAIMED"`}, nil)
			if err != nil || strings.TrimSpace(res.Stdout) != "by alice" {
				t.Fatalf("a command after the claim: %v %+v", err, res)
			}
			if _, err := m.Get(bob, s.ID()); !errors.Is(err, api.ErrNotFound) {
				t.Fatalf("another key sees the claimed sandbox: %v", err)
			}
			if got := m.List(alice, nil); len(got) != 1 || got[0].SandboxID != s.ID() {
				t.Fatalf("alice lists %+v", got)
			}
			// Pooled sandboxes count against no key: alice's quota of one is
			// used by her claimed sandbox, not by the pool.
			if _, err := m.Create(alice, api.CreateSandboxRequest{}); !errors.Is(err, api.ErrLimit) {
				t.Fatalf("alice's second create: %v, want her quota's ErrLimit", err)
			}
			mu.Lock()
			created := slices.IndexFunc(events, func(ev api.Event) bool {
				return ev.Type == api.EventSandboxCreated && ev.SandboxID == s.ID() && ev.Data["pool"] == "0"
			})
			foreign := slices.IndexFunc(events, func(ev api.Event) bool { return ev.SandboxID != s.ID() })
			mu.Unlock()
			if created < 0 || foreign >= 0 {
				t.Fatalf("events: %+v, want one sandbox.created for the claimed sandbox and none for pooled ones", events)
			}
			waitReady(t, m, 2) // refilled

			// Misses: a named workspace, other limits (no pool has them).
			w, err := m.Create(bob, api.CreateSandboxRequest{WorkspaceID: "bobs", Network: &api.NetworkPolicy{Policy: policy}})
			if err != nil {
				t.Fatal(err)
			}
			m.Kill(context.Background(), w.ID())
			if st := poolStats(m); st.Hits != 1 || m.UnmatchedCreates() != 1 {
				t.Fatalf("a create with a named workspace claimed a pooled sandbox: %+v unmatched %d", st, m.UnmatchedCreates())
			}
		})
	}
}

// TestPoolNeverHandsOutTwice: many concurrent creates against a pool of
// two: every create gets its own sandbox (none twice), each create is a
// hit or a miss, and the two ready sandboxes are taken.
func TestPoolNeverHandsOutTwice(t *testing.T) {
	for _, name := range poolBackends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := poolManager(t, stateDir(t), name, false, func(c *config.Config) {
				c.Pools = []config.Pool{{Size: 2}}
				c.MaxConcurrentStarts = 8
			})
			waitReady(t, m, 2)
			const n = 8
			ids := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
					if err == nil {
						ids[i] = s.ID()
					}
					errs[i] = err
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("create %d: %v", i, err)
				}
			}
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					t.Fatalf("sandbox %s was handed out twice: %v", id, ids)
				}
				seen[id] = true
			}
			st := poolStats(m)
			if st.Hits < 2 || st.Hits+st.Misses != n {
				t.Fatalf("pool after %d creates: %+v, want at least 2 hits and hits+misses = %d", n, st, n)
			}
			for _, id := range ids {
				if err := m.Kill(t.Context(), id); err != nil {
					t.Errorf("kill %s: %v", id, err)
				}
			}
		})
	}
}

// TestPoolRefillFailureFallsBack: a pool that cannot be filled (its
// template has files, which must see the create's envs) backs off and says
// why; creates from that template start cold and succeed.
func TestPoolRefillFailureFallsBack(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := "id: withfiles\nfiles:\n  hello.txt: hi\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "withfiles.yaml"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	m := poolManager(t, dir, "local", false, func(c *config.Config) { c.Pools = []config.Pool{{Template: "withfiles", Size: 1}} })
	waitFor(t, "a refill failure", func() bool { return poolStats(m).RefillFailures >= 1 })
	st := poolStats(m)
	if !strings.Contains(st.LastError, "files, start_cmd or ready_cmd") || !st.RetryAt.After(time.Now().Add(-time.Second)) || st.Ready != 0 {
		t.Fatalf("a failing pool: %+v", st)
	}
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{Template: "withfiles"})
	if err != nil {
		t.Fatalf("a create that matches the failing pool: %v", err)
	}
	defer m.Kill(context.Background(), s.ID())
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "open('hello.txt').read()"}, nil)
	if err != nil || e.Text() != "'hi'" {
		t.Fatalf("the cold-started sandbox: %v %+v", err, e)
	}
}

// TestPoolRestartReapsPooled: after a daemon restart the unclaimed pooled
// sandboxes of the old daemon are reaped (their processes and anonymous
// workspaces gone), a claimed one is re-attached, and the new daemon's pool
// fills afresh.
func TestPoolRestartReapsPooled(t *testing.T) {
	for _, name := range poolBackends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPoolRestart(t, name)
		})
	}
}

// TestPoolGracefulStopRemovesPooled: a daemon that stops gracefully
// (Detach) removes its unclaimed pooled sandboxes — nobody's, and otherwise
// running until the next daemon starts — and keeps claimed ones.
func TestPoolGracefulStopRemovesPooled(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	m := poolManager(t, dir, "local", true, func(c *config.Config) { c.Pools = []config.Pool{{Size: 2}} })
	waitReady(t, m, 2)
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, m, 2)
	m.Detach()
	ents, _ := os.ReadDir(filepath.Join(dir, "sandboxes"))
	if len(ents) != 1 || ents[0].Name() != s.ID()+".json" {
		t.Fatalf("records after a graceful stop: %v, want only the claimed sandbox's", ents)
	}
	// The next daemon re-attaches the claimed one; stopping it for good
	// ends it.
	m2 := poolManager(t, dir, "local", true, nil)
	if _, err := m2.Get(t.Context(), s.ID()); err != nil {
		t.Fatalf("the claimed sandbox after the restart: %v", err)
	}
	if err := m2.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func testPoolRestart(t *testing.T, name string) {
	dir := stateDir(t)
	mod := func(c *config.Config) { c.Pools = []config.Pool{{Size: 2}} }
	m1 := poolManager(t, dir, name, true, mod)
	waitReady(t, m1, 2)
	s, err := m1.Create(t.Context(), api.CreateSandboxRequest{Envs: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, m1, 2)
	records := func() []string {
		ents, _ := os.ReadDir(filepath.Join(dir, "sandboxes"))
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	if n := len(records()); n != 3 {
		t.Fatalf("records before the restart: %v, want 3 (one claimed, two pooled)", records())
	}
	wsBefore, _ := os.ReadDir(filepath.Join(dir, "workspaces"))
	m1.CrashDetach()

	m2 := poolManager(t, dir, name, true, mod)
	if got := m2.List(t.Context(), nil); len(got) != 1 || got[0].SandboxID != s.ID() {
		t.Fatalf("after the restart: %+v, want only the claimed sandbox", got)
	}
	waitReady(t, m2, 2)
	if n := len(records()); n != 3 {
		t.Fatalf("records after the restart: %v, want 3 (the claimed one, two new pooled)", records())
	}
	if name == "oci" {
		// The runtime's own state: one container per live sandbox.
		if cs, err := os.ReadDir(filepath.Join(dir, "oci", "runtime")); err != nil || len(cs) != 3 {
			t.Fatalf("containers after the restart: %d (%v), want 3: the reaped ones leaked", len(cs), err)
		}
	}
	wsAfter, _ := os.ReadDir(filepath.Join(dir, "workspaces"))
	if len(wsAfter) != len(wsBefore) {
		t.Fatalf("workspaces: %d before the restart, %d after: the reaped ones leaked", len(wsBefore), len(wsAfter))
	}
	e, err := m2.Get(t.Context(), s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if x, err := e.Execute(t.Context(), api.ExecuteRequest{Code: "import os; os.environ['A']"}, nil); err != nil || x.Text() != "'1'" {
		t.Fatalf("the re-attached claimed sandbox: %v %+v", err, x)
	}
}

// TestPoolMaxSandboxes: pooled sandboxes count against max_sandboxes; a
// create that misses takes the room of a ready one; past that a create is
// refused, and the pool does not grow beyond the limit.
func TestPoolMaxSandboxes(t *testing.T) {
	t.Parallel()
	m := poolManager(t, stateDir(t), "local", false, func(c *config.Config) {
		c.MaxSandboxes = 2
		c.Pools = []config.Pool{{Size: 2}}
	})
	waitReady(t, m, 2)
	var ids []string
	for i := range 2 {
		s, err := m.Create(t.Context(), api.CreateSandboxRequest{WorkspaceID: "named"})
		if err != nil {
			t.Fatalf("miss %d: %v", i, err)
		}
		ids = append(ids, s.ID())
	}
	if st := poolStats(m); st.Ready+st.Starting != 0 || st.Recycled != 2 {
		t.Fatalf("the pool with max_sandboxes reached: %+v", st)
	}
	if _, err := m.Create(t.Context(), api.CreateSandboxRequest{}); !errors.Is(err, api.ErrLimit) || !strings.Contains(err.Error(), "max_sandboxes") {
		t.Fatalf("a third create: %v, want ErrLimit naming max_sandboxes", err)
	}
	for _, id := range ids {
		m.Kill(t.Context(), id)
	}
	waitReady(t, m, 2)
}

// TestRecoverRemovesUnusedAnonymousWorkspaces: an anonymous workspace that no
// recorded sandbox uses (a create cut by a daemon crash before its record)
// is removed when the next daemon recovers; named workspaces stay.
func TestRecoverRemovesUnusedAnonymousWorkspaces(t *testing.T) {
	t.Parallel()
	dir := stateDir(t)
	ws, err := workspace.New(filepath.Join(dir, "workspaces"))
	if err != nil {
		t.Fatal(err)
	}
	anon, err := ws.CreateAnonymous("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Create("kept", ""); err != nil {
		t.Fatal(err)
	}
	m := poolManager(t, dir, "local", true, nil)
	defer m.Close(context.Background())
	if _, err := ws.Get(anon.ID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("the unused anonymous workspace after Recover: %v, want not found", err)
	}
	if _, err := ws.Get("kept"); err != nil {
		t.Errorf("the named workspace after Recover: %v", err)
	}
}
