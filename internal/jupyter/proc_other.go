//go:build !linux

package jupyter

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// supported reports whether Start works on this platform: it needs Linux's
// Pdeathsig and waitid.
func supported() error {
	return fmt.Errorf("kernels on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (cfg Config) sysProcAttr() *syscall.SysProcAttr { return cfg.SysProcAttr }

func waitZombie(int) error { return errors.ErrUnsupported }

func (cfg Config) chownToKernel(...string) error { return nil }
