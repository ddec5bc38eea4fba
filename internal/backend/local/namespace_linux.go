package local

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// mountNamespace starts the agent in a private mount namespace; an agent
// that is not root gets a user namespace too, mapping only its own uid and
// gid, with CAP_SYS_ADMIN there for the mounts (the agent drops it by
// re-executing itself once they are made).
func mountNamespace(attr *syscall.SysProcAttr) {
	attr.Cloneflags |= unix.CLONE_NEWNS
	if os.Geteuid() == 0 {
		return
	}
	attr.Cloneflags |= unix.CLONE_NEWUSER
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}}
	attr.GidMappingsEnableSetgroups = false
	attr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN}
}
