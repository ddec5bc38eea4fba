package agent

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// rlimits returns l as the (resource, limit) pairs prlimit applies.
func (l ProcessLimits) rlimits() [][2]uint64 {
	var out [][2]uint64
	if l.MaxProcs > 0 {
		out = append(out, [2]uint64{unix.RLIMIT_NPROC, uint64(l.MaxProcs)})
	}
	if l.MaxOpenFiles > 0 {
		out = append(out, [2]uint64{unix.RLIMIT_NOFILE, uint64(l.MaxOpenFiles)})
	}
	return out
}

// apply sets l on the running process pid (soft and hard limit alike, so the
// process cannot raise them again).
func (l ProcessLimits) apply(pid int) error {
	for _, r := range l.rlimits() {
		lim := unix.Rlimit{Cur: r[1], Max: r[1]}
		if err := unix.Prlimit(pid, int(r[0]), &lim, nil); err != nil {
			return fmt.Errorf("set resource limit %d=%d on pid %d: %w", r[0], r[1], pid, err)
		}
	}
	return nil
}

// applyUnless is apply, skipped when done (a wrapper already set the limits).
func (l ProcessLimits) applyUnless(done bool, pid int) error {
	if done {
		return nil
	}
	return l.apply(pid)
}

// wrapper returns the prlimit(1) argv prefix that sets l on the command it
// runs, so the limits hold from the command's first instruction; nil when l
// is empty or prlimit is not installed (then apply sets them right after the
// start, leaving the shell a moment without them).
func (l ProcessLimits) wrapper() []string {
	rl := l.rlimits()
	if len(rl) == 0 {
		return nil
	}
	bin, err := exec.LookPath("prlimit")
	if err != nil {
		return nil
	}
	argv := []string{bin}
	for _, r := range rl {
		name := "--nproc"
		if r[0] == unix.RLIMIT_NOFILE {
			name = "--nofile"
		}
		argv = append(argv, fmt.Sprintf("%s=%d:%d", name, r[1], r[1]))
	}
	return append(argv, "--")
}

// warmThreads makes the Go runtime create n OS threads now and park them
// idle. The runtime never frees an idle thread, and it takes one from that
// pool before it creates another; a runtime that cannot create a thread
// aborts the whole program. Under a fork bomb the sandbox's pids limit is
// exhausted, and the agent must still answer, kill the bomb and start a new
// kernel: the pool covers the threads it needs meanwhile (blocking system
// calls, each waiting child).
//
// Each goroutine locks itself to a thread and blocks, so the others cannot
// share its thread and the runtime must start new ones; once all are running
// they unlock and exit, leaving their threads idle.
func warmThreads(n int) {
	var ready, release sync.WaitGroup
	ready.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	for range n {
		done.Go(func() {
			runtime.LockOSThread()
			ready.Done()
			release.Wait()
			runtime.UnlockOSThread()
		})
	}
	ready.Wait()
	release.Done()
	done.Wait()
}
