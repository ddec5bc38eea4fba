package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon/daemontest"
)

// The commands that talk to a daemon are tested as users run them: the real
// binary, built once from this tree (statically), against one real daemon
// (`ds-sandbox serve` from that binary on a free loopback port, with a state
// directory of its own and no API keys), shared by the tests and stopped by
// TestMain.
var shared struct {
	once       sync.Once
	err        error
	dir        string // the binary and the daemon's state directory
	bin, url   string
	daemon     *exec.Cmd
	daemonLogs *os.File
}

func startShared() error {
	dir, err := os.MkdirTemp("", "dss-cli-bin-")
	if err != nil {
		return err
	}
	shared.dir = dir
	shared.bin = filepath.Join(dir, "ds-sandbox")
	build := exec.Command("go", "build", "-o", shared.bin, "github.com/ds-sandbox/ds-sandbox/cmd/ds-sandbox")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	if shared.daemonLogs, err = os.Create(filepath.Join(dir, "daemon.log")); err != nil {
		return err
	}
	cmd := exec.Command(shared.bin, "serve", "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "SANDBOX_STATE_DIR="+filepath.Join(dir, "state"), "DS_SANDBOX_API_KEY=", "SANDBOX_API_KEYS=")
	cmd.Stderr = shared.daemonLogs
	shared.url, err = daemontest.StartProcess(cmd)
	if err != nil {
		return err
	}
	shared.daemon = cmd
	return nil
}

// stopShared kills what the tests left running on the shared daemon (its
// sandboxes would outlive it) and stops it. It returns the daemon's log when
// asked to keep it.
func stopShared(keepLogs bool) {
	if shared.dir == "" {
		return
	}
	defer os.RemoveAll(shared.dir)
	if shared.daemon != nil {
		var list []api.SandboxInfo
		if b, err := exec.Command(shared.bin, "ps", "--json").Output(); err == nil && json.Unmarshal(b, &list) == nil {
			for _, s := range list {
				exec.Command(shared.bin, "kill", s.SandboxID).Run()
			}
		}
		shared.daemon.Process.Signal(syscall.SIGTERM)
		shared.daemon.Wait()
	}
	if shared.daemonLogs != nil {
		shared.daemonLogs.Close()
		if keepLogs {
			if b, err := os.ReadFile(shared.daemonLogs.Name()); err == nil {
				fmt.Fprintf(os.Stderr, "--- shared daemon's log ---\n%s", b)
			}
		}
	}
}

// realCLI returns the built binary and the shared daemon's URL.
func realCLI(t *testing.T) (bin, url string) {
	t.Helper()
	shared.once.Do(func() {
		shared.err = startShared()
		if shared.err == nil {
			// ps and friends without flags find the daemon here.
			os.Setenv("DS_SANDBOX_URL", shared.url)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.bin, shared.url
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
}

// bin runs the real binary against the shared daemon; env entries are added
// (and win).
func bin(t *testing.T, stdin string, env []string, args ...string) cliResult {
	t.Helper()
	b, url := realCLI(t)
	cmd := exec.CommandContext(t.Context(), b, args...)
	cmd.Env = append(append(os.Environ(), "DS_SANDBOX_URL="+url), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("ds-sandbox %q: %v", args, err)
	}
	return cliResult{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// must runs the binary and fails the test unless it exits 0.
func must(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := bin(t, "", nil, args...)
	if r.code != 0 {
		t.Fatalf("ds-sandbox %q:\n%s", args, r)
	}
	return r
}

// newDaemonSandbox creates a sandbox on the shared daemon and kills it when
// the test ends.
func newDaemonSandbox(t *testing.T, req api.CreateSandboxRequest) api.SandboxInfo {
	t.Helper()
	_, url := realCLI(t)
	var info api.SandboxInfo
	if st := daemontest.Call(t, "POST", url+"/v1/sandboxes", req, &info); st != 201 && st != 200 || info.SandboxID == "" {
		t.Fatalf("create: HTTP %d %+v", st, info)
	}
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", url+"/v1/sandboxes/"+info.SandboxID, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return info
}

func TestCLIHelp(t *testing.T) {
	t.Parallel()
	r := must(t, "--help")
	for name := range commands {
		if !strings.Contains(r.stdout, "ds-sandbox "+name+" ") {
			t.Errorf("--help does not list %s:\n%s", name, r.stdout)
		}
	}
	helps := [][]string{{"help", "exec"}, {"template", "build", "-h"}, {"workspace", "ls", "-h"}, {"dataset", "add", "--help"}}
	for name := range commands {
		helps = append(helps, []string{name, "-h"}, []string{name, "--help"})
	}
	for _, args := range helps {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := bin(t, "", nil, args...)
			if r.code != 0 || !strings.Contains(strings.ToLower(r.stdout), "usage:") || r.stderr != "" {
				t.Fatalf("want exit 0 and the usage on stdout:\n%s", r)
			}
		})
	}
	if r := bin(t, "", nil, "ps", "--bogus"); r.code != 2 || !strings.Contains(r.stderr, "usage: ds-sandbox ps") || r.stdout != "" {
		t.Fatalf("a bad flag: want exit 2 and the usage on stderr:\n%s", r)
	}
}

func TestCLINoDaemon(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{{"ps"}, {"kill", "x"}, {"logs", "x"}, {"cp", "x:/a", "-"}, {"workspace", "ls"}, {"dataset", "ls"}} {
		r := bin(t, "", []string{"DS_SANDBOX_URL=" + closed}, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "no ds-sandbox daemon answers at "+closed) ||
			!strings.Contains(r.stderr, "ds-sandbox serve") || !strings.Contains(r.stderr, "DS_SANDBOX_URL") {
			t.Errorf("%q without a daemon:\n%s", args, r)
		}
	}
	if r := bin(t, "", []string{"DS_SANDBOX_URL=" + closed}, "exec", "x", "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "ds-sandbox serve") {
		t.Errorf("exec without a daemon:\n%s", r)
	}
	if r := bin(t, "", []string{"DS_SANDBOX_URL=ftp://x"}, "ps"); r.code != 1 || !strings.Contains(r.stderr, "DS_SANDBOX_URL") {
		t.Errorf("a bad URL:\n%s", r)
	}
}

func TestCLIPsKillLogs(t *testing.T) {
	t.Parallel()
	ws := "cli-ps-" + strings.ToLower(rand.Text()[:6])
	info := newDaemonSandbox(t, api.CreateSandboxRequest{WorkspaceID: ws})
	anon := newDaemonSandbox(t, api.CreateSandboxRequest{})

	r := must(t, "ps")
	var row, anonRow []string
	for _, l := range strings.Split(r.stdout, "\n") {
		switch f := strings.Fields(l); {
		case len(f) > 0 && f[0] == info.SandboxID:
			row = f
		case len(f) > 0 && f[0] == anon.SandboxID:
			anonRow = f
		}
	}
	if row == nil || anonRow == nil {
		t.Fatalf("ps does not list both sandboxes:\n%s", r.stdout)
	}
	if !strings.HasPrefix(r.stdout, "ID  ") || !slices.Equal(row, []string{info.SandboxID, "running", "local", "-", row[4], ws}) ||
		!strings.HasSuffix(row[4], "s") && !strings.HasSuffix(row[4], "m") || len(anonRow) != 6 || anonRow[5] != "(anonymous)" {
		t.Fatalf("ps:\n%s", r.stdout)
	}
	if r := must(t, "ps", "-q"); !slices.Contains(strings.Fields(r.stdout), info.SandboxID) || strings.Contains(r.stdout, "STATE") {
		t.Fatalf("ps -q:\n%s", r.stdout)
	}
	var list []api.SandboxInfo
	if err := json.Unmarshal([]byte(must(t, "ps", "--json").stdout), &list); err != nil ||
		!slices.ContainsFunc(list, func(s api.SandboxInfo) bool { return s.SandboxID == info.SandboxID && s.WorkspaceID == ws }) {
		t.Fatalf("ps --json: %v %+v", err, list)
	}

	if r := must(t, "logs", info.SandboxID); !strings.Contains(r.stdout, "sandbox.created") || !strings.Contains(r.stdout, `workspace_id="`+ws+`"`) {
		t.Fatalf("logs:\n%s", r)
	}
	// logs -f ends by itself once the sandbox is killed, with the kill last.
	b, url := realCLI(t)
	follow := exec.CommandContext(t.Context(), b, "logs", "-f", "--json", info.SandboxID)
	follow.Env = append(os.Environ(), "DS_SANDBOX_URL="+url)
	var fout bytes.Buffer
	follow.Stdout, follow.Stderr = &fout, os.Stderr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	r = must(t, "kill", info.SandboxID, anon.SandboxID)
	if r.stdout != info.SandboxID+"\n"+anon.SandboxID+"\n" {
		t.Fatalf("kill:\n%s", r)
	}
	if err := follow.Wait(); err != nil {
		t.Fatalf("logs -f: %v\n%s", err, fout.String())
	}
	var types []string
	for _, l := range strings.Split(strings.TrimSpace(fout.String()), "\n") {
		var ev api.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.SandboxID != info.SandboxID {
			t.Fatalf("logs -f --json line %q: %v", l, err)
		}
		types = append(types, ev.Type)
	}
	if types[0] != api.EventSandboxCreated || types[len(types)-1] != api.EventSandboxKilled {
		t.Fatalf("logs -f: %v", types)
	}

	if r := must(t, "ps", "-q"); slices.Contains(strings.Fields(r.stdout), info.SandboxID) {
		t.Fatalf("ps after kill lists it:\n%s", r.stdout)
	}
	if r := bin(t, "", nil, "kill", info.SandboxID); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("kill twice:\n%s", r)
	}
	if r := bin(t, "", nil, "logs", "no-such-sandbox"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("logs of nothing:\n%s", r)
	}
	if r := bin(t, "", nil, "kill"); r.code != 2 {
		t.Fatalf("kill without ids:\n%s", r)
	}
}

func TestCLIExec(t *testing.T) {
	t.Parallel()
	id := newDaemonSandbox(t, api.CreateSandboxRequest{}).SandboxID
	tests := []struct {
		name           string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"exit code and streams", []string{"exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{"arguments stay words", []string{"exec", id, "--", "printf", "[%s]", "a b", "it's", "$HOME", ""}, 0, "[a b][it's][$HOME][]", ""},
		{"without --", []string{"exec", id, "echo", "hi"}, 0, "hi\n", ""},
		{"env and cwd", []string{"exec", "-e", "GREETING=hé llo", "--cwd", "outputs", id, "--", "sh", "-c", `echo "$GREETING"; basename "$PWD"`}, 0, "hé llo\noutputs\n", ""},
		{"timeout kills", []string{"exec", "--timeout", "1", id, "--", "sleep", "60"}, 137, "", "timed out"},
		{"command not found", []string{"exec", id, "--", "no-such-program-xyz"}, 127, "", "not found"},
		{"no sandbox", []string{"exec", "no-such-sandbox", "--", "true"}, 125, "", "not found"},
		{"no command", []string{"exec", id}, 2, "", "want a sandbox id and a command"},
		{"bad env", []string{"exec", "-e", "NOEQUALS", id, "--", "true"}, 2, "", "KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bin(t, "", nil, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) || tt.stdout != "" && r.stdout != tt.stdout {
				t.Fatalf("want exit %d, stdout %q, stderr containing %q; got\n%s", tt.code, tt.stdout, tt.stderr, r)
			}
		})
	}
}

func TestCLICp(t *testing.T) {
	t.Parallel()
	info := newDaemonSandbox(t, api.CreateSandboxRequest{})
	id := info.SandboxID
	local := t.TempDir()
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	writeFile(t, filepath.Join(local, "big.bin"), big)
	writeFile(t, filepath.Join(local, "tree", "a.txt"), []byte("A"))
	writeFile(t, filepath.Join(local, "tree", "sub", "deeper", "b.txt"), []byte("B"))
	os.Mkdir(filepath.Join(local, "tree", "empty"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(local, "tree", "link"))

	// Up: a file into an existing directory and to a new name; a tree.
	must(t, "cp", filepath.Join(local, "big.bin"), id+":data")
	must(t, "cp", filepath.Join(local, "big.bin"), id+":copy.bin")
	r := must(t, "cp", filepath.Join(local, "tree"), id+":")
	if !strings.Contains(r.stderr, "skipped "+filepath.Join(local, "tree", "link")) {
		t.Fatalf("a link in an uploaded tree is not reported skipped:\n%s", r)
	}
	r = must(t, "exec", id, "--", "sh", "-c", "cmp data/big.bin copy.bin && find tree | sort && cat tree/a.txt tree/sub/deeper/b.txt")
	if r.stdout != "tree\ntree/a.txt\ntree/empty\ntree/sub\ntree/sub/deeper\ntree/sub/deeper/b.txt\nAB" {
		t.Fatalf("in the sandbox after cp:\n%s", r)
	}
	if r := bin(t, "hello from stdin", nil, "cp", "-", id+":outputs/in.txt"); r.code != 0 {
		t.Fatalf("cp - ID:path:\n%s", r)
	}

	// Down: a file, a file to stdout, a tree (to a new name, then into an
	// existing directory).
	down := t.TempDir()
	must(t, "cp", id+":data/big.bin", filepath.Join(down, "big.bin"))
	if b, _ := os.ReadFile(filepath.Join(down, "big.bin")); !bytes.Equal(b, big) {
		t.Fatalf("downloaded file differs (%d bytes)", len(b))
	}
	if r := must(t, "cp", id+":outputs/in.txt", "-"); r.stdout != "hello from stdin" {
		t.Fatalf("cp ID:path -:\n%s", r)
	}
	// A link the sandbox made to a host file is not followed.
	must(t, "exec", id, "--", "ln", "-s", "/etc/hostname", "tree/escape")
	r = must(t, "cp", id+":tree", filepath.Join(down, "t2"))
	if !strings.Contains(r.stderr, "skipped /home/user/tree/escape") {
		t.Fatalf("a link in a downloaded tree is not reported skipped:\n%s", r)
	}
	must(t, "cp", id+":tree", down)
	for _, root := range []string{filepath.Join(down, "t2"), filepath.Join(down, "tree")} {
		if b, err := os.ReadFile(filepath.Join(root, "sub", "deeper", "b.txt")); err != nil || string(b) != "B" {
			t.Fatalf("%s: %q %v", root, b, err)
		}
		if st, err := os.Stat(filepath.Join(root, "empty")); err != nil || !st.IsDir() {
			t.Fatalf("%s: empty directory: %v", root, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "escape")); !os.IsNotExist(err) {
			t.Fatalf("%s: the sandbox's link was copied: %v", root, err)
		}
	}
	if es, _ := os.ReadDir(down); len(es) != 3 {
		t.Fatalf("left in %s: %v (temporary files?)", down, es)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"both local", []string{"cp", "a", "b"}, 2, "neither side"},
		{"both remote", []string{"cp", id + ":a", id + ":b"}, 2, "both sides"},
		{"missing sandbox file", []string{"cp", id + ":nope.txt", down}, 1, "not found"},
		{"missing local file", []string{"cp", filepath.Join(local, "nope"), id + ":"}, 1, "no such file"},
		{"outside the sandbox", []string{"cp", id + ":/etc/hostname", down}, 1, "permission denied"},
		{"a directory to stdout", []string{"cp", id + ":tree", "-"}, 1, "is a directory"},
		{"no sandbox", []string{"cp", "no-such-sandbox:x", down}, 1, "not found"},
	} {
		if r := bin(t, "", nil, c.args...); r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("%s: want exit %d and %q:\n%s", c.name, c.code, c.msg, r)
		}
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCLIWorkspace(t *testing.T) {
	t.Parallel()
	ws := "cli-ws-" + strings.ToLower(rand.Text()[:6])
	info := newDaemonSandbox(t, api.CreateSandboxRequest{WorkspaceID: ws})
	if r := must(t, "workspace", "ls"); !strings.Contains(r.stdout, ws+" ") || !strings.HasPrefix(r.stdout, "ID ") {
		t.Fatalf("workspace ls:\n%s", r)
	}
	if r := bin(t, "", nil, "workspace", "rm", ws); r.code != 1 || !strings.Contains(r.stderr, "kill them first") {
		t.Fatalf("rm of a workspace in use:\n%s", r)
	}
	must(t, "kill", info.SandboxID)
	if r := must(t, "workspace", "rm", ws); r.stdout != ws+"\n" {
		t.Fatalf("workspace rm:\n%s", r)
	}
	var list []api.Workspace
	if err := json.Unmarshal([]byte(must(t, "workspace", "ls", "--json").stdout), &list); err != nil ||
		slices.ContainsFunc(list, func(w api.Workspace) bool { return w.ID == ws }) {
		t.Fatalf("workspace ls --json after rm: %v %+v", err, list)
	}
	if r := bin(t, "", nil, "workspace", "rm", ws); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("rm twice:\n%s", r)
	}
	if r := bin(t, "", nil, "workspace", "frob"); r.code != 2 || !strings.Contains(r.stderr, "unknown operation") {
		t.Fatalf("unknown operation:\n%s", r)
	}
}

func TestCLIDataset(t *testing.T) {
	t.Parallel()
	_, url := realCLI(t)
	name := "cli-ds-" + strings.ToLower(rand.Text()[:6])
	src := filepath.Join(t.TempDir(), "sales.csv")
	writeFile(t, src, []byte("region,amount\nnorth,10\nsouth,32\n"))
	r := must(t, "dataset", "add", "--description", "quarterly sales", "--tag", "finance", "--tag", "q3", name, src)
	if !strings.Contains(r.stdout, "dataset "+name+": csv, 32 bytes, sha256 ") {
		t.Fatalf("dataset add:\n%s", r)
	}
	var got api.Dataset
	if st := daemontest.Call(t, "GET", url+"/v1/datasets/"+name, nil, &got); st != 200 || got.Description != "quarterly sales" || !slices.Equal(got.Tags, []string{"finance", "q3"}) {
		t.Fatalf("registered: HTTP %d %+v", st, got)
	}
	if r := bin(t, "", nil, "dataset", "add", name, src); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("add twice:\n%s", r)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "part-1.csv"), []byte("a\n1\n"))
	if r := bin(t, "", nil, "dataset", "add", name+"-dir", dir); r.code != 1 || !strings.Contains(r.stderr, "--server") {
		t.Fatalf("uploading a directory:\n%s", r)
	}
	// The daemon runs on this host: the directory is a path there too.
	if r := must(t, "dataset", "add", "--server", name+"-dir", dir); !strings.Contains(r.stdout, ": dir, ") {
		t.Fatalf("dataset add --server:\n%s", r)
	}
	if r := bin(t, "", nil, "dataset", "add", "--server", name+"-rel", "relative/path"); r.code != 2 || !strings.Contains(r.stderr, "absolute") {
		t.Fatalf("--server with a relative path:\n%s", r)
	}
	r = must(t, "dataset", "ls", "--name-contains", name)
	if !strings.Contains(r.stdout, name+" ") || !strings.Contains(r.stdout, "finance,q3") || !strings.Contains(r.stdout, name+"-dir ") {
		t.Fatalf("dataset ls:\n%s", r)
	}
	var list []api.Dataset
	if err := json.Unmarshal([]byte(must(t, "dataset", "ls", "--json", "--tag", "q3", "--name-contains", name).stdout), &list); err != nil || len(list) != 1 || list[0].Name != name {
		t.Fatalf("dataset ls --json --tag: %v %+v", err, list)
	}
	if r := bin(t, "", nil, "dataset", "rm", name, name+"-dir", name+"-nope"); r.code != 1 || r.stdout != name+"\n"+name+"-dir\n" || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("dataset rm:\n%s", r)
	}
	if r := must(t, "dataset", "ls", "--name-contains", name); strings.Contains(r.stdout, name) {
		t.Fatalf("dataset ls after rm:\n%s", r)
	}
}

// TestRunUploadAndOutputDir runs the real binary's run (embedded): files go
// into the workdir before the code, outputs/ comes back after it.
func TestRunUploadAndOutputDir(t *testing.T) {
	t.Parallel()
	b, _ := realCLI(t)
	in := t.TempDir()
	writeFile(t, filepath.Join(in, "sales.csv"), []byte("amount\n10\n32\n"))
	writeFile(t, filepath.Join(in, "lib", "helper.py"), []byte("def double(x):\n    return 2 * x\n"))
	out := filepath.Join(t.TempDir(), "results")
	code := `import pandas as pd, sys
sys.path.insert(0, 'lib')
from helper import double
total = int(pd.read_csv('sales.csv')['amount'].sum())
open('outputs/total.txt', 'w').write(str(double(total)))
import matplotlib.pyplot as plt
plt.plot([1, 2, 3]); plt.show()
print('done')`
	cmd := exec.CommandContext(t.Context(), b, "run", "--upload", filepath.Join(in, "sales.csv"), "--upload", filepath.Join(in, "lib"),
		"--output-dir", out, "-c", code)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(out, "total.txt")); err != nil || string(b) != "84" {
		t.Fatalf("outputs/total.txt: %q %v\n%s", b, err, stderr.String())
	}
	pngs, _ := filepath.Glob(filepath.Join(out, "result-*.png"))
	if len(pngs) != 1 || !strings.Contains(stdout.String(), "[png saved: "+pngs[0]+"]") || !strings.HasSuffix(stdout.String(), "done\n") {
		t.Fatalf("png in %s: %v; stdout %q", out, pngs, stdout.String())
	}
	// The image is in --output-dir, so the anonymous workspace goes.
	if strings.Contains(stderr.String(), "workspace kept") {
		t.Fatalf("workspace kept although the outputs were copied: %s", stderr.String())
	}

	cmd = exec.CommandContext(t.Context(), b, "run", "--upload", filepath.Join(in, "nope.csv"), "-c", "1")
	if o, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(o), "nope.csv") {
		t.Fatalf("missing upload: %v %s", err, o)
	}
}
