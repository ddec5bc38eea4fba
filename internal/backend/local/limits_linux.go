package local

import (
	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// checkOpenFiles refuses an open-files limit the agent could not set: an
// unprivileged process can lower its children's RLIMIT_NOFILE, never raise
// it past its own hard limit.
func checkOpenFiles(n int) error {
	if n == 0 {
		return nil
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return api.Errorf(api.ErrUnsupported, "local backend: read the open-files limit: %v", err)
	}
	if uint64(n) > lim.Max && unix.Geteuid() != 0 {
		return api.Errorf(api.ErrUnsupported, "the local backend cannot give sandboxes max_open_files %d: the daemon's own hard limit is %d; ask for at most that, or raise the daemon's (ulimit -Hn)", n, lim.Max)
	}
	return nil
}
