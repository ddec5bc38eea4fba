//go:build !linux

package nettest

import (
	"errors"
	"fmt"
	"runtime"
)

// inNS: network namespaces are Linux's.
func inNS(string, func()) error {
	return fmt.Errorf("network namespaces on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
