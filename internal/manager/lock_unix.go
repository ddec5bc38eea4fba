//go:build unix

package manager

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// lockStateDir takes an exclusive lock on dir/daemon.lock, so two daemons never
// manage (and re-attach to) the same sandboxes. The lock lives as long as the
// returned file is open.
func lockStateDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, "daemon.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, api.Errorf(api.ErrExists, "another ds-sandbox daemon already uses the state directory %s (%s is locked); stop it or give this one another SANDBOX_STATE_DIR", dir, p)
	}
	return f, nil
}
