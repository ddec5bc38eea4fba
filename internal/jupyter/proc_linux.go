package jupyter

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// supported reports whether Start works on this platform.
func supported() error { return nil }

// sysProcAttr returns a copy of cfg.SysProcAttr with the attributes Start
// depends on forced.
func (cfg Config) sysProcAttr() *syscall.SysProcAttr {
	var attr syscall.SysProcAttr
	if cfg.SysProcAttr != nil {
		attr = *cfg.SysProcAttr
	}
	if !attr.Setsid {
		// setpgid fails with EPERM on a session leader, and a session
		// leader already leads its own process group.
		attr.Setpgid = true
		attr.Pgid = 0
	}
	attr.Pdeathsig = syscall.SIGKILL
	return &attr
}

// waitZombie blocks until the child pid exits, leaving it unreaped.
func waitZombie(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// chownToKernel gives paths to the kernel's credential, if it has one:
// ipykernel rewrites its connection file and needs its directory.
func (cfg Config) chownToKernel(paths ...string) error {
	c := cfg.SysProcAttr
	if c == nil || c.Credential == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, int(c.Credential.Uid), int(c.Credential.Gid)); err != nil {
			return fmt.Errorf("chown %s to the kernel's credential: %w", p, err)
		}
	}
	return nil
}
