package oci_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// TestEntry checks that a sandbox's Entry describes that sandbox: joining its
// namespaces with nsenter(1) as its user shows the container's hostname, its
// workspace and its own pid 1, and its cgroup holds the init.
func TestEntry(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	inst, _, s := sandbox(t, b, nil)
	en, ok := inst.(backend.Enterer)
	if !ok {
		t.Fatal("oci instances implement backend.Enterer")
	}
	e, err := en.Entry(t.Context())
	if rootless() || gvisor() {
		if !errors.Is(err, api.ErrUnsupported) {
			t.Fatalf("Entry on %s (rootless %v) = %v, want unsupported", runtimeBin(), rootless(), err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if e.UID != 1000 || e.GID != 1000 || e.Cwd != s.Workdir || len(e.Env) == 0 || len(e.Rlimits) == 0 {
		t.Errorf("entry: uid %d gid %d cwd %q env %d rlimits %v", e.UID, e.GID, e.Cwd, len(e.Env), e.Rlimits)
	}
	if len(e.Seccomp) == 0 || len(e.Seccomp)%8 != 0 {
		t.Errorf("seccomp program of %d bytes", len(e.Seccomp))
	}
	if len(e.CgroupProcs) == 0 {
		t.Error("no cgroup")
	}
	for _, p := range e.CgroupProcs {
		procs, err := os.ReadFile(p)
		if err != nil || len(strings.Fields(string(procs))) == 0 {
			t.Errorf("cgroup.procs %s: %q, %v", p, procs, err)
		}
	}
	for _, ns := range []string{"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"} {
		theirs, err1 := os.Readlink(e.Namespaces[ns])
		ours, err2 := os.Readlink("/proc/self/ns/" + ns)
		if err1 != nil || err2 != nil || theirs == ours {
			t.Errorf("namespace %s: %q (%v) vs ours %q (%v)", ns, theirs, err1, ours, err2)
		}
	}
	if err := os.WriteFile(s.WorkspaceDir+"/marker.txt", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := e.Namespaces
	out, err := exec.CommandContext(t.Context(), "nsenter", "--user="+n["user"], "--mount="+n["mnt"], "--pid="+n["pid"],
		"--net="+n["net"], "--ipc="+n["ipc"], "--uts="+n["uts"], "--cgroup="+n["cgroup"], "-S", "1000", "-G", "1000", "--",
		"/bin/sh", "-c", "hostname; id -u; ls /home/user; cat /proc/1/cmdline | tr '\\0' ' '").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	got := string(out)
	host, _ := os.Hostname()
	lines := strings.Split(got, "\n")
	if lines[0] == host || !strings.Contains(got, "\n1000\n") || !strings.Contains(got, "marker.txt") || !strings.Contains(got, "agent") {
		t.Errorf("inside the entry's namespaces: %q (host is %q)", got, host)
	}
}
