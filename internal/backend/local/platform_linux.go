package local

import "syscall"

// supported reports whether the backend can run here: on Linux it can.
func supported() error { return nil }

// agentProcAttr starts the agent in a session of its own when it must
// outlive us (detach), else in its own process group, killed when we die.
func agentProcAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
