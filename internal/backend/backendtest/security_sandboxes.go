package backendtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// otherSandbox: a sandbox cannot see another's processes, read its
// workspace (whose host path it learns from its own mountinfo or can
// guess), reach its agent socket or its abstract unix sockets, or share its
// /tmp and /dev/shm; the other sandbox's files stay intact.
func (s *suite) otherSandbox(t *testing.T) {
	victimInst, victim, vspec := s.sandbox(t, func(sp *backend.Spec) { sp.ID += "-victim" })
	_, c, _ := s.sandbox(t, nil)
	sh(t, victim, "echo "+secret+" > secret; echo "+secret+" > /tmp/secret; echo "+secret+" > /dev/shm/secret")
	if _, err := victim.StartProcess(t.Context(), api.ProcessRequest{Cmd: "exec -a " + s.marker + "-victim python3 -c \"import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('\\0" + s.marker + "'); s.listen(); time.sleep(600)\""}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, victim, "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('\\0"+s.marker+"')\"")
	var got map[string]string
	python(t, c, `import errno, json, os, socket
res = {}
def attempt(name, fn):
    try:
        res[name] = "OK: " + str(fn())
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
attempt("workspace", lambda: open(`+strconv.Quote(filepath.Join(vspec.WorkspaceDir, "secret"))+`).read())
attempt("socket", lambda: socket.socket(socket.AF_UNIX).connect(`+strconv.Quote(victimInst.AgentSocket())+`))
attempt("abstract", lambda: socket.socket(socket.AF_UNIX).connect("\0`+s.marker+`"))
attempt("tmp", lambda: open("/tmp/secret").read())
attempt("shm", lambda: open("/dev/shm/secret").read())
procs = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            procs.append(open("/proc/%s/cmdline" % p, "rb").read().decode(errors="replace"))
        except OSError:
            pass
res["procs"] = "\n".join(procs)
print(json.dumps(res))`, &got)
	procs := got["procs"]
	delete(got, "procs")
	t.Logf("from another sandbox: %v", got)
	for k, v := range got {
		if strings.HasPrefix(v, "OK") {
			t.Errorf("reached the other sandbox's %s: %s", k, v)
		}
	}
	if got["abstract"] != "ECONNREFUSED" {
		t.Errorf("abstract socket: %s, want ECONNREFUSED (its own network namespace)", got["abstract"])
	}
	if strings.Contains(procs, s.marker+"-victim") {
		t.Error("the other sandbox's process is visible")
	}
	// The same through the files API.
	if _, err := c.ReadFile(t.Context(), filepath.Join(vspec.WorkspaceDir, "secret")); err == nil {
		t.Error("read the other sandbox's workspace through the files API")
	}
	if b, err := os.ReadFile(filepath.Join(vspec.WorkspaceDir, "secret")); err != nil || strings.TrimSpace(string(b)) != secret {
		t.Errorf("the other sandbox's file: %q %v", b, err)
	}
	if out, _, _ := sh(t, victim, "cat secret /tmp/secret /dev/shm/secret"); out != strings.Repeat(secret+"\n", 3) {
		t.Errorf("the other sandbox's files after the attack: %q", out)
	}
}

// agentSocket: the daemon dials the agent's socket by its host path; the
// sandbox must not be able to replace it with a symlink to a host socket
// (the Docker API's) or another sandbox's agent.
func (s *suite) agentSocket(t *testing.T) {
	inst, c, _ := s.sandbox(t, nil)
	sock := s.opts.SocketDir + "/agent.sock"
	_, errs, code := sh(t, c, "rm -f "+sock+"; ln -sf /var/run/docker.sock "+sock)
	if code == 0 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("replacing the socket: exit %d %q, want EACCES", code, errs)
	}
	st, err := os.Lstat(inst.AgentSocket())
	if err != nil || st.Mode().Type() != os.ModeSocket {
		t.Fatalf("the sandbox replaced its agent socket: %v %v", st, err)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// destroyLeavesNothing: background commands, a double-forked setsid daemon
// (from a command and from a cell) and a daemon of a background command are
// all gone from the host after Destroy.
func (s *suite) destroyLeavesNothing(t *testing.T) {
	inst, c, _ := s.sandbox(t, nil)
	m := s.marker + "-daemon"
	if _, err := c.StartProcess(t.Context(), api.ProcessRequest{Cmd: "exec -a " + m + "-bg sleep 600"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartProcess(t.Context(), api.ProcessRequest{Cmd: "setsid bash -c '(exec -a " + m + "-bgdaemon sleep 600 &)' </dev/null >/dev/null 2>&1; sleep 600"}); err != nil {
		t.Fatal(err)
	}
	sh(t, c, "setsid bash -c '(exec -a "+m+"-cmddaemon sleep 600 &)' </dev/null >/dev/null 2>&1")
	if _, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sleep', ['" + m + "-celldaemon', '600'])\n    os._exit(0)\nos.wait()"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"bg", "bgdaemon", "cmddaemon", "celldaemon"} {
		waitFor(t, c, "pgrep -f '^"+m+"-"+n+"' >/dev/null")
	}
	if !s.opts.UserSpaceKernel {
		if n := len(hostProcesses(m)); n != 4 {
			t.Fatalf("%d marked processes on the host before Destroy, want 4", n)
		}
	}
	if err := inst.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed after Destroy")
	}
	// SIGKILL is asynchronous: give the killed processes a bounded while
	// to go.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := hostProcesses(m)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left after Destroy: %v", left)
		}
	}
}
