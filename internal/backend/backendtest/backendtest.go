// Package backendtest is the conformance suite every backend passes: it starts
// real sandboxes through the backend and checks them through the real agent.
package backendtest

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// Options describe what the backend under test claims.
type Options struct {
	// Python is the interpreter inside the sandbox.
	Python string
	// EnforcesNetwork lists the network policies the backend enforces; the
	// others must be refused with api.ErrUnsupported.
	EnforcesNetwork []string
	// WorkspaceEnvRoot maps a spec and its sandbox to the WORKSPACE value
	// its code sees.
	WorkspaceEnvRoot func(backend.Spec, backend.Instance) string
	// Network is the policy of the suite's ordinary sandboxes; default allow.
	// A backend that enforces only deny passes deny.
	Network string
	// OwnPIDNamespace says the sandbox's processes live in a pid namespace of
	// their own: the pids its agent reports mean nothing on the host, so the
	// suite cannot check them after Destroy (the backend's own tests must
	// prove nothing survives).
	OwnPIDNamespace bool
	// Engine runs the sandboxes' code contexts (backend.Spec.Engine); ""
	// is the agent's default. Run it for every engine with ForEachEngine.
	Engine string
}

// Run runs the suite against b.
func Run(t *testing.T, b backend.Backend, opts Options) {
	t.Helper()
	if err := b.Available(t.Context()); err != nil {
		t.Fatalf("backend %s not available: %v", b.Name(), err)
	}
	if opts.Python == "" {
		opts.Python = "/usr/bin/python3"
	}
	if opts.Network == "" {
		opts.Network = api.NetworkAllow
	}
	spec := func(t *testing.T) backend.Spec {
		ws := t.TempDir()
		for _, d := range []string{"data", "models", "outputs"} {
			os.Mkdir(filepath.Join(ws, d), 0o755)
		}
		return backend.Spec{
			ID: "conf" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), User: "user", Workdir: "/home/user",
			WorkspaceDir: ws, Env: map[string]string{"CONF_VAR": "conf"},
			Network: api.NetworkPolicy{Policy: opts.Network}, Python: opts.Python, Engine: opts.Engine,
		}
	}
	start := func(t *testing.T, s backend.Spec) (backend.Instance, *agentclient.Client) {
		t.Helper()
		inst, err := create(t, b, s)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		c := agentclient.NewClient(inst.AgentSocket())
		t.Cleanup(func() {
			c.Close()
			_ = inst.Destroy(context.Background())
		})
		return inst, c
	}

	t.Run("code runs in the workspace with the sandbox env", func(t *testing.T) {
		t.Parallel()
		s := spec(t)
		inst, c := start(t, s)
		e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import os\nopen('outputs/hello.txt','w').write('hi')\nprint(os.environ['CONF_VAR'], os.environ['WORKSPACE'])"}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("execute: %v %+v", err, e.Error)
		}
		want := "conf " + opts.WorkspaceEnvRoot(s, inst) + "\n"
		if strings.Join(e.Logs.Stdout, "") != want {
			t.Fatalf("env in code = %q, want %q", e.Logs.Stdout, want)
		}
		b, err := os.ReadFile(filepath.Join(s.WorkspaceDir, "outputs", "hello.txt"))
		if err != nil || string(b) != "hi" {
			t.Fatalf("workspace file on the host: %q %v", b, err)
		}
		rc, err := c.ReadFile(t.Context(), "/home/user/outputs/hello.txt")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != "hi" {
			t.Fatalf("files API at the workdir: %q", got)
		}
	})

	t.Run("destroy stops everything, even mid-cell and with a done ctx", func(t *testing.T) {
		t.Parallel()
		s := spec(t)
		inst, c := start(t, s)
		p, err := c.StartProcess(t.Context(), api.ProcessRequest{Cmd: "sleep 1000", Background: true})
		if err != nil {
			t.Fatal(err)
		}
		// A daemon that left its session and process group.
		if _, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "setsid sh -c 'sleep 1001 & echo $! > cmd-daemon.pid' </dev/null >/dev/null 2>&1; sleep 0.2"}, nil); err != nil {
			t.Fatal(err)
		}
		// A cell that spawned its own daemon and now runs forever, ignoring
		// SIGINT.
		go c.Execute(context.Background(), api.ExecuteRequest{Code: "import signal, subprocess, time\n" +
			"signal.signal(signal.SIGINT, signal.SIG_IGN)\n" +
			"d = subprocess.Popen(['setsid', 'sleep', '1002'])\n" +
			"open('cell-daemon.pid', 'w').write(str(d.pid))\n" +
			"while True: time.sleep(0.1)"}, nil)
		pids := []int{p.PID}
		for _, f := range []string{"cmd-daemon.pid", "cell-daemon.pid"} {
			var pid int
			deadline := time.Now().Add(90 * time.Second) // kernel start on a loaded machine
			for {
				b, _ := os.ReadFile(filepath.Join(s.WorkspaceDir, f)) // not there yet: Atoi fails
				var err error
				if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never written", f)
				}
				time.Sleep(20 * time.Millisecond)
			}
			pids = append(pids, pid)
		}
		done, cancel := context.WithCancel(context.Background())
		cancel()
		if err := inst.Destroy(done); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		select {
		case <-inst.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("Done not closed after Destroy")
		}
		if err := inst.Destroy(t.Context()); err != nil {
			t.Fatalf("second Destroy: %v", err)
		}
		if err := c.Health(t.Context()); err == nil {
			t.Fatal("agent still answers after Destroy")
		}
		if opts.OwnPIDNamespace {
			return
		}
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				t.Errorf("process %d survived Destroy", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	t.Run("network policies are enforced or refused", func(t *testing.T) {
		t.Parallel()
		for _, pol := range []string{api.NetworkAllow, api.NetworkDeny, api.NetworkWhitelist} {
			s := spec(t)
			s.Network = api.NetworkPolicy{Policy: pol}
			if pol == api.NetworkWhitelist {
				s.Network.Whitelist = []string{"example.org"}
			}
			inst, err := b.Create(t.Context(), s)
			enforced := contains(opts.EnforcesNetwork, pol)
			switch {
			case enforced && err != nil:
				t.Errorf("%s: %v", pol, err)
			case !enforced && !errors.Is(err, api.ErrUnsupported):
				t.Errorf("%s: backend does not enforce it but Create gave %v, want ErrUnsupported", pol, err)
			}
			if inst != nil {
				_ = inst.Destroy(context.Background())
			}
		}
	})

	t.Run("a bad interpreter is our failure, not a Python error", func(t *testing.T) {
		t.Parallel()
		s := spec(t)
		s.Python = "/nonexistent/python3"
		inst, err := b.Create(t.Context(), s)
		if err != nil {
			return // refusing at create is fine too
		}
		defer inst.Destroy(context.Background())
		c := agentclient.NewClient(inst.AgentSocket())
		defer c.Close()
		e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1"}, nil)
		if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "nonexistent") || e.Error != nil {
			t.Fatalf("execute with a bad interpreter: err %v, execution error %+v", err, e.Error)
		}
	})
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] == "Z"
}
