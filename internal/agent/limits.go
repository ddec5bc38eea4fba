package agent

import (
	"fmt"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ProcessLimits are resource limits (rlimits) the agent gives every process it
// starts: kernels and commands, and through inheritance whatever they start.
// The agent itself keeps its own limits. Zero fields leave the inherited
// limit alone.
//
// MaxProcs is RLIMIT_NPROC, which the kernel counts per user (per user
// namespace): with the sandbox's code limited below the sandbox's pids limit,
// a fork bomb stops while the agent, whose own limit is higher, can still
// create the threads and processes it needs to report the failure and start
// a fresh kernel. It only makes sense where the user's processes are the
// sandbox's own (a user namespace per sandbox); elsewhere it would count
// every process of that uid on the host, and backends do not set it.
//
// Limits are applied with prlimit(2) right after the process starts, before
// the agent talks to it: a kernel runs no cell before that, but a command's
// shell may have run a few instructions of its own first.
type ProcessLimits struct {
	MaxProcs     int
	MaxOpenFiles int
}

func (l ProcessLimits) check() error {
	if l.MaxProcs < 0 || l.MaxOpenFiles < 0 {
		return api.Errorf(api.ErrInvalid, "agent: negative process limits %+v", l)
	}
	return nil
}

func (l ProcessLimits) String() string {
	return fmt.Sprintf("max_procs=%d max_open_files=%d", l.MaxProcs, l.MaxOpenFiles)
}
