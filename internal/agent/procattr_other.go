//go:build !linux

package agent

import "syscall"

// sysProcAttr puts a command in its own process group and switches user when
// cred is set. Outside Linux there is no parent-death signal: commands outlive
// an agent that dies without Close.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
