//go:build !linux

package local

import "syscall"

// mountNamespace: private mount namespaces are Linux's; elsewhere starting
// the agent fails and the sandbox runs without one (with a warning).
func mountNamespace(attr *syscall.SysProcAttr) {}
