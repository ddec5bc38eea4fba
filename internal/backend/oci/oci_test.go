package oci_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// agentBin is a static ds-sandbox built for the tests, or DSS_OCI_AGENT's
// (a prebuilt static one: scripts/test-oci-rootless.sh gives the test user
// one, so it needs no Go toolchain of its own).
var agentBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// A missing runtime is reported by Available (newBackend skips with it).
	agentBin = os.Getenv("DSS_OCI_AGENT")
	if agentBin == "" {
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

// runtimeBin is the runtime under test: DSS_OCI_RUNTIME (runc, crun, runsc)
// or runc.
func runtimeBin() string {
	if r := os.Getenv("DSS_OCI_RUNTIME"); r != "" {
		return r
	}
	return "runc"
}

// rootless reports whether the tests run without root: the backend's
// rootless mode (see docs/SECURITY.md).
func rootless() bool { return os.Geteuid() != 0 }

// needsRoot skips a test of something rootless mode refuses.
func needsRoot(t *testing.T, why string) {
	t.Helper()
	if rootless() {
		t.Skip("rootless: " + why + " (refused rootless; TestRootlessRefuses checks the refusal)")
	}
}

// gvisor reports whether the runtime under test is runsc: its Sentry is the
// application's kernel, so some checks differ (see docs/SECURITY.md).
func gvisor() bool { return filepath.Base(runtimeBin()) == "runsc" }

// newBackend returns a backend whose state lives in a fresh directory the
// runtime's init can walk to.
func newBackend(t *testing.T) *oci.Backend {
	t.Helper()
	dir, err := os.MkdirTemp("", "dss-oci-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := oci.New(oci.Config{Runtime: runtimeBin(), AgentPath: agentBin, StateDir: dir, BundleDir: filepath.Join(dir, "bundles"), Resolver: nettest.Resolver})
	if err := b.Available(t.Context()); err != nil {
		// CI provides the environment (CI is set; scripts/test-oci-rootless.sh
		// sets DSS_OCI_REQUIRE): there, a backend that cannot run is a failure.
		if os.Getenv("DSS_OCI_REQUIRE") != "" {
			t.Fatal(err)
		}
		testenv.RequireNoError(t, "the oci backend with "+runtimeBin(), err)
	}
	return b
}

func TestConformance(t *testing.T) {
	b := newBackend(t)
	enforced := []string{api.NetworkDeny, api.NetworkAllow, api.NetworkWhitelist}
	if err := b.CheckNetwork(api.NetworkAllow); err != nil {
		// Rootless without slirp4netns; scripts/test-oci-rootless.sh
		// installs it (DSS_OCI_REQUIRE).
		if os.Getenv("DSS_OCI_REQUIRE") != "" {
			t.Fatal(err)
		}
		t.Logf("allow and whitelist are refused here: %v", err)
		enforced = []string{api.NetworkDeny}
	}
	backendtest.ForEachEngine(t, func(t *testing.T, engine string) {
		backendtest.Run(t, b, backendtest.Options{
			EnforcesNetwork:  enforced,
			Network:          api.NetworkDeny,
			WorkspaceEnvRoot: func(s backend.Spec, _ backend.Instance) string { return s.Workdir },
			OwnPIDNamespace:  true,
			Engine:           engine,
		})
	})
}

// sandbox starts a deny-policy sandbox with limits from mod and returns its
// agent client and spec.
func sandbox(t *testing.T, b *oci.Backend, mod func(*backend.Spec)) (backend.Instance, *agentclient.Client, backend.Spec) {
	t.Helper()
	ws := t.TempDir()
	s := backend.Spec{
		ID: "attack-" + strings.ToLower(filepath.Base(t.Name())), User: "user", Workdir: "/home/user",
		WorkspaceDir: ws, Network: api.NetworkPolicy{Policy: api.NetworkDeny}, Python: "/usr/bin/python3",
	}
	if mod != nil {
		mod(&s)
	}
	inst, err := b.Create(t.Context(), s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	c := agentclient.NewClient(inst.AgentSocket())
	t.Cleanup(func() {
		c.Close()
		_ = inst.Destroy(context.Background())
	})
	return inst, c, s
}

// sh runs a shell command in the sandbox and returns its stdout, stderr and
// exit code.
func sh(t *testing.T, c *agentclient.Client, cmd string) (string, string, int) {
	t.Helper()
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: cmd}, nil)
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return r.Stdout, r.Stderr, r.ExitCode
}

func TestRecover(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	inst, c, _ := sandbox(t, b, nil)
	sh(t, c, "echo before > note")
	state := inst.(backend.Recoverable).State()
	// A second backend value, as a restarted daemon has.
	b2 := oci.New(b.Config())
	again, err := b2.Recover(t.Context(), state)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	c2 := agentclient.NewClient(again.AgentSocket())
	defer c2.Close()
	if out, _, _ := sh(t, c2, "cat note"); out != "before\n" {
		t.Fatalf("recovered sandbox: %q", out)
	}
	if err := again.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first instance's Done did not close")
	}
	if _, err := b2.Recover(t.Context(), state); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Recover after Destroy: %v, want ErrNotFound", err)
	}
}

// TestTimings logs what a sandbox costs: Create (bundle, runtime create and
// start, agent ready), the first cell (kernel start) and a warm `1+1`.
func TestTimings(t *testing.T) {
	b := newBackend(t)
	start := time.Now()
	_, c, _ := sandbox(t, b, nil)
	created := time.Since(start)
	if _, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	const n = 20
	warm := time.Now()
	for range n {
		if e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Error != nil {
			t.Fatal(err, e.Error)
		}
	}
	t.Logf("%s: Create %v, create→first result %v, RunCode(\"1+1\") %v each (mean of %d)",
		runtimeBin(), created.Round(time.Millisecond), first.Round(time.Millisecond), (time.Since(warm) / n).Round(10*time.Microsecond), n)
}

func TestReapOrphans(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	kept, _, _ := sandbox(t, b, func(s *backend.Spec) { s.ID = "kept" })
	orphan, _, _ := sandbox(t, b, func(s *backend.Spec) { s.ID = "orphan" })
	n, err := b.ReapOrphans(t.Context(), func(id string) bool { return id == "kept" })
	if err != nil || n != 1 {
		t.Fatalf("ReapOrphans = %d, %v; want 1", n, err)
	}
	select {
	case <-orphan.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the orphan still runs")
	}
	select {
	case <-kept.Done():
		t.Fatal("the known sandbox was reaped")
	default:
	}
	if _, err := os.Stat(orphan.(backend.Recoverable).State()["dir"]); !os.IsNotExist(err) {
		t.Fatalf("orphan bundle left: %v", err)
	}
}
