package backendtest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// engineView is what a process sees of its own confinement.
type engineView struct {
	PPid       int               `json:"ppid"`
	Status     map[string]string `json:"status"`
	Namespaces map[string]string `json:"ns"`
	Cgroup     string            `json:"cgroup"`
	Limits     string            `json:"limits"`
}

const engineViewCode = `import json, os
st = {}
for l in open('/proc/self/status'):
    k, _, v = l.partition(':')
    st[k] = v.strip()
ns = {}
for n in ('mnt', 'net', 'pid', 'ipc', 'uts', 'cgroup', 'user'):
    try:
        ns[n] = os.readlink('/proc/self/ns/' + n)
    except OSError as e:  # gVisor has no cgroup namespace file
        ns[n] = 'absent: %s' % e.strerror
print(json.dumps({'ppid': os.getppid(), 'status': st, 'ns': ns, 'cgroup': open('/proc/self/cgroup').read(), 'limits': open('/proc/self/limits').read()}))`

// engineConfined: the default context's engine is confined exactly as the
// sandbox's other processes are — a command the agent starts is the
// reference: same namespaces, same cgroup, same user and groups, no
// capability (bounding set included), no_new_privs, one seccomp filter. On
// a backend whose sandboxes are entered from outside (the lean engine forked
// from the daemon's zygote), this is what proves the entry complete; the
// engine's parent lives outside the sandbox's pid namespace there (ppid 0),
// which shows the fork path was taken.
func (s *suite) engineConfined(t *testing.T) {
	inst, c, spec := s.sandbox(t, nil)
	_ = inst
	e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: engineViewCode}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e.Error)
	}
	var cell engineView
	if err := json.Unmarshal([]byte(strings.Join(e.Logs.Stdout, "")), &cell); err != nil {
		t.Fatalf("cell output %q: %v", e.Logs.Stdout, err)
	}
	var cmd engineView
	python(t, c, engineViewCode, &cmd)
	entered := entersEngines(t, s.b, spec)
	if entered != (cell.PPid == 0) {
		t.Errorf("engine's parent pid %d; forked in from outside: %v", cell.PPid, entered)
	}
	for n, want := range cmd.Namespaces {
		if cell.Namespaces[n] != want {
			t.Errorf("namespace %s: engine %s, command %s", n, cell.Namespaces[n], want)
		}
	}
	if cell.Cgroup != cmd.Cgroup {
		t.Errorf("cgroup: engine %q, command %q", cell.Cgroup, cmd.Cgroup)
	}
	if cell.Limits != cmd.Limits {
		t.Errorf("resource limits:\nengine:\n%s\ncommand:\n%s", cell.Limits, cmd.Limits)
	}
	for _, k := range []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters", "Umask"} {
		if cell.Status[k] != cmd.Status[k] {
			t.Errorf("%s: engine %q, command %q", k, cell.Status[k], cmd.Status[k])
		}
	}
	if cell.Status["CapEff"] != "0000000000000000" || cell.Status["CapBnd"] != "0000000000000000" {
		t.Errorf("engine capabilities: effective %s, bounding %s", cell.Status["CapEff"], cell.Status["CapBnd"])
	}
	if !s.opts.UserSpaceKernel && (cell.Status["NoNewPrivs"] != "1" || cell.Status["Seccomp"] != "2") {
		t.Errorf("engine: NoNewPrivs %s, Seccomp %s; want 1 and 2 (filter)", cell.Status["NoNewPrivs"], cell.Status["Seccomp"])
	}
}

// forkedSiblings: two sandboxes whose engines come from one zygote share no
// state — a variable, a monkey-patched module attribute, a file in /tmp,
// the first random numbers drawn, descriptors — and a sandbox whose engine
// is killed harms neither its sibling nor the zygote (a sandbox made after
// it still gets a forked engine where the backend forks them in).
func (s *suite) forkedSiblings(t *testing.T) {
	_, a, spec := s.sandbox(t, func(sp *backend.Spec) { sp.ID += "-a" })
	_, b, _ := s.sandbox(t, func(sp *backend.Spec) { sp.ID += "-b" })
	run := func(c *agentclient.Client, code string) string {
		t.Helper()
		e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: code}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("execute %q: %v %+v", code, err, e.Error)
		}
		return strings.TrimSpace(strings.Join(e.Logs.Stdout, ""))
	}
	const draw = "import random, numpy\nprint(random.random(), numpy.random.rand())"
	drawA, drawB := run(a, draw), run(b, draw)
	if drawA == drawB {
		t.Errorf("the first random numbers of two sandboxes are equal: %s", drawA)
	}
	run(a, "secret_x = 42\nimport string\nstring.capwords = None\nopen('/tmp/sibling-mark', 'w').write('a')\nkept = open('/tmp/sibling-mark')")
	got := run(b, `import string, os
fds = []
for f in os.listdir('/proc/self/fd'):
    try:
        fds.append(os.readlink('/proc/self/fd/' + f))
    except OSError:
        pass  # the listing's own descriptor
print('secret_x' in globals(), string.capwords is None, os.path.exists('/tmp/sibling-mark'), [f for f in fds if 'sibling' in f or 'zygote' in f])`)
	if got != "False False False []" {
		t.Errorf("sibling sees (variable, patched string.capwords, /tmp file, a descriptor of it or of the zygote): %s", got)
	}
	// Kill A's engine outright: B and the zygote must not notice.
	e, err := a.Execute(t.Context(), api.ExecuteRequest{Code: "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"}, nil)
	if err != nil || e.Error == nil || e.Error.Name != api.ErrNameDeadKernel {
		t.Fatalf("killing the engine: %v %+v, want %s", err, e, api.ErrNameDeadKernel)
	}
	if got := run(b, "print(1 + 1)"); got != "2" {
		t.Errorf("sibling after the kill: %q", got)
	}
	_, c, _ := s.sandbox(t, func(sp *backend.Spec) { sp.ID += "-c" })
	var view engineView
	if err := json.Unmarshal([]byte(run(c, engineViewCode)), &view); err != nil {
		t.Fatal(err)
	}
	if entered := entersEngines(t, s.b, spec); entered != (view.PPid == 0) {
		t.Errorf("a sandbox made after the kill: engine parent %d, forked in from outside: %v (the zygote must survive)", view.PPid, entered)
	}
}
