package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// attacks of Security.
type SecurityOptions struct {
	// Network is the policy of the suite's sandboxes; default deny.
	Network string
	// SocketDir is the directory of the agent's socket inside the sandbox.
	SocketDir string
	// HostUID is the host uid that owns the files the sandbox user creates
	// in its workspace.
	HostUID uint32
	// UserSpaceKernel says the sandbox's processes are not host processes
	// (gVisor: they live inside the Sentry), so the host's /proc cannot show
	// them; the backend's own tests prove nothing survives Destroy.
	UserSpaceKernel bool
	// Skip maps a case's name to the reason it is skipped: "KNOWN GAP: …"
	// for an attack the backend does not contain yet, or the work that will
	// make it testable.
	Skip map[string]string
	// Engine runs the sandboxes' code contexts (backend.Spec.Engine); ""
	// is the agent's default. Run it for every engine with ForEachEngine.
	Engine string
}

// Security runs the security attack suite of docs/SECURITY.md against b:
// each case is a real attack from inside a sandbox, and each asserts the
// evidence that it was contained (the host file unchanged, the errno, the
// other sandbox's file intact). The daemon must run as root (the suite plants
// marker files in /root and /home).
func Security(t *testing.T, b backend.Backend, opts SecurityOptions) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the security suite plants host files in /root and /home: run it as root")
	}
	if err := b.Available(t.Context()); err != nil {
		t.Fatalf("backend %s not available: %v", b.Name(), err)
	}
	if opts.Network == "" {
		opts.Network = api.NetworkDeny
	}
	s := &suite{b: b, opts: opts, marker: "dss-secsuite-" + randomHex(6)}
	s.plantHostFiles(t)

	cases := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"ptrace", s.ptrace},
		{"raw-sockets", s.rawSockets},
		{"setuid", s.setuid},
		{"mount-and-modules", s.mountAndModules},
		{"host-homes", s.hostHomes},
		{"write-outside-workspace", s.writeOutside},
		{"proc-and-sys", s.procAndSys},
		{"memory-bomb", s.memoryBomb},
		{"output-flood", s.outputFlood},
		{"cpu-spin-past-timeout", s.cpuSpin},
		{"disk-fill-tmp", s.diskFillTmp},
		{"disk-fill-shm", s.diskFillShm},
		{"disk-fill-workspace", s.diskFillWorkspace},
		{"files-api-traversal", s.filesAPITraversal},
		{"other-sandbox", s.otherSandbox},
		{"agent-socket", s.agentSocket},
		{"destroy-leaves-no-process", s.destroyLeavesNothing},
		{"engine-confined", s.engineConfined},
		{"forked-siblings", s.forkedSiblings},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := opts.Skip[tc.name]; ok {
				t.Skip(why)
			}
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	b      backend.Backend
	opts   SecurityOptions
	marker string // unique name of this run's host files and processes
	// The host's planted secrets: a file in /root (0600) and one in a
	// world-writable directory under /home (0644): only the sandbox's own
	// filesystem view keeps them from it.
	rootSecret, homeDir, homeSecret string
}

const secret = "host-secret-7f3a"

func (s *suite) plantHostFiles(t *testing.T) {
	t.Helper()
	s.rootSecret = filepath.Join("/root", "."+s.marker)
	s.homeDir = filepath.Join("/home", s.marker)
	s.homeSecret = filepath.Join(s.homeDir, "secret")
	t.Cleanup(func() {
		os.Remove(s.rootSecret)
		os.RemoveAll(s.homeDir)
	})
	if err := os.WriteFile(s.rootSecret, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.homeDir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.homeDir, 0o777)
	if err := os.WriteFile(s.homeSecret, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sandbox starts one sandbox of the suite; mod may change its spec.
func (s *suite) sandbox(t *testing.T, mod func(*backend.Spec)) (backend.Instance, *agentclient.Client, backend.Spec) {
	t.Helper()
	spec := backend.Spec{
		ID:   "sec-" + strings.ToLower(strings.NewReplacer("/", "-", " ", "-", "_", "-").Replace(t.Name())),
		User: "user", Workdir: "/home/user", WorkspaceDir: t.TempDir(),
		Network: api.NetworkPolicy{Policy: s.opts.Network}, Python: "/usr/bin/python3", Engine: s.opts.Engine,
	}
	if mod != nil {
		mod(&spec)
	}
	inst, err := create(t, s.b, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	c := agentclient.NewClient(inst.AgentSocket())
	t.Cleanup(func() {
		c.Close()
		_ = inst.Destroy(context.Background())
	})
	return inst, c, spec
}

// sh runs a shell command in the sandbox: its stdout, stderr and exit code.
func sh(t *testing.T, c *agentclient.Client, cmd string) (string, string, int) {
	t.Helper()
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: cmd}, nil)
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return r.Stdout, r.Stderr, r.ExitCode
}

// python runs a Python program in the sandbox (as a command) and decodes the
// JSON it prints into out.
func python(t *testing.T, c *agentclient.Client, prog string, out any) {
	t.Helper()
	stdout, stderr, code := sh(t, c, "python3 - <<'PYEOF'\n"+prog+"\nPYEOF")
	if code != 0 {
		t.Fatalf("python exit %d: %s %s", code, stdout, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("python output %q: %v", stdout, err)
	}
}

// startMarked starts a background process in the sandbox whose command line
// carries name, and waits until it runs.
func startMarked(t *testing.T, c *agentclient.Client, name string) {
	t.Helper()
	if _, err := c.StartProcess(t.Context(), api.ProcessRequest{Cmd: "exec -a " + name + " sleep 600"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "pgrep -f '^"+name+"' >/dev/null")
}

// waitFor runs cmd in the sandbox until it succeeds (a bounded wait for
// something the sandbox does asynchronously; never a timing assertion).
func waitFor(t *testing.T, c *agentclient.Client, cmd string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, _, code := sh(t, c, cmd); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never succeeded", cmd)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostProcesses lists the host's live (not zombie) processes whose command
// line starts with prefix.
func hostProcesses(prefix string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(cmd), prefix) || zombie(pid) {
			continue
		}
		out = append(out, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
