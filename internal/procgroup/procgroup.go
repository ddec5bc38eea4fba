// Package procgroup signals and waits for Unix process groups: what the
// agent does to a command or kernel and everything it started.
package procgroup

import "time"

// pollMax bounds the interval between two looks at a group WaitGone waits
// for.
const pollMax = 20 * time.Millisecond

// WaitGone waits, at most timeout, until no process of the group pgid is
// left, zombies included, and reports whether none is. Call it after the
// group leader was reaped: a zombie leader keeps the group alive. Processes
// that are dying or not yet reaped still count against a user's process
// limit (RLIMIT_NPROC) and a cgroup's pids limit, so whoever starts a new
// process in their place right after a kill must wait for them first.
//
// It only probes (signal 0), so a group id reused after the group ended
// costs at most the timeout, never a signal to someone else.
func WaitGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, pollMax) {
		if !exists(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
}
