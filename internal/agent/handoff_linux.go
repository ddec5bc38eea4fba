package agent

import (
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// checkHandoffPeer refuses a hand-off from a process of the sandbox: one
// that runs as the agent's own (unprivileged) user and that the agent sees
// in its pid namespace. The daemon, outside the sandbox's pid namespace, is
// seen with pid 0. (The socket's directory is sealed from the sandbox's code
// already; this holds even if that ever regressed.) An agent running as
// root is not in a sandbox of its own and skips the check.
func checkHandoffPeer(c *net.UnixConn) error {
	if os.Geteuid() == 0 {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return api.Errorf(api.ErrInvalid, "hand-off peer: %v", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return api.Errorf(api.ErrInvalid, "hand-off peer: %v %v", err, cerr)
	}
	if cred.Pid != 0 && int(cred.Uid) == os.Geteuid() {
		return api.Errorf(api.ErrPermission, "hand-off refused: the peer (pid %d) is a process of the sandbox", cred.Pid)
	}
	return nil
}
