//go:build !linux

package agent

import (
	"errors"
	"fmt"
)

// apply is Linux only: elsewhere a process limit is refused.
func (l ProcessLimits) apply(int) error {
	if l != (ProcessLimits{}) {
		return fmt.Errorf("process limits (%v): %w", l, errors.ErrUnsupported)
	}
	return nil
}

func warmThreads(int) {}

func (l ProcessLimits) applyUnless(done bool, pid int) error { return l.apply(pid) }

func (ProcessLimits) wrapper() []string { return nil }
