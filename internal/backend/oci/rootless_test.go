package oci_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/oci"
)

// The rootless mode's own claims (docs/SECURITY.md): what it refuses, and
// what bounds a sandbox without cgroups. The shared attacks (security_test.go,
// the conformance suite) run rootless too: scripts/test-oci-rootless.sh runs
// this package as an ordinary user.

func onlyRootless(t *testing.T) {
	t.Helper()
	if !rootless() {
		t.Skip("tests rootless mode: run as an ordinary user (scripts/test-oci-rootless.sh)")
	}
}

// pidNamespace is the sandbox's pid namespace, as /proc/<init>/ns/pid reads.
func pidNamespace(t *testing.T, inst backend.Instance) string {
	t.Helper()
	pid := inst.(backend.Recoverable).State()["pid"]
	ns, err := os.Readlink("/proc/" + pid + "/ns/pid")
	if err != nil {
		t.Fatalf("the sandbox's init %s: %v", pid, err)
	}
	return ns
}

// procsIn lists the live processes of the pid namespace ns (not zombies:
// a dead init waits for its parent outside the sandbox to reap it).
func procsIn(ns string) []string {
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns && !zombie(e.Name()) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestRootlessRefuses(t *testing.T) {
	onlyRootless(t)
	t.Parallel()
	b := newBackend(t)
	for _, tc := range []struct {
		name string
		mod  func(*backend.Spec)
		says string
	}{
		{"memory_mb", func(s *backend.Spec) { s.MemoryMB = 256 }, "memory_mb"},
		{"cpu_count", func(s *backend.Spec) { s.CPUCount = 1 }, "cpu_count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := backend.Spec{
				ID: "refused", User: "user", Workdir: "/home/user", WorkspaceDir: t.TempDir(),
				Network: api.NetworkPolicy{Policy: api.NetworkDeny}, Python: "/usr/bin/python3",
			}
			tc.mod(&s)
			inst, err := b.Create(t.Context(), s)
			if err == nil {
				_ = inst.Destroy(context.Background())
			}
			if !errors.Is(err, api.ErrUnsupported) || !strings.Contains(err.Error(), "rootless") || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Create with %s: %v, want ErrUnsupported naming rootless and %q", tc.name, err, tc.says)
			}
		})
	}
	if !b.SharesDaemonUser() {
		t.Error("a rootless backend must say its sandbox user is the daemon's (linked datasets are refused)")
	}
}

// TestRootlessForkBombIsContained: without a pids cgroup the sandbox's
// RLIMIT_NPROC (counted per user inside the container's user namespace)
// stops the bomb; the host can still fork and Destroy removes all of it.
// The agent (PID 1, a Go program that aborts when it cannot make a thread)
// has the pids limit as its RLIMIT_NPROC and the code a lower one, so the
// bomb stops with tasks to spare for the agent, which survives.
func TestRootlessForkBombIsContained(t *testing.T) {
	onlyRootless(t)
	t.Parallel()
	b := newBackend(t)
	inst, c, _ := sandbox(t, b, nil)
	out, _, _ := sh(t, c, "ulimit -u; df -k /tmp | tail -1")
	pids := b.Config().PidsLimit
	code := pids - max(64, pids/8) // the code's limit, below the agent's
	if f := strings.Fields(out); len(f) < 3 || f[0] != strconv.FormatInt(code, 10) || f[2] != strconv.Itoa(1024*1024) {
		t.Fatalf("ulimit -u and /tmp: %q, want %d and a 1 GiB tmpfs", out, code)
	}
	ns := pidNamespace(t, inst)
	var most int
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			most = max(most, len(procsIn(ns)))
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "bomb() { bomb | bomb & }; bomb; sleep 8", TimeoutMs: 10_000}, nil)
	close(stop)
	<-watched
	t.Logf("fork bomb ran %v: exit %d %s %v; at most %d processes seen in the sandbox", time.Since(start).Round(time.Millisecond), r.ExitCode, r.Error, err, most)
	if limit := int(b.Config().PidsLimit); most > limit {
		t.Fatalf("%d processes in the sandbox, past RLIMIT_NPROC %d", most, limit)
	}
	// The host (the daemon's own user, whose uid the sandbox user is) can
	// still fork.
	if err := exec.Command("true").Run(); err != nil {
		t.Fatalf("host cannot fork: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if herr := c.Health(ctx); herr == nil {
		t.Log("the agent survived the bomb")
	} else {
		t.Errorf("the agent did not survive the bomb: %v", herr)
		select {
		case <-inst.Done():
			log, _ := os.ReadFile(filepath.Join(inst.(backend.Recoverable).State()["dir"], "agent.log"))
			first, _, _ := strings.Cut(string(log), "\n")
			t.Logf("the sandbox ended as a whole: its agent died (%s)", first)
			return // nothing left to destroy: its pid namespace is gone
		case <-time.After(10 * time.Second):
			t.Fatalf("agent does not answer (%v) yet the sandbox did not end", herr)
		}
	}
	assertDestroyLeavesNothing(t, b, inst)
}

// TestRootlessOwnership: the sandbox user is the daemon's user on the host,
// container root is a subordinate id that owns nothing of the daemon's, and
// the sandbox cannot reach what only root could.
func TestRootlessOwnership(t *testing.T) {
	onlyRootless(t)
	t.Parallel()
	b := newBackend(t)
	_, c, s := sandbox(t, b, nil)
	out, _, _ := sh(t, c, "id -u; echo x > made-inside; cat /proc/self/uid_map")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "1000" {
		t.Fatalf("id -u inside: %q, want 1000", lines[0])
	}
	fi, err := os.Stat(filepath.Join(s.WorkspaceDir, "made-inside"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
		t.Fatalf("a file made inside is owned by %d:%d on the host, want the daemon's %d:%d", st.Uid, st.Gid, os.Getuid(), os.Getgid())
	}
	// The map the sandbox sees: container 1000 is the daemon's uid; every
	// other id is subordinate (never the daemon's uid, never host root).
	t.Logf("uid_map inside:\n%s", strings.Join(lines[1:], "\n"))
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("uid_map line %q", l)
		}
		inside, _ := strconv.Atoi(f[0])
		host, _ := strconv.Atoi(f[1])
		n, _ := strconv.Atoi(f[2])
		if host == 0 && inside <= 1000 && 1000 < inside+n && n != 1 {
			t.Errorf("uid_map line %q maps more than the sandbox user to the daemon's uid", l)
		}
	}
	for _, cmd := range []string{"cat /etc/shadow", "ls -A /root"} {
		if out, _, code := sh(t, c, cmd); code == 0 && strings.TrimSpace(out) != "" {
			t.Errorf("%q succeeded: %q", cmd, out)
		}
	}
	// The sandbox's processes run as the daemon's uid on the host, in their
	// own pid namespace: they cannot see (so cannot signal or trace) the
	// daemon's processes.
	out, _, _ = sh(t, c, fmt.Sprintf("kill -0 %d 2>&1; ls /proc | grep -c '^[0-9]'", os.Getpid()))
	if !strings.Contains(out, "No such process") {
		t.Errorf("the test's own pid %d is visible in the sandbox: %q", os.Getpid(), out)
	}
}

// zombie reports whether process pid has exited and awaits its reaper.
func zombie(pid string) bool {
	st, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(st), ") ")
	return strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

// TestEnforcesSaysTheMode: the readiness report (/readyz) says what the
// backend enforces in the mode it runs in.
func TestEnforcesSaysTheMode(t *testing.T) {
	t.Parallel()
	b := oci.New(oci.Config{StateDir: t.TempDir()})
	got := strings.Join(b.Enforces(), "\n")
	want := []string{"pids_limit (default 512): cgroup pids.max", "memory_mb: cgroup memory", "network deny: loopback only"}
	if rootless() {
		want = []string{"memory_mb, cpu_count: refused (rootless", "RLIMIT_NPROC 512", "network deny: loopback only", "daemon's own host uid"}
		if b.CheckNetwork(api.NetworkAllow) == nil {
			want = append(want, "network allow (rootless: slirp4netns")
		} else {
			want = append(want, "network allow and whitelist: refused here (rootless")
		}
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("Enforces lacks %q:\n%s", w, got)
		}
	}
}
