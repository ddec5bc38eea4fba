package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	// The daemon tests start this binary as `ds-sandbox serve` to kill it -9.
	if v := os.Getenv("DS_TEST_RUN_CLI"); v != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := Main(ctx, strings.Split(v, "\x1f"), os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	testenv.MainRequirePython()
	dir, err := os.MkdirTemp("", "dss-cli-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("SANDBOX_STATE_DIR", dir)
	// These tests run on local (auto would pick oci as root); the few that
	// need the default resolution say so.
	os.Setenv("SANDBOX_DEFAULT_BACKEND", "local")
	code := m.Run()
	stopShared(code != 0)
	os.RemoveAll(dir)
	os.Exit(code)
}

func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(t.Context(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestRun(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "prog.py")
	if err := os.WriteFile(script, []byte("print('from file')\n6*7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name               string
		stdin              string
		args               []string
		code               int
		stdout, stderr     string // substrings
		notStdout, notBoth string
	}{
		{name: "inline", args: []string{"run", "-c", "print('hi')\n1+1"}, stdout: "hi\n2\n"},
		{name: "file", args: []string{"run", script}, stdout: "from file\n42\n"},
		{name: "stdin", stdin: "print('piped')", args: []string{"run", "-"}, stdout: "piped\n"},
		{name: "stderr", args: []string{"run", "-c", "import sys; sys.stderr.write('warn\\n')"}, stderr: "warn\n"},
		{name: "python error", args: []string{"run", "-c", "def f():\n    1/0\nf()"}, code: 1, stderr: "ZeroDivisionError: division by zero", notStdout: "ZeroDivision"},
		{name: "timeout", args: []string{"run", "--timeout", "1", "-c", "while True: pass"}, code: 1, stderr: "stopped: the run exceeded --timeout 1s\n",
			notBoth: "KeyboardInterrupt"},
		{name: "timeout text", args: []string{"run", "--timeout", "1", "-c", "import time; time.sleep(30)"}, code: 1, stderr: "stopped: the run exceeded --timeout 1s\n",
			notBoth: "kept"},
		{name: "dataframe", args: []string{"run", "-c", "import pandas as pd; pd.DataFrame({'a': [1, 2]})"}, stdout: "   a\n0  1\n1  2\n"},
		{name: "nothing to run", args: []string{"run"}, code: 2, stderr: "nothing to run"},
		{name: "both code and file", args: []string{"run", "-c", "1", script}, code: 2, stderr: "not both"},
		{name: "missing file", args: []string{"run", "/nonexistent/x.py"}, code: 2, stderr: "no such file"},
		{name: "unenforceable network", args: []string{"run", "--network", "deny", "-c", "1"}, code: 3, stderr: "cannot enforce"},
		{name: "bad network", args: []string{"run", "--network", "maybe", "-c", "1"}, code: 3, stderr: "maybe"},
		{name: "ignored whitelist", args: []string{"run", "--network", "allow", "--whitelist", "a.com", "-c", "1"}, code: 3, stderr: "only apply to the whitelist policy"},
		{name: "unknown template", args: []string{"run", "--template", "nope", "-c", "1"}, code: 3, stderr: "nope"},
		{name: "timeout too long", args: []string{"run", "--timeout", "10000000000", "-c", "1"}, code: 3, stderr: "want 1..86400"},
		{name: "longest timeout", args: []string{"run", "--timeout", "86400", "-c", "print(3)"}, stdout: "3\n"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: "unknown command"},
		{name: "scanner findings", args: []string{"run", "-c", "import os, subprocess\nimport re\nopen('x', 'w')\nre.compile('a')\nprint('ran')"}, stdout: "ran\n",
			stderr: "[scanner: 4 findings (critical: open(), compile(); high: import os, import subprocess); -v for details]\n", notBoth: "line 1"},
		{name: "scanner findings in full", args: []string{"run", "-v", "-c", "import subprocess\nprint('ran')"}, stdout: "ran\n",
			stderr: "[code scanner: line 1: high subprocess: imports subprocess, which can start other processes]", notBoth: "-v for details"},
		{name: "scanner looser than configured", args: []string{"run", "--scanner-mode", "off", "-c", "print('ran')"}, code: 3,
			stderr: `scanner_mode "off" is looser than the configured "warn"`, notStdout: "ran"},
		{name: "scanner blocks", args: []string{"run", "--scanner-mode", "block", "-c", "print('ran')\nexec('1')"}, code: 1,
			stderr: "SecurityScanFailedError: the code scanner (scanner_mode block) refused this cell: line 2", notStdout: "ran"},
		{name: "bad scanner mode", args: []string{"run", "--scanner-mode", "loud", "-c", "1"}, code: 3, stderr: "scanner_mode \"loud\""},
		{name: "output limit", args: []string{"run", "--max-output-bytes", "2000", "-c", "print('x'*100000)"}, stdout: strings.Repeat("x", 2000),
			stderr: "output truncated", notStdout: strings.Repeat("x", 2001)},
		{name: "open files limit", args: []string{"run", "--max-open-files", "64", "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"}, stdout: "64\n"},
		{name: "limits local cannot enforce", args: []string{"run", "--memory-mb", "256", "-c", "1"}, code: 3, stderr: "cannot enforce resource limits"},
		{name: "bad output limit", args: []string{"run", "--max-output-bytes", "10", "-c", "1"}, code: 3, stderr: "max_output_bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCLI(t, c.stdin, c.args...)
			if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errOut, c.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, c.code, out, c.stdout, errOut, c.stderr)
			}
			if c.notStdout != "" && strings.Contains(out, c.notStdout) {
				t.Fatalf("stdout has %q: %q", c.notStdout, out)
			}
			if c.notBoth != "" && strings.Contains(out+errOut, c.notBoth) {
				t.Fatalf("output has %q: stdout %q stderr %q", c.notBoth, out, errOut)
			}
		})
	}
}

func TestRunJSON(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "", "run", "--json", "-c", "print('x')\n1/0")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"results", "logs", "error", "execution_count"} {
		if _, ok := v[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, out)
		}
	}
	if !strings.Contains(string(v["logs"]), `"x\n"`) || !strings.Contains(string(v["error"]), "ZeroDivisionError") {
		t.Fatalf("JSON content: %s", out)
	}
}

func TestRunSavesImages(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCLI(t, "", "run", "-c", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	m := regexp.MustCompile(`\[png saved: (\S+)\]`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no saved png in %q", out)
	}
	b, err := os.ReadFile(m[1])
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("saved file %s is not a PNG: %v", m[1], err)
	}
	if filepath.Base(filepath.Dir(m[1])) != "outputs" || !strings.Contains(errOut, "workspace kept") {
		t.Fatalf("image not under a kept workspace's outputs/: %s / %q", m[1], errOut)
	}
}

func TestRunNamedWorkspace(t *testing.T) {
	t.Parallel()
	if code, _, errOut := runCLI(t, "", "run", "--workspace", "cli-ws", "-c", "open('outputs/n.txt', 'w').write('1')"); code != 0 {
		t.Fatalf("first run: %s", errOut)
	}
	code, out, errOut := runCLI(t, "", "run", "--workspace", "cli-ws", "-c", "print(open('outputs/n.txt').read())")
	if code != 0 || out != "1\n" {
		t.Fatalf("second run: exit %d %q %q", code, out, errOut)
	}
}

func TestBench(t *testing.T) {
	t.Parallel()
	args := []string{"bench", "--creates", "1", "--execs", "5", "--json"}
	peer := "../../../shared/peers/jupyter_client_bench.py"
	if _, err := os.Stat(peer); err == nil {
		args = append(args, "--peer", peer)
	}
	code, out, errOut := runCLI(t, "", args...)
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, out)
	}
	if rep.CreateFirst.N != 1 || rep.Exec.N != 5 || rep.Exec.P50 <= 0 {
		t.Fatalf("report: %+v", rep)
	}
	if strings.Contains(strings.Join(args, " "), "--peer") && (rep.Peer == nil || rep.Peer.ExecMs.N != 5) {
		t.Fatalf("peer did not run: %+v %s", rep.Peer, rep.PeerError)
	}
}

func TestSummarise(t *testing.T) {
	t.Parallel()
	if s := Summarise(nil); s.N != 0 {
		t.Fatalf("empty: %+v", s)
	}
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	want := Stats{N: 100, Min: 1, P50: 50.5, P90: 91, P99: 100, Max: 100}
	if got := Summarise(ds); got != want {
		t.Fatalf("Summarise(1..100ms) = %+v, want %+v", got, want)
	}
}
