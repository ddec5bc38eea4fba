package local

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

var _ backend.Recoverer = (*Backend)(nil)

// Recover re-attaches to a sandbox started by an earlier daemon (Detach mode):
// its agent process must still run and answer on its socket. Anything else is
// an error wrapping api.ErrNotFound; the caller then reaps the sandbox.
func (b *Backend) Recover(ctx context.Context, state map[string]string) (backend.Instance, error) {
	pid, err := strconv.Atoi(state["pid"])
	dir, sock := state["dir"], state["socket"]
	if err != nil || pid <= 1 || dir == "" || sock == "" || !strings.HasPrefix(sock, dir+"/") {
		return nil, api.Errorf(api.ErrInvalid, "local backend: unusable recovery state %v", state)
	}
	in := &instance{pid: pid, dir: dir, sock: sock, done: make(chan struct{})}
	// A pidfd pins the process: it cannot be confused with a later process
	// that reuses the pid.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, api.Errorf(api.ErrNotFound, "local backend: agent process %d is gone", pid)
	}
	if !isAgent(pid) {
		unix.Close(fd)
		os.RemoveAll(dir)
		return nil, api.Errorf(api.ErrNotFound, "local backend: process %d is not a ds-sandbox agent any more", pid)
	}
	c := agentclient.NewClient(sock)
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Health(hctx); err != nil {
		unix.Close(fd)
		_ = in.Destroy(context.Background())
		return nil, api.Errorf(api.ErrNotFound, "local backend: agent %d does not answer: %v", pid, err)
	}
	go func() {
		backend.WaitPidfd(fd)
		// Not our child (the earlier daemon was its parent), so nothing to
		// reap; init adopts it.
		close(in.done)
	}()
	return in, nil
}

// isAgent checks that pid runs an agent (argv contains "--socket"), so a
// recycled pid is never signalled by mistake.
func isAgent(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "\x00--socket\x00")
}
