package agent

import "syscall"

// sysProcAttr puts a command in its own process group (so signals reach its
// children), kills it when the agent dies, and switches user when cred is set.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
}
