package manager_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// agentBin is a static ds-sandbox for the oci backend ("" when the oci
// tests cannot run here).
var agentBin string

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() == 0 {
		bin, cleanup, err := backendtest.BuildStaticAgent()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cleanup()
		agentBin = bin
	}
	return m.Run()
}

// ociManager is a manager over the oci backend resolving names with
// nettest's resolver, plus the local backend.
func ociManager(t *testing.T) *manager.Manager {
	t.Helper()
	dir, err := os.MkdirTemp("", "dss-manager-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return ociManagerIn(t, dir)
}

// ociManagerIn is ociManager with its state in dir (a second manager on the
// same directory is a restarted daemon).
func ociManagerIn(t *testing.T, dir string) *manager.Manager {
	t.Helper()
	testenv.Require(t, "root", agentBin != "", "the oci backend needs root")
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Python = "/usr/bin/python3"
	cfg.AgentPath = agentBin
	cfg.DefaultBackend = "local"
	cfg.Resolve()
	b := oci.New(oci.Config{AgentPath: agentBin, StateDir: filepath.Join(dir, "oci"), Resolver: nettest.Resolver})
	testenv.RequireNoError(t, "the oci backend", b.Available(t.Context()))
	m, err := manager.New(cfg, nil, b, local.New(local.Config{CacheDir: filepath.Join(dir, "cache")}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// run runs nettest.Probe in s under an optional per-execution policy.
func probe(t *testing.T, s *manager.Sandbox, pol *api.NetworkPolicy, kind string, args ...any) (string, *api.Execution, []api.ExecEvent) {
	t.Helper()
	var mu sync.Mutex
	var evs []api.ExecEvent
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: nettest.ProbeCode(kind, args...), Network: pol}, func(ev api.ExecEvent) {
		mu.Lock()
		evs = append(evs, ev)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("probe %s %v: %v", kind, args, err)
	}
	return strings.TrimSpace(strings.Join(e.Logs.Stdout, "")), e, evs
}

func TestPerExecutionNetworkPolicy(t *testing.T) {
	m := ociManager(t)
	nettest.New(t)
	ctx := t.Context()
	var mu sync.Mutex
	var events []api.Event
	m.Subscribe(func(ev api.Event, _ string) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})
	s, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkAllow}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), s.ID())

	if got, _, _ := probe(t, s, nil, "direct", "http://other.test/"); !strings.HasPrefix(got, "OK hello from "+nettest.Other.String()) {
		t.Fatalf("allow: %q", got)
	}
	// A packet the rules refuse is a denial of the cell that sent it.
	if got, e, _ := probe(t, s, nil, "tcp", nettest.Metadata, 80); !strings.HasPrefix(got, "ERR ConnectionRefusedError") {
		t.Errorf("allow to the metadata address: %q", got)
	} else if !slices.ContainsFunc(e.NetworkDenials, func(d api.NetworkDenial) bool {
		return d.Protocol == "tcp" && d.IP == nettest.Metadata.String() && d.Port == 80
	}) {
		t.Errorf("the refused packet is not among the execution's denials: %+v", e.NetworkDenials)
	}
	// One cell under deny.
	if got, _, _ := probe(t, s, &api.NetworkPolicy{Policy: api.NetworkDeny}, "direct", "http://other.test/"); !strings.HasPrefix(got, "ERR") {
		t.Errorf("deny cell reached the network: %q", got)
	}
	// One cell under a whitelist: the listed name works, the other is
	// refused, and the refusal is in the Execution and its event stream.
	wl := &api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}
	if got, _, _ := probe(t, s, wl, "direct", "http://allowed.test/"); !strings.HasPrefix(got, "OK hello from "+nettest.Public.String()) {
		t.Errorf("whitelisted name under a whitelist cell: %q", got)
	}
	got, e, evs := probe(t, s, wl, "host", nettest.Other, 80, "other.test")
	if !strings.HasPrefix(got, "ERR") {
		t.Errorf("unlisted host under a whitelist cell: %q", got)
	}
	if len(e.NetworkDenials) == 0 || e.NetworkDenials[0].Host != "other.test" {
		t.Errorf("denials of the execution: %+v", e.NetworkDenials)
	}
	sawDenial, endLast := false, len(evs) > 0 && evs[len(evs)-1].Type == api.EventEnd
	for _, ev := range evs {
		if ev.Type == api.EventNetworkDenied && ev.Denial != nil && ev.Denial.Host == "other.test" {
			sawDenial = true
		}
	}
	if !sawDenial || !endLast {
		t.Errorf("stream: denial seen %v, end last %v: %+v", sawDenial, endLast, evs)
	}
	mu.Lock()
	audited := false
	for _, ev := range events {
		if ev.Type == api.EventSandboxNetworkDenied && ev.SandboxID == s.ID() && ev.Data["host"] == "other.test" {
			audited = true
		}
	}
	mu.Unlock()
	if !audited {
		t.Errorf("no %s event for the denial", api.EventSandboxNetworkDenied)
	}
	// The sandbox's own policy is back.
	if got, _, _ := probe(t, s, nil, "direct", "http://other.test/"); !strings.HasPrefix(got, "OK hello from "+nettest.Other.String()) {
		t.Errorf("allow after the override cells: %q", got)
	}
	// Its own policy, asked for explicitly, is no override.
	if got, _, _ := probe(t, s, &api.NetworkPolicy{Policy: api.NetworkAllow}, "direct", "http://other.test/"); !strings.HasPrefix(got, "OK") {
		t.Errorf("allow asked explicitly: %q", got)
	}
	// A bad policy is refused before anything runs.
	if _, err := s.Execute(ctx, api.ExecuteRequest{Code: "1", Network: &api.NetworkPolicy{Policy: "open"}}, nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("bad per-execution policy: %v, want ErrInvalid", err)
	}
}

func TestPerExecutionNetworkPolicyRefused(t *testing.T) {
	m := ociManager(t)
	ctx := t.Context()
	// A deny sandbox has no interface to open.
	s, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkDeny}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), s.ID())
	_, err = s.Execute(ctx, api.ExecuteRequest{Code: "print(1)", Network: &api.NetworkPolicy{Policy: api.NetworkAllow}}, nil)
	if !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("opening a deny sandbox for a cell: %v, want ErrUnsupported", err)
	}
	// The local backend cannot change its network at all.
	l, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "local", Network: &api.NetworkPolicy{Policy: api.NetworkAllow}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), l.ID())
	marker := filepath.Join(l.Info().WorkspacePath, "ran")
	_, err = l.Execute(ctx, api.ExecuteRequest{Code: "open('ran', 'w').close()", Network: &api.NetworkPolicy{Policy: api.NetworkDeny}}, nil)
	if !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("deny cell on local: %v, want ErrUnsupported", err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the refused cell ran anyway: %v", err)
	}
}

func TestSetNetwork(t *testing.T) {
	m := ociManager(t)
	nettest.New(t)
	ctx := t.Context()
	s, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), s.ID())
	if got, _, _ := probe(t, s, nil, "host", nettest.Other, 80, "other.test"); !strings.HasPrefix(got, "ERR") {
		t.Fatalf("whitelist: %q", got)
	}
	info, err := m.SetNetwork(ctx, s.ID(), api.NetworkPolicy{Policy: api.NetworkAllow})
	if err != nil || info.Network.Policy != api.NetworkAllow {
		t.Fatalf("SetNetwork allow: %+v, %v", info.Network, err)
	}
	if got, _, _ := probe(t, s, nil, "direct", "http://other.test/"); !strings.HasPrefix(got, "OK hello from "+nettest.Other.String()) {
		t.Errorf("after SetNetwork allow: %q", got)
	}
	// The new policy is the sandbox's own: a per-execution one is restored
	// to it, not to the policy the sandbox was created with.
	probe(t, s, &api.NetworkPolicy{Policy: api.NetworkDeny}, "tcp", nettest.Public, 80)
	if got, _, _ := probe(t, s, nil, "direct", "http://other.test/"); !strings.HasPrefix(got, "OK") {
		t.Errorf("after a deny cell: %q", got)
	}
	if _, err := m.SetNetwork(ctx, s.ID(), api.NetworkPolicy{Policy: "open"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("bad policy: %v", err)
	}
	// A deny sandbox cannot be opened, and keeps its policy.
	d, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkDeny}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), d.ID())
	if _, err := m.SetNetwork(ctx, d.ID(), api.NetworkPolicy{Policy: api.NetworkAllow}); !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("opening a deny sandbox: %v, want ErrUnsupported", err)
	}
	if d.Info().Network.Policy != api.NetworkDeny {
		t.Errorf("the deny sandbox's policy became %q", d.Info().Network.Policy)
	}
}

// TestRestartKeepsTheChangedPolicy: after SetNetwork and a daemon restart the
// sandbox runs under the recorded (changed) policy, not the one it was made
// with, which is what its backend state remembers.
func TestRestartKeepsTheChangedPolicy(t *testing.T) {
	dir, err := os.MkdirTemp("", "dss-manager-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	t.Cleanup(func() { os.RemoveAll(dir) })
	m1 := ociManagerIn(t, dir)
	if err := m1.Persist(); err != nil {
		t.Fatal(err)
	}
	nettest.New(t)
	ctx := t.Context()
	s, err := m1.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkAllow}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.SetNetwork(ctx, s.ID(), api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	m1.Detach() // a graceful daemon stop: sandboxes keep running

	m2 := ociManagerIn(t, dir)
	if err := m2.Persist(); err != nil {
		t.Fatal(err)
	}
	rep, err := m2.Recover(ctx)
	if err != nil || len(rep.Reattached) != 1 {
		t.Fatalf("Recover: %+v, %v", rep, err)
	}
	s2, err := m2.Get(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Kill(context.Background(), s.ID())
	if p := s2.Info().Network.Policy; p != api.NetworkWhitelist {
		t.Errorf("recovered policy %q", p)
	}
	if got, _, _ := probe(t, s2, nil, "direct", "http://allowed.test/"); !strings.HasPrefix(got, "OK") {
		t.Errorf("listed name after restart: %q", got)
	}
	if got, _, _ := probe(t, s2, nil, "host", nettest.Other, 80, "other.test"); !strings.HasPrefix(got, "ERR") {
		t.Errorf("unlisted name after restart (the creation policy, allow, came back): %q", got)
	}
}

// TestPolicyWaitHonoursContext: while a cell with a network policy of its
// own runs, other executions of the sandbox wait — and give up when their
// context ends, rather than hang.
func TestPolicyWaitHonoursContext(t *testing.T) {
	m := ociManager(t)
	ctx := t.Context()
	s, err := m.Create(ctx, api.CreateSandboxRequest{Backend: "oci", Network: &api.NetworkPolicy{Policy: api.NetworkAllow}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill(context.Background(), s.ID())
	ctxID, err := s.Agent().CreateContext(ctx, api.CreateContextRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Execute(ctx, api.ExecuteRequest{Code: "0", ContextID: ctxID.ID}, nil); err != nil {
		t.Fatal(err) // its kernel is up: a cell there would be quick
	}
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		// Its first output proves it holds the network: the policy is taken
		// before the cell is sent to the kernel.
		_, err := s.Execute(ctx, api.ExecuteRequest{Code: "import time; print('go', flush=True); time.sleep(4)", Network: &api.NetworkPolicy{Policy: api.NetworkDeny}}, func(ev api.ExecEvent) {
			if ev.Type == api.EventStdout {
				once.Do(func() { close(started) })
			}
		})
		once.Do(func() { close(started) })
		done <- err
	}()
	<-started
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = s.Execute(wctx, api.ExecuteRequest{Code: "1", ContextID: ctxID.ID}, nil)
	if !errors.Is(err, api.ErrTimeout) {
		t.Errorf("an execution waiting for the override's cell: %v, want ErrTimeout", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the override's cell: %v", err)
	}
	if e, err := s.Execute(ctx, api.ExecuteRequest{Code: "2", ContextID: ctxID.ID}, nil); err != nil || e.Text() != "2" {
		t.Errorf("after the override's cell: %v %+v", err, e)
	}
}
