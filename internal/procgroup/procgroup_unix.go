//go:build unix

package procgroup

import (
	"errors"
	"syscall"
)

// Kill sends SIGKILL to the process group pgid. A group that is already
// gone is not an error.
func Kill(pgid int) error {
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// exists reports whether the group pgid has a process, zombies included.
// EPERM means it has one we may not signal.
func exists(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}
