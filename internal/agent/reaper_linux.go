package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxKillRounds bounds each phase of killDescendants: a tree that keeps
// forking faster than it is killed cannot hold the agent forever.
const maxKillRounds = 100

// setSubreaper makes the calling process the child subreaper: descendants
// whose parent dies are reparented to it instead of to init, so a daemon that
// double-forked and called setsid is still its descendant and can be killed.
func setSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// setNotDumpable makes the agent non-dumpable: a process of the same user
// without CAP_SYS_PTRACE in the sandbox's user namespace — the sandbox's
// code — can then neither ptrace it nor read its memory through /proc, so
// it cannot take over the agent's connection to the daemon or its
// limits. The processes it starts are dumpable again once they exec.
func setNotDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	return nil
}

// isSubreaper reports whether the calling process is the child subreaper.
func isSubreaper() bool {
	var v int32
	err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0)
	return err == nil && v != 0
}

// killDescendants SIGKILLs every process whose ancestry (ppid links in /proc)
// leads to root, root itself excluded. It first stops them all with SIGSTOP,
// round after round until no new one appears, so that none forks a child that
// escapes while the others die; then it kills them, again until none is alive.
// Zombies among them that are the caller's children (orphans adopted by a
// subreaper) are reaped; the caller must have reaped its own exec'd children
// first, or their Wait fails. Both phases are bounded by maxKillRounds.
func killDescendants(root int) {
	self := os.Getpid()
	stopped := map[int]bool{}
	for round := 0; round < maxKillRounds; round++ {
		procs := readProcs()
		fresh := 0
		for _, pid := range descendants(procs, root) {
			if pid == self || stopped[pid] || procs[pid].zombie() {
				continue
			}
			_ = unix.Kill(pid, unix.SIGSTOP)
			stopped[pid] = true
			fresh++
		}
		if fresh == 0 {
			break
		}
	}
	for round := 0; round < maxKillRounds; round++ {
		procs := readProcs()
		alive := 0
		for _, pid := range descendants(procs, root) {
			st := procs[pid]
			if pid == self {
				continue
			}
			if st.zombie() {
				if st.ppid == self {
					var ws unix.WaitStatus
					_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				}
				continue
			}
			alive++
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if alive == 0 {
			return
		}
		time.Sleep(time.Duration(min(round+1, 20)) * time.Millisecond)
	}
}

// procStat is what killDescendants needs of /proc/<pid>/stat.
type procStat struct {
	ppid  int
	state byte
}

func (s procStat) zombie() bool { return s.state == 'Z' || s.state == 'X' }

// readProcs reads every process's parent and state. Processes that vanish
// while it reads are left out.
func readProcs() map[int]procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if st, ok := parseProcStat(b); ok {
			out[pid] = st
		}
	}
	return out
}

// parseProcStat parses "pid (comm) state ppid …"; comm may hold spaces and
// parentheses, so the fields start after the last ')'.
func parseProcStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) == 0 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, state: f[0][0]}, true
}

// descendants lists the processes below root in procs, root excluded.
func descendants(procs map[int]procStat, root int) []int {
	children := map[int][]int{}
	for pid, st := range procs {
		if pid != st.ppid {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	var out []int
	seen := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// reapOrphans waits for the zombies of processes the agent adopted as the
// child subreaper (or as PID 1 of a container): orphans of commands and
// kernels, the remains of a fork bomb. Unreaped, each would keep counting
// against the sandbox's pids and process limits for good. It runs on every
// SIGCHLD (and every few seconds, in case one was coalesced) until ctx ends,
// and never touches a child of the agent's own that someone waits for (own).
func reapOrphans(ctx context.Context, own func(pid int) bool) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	self := os.Getpid()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
		for pid, st := range childProcs(self) {
			if st.ppid == self && st.zombie() && !own(pid) {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			}
		}
	}
}

// childProcs reads the state of self's children: from
// /proc/self/task/*/children when the kernel has it (a few files, where the
// agent of the local backend would otherwise read every process of the
// host on each SIGCHLD), else from all of /proc.
func childProcs(self int) map[int]procStat {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return readProcs()
	}
	out := map[int]procStat{}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if err != nil {
			return readProcs()
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if stat, err := os.ReadFile("/proc/" + f + "/stat"); err == nil {
				if st, ok := parseProcStat(stat); ok && st.ppid == self {
					out[pid] = st
				}
			}
		}
	}
	return out
}
