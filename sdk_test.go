package dssandbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

var stateDir string

func TestMain(m *testing.M) {
	dssandbox.ServeAgentIfChild()
	testenv.MainRequirePython()
	dir, err := os.MkdirTemp("", "dss-sdk-test-")
	if err != nil {
		panic(err)
	}
	stateDir = dir
	os.Setenv("SANDBOX_STATE_DIR", dir)
	// The behaviour tests run on local (the default, auto, would pick oci
	// as root); the oci tests name their backend.
	os.Setenv("SANDBOX_DEFAULT_BACKEND", "local")
	// DS_SANDBOX_TEST_REMOTE=1 runs the same behaviour tests against a real
	// daemon on loopback through the SDK's remote mode.
	var remote *daemon.Daemon
	if os.Getenv("DS_SANDBOX_TEST_REMOTE") == "1" {
		cfg, err := config.Load("")
		if err != nil {
			panic(err)
		}
		cfg.Listen = "127.0.0.1:0"
		remote, err = daemon.Start(context.Background(), cfg, daemon.Options{})
		if err != nil {
			panic(err)
		}
		os.Setenv(dssandbox.URLEnv, remote.URL)
		fmt.Fprintln(os.Stderr, "remote mode: daemon at", remote.URL)
	}
	code := m.Run()
	_ = dssandbox.Shutdown(context.Background())
	if remote != nil {
		_ = remote.Manager.Close(context.Background())
		_ = remote.Shutdown(5 * time.Second)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func newSandbox(t *testing.T, opts dssandbox.Options) *dssandbox.Sandbox {
	t.Helper()
	sbx, err := dssandbox.Create(t.Context(), opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := sbx.Kill(context.Background()); err != nil && !errors.Is(err, dssandbox.ErrNotFound) {
			t.Errorf("Kill: %v", err)
		}
	})
	return sbx
}

func run(t *testing.T, sbx *dssandbox.Sandbox, code string, opts ...dssandbox.RunOption) *dssandbox.Execution {
	t.Helper()
	exec, err := sbx.RunCode(t.Context(), code, opts...)
	if err != nil {
		t.Fatalf("RunCode(%q): %v", code, err)
	}
	return exec
}

func TestRunCodeBasics(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})

	t.Run("state persists", func(t *testing.T) {
		if e := run(t, sbx, "x = 41"); e.Error != nil || e.Text() != "" {
			t.Fatalf("x = 41: %+v", e)
		}
		if got := run(t, sbx, "x + 1").Text(); got != "42" {
			t.Fatalf("x + 1 = %q, want 42", got)
		}
	})
	t.Run("stdout", func(t *testing.T) {
		e := run(t, sbx, "print('hi')")
		if len(e.Logs.Stdout) != 1 || e.Logs.Stdout[0] != "hi\n" {
			t.Fatalf("stdout = %q, want [\"hi\\n\"]", e.Logs.Stdout)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		e := run(t, sbx, "import sys; sys.stderr.write('oops\\n')")
		if strings.Join(e.Logs.Stderr, "") != "oops\n" {
			t.Fatalf("stderr = %q", e.Logs.Stderr)
		}
	})
	t.Run("error", func(t *testing.T) {
		e := run(t, sbx, "1/0")
		if e.Error == nil || e.Error.Name != "ZeroDivisionError" || e.Error.Value != "division by zero" {
			t.Fatalf("error = %+v", e.Error)
		}
		if !strings.Contains(e.Error.Traceback, "ZeroDivisionError") || strings.Contains(e.Error.Traceback, "\x1b[") {
			t.Fatalf("traceback should name the error and carry no ANSI codes: %q", e.Error.Traceback)
		}
	})
	t.Run("execution count increases", func(t *testing.T) {
		a, b := run(t, sbx, "1"), run(t, sbx, "2")
		if a.ExecutionCount == 0 || b.ExecutionCount != a.ExecutionCount+1 {
			t.Fatalf("counts %d then %d", a.ExecutionCount, b.ExecutionCount)
		}
	})
	t.Run("streams before the end", func(t *testing.T) {
		var first time.Time
		e := run(t, sbx, "import time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')",
			dssandbox.OnStdout(func(s string) {
				if first.IsZero() {
					first = time.Now()
				}
			}))
		end := time.Now()
		if first.IsZero() || !first.Before(end.Add(-200*time.Millisecond)) {
			t.Fatalf("first stdout chunk did not arrive while the cell ran (logs %q)", e.Logs.Stdout)
		}
	})
	t.Run("per-cell envs", func(t *testing.T) {
		e := run(t, sbx, "import os; os.environ.get('CELL_VAR')", dssandbox.WithEnvs(map[string]string{"CELL_VAR": "v1"}))
		if e.Text() != "'v1'" {
			t.Fatalf("CELL_VAR in cell = %s", e.Text())
		}
		if e := run(t, sbx, "import os; os.environ.get('CELL_VAR')"); e.Text() != "" && e.Text() != "None" {
			t.Fatalf("CELL_VAR leaked into the next cell: %s", e.Text())
		}
	})
	t.Run("input refused cleanly", func(t *testing.T) {
		e := run(t, sbx, "input('name? ')", dssandbox.WithTimeout(20*time.Second))
		if e.Error == nil || e.Error.Name != "StdinNotImplementedError" {
			t.Fatalf("input() error = %+v", e.Error)
		}
	})
}

func TestRichResults(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	t.Run("matplotlib png", func(t *testing.T) {
		var streamed int
		e := run(t, sbx, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()",
			dssandbox.OnResult(func(dssandbox.Result) { streamed++ }))
		if len(e.Results) != 1 || e.Results[0].PNG == "" || e.Results[0].IsMainResult {
			t.Fatalf("results = %v", formats(e.Results))
		}
		if !strings.HasPrefix(e.Results[0].PNG, "iVBORw0KGgo") {
			t.Fatalf("png is not base64 PNG: %.20s", e.Results[0].PNG)
		}
		if streamed != 1 {
			t.Fatalf("OnResult called %d times", streamed)
		}
	})
	t.Run("dataframe html", func(t *testing.T) {
		e := run(t, sbx, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
		if len(e.Results) != 1 || !e.Results[0].IsMainResult || !strings.Contains(e.Results[0].HTML, "<table") || e.Results[0].Text == "" {
			t.Fatalf("results = %v", formats(e.Results))
		}
	})
	t.Run("display order", func(t *testing.T) {
		e := run(t, sbx, "from IPython.display import display, HTML, Markdown\n"+
			"display(HTML('<b>one</b>'))\ndisplay(Markdown('**two**'))\ndisplay({'three': 3}, raw=False)\n'four'")
		var got []string
		for _, r := range e.Results {
			switch {
			case r.HTML != "":
				got = append(got, "html:"+r.HTML)
			case r.Markdown != "":
				got = append(got, "md:"+r.Markdown)
			default:
				got = append(got, "text:"+r.Text)
			}
		}
		want := []string{"html:<b>one</b>", "md:**two**", "text:{'three': 3}", "text:'four'"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("results in order = %q, want %q", got, want)
		}
		if !e.Results[3].IsMainResult || e.Results[0].IsMainResult {
			t.Fatal("only the last expression is the main result")
		}
	})
	t.Run("other mime types", func(t *testing.T) {
		e := run(t, sbx, "from IPython.display import display, Latex, SVG, JSON, Javascript\n"+
			"display(Latex(r'$x^2$'))\ndisplay(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>'))\n"+
			"display(JSON({'k': [1, 2]}))\ndisplay(Javascript('1+1'))\n"+
			"display({'application/x-custom': 'c', 'text/plain': 'custom'}, raw=True)")
		if len(e.Results) != 5 {
			t.Fatalf("results = %v", formats(e.Results))
		}
		r := e.Results
		if r[0].LaTeX != "$x^2$" || !strings.Contains(r[1].SVG, "<svg") || string(r[2].JSON) != `{"k":[1,2]}` ||
			r[3].JavaScript != "1+1" || string(r[4].Other["application/x-custom"]) != `"c"` {
			t.Fatalf("results = %+v", r)
		}
	})
}

func formats(rs []dssandbox.Result) [][]string {
	var out [][]string
	for _, r := range rs {
		out = append(out, r.Formats())
	}
	return out
}

func TestTimeoutInterruptsCell(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	run(t, sbx, "kept = 'still here'")
	e := run(t, sbx, "while True: pass", dssandbox.WithTimeout(time.Second))
	if e.Error == nil || e.Error.Name != "TimeoutError" {
		t.Fatalf("error = %+v, want TimeoutError", e.Error)
	}
	if got := run(t, sbx, "kept").Text(); got != "'still here'" {
		t.Fatalf("state after timeout: %q", got)
	}
}

func TestKernelDeath(t *testing.T) {
	t.Parallel()
	for name, code := range map[string]string{
		"os._exit": "import os; os._exit(1)",
		"segfault": "import ctypes; ctypes.string_at(0)",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sbx := newSandbox(t, dssandbox.Options{})
			run(t, sbx, "lost = 1")
			e := run(t, sbx, code)
			if e.Error == nil || e.Error.Name != "DeadKernelError" {
				t.Fatalf("error = %+v, want DeadKernelError", e.Error)
			}
			next := run(t, sbx, "'lost' in globals()")
			if next.Text() != "False" || len(next.Notices) == 0 || !strings.Contains(next.Notices[0], "restarted") {
				t.Fatalf("next execution: text %q notices %q", next.Text(), next.Notices)
			}
		})
	}
}

func TestCodeContexts(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	run(t, sbx, "where = 'default'")
	c, err := sbx.CreateCodeContext(t.Context(), "data")
	if err != nil {
		t.Fatal(err)
	}
	if e := run(t, sbx, "'where' in globals()", dssandbox.InContext(c)); e.Text() != "False" {
		t.Fatalf("contexts share state: %q", e.Text())
	}
	if e := run(t, sbx, "import os; os.path.basename(os.getcwd())", dssandbox.InContext(c)); e.Text() != "'data'" {
		t.Fatalf("context cwd = %s", e.Text())
	}
	run(t, sbx, "y = 1", dssandbox.InContext(c))
	if err := sbx.RestartCodeContext(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if e := run(t, sbx, "'y' in globals()", dssandbox.InContext(c)); e.Text() != "False" {
		t.Fatal("restart kept state")
	}
	list, err := sbx.ListCodeContexts(t.Context())
	if err != nil || len(list) != 2 || list[0].ID != "default" {
		t.Fatalf("contexts = %+v, %v", list, err)
	}
	if err := sbx.RemoveCodeContext(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := sbx.RunCode(t.Context(), "1", dssandbox.InContext(c)); !errors.Is(err, dssandbox.ErrNotFound) {
		t.Fatalf("run in removed context: %v, want ErrNotFound", err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	cases := []struct {
		name string
		err  error
		want error
		msg  string
	}{
		{"empty code", second(sbx.RunCode(t.Context(), "  \n")), dssandbox.ErrInvalid, "code is empty"},
		{"unknown context", second(sbx.RunCode(t.Context(), "1", dssandbox.InContext(dssandbox.CodeContext{ID: "nope"}))), dssandbox.ErrNotFound, "context nope"},
		{"unknown sandbox", second(dssandbox.Connect(t.Context(), "doesnotexist")), dssandbox.ErrNotFound, "sandbox doesnotexist"},
		{"missing template", second(dssandbox.Create(t.Context(), dssandbox.Options{Template: "no-such-template"})), dssandbox.ErrNotFound, "no-such-template"},
		{"bad workdir", second(dssandbox.Create(t.Context(), dssandbox.Options{Workdir: "relative"})), dssandbox.ErrInvalid, "workdir"},
		{"unknown backend", second(dssandbox.Create(t.Context(), dssandbox.Options{Backend: "vmware"})), dssandbox.ErrUnsupported, "vmware"},
		{"network deny on local", second(dssandbox.Create(t.Context(), dssandbox.Options{Network: &dssandbox.NetworkPolicy{Policy: "deny"}})), dssandbox.ErrUnsupported, "cannot enforce"},
		{"bad policy", second(dssandbox.Create(t.Context(), dssandbox.Options{Network: &dssandbox.NetworkPolicy{Policy: "sometimes"}})), dssandbox.ErrInvalid, "sometimes"},
		{"timeout over the cap", second(dssandbox.Create(t.Context(), dssandbox.Options{Timeout: 25 * time.Hour})), dssandbox.ErrInvalid, "max_sandbox_timeout_sec"},
		{"negative timeout", second(dssandbox.Create(t.Context(), dssandbox.Options{Timeout: -time.Second})), dssandbox.ErrInvalid, "negative"},
		{"limits on local", second(dssandbox.Create(t.Context(), dssandbox.Options{TemplateSpec: &dssandbox.Template{ID: "big", MemoryMB: 1024}})), dssandbox.ErrUnsupported, "memory_mb"},
		{"pids on local", second(dssandbox.Create(t.Context(), dssandbox.Options{Limits: dssandbox.Limits{PidsLimit: 256}})), dssandbox.ErrUnsupported, "pids_limit"},
		{"pids out of range", second(dssandbox.Create(t.Context(), dssandbox.Options{Limits: dssandbox.Limits{PidsLimit: 5}})), dssandbox.ErrInvalid, "pids_limit"},
		{"output bound out of range", second(dssandbox.Create(t.Context(), dssandbox.Options{Limits: dssandbox.Limits{MaxOutputBytes: 1}})), dssandbox.ErrInvalid, "max_output_bytes"},
		{"image on local", second(dssandbox.Create(t.Context(), dssandbox.Options{TemplateSpec: &dssandbox.Template{ID: "img", Image: "python:3.12"}})), dssandbox.ErrUnsupported, "image"},
		{"load missing template", second(dssandbox.LoadTemplate(t.Context(), "absent")), dssandbox.ErrNotFound, "absent"},
		{"bad env name", second(dssandbox.Create(t.Context(), dssandbox.Options{Envs: map[string]string{"A=B": "1"}})), dssandbox.ErrInvalid, "A=B"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !errors.Is(c.err, c.want) || !strings.Contains(c.err.Error(), c.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", c.err, c.want, c.msg)
			}
		})
	}
	// The sandbox is unharmed by all of that.
	if got := run(t, sbx, "2*21").Text(); got != "42" {
		t.Fatalf("after bad input: %q", got)
	}
}

func second[T any](_ T, err error) error { return err }

// TestLimitsOnLocal: the limits local can enforce (open files, output per
// execution) reach the sandbox's code and its info.
func TestLimitsOnLocal(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{Limits: dssandbox.Limits{MaxOpenFiles: 256, MaxOutputBytes: 4096}})
	info, err := sbx.GetInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Limits.MaxOpenFiles != 256 || info.Limits.MaxOutputBytes != 4096 {
		t.Fatalf("info limits %+v", info.Limits)
	}
	res, err := sbx.Commands.Run(t.Context(), "ulimit -n")
	if err != nil || strings.TrimSpace(res.Stdout) != "256" {
		t.Fatalf("ulimit -n: %v %+v", err, res)
	}
	e := run(t, sbx, "print('x' * 10000)")
	if !e.Truncated || len(strings.Join(e.Logs.Stdout, "")) != 4096 {
		t.Fatalf("output of 10000 bytes with a 4096-byte bound: truncated %v, %d bytes kept, notices %q", e.Truncated, len(strings.Join(e.Logs.Stdout, "")), e.Notices)
	}
}

func TestMalformedTemplateYAML(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(stateDir, "templates")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("id: broken\nenv: [unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := dssandbox.Create(t.Context(), dssandbox.Options{Template: "broken"})
	if !errors.Is(err, dssandbox.ErrInvalid) || !strings.Contains(err.Error(), "broken.yaml") {
		t.Fatalf("err = %v, want ErrInvalid naming broken.yaml", err)
	}
}

func TestTemplateApplied(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(stateDir, "templates")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "id: analyst\nname: Analyst\nenv:\n  CUSTOM_VAR: value\nfiles:\n  setup.sh: \"#!/bin/bash\\necho hi\\n\"\n  conf/config.json: '{\"key\": \"value\"}'\nuser: developer\nworkdir: /home/developer\n"
	if err := os.WriteFile(filepath.Join(dir, "analyst.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := dssandbox.LoadTemplate(t.Context(), "analyst")
	if err != nil || loaded.Name != "Analyst" || loaded.Env["CUSTOM_VAR"] != "value" {
		t.Fatalf("LoadTemplate = %+v, %v", loaded, err)
	}
	for name, opts := range map[string]dssandbox.Options{
		"stored": {Template: "analyst"},
		"loaded": {TemplateSpec: &loaded},
		"inline": {TemplateSpec: &dssandbox.Template{ID: "analyst", Env: map[string]string{"CUSTOM_VAR": "value"},
			Files: map[string]string{"setup.sh": "#!/bin/bash\necho hi\n", "conf/config.json": `{"key": "value"}`},
			User:  "developer", Workdir: "/home/developer"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sbx := newSandbox(t, opts)
			if sbx.User() != "developer" || sbx.Workdir() != "/home/developer" {
				t.Fatalf("user/workdir = %s %s", sbx.User(), sbx.Workdir())
			}
			b, err := sbx.Files.Read(t.Context(), "/home/developer/conf/config.json")
			if err != nil || string(b) != `{"key": "value"}` {
				t.Fatalf("template file: %q %v", b, err)
			}
			if e := run(t, sbx, "import os; os.environ['CUSTOM_VAR'], open('setup.sh').read()"); e.Text() != `('value', '#!/bin/bash\necho hi\n')` {
				t.Fatalf("env/file in code: %s %+v", e.Text(), e.Error)
			}
		})
	}
}

func TestWorkspaces(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	e := run(t, sbx, "import os, json\njson.dumps([os.environ[k] for k in ('WORKSPACE','WORKSPACE_DATA','WORKSPACE_MODELS','WORKSPACE_OUTPUTS')] + [os.getcwd()])")
	info, _ := sbx.GetInfo(t.Context())
	ws := info.WorkspacePath
	// The code sees its workspace at the workdir (/home/user) where the
	// backend can put it there; local on a host without mount namespaces
	// says it could not (a warning) and the code sees the host path.
	seen := info.Workdir
	if len(info.Warnings) > 0 {
		seen = ws
	}
	want := fmt.Sprintf("'[%q, %q, %q, %q, %q]'", seen, seen+"/data", seen+"/models", seen+"/outputs", seen)
	if e.Text() != want {
		t.Fatalf("workspace env = %s, want %s", e.Text(), want)
	}
	for _, d := range []string{"data", "models", "outputs"} {
		if st, err := os.Stat(filepath.Join(ws, d)); err != nil || !st.IsDir() {
			t.Fatalf("%s/ missing: %v", d, err)
		}
	}
	if err := sbx.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws); !os.IsNotExist(err) {
		t.Fatalf("anonymous workspace survived kill: %v", err)
	}

	t.Run("named workspace persists", func(t *testing.T) {
		id := "persist-" + strings.ToLower(rand.Text()[:6])
		a := newSandbox(t, dssandbox.Options{WorkspaceID: id})
		run(t, a, "open('outputs/result.txt', 'w').write('kept')")
		if err := a.Kill(t.Context()); err != nil {
			t.Fatal(err)
		}
		b := newSandbox(t, dssandbox.Options{WorkspaceID: id})
		got, err := b.Files.Read(t.Context(), "outputs/result.txt")
		if err != nil || string(got) != "kept" {
			t.Fatalf("named workspace lost its file: %q %v", got, err)
		}
	})
}

func TestSandboxesAreSeparate(t *testing.T) {
	t.Parallel()
	a := newSandbox(t, dssandbox.Options{})
	b := newSandbox(t, dssandbox.Options{})
	run(t, a, "secret = 1\nopen('mine.txt', 'w').write('a')")
	if e := run(t, b, "'secret' in globals()"); e.Text() != "False" {
		t.Fatal("state shared between sandboxes")
	}
	if ok, err := b.Files.Exists(t.Context(), "mine.txt"); err != nil || ok {
		t.Fatalf("file shared between sandboxes: %v %v", ok, err)
	}
	ia, _ := a.GetInfo(t.Context())
	if _, err := b.Files.Read(t.Context(), filepath.Join(ia.WorkspacePath, "mine.txt")); !errors.Is(err, dssandbox.ErrPermission) {
		t.Fatalf("reading another sandbox's workspace: %v, want ErrPermission", err)
	}
}

func TestKillLeavesNoProcess(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{})
	e := run(t, sbx, "import os, subprocess\n"+
		"p = subprocess.Popen(['sleep', '1000'])\n"+
		"subprocess.run(['sh', '-c', 'setsid sleep 1001 & echo $! > daemon.pid'])\n"+
		"[os.getpid(), p.pid, int(open('daemon.pid').read())]")
	if _, err := sbx.Commands.Start(t.Context(), "sleep 1002"); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.FieldsFunc(e.Text(), func(r rune) bool { return r == '[' || r == ']' || r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids %q: %v", e.Text(), err)
		}
		pids = append(pids, n)
	}
	if len(pids) != 3 {
		t.Fatalf("pids = %v", pids)
	}
	procs, err := sbx.Commands.List(t.Context())
	if err != nil || len(procs) != 1 {
		t.Fatalf("processes = %+v %v", procs, err)
	}
	pids = append(pids, procs[0].PID)
	if err := sbx.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d survived the kill", pid)
		}
	}
	if _, err := sbx.RunCode(t.Context(), "1"); err == nil {
		t.Fatal("RunCode on a killed sandbox succeeded")
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestLifetime(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{Timeout: time.Second})
	if err := sbx.SetTimeout(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	info, err := sbx.GetInfo(t.Context())
	if err != nil || time.Until(info.EndAt) < 50*time.Minute {
		t.Fatalf("deadline after SetTimeout = %v, %v", info.EndAt, err)
	}
	short := newSandbox(t, dssandbox.Options{Timeout: time.Second})
	deadline := time.Now().Add(30 * time.Second)
	for short.IsRunning(t.Context()) {
		if time.Now().After(deadline) {
			t.Fatal("sandbox still running long after its timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := dssandbox.Connect(t.Context(), short.ID); !errors.Is(err, dssandbox.ErrNotFound) {
		t.Fatalf("Connect after timeout: %v", err)
	}
	if !sbx.IsRunning(t.Context()) {
		t.Fatal("the extended sandbox died")
	}
	list, err := dssandbox.List(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list {
		found = found || s.SandboxID == sbx.ID
	}
	if !found {
		t.Fatal("List does not show a running sandbox")
	}
}

func TestMetadataFilter(t *testing.T) {
	t.Parallel()
	tag := strings.ToLower(rand.Text()[:8])
	a := newSandbox(t, dssandbox.Options{Metadata: map[string]string{"suite": tag}})
	newSandbox(t, dssandbox.Options{})
	list, err := dssandbox.List(t.Context(), map[string]string{"suite": tag})
	if err != nil || len(list) != 1 || list[0].SandboxID != a.ID {
		t.Fatalf("List(suite=%s) = %+v %v", tag, list, err)
	}
	c, err := dssandbox.Connect(t.Context(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	run(t, a, "shared = 7")
	if got := run(t, c, "shared").Text(); got != "7" {
		t.Fatalf("Connect does not reach the same sandbox: %q", got)
	}
}

func TestCleanEnvironment(t *testing.T) {
	// Not parallel: it sets a variable in this process's environment.
	t.Setenv("DS_TEST_SECRET_TOKEN", "must-not-leak")
	sbx := newSandbox(t, dssandbox.Options{Envs: map[string]string{"MINE": "yes"}})
	e := run(t, sbx, "import os; (os.environ.get('DS_TEST_SECRET_TOKEN'), os.environ.get('MINE'), os.environ.get('DS_SANDBOX_AGENT_REEXEC'))")
	if e.Text() != "(None, 'yes', None)" {
		t.Fatalf("environment in the kernel: %s", e.Text())
	}
	res, err := sbx.Commands.Run(t.Context(), "echo \"[$DS_TEST_SECRET_TOKEN][$MINE]\"")
	if err != nil || res.Stdout != "[][yes]\n" {
		t.Fatalf("environment in a command: %q %v", res.Stdout, err)
	}
}
