package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// killAllChildEnv makes TestKillAllKillsDaemons run its child part: this test
// binary, re-executed, is the subreaper agent.
const killAllChildEnv = "DS_AGENT_TEST_KILLALL_PIDFILE"

// TestKillAllKillsDaemons starts a command that double-forks a daemon out of
// its process group and session, then kills everything with killAll. Being the
// subreaper is process-wide, so the agent side runs in a re-executed child.
func TestKillAllKillsDaemons(t *testing.T) {
	if pf := os.Getenv(killAllChildEnv); pf != "" {
		killAllChild(t, pf)
		return
	}
	t.Parallel()
	pf := filepath.Join(t.TempDir(), "pids")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKillAllKillsDaemons$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), killAllChildEnv+"="+pf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	pids := readPids(t, pf, 3)
	for _, pid := range pids {
		waitGone(t, pid)
	}
	t.Logf("child:\n%s", out)
}

func killAllChild(t *testing.T, pidfile string) {
	if err := setSubreaper(); err != nil {
		t.Fatalf("setSubreaper: %v", err)
	}
	if !isSubreaper() {
		t.Fatal("isSubreaper is false after setSubreaper")
	}
	a := newLocalAgent(t)
	ctx := t.Context()
	// The double fork: setsid leaves the group and session, its sh exits, the
	// sleep is orphaned and reparented to the subreaper.
	res, err := a.c.RunCommand(ctx, api.ProcessRequest{Cmd: "setsid sh -c 'sleep 1000 >/dev/null 2>&1 & echo $! >> " + pidfile + "'"}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("RunCommand = %+v, %v", res, err)
	}
	// A running command with a group member and an attached setsid child.
	_, err = a.c.StartProcess(ctx, api.ProcessRequest{Cmd: "sleep 1000 & echo $! >> " + pidfile + "; setsid sleep 1000 & echo $! >> " + pidfile + "; wait"})
	if err != nil {
		t.Fatal(err)
	}
	pids := readPids(t, pidfile, 3)
	daemon := pids[0]
	// Its parent sh may still be exiting when the command returns (setsid
	// forks when it is a group leader): wait for the reparenting, bounded.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(daemon) + "/stat")
		if err != nil {
			t.Fatalf("daemon %d is not running: %v", daemon, err)
		}
		ps, ok := parseProcStat(st)
		if ok && ps.ppid == os.Getpid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d: %s; want it reparented to us (%d)", daemon, st, os.Getpid())
		}
	}
	a.s.procs.killAll()
	for _, pid := range pids {
		// Reaped, not just dead: no zombie is left behind either.
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("process %d survived killAll (kill 0: %v)", pid, err)
		}
	}
	_, err = a.c.StartProcess(ctx, api.ProcessRequest{Cmd: "true"})
	wantErr(t, "start after killAll", err, api.ErrUnavailable)
}

// TestKillAllAttached: without the subreaper (this test process), killAll
// still kills the process group and descendants that left it while attached.
func TestKillAllAttached(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	pf := filepath.Join(t.TempDir(), "pids")
	_, err := a.c.StartProcess(t.Context(), api.ProcessRequest{Cmd: "sleep 1000 & echo $! >> " + pf + "; setsid sleep 1000 & echo $! >> " + pf + "; wait"})
	if err != nil {
		t.Fatal(err)
	}
	pids := readPids(t, pf, 2)
	a.s.procs.killAll()
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

// processGone reports whether pid has exited; a zombie has.
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	st, ok := parseProcStat(b)
	return ok && st.zombie()
}

// readPids waits until file holds n pids, one a line.
func readPids(t *testing.T, file string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		if len(pids) >= n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q; want %d pids", file, b, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"12 (sleep) S 7 12 12 0", procStat{ppid: 7, state: 'S'}, true},
		{"13 (a (weird) name) Z 1 13", procStat{ppid: 1, state: 'Z'}, true},
		{"14 (x)", procStat{}, false},
		{"garbage", procStat{}, false},
	} {
		got, ok := parseProcStat([]byte(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseProcStat(%q) = %+v, %v", tc.in, got, ok)
		}
	}
}
