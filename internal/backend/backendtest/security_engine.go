package backendtest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// engineView is what a process sees of its own confinement.
type engineView struct {
	PPid       int               `json:"ppid"`
	Status     map[string]string `json:"status"`
	Namespaces map[string]string `json:"ns"`
	Cgroup     string            `json:"cgroup"`
}

const engineViewCode = `import json, os
st = {}
for l in open('/proc/self/status'):
    k, _, v = l.partition(':')
    st[k] = v.strip()
ns = {n: os.readlink('/proc/self/ns/' + n) for n in ('mnt', 'net', 'pid', 'ipc', 'uts', 'cgroup', 'user')}
print(json.dumps({'ppid': os.getppid(), 'status': st, 'ns': ns, 'cgroup': open('/proc/self/cgroup').read()}))`

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
	for _, k := range []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"} {
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
