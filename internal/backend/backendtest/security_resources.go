package backendtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// memoryBomb: a cell allocating without end in a sandbox with memory_mb is
// killed inside the sandbox (its kernel dies), and the next cell runs in a
// fresh kernel. A backend with a memory cgroup of the sandbox's own
// (backend.OOMCounter) counts the kill, which is how the manager tells the
// caller the memory limit was reached.
func (s *suite) memoryBomb(t *testing.T) {
	inst, c, _ := s.sandbox(t, func(sp *backend.Spec) { sp.MemoryMB = 256 })
	oc, counts := inst.(backend.OOMCounter)
	var before uint64
	if counts {
		var err error
		if before, err = oc.OOMKills(); err != nil {
			t.Fatalf("OOMKills before the bomb: %v", err)
		}
	}
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "a = []\nwhile True: a.append(b'\\x01' * (8 << 20))"}, nil)
	if err != nil && s.opts.UserSpaceKernel {
		// A user-space kernel (gVisor) is one process to the host: when the
		// host's OOM killer strikes before the kernel's own accounting, the
		// whole sandbox ends — contained all the same.
		select {
		case <-inst.Done():
			t.Logf("the sandbox ended as a whole under the memory bomb (%v)", err)
			return
		case <-time.After(10 * time.Second):
			t.Fatalf("memory bomb: %v, and the sandbox did not end", err)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if e.Error == nil || e.Error.Name != api.ErrNameDeadKernel {
		t.Fatalf("memory bomb: error %+v, want %s", e.Error, api.ErrNameDeadKernel)
	}
	t.Logf("memory bomb: %s", e.Error.Value)
	if counts {
		after, err := oc.OOMKills()
		if err != nil || after <= before {
			t.Errorf("OOMKills after the bomb: %d, %v (before: %d): the kill is not counted, so it cannot be reported as the memory limit", after, err, before)
		}
	}
	if e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Text() != "2" {
		t.Fatalf("the next cell: %v %+v", err, e)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Fatalf("the agent after the bomb: %v", err)
	}
}

// outputFlood: a cell printing 256 MiB and a command printing 128 MiB come
// back truncated with a marker, and the sandbox keeps working.
func (s *suite) outputFlood(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	const printed = 256 << 20
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(256):\n    sys.stdout.write(chunk)\nprint('end')"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range e.Logs.Stdout {
		n += len(l)
	}
	t.Logf("a cell printed %d MiB: %d bytes came back; notices %q", printed>>20, n, e.Notices)
	if n >= printed/4 || n == 0 {
		t.Errorf("%d bytes of stdout came back of %d printed", n, printed)
	}
	if !saysCut(e.Notices) {
		t.Errorf("no truncation notice: %q", e.Notices)
	}
	// A rich result past the bound is dropped with a notice.
	e, err = c.Execute(t.Context(), api.ExecuteRequest{Code: "from IPython.display import HTML, display\ndisplay(HTML('x' * (40 << 20)))"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Results) != 0 || !saysCut(e.Notices) {
		t.Errorf("a 40 MiB result: %d results, notices %q", len(e.Results), e.Notices)
	}
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "head -c 128M /dev/zero | tr '\\0' x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a command printed 128 MiB: %d bytes kept, exit %d", len(r.Stdout), r.ExitCode)
	if len(r.Stdout) >= 128<<20 || !strings.Contains(r.Stdout, "[ds-sandbox: ") {
		t.Errorf("command output: %d bytes, tail %q", len(r.Stdout), r.Stdout[max(0, len(r.Stdout)-80):])
	}
	if e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Text() != "2" {
		t.Fatalf("the sandbox after the flood: %v %+v", err, e)
	}
}

// saysCut reports whether one of notices tells of output cut at a limit
// (the wording is the agent's; the limits may become configurable).
func saysCut(notices []string) bool {
	all := strings.ToLower(strings.Join(notices, " "))
	return strings.Contains(all, "truncat") || strings.Contains(all, "dropped") || strings.Contains(all, "limit")
}

// cpuSpin: a cell spinning past its timeout is interrupted (its kernel's
// state kept); one that ignores SIGINT gets its kernel killed and the next
// cell a fresh one; a command spinning past its timeout is killed with every
// process it started, even one that left its session.
func (s *suite) cpuSpin(t *testing.T) {
	_, c, _ := s.sandbox(t, func(sp *backend.Spec) { sp.CPUCount = 1 })
	run := func(code string, timeoutMs int64) *api.Execution {
		t.Helper()
		e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: code, TimeoutMs: timeoutMs}, nil)
		if err != nil {
			t.Fatalf("%q: %v", code, err)
		}
		return e
	}
	run("x = 41", 0)
	e := run("while True: pass", 2000)
	if e.Error == nil || e.Error.Name != api.ErrNameTimeout {
		t.Fatalf("spinning cell: %+v, want %s", e.Error, api.ErrNameTimeout)
	}
	if e := run("x + 1", 0); e.Text() != "42" {
		t.Fatalf("after an interrupted spin: %+v %+v, want 42 (state kept)", e.Error, e.Results)
	}
	e = run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", 2000)
	if e.Error == nil || e.Error.Name != api.ErrNameTimeout || !strings.Contains(e.Error.Value, "killed") {
		t.Fatalf("spinning cell ignoring SIGINT: %+v, want %s (killed)", e.Error, api.ErrNameTimeout)
	}
	e = run("'x' in dir()", 0)
	if e.Text() != "False" || len(e.Notices) == 0 {
		t.Fatalf("after a killed kernel: %q, notices %q; want a fresh kernel and a notice", e.Text(), e.Notices)
	}
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "while :; do :; done", TimeoutMs: 2000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode == 0 || !strings.Contains(r.Error, "timed out") {
		t.Fatalf("spinning command: exit %d %q, want a timeout", r.ExitCode, r.Error)
	}
	// Spinning children, one of them in a session of its own.
	r, err = c.RunCommand(t.Context(), api.ProcessRequest{
		Cmd:       "setsid bash -c 'while :; do :; done' " + s.marker + "-child & bash -c 'while :; do :; done' " + s.marker + "-spin",
		TimeoutMs: 2000,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The timeout kills the descendants first, so the shell may see its
	// child killed (exit 137) before it is killed itself.
	t.Logf("spinning command tree after its timeout: exit %d %q", r.ExitCode, r.Error)
	if r.ExitCode == 0 {
		t.Fatalf("spinning command tree: exit 0 %q, want killed", r.Error)
	}
	// The kill is asynchronous to the command's end: wait (bounded) for
	// the processes to go.
	waitFor(t, c, "! pgrep -f '^bash -c while :; do :; done "+s.marker+"'")
}

// diskFillTmp: /tmp is a bounded tmpfs: filling it fails with ENOSPC, and
// the sandbox keeps working.
func (s *suite) diskFillTmp(t *testing.T) {
	_, c, _ := s.sandbox(t, func(sp *backend.Spec) { sp.MemoryMB = 256 })
	fill(t, c, "/tmp")
}

// diskFillWorkspace: a workspace with a disk quota (a loop-mounted image,
// as the manager attaches it) is the sandbox's workdir: filling it is
// ENOSPC inside before much more than the quota was written, and deleting
// the file makes room again. Without a quota the workspace shares the
// host's filesystem: the quota is the containment.
func (s *suite) diskFillWorkspace(t *testing.T) {
	testenv.RequireNoError(t, "workspace disk quotas", workspace.QuotaSupported())
	store, err := workspace.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := store.CreateAnonymous("")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetQuota(ws.ID, 32); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Remove(ws.ID); err != nil {
			t.Errorf("remove the workspace: %v", err)
		}
	})
	_, c, _ := s.sandbox(t, func(sp *backend.Spec) { sp.WorkspaceDir = ws.Path })
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: `import errno
f, n = open('fill', 'wb'), 0
try:
    while True: f.write(b'x' * (1 << 20)); f.flush(); n += 1
except OSError as e: print(e.errno == errno.ENOSPC, n)`}, nil)
	if err != nil || e.Error != nil || len(e.Logs.Stdout) == 0 {
		t.Fatalf("fill the workspace: %v %+v", err, e)
	}
	var mib int
	var flag string
	if _, err := fmt.Sscan(e.Logs.Stdout[0], &flag, &mib); err != nil || flag != "True" || mib > 32 {
		t.Fatalf("fill the workspace: %q, want ENOSPC within the 32 MiB quota", e.Logs.Stdout[0])
	}
	e, err = c.Execute(t.Context(), api.ExecuteRequest{Code: `import os
try: f.close()
except OSError: pass
os.remove('fill'); open('ok', 'w').write('x' * 1000)`}, nil)
	if err != nil || e.Error != nil || e.Text() != "1000" {
		t.Fatalf("after deleting the file: %v %+v", err, e)
	}
}

// diskFillShm: the same for /dev/shm.
func (s *suite) diskFillShm(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	fill(t, c, "/dev/shm")
}

func fill(t *testing.T, c *agentclient.Client, dir string) {
	t.Helper()
	out, _, _ := sh(t, c, "df -k --output=size "+dir+" | tail -1")
	kb, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || kb <= 0 {
		t.Fatalf("size of %s: %q", dir, out)
	}
	t.Logf("%s holds %d MiB", dir, kb>>10)
	_, errs, code := sh(t, c, "head -c "+strconv.Itoa(kb+16<<10)+"K /dev/zero > "+dir+"/fill")
	if code == 0 || !strings.Contains(errs, "No space left") {
		t.Fatalf("filling %s: exit %d %q, want ENOSPC", dir, code, errs)
	}
	if _, errs, code := sh(t, c, "rm "+dir+"/fill && echo ok > "+dir+"/after"); code != 0 {
		t.Fatalf("sandbox unusable after filling %s: %s", dir, errs)
	}
	if e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Text() != "2" {
		t.Fatalf("the kernel after filling %s: %v %+v", dir, err, e)
	}
}
