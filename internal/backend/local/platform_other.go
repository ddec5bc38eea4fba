//go:build !linux

package local

import (
	"runtime"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// supported: the agent's kernels need Linux (internal/jupyter: a
// parent-death signal and waitid), so the backend refuses to start.
func supported() error {
	return api.Errorf(api.ErrUnsupported, "the local backend runs on Linux only, not %s; use a daemon on a Linux host (the SDK's remote mode, DS_SANDBOX_URL)", runtime.GOOS)
}

// agentProcAttr: there is no parent-death signal outside Linux; unused,
// since supported refuses first.
func agentProcAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true}
}
