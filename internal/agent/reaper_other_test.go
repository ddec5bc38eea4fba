//go:build !linux

package agent

import "syscall"

// processGone reports whether pid has exited (a zombie still counts as alive
// here: there is no /proc to tell).
func processGone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }
