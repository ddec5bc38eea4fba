package mcpserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/cli"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/mcpserver"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// cliEnv makes the test binary run `ds-sandbox mcp` (for the stdio tests).
const cliEnv = "DS_SANDBOX_MCPTEST_CLI"

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	if os.Getenv(cliEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Main(ctx, []string{"mcp"}, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	testenv.MainRequirePython()
	dir, err := os.MkdirTemp("", "dss-mcp-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("SANDBOX_STATE_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var toolNames = []string{"create_sandbox", "kill_sandbox", "list_files", "read_file", "run_code", "run_command", "write_file"}

func TestToolsInMemory(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	exerciseTools(t, connectInMemory(t, t.Context(), srv))
}

func TestToolsStdio(t *testing.T) {
	t.Parallel()
	stateDir := t.TempDir()
	cs, cmd, stderr := startCLI(t, stateDir)
	exerciseTools(t, cs)
	if err := cs.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("ds-sandbox mcp exited %d; stderr:\n%s", code, stderr)
	}
	assertNoAnonymousWorkspaces(t, stateDir)
}

// TestToolTextsPerBackend: the tool texts and instructions call sandboxes
// isolated only when the default backend isolates code, and never promise
// that packages can be installed.
func TestToolTextsPerBackend(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		backend, want, not string
	}{
		{"local", "which does NOT isolate code", "isolated"},
		{"oci", "isolated Python sandbox (oci backend)", "NOT isolate"},
	} {
		cfg, err := config.Load("")
		if err != nil {
			t.Fatal(err)
		}
		cfg.StateDir = t.TempDir()
		cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
		cfg.Resolve()
		cfg.DefaultBackend = tt.backend
		m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		srv := mcpserver.New(m, mcpserver.Options{})
		cs := connectInMemory(t, t.Context(), srv)
		res, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tl := range res.Tools {
			switch {
			case tl.Name == "create_sandbox" && (!strings.Contains(tl.Description, tt.want) || strings.Contains(tl.Description, tt.not)):
				t.Errorf("%s: create_sandbox says %q, want %q and not %q", tt.backend, tl.Description, tt.want, tt.not)
			case strings.Contains(tl.Description, "pip install"):
				t.Errorf("%s: %s suggests pip install: %q", tt.backend, tl.Name, tl.Description)
			}
		}
		if ins := cs.InitializeResult().Instructions; strings.Contains(ins, tt.not) || !strings.Contains(ins, tt.backend+" backend") {
			t.Errorf("%s: instructions %q", tt.backend, ins)
		}
	}
}

func TestToolsHTTP(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	ts := httptest.NewServer(withTestKey(srv.Handler()))
	t.Cleanup(ts.Close)
	exerciseTools(t, connectHTTP(t, ts.URL, "alice"))
}

// exerciseTools runs every tool through cs, in order, on the session's
// default sandbox and on one it creates.
func exerciseTools(t *testing.T, cs *mcp.ClientSession) {
	t.Run("list", func(t *testing.T) {
		res, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
			sch, _ := tl.InputSchema.(map[string]any)
			if tl.Description == "" || sch["type"] != "object" || sch["properties"] == nil {
				t.Errorf("tool %s: description %q, input schema %v", tl.Name, tl.Description, tl.InputSchema)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, toolNames) {
			t.Fatalf("tools %v, want %v", names, toolNames)
		}
		for _, tl := range res.Tools {
			if tl.Name != "run_code" {
				continue
			}
			sch := tl.InputSchema.(map[string]any)
			code, _ := sch["properties"].(map[string]any)["code"].(map[string]any)
			if req, _ := sch["required"].([]any); !slices.Contains(req, any("code")) || code["description"] == "" || code["type"] != "string" {
				t.Errorf("run_code schema: %v", sch)
			}
		}
	})
	t.Run("run_code state", func(t *testing.T) {
		ok(t, call(t, cs, "run_code", map[string]any{"code": "x = 41"}))
		if got := ok(t, call(t, cs, "run_code", map[string]any{"code": "x + 1"})); !strings.Contains(got, "42") {
			t.Fatalf("x + 1 gave %q", got)
		}
	})
	t.Run("run_code stdout", func(t *testing.T) {
		if got := ok(t, call(t, cs, "run_code", map[string]any{"code": "print('hello from python')"})); !strings.Contains(got, "[stdout]\nhello from python") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("run_code scanner findings", func(t *testing.T) {
		got := ok(t, call(t, cs, "run_code", map[string]any{"code": "import subprocess\nprint('ran')"}))
		if !strings.Contains(got, "[code scanner] 1 finding(s):\nline 1: high subprocess: imports subprocess") || !strings.Contains(got, "[stdout]\nran") {
			t.Fatalf("run_code result %q", got)
		}
	})
	t.Run("run_code exception", func(t *testing.T) {
		got := fails(t, call(t, cs, "run_code", map[string]any{"code": "print('before')\n1/0"}), "ZeroDivisionError")
		for _, want := range []string{"[error] ZeroDivisionError: division by zero", "Traceback", "before"} {
			if !strings.Contains(got, want) {
				t.Errorf("no %q in %q", want, got)
			}
		}
	})
	t.Run("run_code image", func(t *testing.T) {
		res := call(t, cs, "run_code", map[string]any{"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"})
		ok(t, res)
		var img *mcp.ImageContent
		for _, c := range res.Content {
			if ic, isImg := c.(*mcp.ImageContent); isImg {
				img = ic
			}
		}
		if img == nil || img.MIMEType != "image/png" || !bytes.HasPrefix(img.Data, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("no PNG image content in %s", describe(res))
		}
	})
	t.Run("run_command", func(t *testing.T) {
		res := call(t, cs, "run_command", map[string]any{"command": "echo out; echo err >&2; exit 3"})
		got := ok(t, res)
		out := structured[struct {
			ExitCode int    `json:"exit_code"`
			Stdout   string `json:"stdout"`
			Stderr   string `json:"stderr"`
		}](t, res)
		if out.ExitCode != 3 || out.Stdout != "out\n" || out.Stderr != "err\n" || !strings.Contains(got, "exit code: 3") {
			t.Fatalf("got %+v / %q", out, got)
		}
		ok(t, call(t, cs, "run_command", map[string]any{"command": "mkdir -p sub"}))
		if got := ok(t, call(t, cs, "run_command", map[string]any{"command": "pwd", "cwd": "sub"})); !strings.Contains(got, "/sub\n") {
			t.Fatalf("cwd: %q", got)
		}
		fails(t, call(t, cs, "run_command", map[string]any{"command": "sleep 10", "timeout_seconds": 1}), "exit code: -1")
	})
	t.Run("files", func(t *testing.T) {
		res := call(t, cs, "write_file", map[string]any{"path": "data/hello.txt", "content": "hi there\n"})
		ok(t, res)
		w := structured[struct {
			Path string `json:"path"`
			Size int64  `json:"size"`
		}](t, res)
		if !strings.HasSuffix(w.Path, "/data/hello.txt") || w.Size != 9 {
			t.Fatalf("write_file: %+v", w)
		}
		if got := ok(t, call(t, cs, "read_file", map[string]any{"path": w.Path})); got != "hi there\n" {
			t.Fatalf("read_file: %q", got)
		}
		if got := ok(t, call(t, cs, "run_code", map[string]any{"code": "open('data/hello.txt').read()"})); !strings.Contains(got, "hi there") {
			t.Fatalf("python sees %q", got)
		}
		ok(t, call(t, cs, "write_file", map[string]any{"path": "data/blob.bin", "content": "AAEC/w==", "encoding": "base64"}))
		if got := ok(t, call(t, cs, "read_file", map[string]any{"path": "data/blob.bin"})); !strings.Contains(got, "binary file") || !strings.Contains(got, "AAEC/w==") {
			t.Fatalf("binary read_file: %q", got)
		}
		res = call(t, cs, "list_files", map[string]any{"path": "data"})
		got := ok(t, res)
		l := structured[struct {
			Entries []struct{ Path, Type string } `json:"entries"`
		}](t, res)
		if len(l.Entries) != 2 || !strings.HasSuffix(l.Entries[1].Path, "/data/hello.txt") || l.Entries[1].Type != "file" || !strings.Contains(got, "hello.txt") {
			t.Fatalf("list_files: %+v / %q", l, got)
		}
		if got := ok(t, call(t, cs, "list_files", map[string]any{"depth": 2})); !strings.Contains(got, "data/hello.txt") {
			t.Fatalf("list_files depth 2: %q", got)
		}
		ok(t, call(t, cs, "run_command", map[string]any{"command": "head -c 11000000 /dev/zero > big.bin"}))
		fails(t, call(t, cs, "read_file", map[string]any{"path": "big.bin"}), "at most 10 MiB")
		fails(t, call(t, cs, "read_file", map[string]any{"path": "nope.txt"}), "not found")
		fails(t, call(t, cs, "read_file", map[string]any{"path": "/etc/passwd/../../../../root"}), "")
		fails(t, call(t, cs, "write_file", map[string]any{"path": "x", "content": "!!", "encoding": "base64"}), "base64")
	})
	t.Run("bad input", func(t *testing.T) {
		cases := []struct {
			name string
			tool string
			args map[string]any
			want string
		}{
			{"missing code", "run_code", map[string]any{}, "code"},
			{"empty code", "run_code", map[string]any{"code": "  "}, "code is empty"},
			{"code not a string", "run_code", map[string]any{"code": 5}, "code"},
			{"unknown sandbox", "run_code", map[string]any{"code": "1", "sandbox_id": "nosuchsandbox"}, "nosuchsandbox"},
			{"negative timeout", "run_code", map[string]any{"code": "1", "timeout_seconds": -1}, "timeout_seconds"},
			{"unknown field", "run_code", map[string]any{"code": "1", "sandbox": "x"}, "sandbox"},
			{"missing command", "run_command", map[string]any{}, "command"},
			{"missing path", "read_file", map[string]any{}, "path"},
			{"bad depth", "list_files", map[string]any{"depth": 99}, "depth"},
			{"bad encoding", "write_file", map[string]any{"path": "a", "content": "b", "encoding": "rot13"}, "encoding"},
			{"unknown template", "create_sandbox", map[string]any{"template": "no-such-template"}, "no-such-template"},
			{"bad network policy", "create_sandbox", map[string]any{"network_policy": "open"}, "network_policy"},
			{"network the backend cannot enforce", "create_sandbox", map[string]any{"network_policy": "deny"}, "cannot enforce"},
			{"limits the backend cannot enforce", "create_sandbox", map[string]any{"memory_mb": 256}, "cannot enforce resource limits"},
			{"pids limit the backend cannot enforce", "create_sandbox", map[string]any{"pids_limit": 256}, "cannot enforce resource limits"},
			{"open files out of range", "create_sandbox", map[string]any{"max_open_files": 3}, "max_open_files"},
			{"memory below its minimum", "create_sandbox", map[string]any{"memory_mb": 100}, "memory_mb"},
			{"output limit out of range", "create_sandbox", map[string]any{"max_output_bytes": 1 << 40}, "max_output_bytes"},
			{"kill unknown", "kill_sandbox", map[string]any{"sandbox_id": "nosuchsandbox"}, "not found"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) { fails(t, call(t, cs, c.tool, c.args), c.want) })
		}
		if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "no_such_tool"}); err == nil {
			t.Error("an unknown tool did not fail")
		}
		// Still alive, state intact.
		if got := ok(t, call(t, cs, "run_code", map[string]any{"code": "x"})); !strings.Contains(got, "41") {
			t.Fatalf("after bad input: %q", got)
		}
	})
	t.Run("create and kill", func(t *testing.T) {
		res := call(t, cs, "create_sandbox", map[string]any{"envs": map[string]any{"GREETING": "hej"}, "timeout_seconds": 600})
		ok(t, res)
		c := structured[struct {
			SandboxID string `json:"sandbox_id"`
			Workdir   string `json:"workdir"`
			Default   bool   `json:"default"`
		}](t, res)
		if c.SandboxID == "" || c.Workdir == "" || c.Default {
			t.Fatalf("create_sandbox: %+v (the session already has a default)", c)
		}
		if got := ok(t, call(t, cs, "run_code", map[string]any{"code": "import os; os.environ['GREETING']", "sandbox_id": c.SandboxID})); !strings.Contains(got, "hej") {
			t.Fatalf("envs: %q", got)
		}
		fails(t, call(t, cs, "run_code", map[string]any{"code": "x", "sandbox_id": c.SandboxID}), "NameError")
		ok(t, call(t, cs, "kill_sandbox", map[string]any{"sandbox_id": c.SandboxID}))
		fails(t, call(t, cs, "run_code", map[string]any{"code": "1", "sandbox_id": c.SandboxID}), "not found")
		// The default sandbox is untouched; killing it gives the next call a fresh one.
		ok(t, call(t, cs, "run_code", map[string]any{"code": "x"}))
		ok(t, call(t, cs, "kill_sandbox", nil))
		fails(t, call(t, cs, "run_code", map[string]any{"code": "x"}), "NameError")
	})
	t.Run("limits", func(t *testing.T) {
		// 0 is each limit's default, as in the REST API.
		zero := call(t, cs, "create_sandbox", map[string]any{"memory_mb": 0, "cpu_count": 0, "pids_limit": 0, "disk_quota_mb": 0, "max_open_files": 0, "max_output_bytes": 0})
		ok(t, zero)
		ok(t, call(t, cs, "kill_sandbox", map[string]any{"sandbox_id": structured[struct {
			SandboxID string `json:"sandbox_id"`
		}](t, zero).SandboxID}))
		res := call(t, cs, "create_sandbox", map[string]any{"max_open_files": 100, "max_output_bytes": 2048})
		ok(t, res)
		id := structured[struct {
			SandboxID string `json:"sandbox_id"`
		}](t, res).SandboxID
		if got := ok(t, call(t, cs, "run_command", map[string]any{"command": "ulimit -n", "sandbox_id": id})); !strings.Contains(got, "100") {
			t.Errorf("max_open_files 100: ulimit -n says %q", got)
		}
		got := ok(t, call(t, cs, "run_code", map[string]any{"code": "print('x' * 100000)", "sandbox_id": id}))
		if len(got) > 10000 || !strings.Contains(got, "truncated") {
			t.Errorf("max_output_bytes 2048: %d bytes back, want a truncated few KiB: %.300q", len(got), got)
		}
		ok(t, call(t, cs, "kill_sandbox", map[string]any{"sandbox_id": id}))
	})
}

func TestDefaultSandboxPerSession(t *testing.T) {
	t.Parallel()
	srv, m := newServer(t)
	ctx := t.Context()
	a := connectInMemory(t, ctx, srv)
	b := connectInMemory(t, ctx, srv)
	ok(t, call(t, a, "run_code", map[string]any{"code": "x = 41"}))
	fails(t, call(t, b, "run_code", map[string]any{"code": "x"}), "NameError")
	if got := ok(t, call(t, a, "run_code", map[string]any{"code": "x + 1"})); !strings.Contains(got, "42") {
		t.Fatalf("a lost its state: %q", got)
	}
	ok(t, call(t, a, "create_sandbox", nil))
	if n := len(m.List(ctx, nil)); n != 3 {
		t.Fatalf("%d sandboxes, want 3 (two defaults, one created)", n)
	}
	// A sandbox that ends under the session is replaced, and the model is told.
	res := call(t, b, "run_command", map[string]any{"command": "true"})
	id := structured[struct {
		SandboxID string `json:"sandbox_id"`
	}](t, res).SandboxID
	if err := m.Kill(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := ok(t, call(t, b, "run_code", map[string]any{"code": "1"})); !strings.Contains(got, "had ended") {
		t.Fatalf("no notice about the replaced default sandbox: %q", got)
	}

	// Ending a session kills its sandboxes, and only its.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's sandboxes killed", func() bool { return len(m.List(ctx, nil)) == 1 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(m.List(ctx, nil)); n != 0 {
		t.Fatalf("%d sandboxes left after Close", n)
	}
}

func TestCloseInterruptsRunningCode(t *testing.T) {
	t.Parallel()
	srv, m := newServer(t)
	cs := connectInMemory(t, t.Context(), srv)
	ok(t, call(t, cs, "run_code", map[string]any{"code": "1"}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "import time; time.sleep(600)"}})
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if n := len(m.List(t.Context(), nil)); n != 0 {
		t.Fatalf("%d sandboxes left after Close", n)
	}
	cs.Close()
	<-done
}

func TestHTTPIdentity(t *testing.T) {
	t.Parallel()
	srv, m := newServer(t)
	ts := httptest.NewServer(withTestKey(srv.Handler()))
	t.Cleanup(ts.Close)
	ctx := t.Context()
	aliceCtx := auth.WithIdentity(ctx, auth.Identity{KeyID: "alice"})
	bobCtx := auth.WithIdentity(ctx, auth.Identity{KeyID: "bob"})
	alice := connectHTTP(t, ts.URL, "alice")
	bob := connectHTTP(t, ts.URL, "bob")

	res := call(t, alice, "create_sandbox", nil)
	ok(t, res)
	id := structured[struct {
		SandboxID string `json:"sandbox_id"`
	}](t, res).SandboxID
	sb, err := m.Get(aliceCtx, id)
	if err != nil || sb.Info().Owner != "alice" {
		t.Fatalf("alice's sandbox: %v, owner %q", err, sb.Info().Owner)
	}
	if _, err := m.Get(bobCtx, id); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("bob sees alice's sandbox: %v", err)
	}
	fails(t, call(t, bob, "run_code", map[string]any{"code": "1", "sandbox_id": id}), "not found")
	fails(t, call(t, bob, "kill_sandbox", map[string]any{"sandbox_id": id}), "not found")
	ok(t, call(t, alice, "run_code", map[string]any{"code": "1", "sandbox_id": id}))

	ok(t, call(t, bob, "run_code", map[string]any{"code": "2 + 2"}))
	if l := m.List(bobCtx, nil); len(l) != 1 || l[0].Owner != "bob" {
		t.Fatalf("bob's sandboxes: %+v", l)
	}

	// A session id does not carry its owner's rights to another key.
	post := func(key string) int {
		body := `{"jsonrpc":"2.0","id":99,"method":"tools/list","params":{}}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", alice.ID())
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set("X-Test-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("bob"); code != http.StatusNotFound {
		t.Fatalf("bob on alice's session: HTTP %d, want 404", code)
	}
	if code := post("alice"); code != http.StatusOK {
		t.Fatalf("alice on her session: HTTP %d, want 200", code)
	}

	// Closing the session (DELETE) kills its sandboxes.
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's sandbox killed", func() bool { return len(m.List(aliceCtx, nil)) == 0 })
	if l := m.List(bobCtx, nil); len(l) != 1 {
		t.Fatalf("bob's sandbox went with alice's session: %+v", l)
	}
}

func TestStdioSIGTERM(t *testing.T) {
	t.Parallel()
	stateDir := t.TempDir()
	cs, cmd, stderr := startCLI(t, stateDir)
	ok(t, call(t, cs, "run_code", map[string]any{"code": "1"}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "import time; time.sleep(600)"}})
	}()
	time.Sleep(500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the call did not end after SIGTERM; stderr:\n%s", stderr)
	}
	cs.Close()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	assertNoAnonymousWorkspaces(t, stateDir)
}

// newServer returns a Server over a fresh manager; both are closed at the end
// of the test.
func newServer(t *testing.T) (*mcpserver.Server, *manager.Manager) {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultBackend = "local"
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	srv := mcpserver.New(m, mcpserver.Options{Version: "test"})
	t.Cleanup(func() { _ = srv.Close() })
	return srv, m
}

func newClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "ds-sandbox-test", Version: "0"}, nil)
}

func connectInMemory(t *testing.T, ctx context.Context, srv *mcpserver.Server) *mcp.ClientSession {
	t.Helper()
	st, ct := mcp.NewInMemoryTransports()
	served := make(chan error, 1)
	go func() { served <- srv.ServeTransport(context.WithoutCancel(ctx), st) }()
	cs, err := newClient().Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return cs
}

// withTestKey stands in for the daemon's auth middleware: the key named in
// X-Test-Key becomes the request's identity.
func withTestKey(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Test-Key")
		if key == "" {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), auth.Identity{KeyID: key})))
	})
}

type keyTransport struct{ key string }

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-Key", k.key)
	return http.DefaultTransport.RoundTrip(r)
}

func connectHTTP(t *testing.T, url, key string) *mcp.ClientSession {
	t.Helper()
	tr := &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: keyTransport{key}}}
	cs, err := newClient().Connect(t.Context(), tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// startCLI starts this test binary as `ds-sandbox mcp` with its own state
// directory and connects to it over stdio.
func startCLI(t *testing.T, stateDir string) (*mcp.ClientSession, *exec.Cmd, *syncBuffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), cliEnv+"=1", "SANDBOX_STATE_DIR="+stateDir, "SANDBOX_DEFAULT_BACKEND=local")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cs, err := newClient().Connect(t.Context(), &mcp.CommandTransport{Command: cmd, TerminateDuration: 30 * time.Second}, nil)
	if err != nil {
		t.Fatalf("connect to ds-sandbox mcp: %v\nstderr:\n%s", err, stderr)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, cmd, stderr
}

func assertNoAnonymousWorkspaces(t *testing.T, stateDir string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(stateDir, "workspaces"))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), workspace.AnonymousPrefix) {
			t.Errorf("workspace %s left behind: a sandbox was not killed", de.Name())
		}
	}
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return res
}

// ok fails unless res succeeded and returns its text.
func ok(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if res.IsError {
		t.Fatalf("tool error: %s", describe(res))
	}
	return textOf(res)
}

// fails fails unless res is a tool error mentioning want, and returns its text.
func fails(t *testing.T, res *mcp.CallToolResult, want string) string {
	t.Helper()
	got := textOf(res)
	if !res.IsError || !strings.Contains(got, want) {
		t.Fatalf("want a tool error mentioning %q, got %s", want, describe(res))
	}
	return got
}

func textOf(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, isText := c.(*mcp.TextContent); isText {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func describe(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			parts = append(parts, fmt.Sprintf("text %q", c.Text))
		case *mcp.ImageContent:
			parts = append(parts, fmt.Sprintf("image %s (%d bytes)", c.MIMEType, len(c.Data)))
		default:
			parts = append(parts, fmt.Sprintf("%T", c))
		}
	}
	return fmt.Sprintf("isError=%v [%s]", res.IsError, strings.Join(parts, ", "))
}

func structured[T any](t *testing.T, res *mcp.CallToolResult) T {
	t.Helper()
	var v T
	b, err := json.Marshal(res.StructuredContent)
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil || res.StructuredContent == nil {
		t.Fatalf("structured content %v: %v", res.StructuredContent, err)
	}
	return v
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
