//go:build !linux

package agent

import (
	"context"
	"errors"
)

// setSubreaper is Linux only.
func setSubreaper() error { return errors.ErrUnsupported }

// setNotDumpable is Linux only.
func setNotDumpable() error { return errors.ErrUnsupported }

// isSubreaper is always false outside Linux.
func isSubreaper() bool { return false }

// killDescendants does nothing outside Linux: there is no /proc to find a
// process's descendants in. Process groups are still killed.
func killDescendants(int) {}

// reapOrphans does nothing outside Linux (no subreaper).
func reapOrphans(context.Context, func(int) bool) {}
