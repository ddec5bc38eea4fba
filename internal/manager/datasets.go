package manager

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// PrepareDataset places a registered dataset into the sandbox's data/
// directory (by copy or hard link) and returns its path relative to the
// workdir (the code's working directory, where the files API resolves
// relative paths too). The registry's copy is verified against its sha256
// first, so a corrupted registry file is never handed out.
func (m *Manager) PrepareDataset(ctx context.Context, sandboxID, name, strategy string) (string, error) {
	s, err := m.Get(ctx, sandboxID)
	if err != nil {
		return "", err
	}
	info := s.Info()
	if strategy == "" {
		strategy = m.cfg.DefaultDatasetStrategy
	}
	if strategy == "link" && m.sharesDaemonUser(info.Backend) {
		// A hard link shares the registry's file, and this sandbox's code
		// runs as the daemon's own user (local, rootless oci): it could chmod
		// and rewrite the file for every later sandbox.
		return "", api.Errorf(api.ErrUnsupported, "dataset %s: the link strategy would let %s sandbox code (which runs as the daemon's user) modify the registry's copy; use copy", name, info.Backend)
	}
	if err := m.datasets.Verify(name); err != nil {
		return "", err
	}
	dst, err := m.datasets.Prepare(name, info.WorkspacePath, strategy)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(info.WorkspacePath, dst)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", api.Errorf(api.ErrInvalid, "dataset %s was prepared outside the workspace", name)
	}
	return filepath.ToSlash(rel), nil
}

// sharesDaemonUser reports whether code of the named backend's sandboxes
// runs as the daemon's own host user.
func (m *Manager) sharesDaemonUser(name string) bool {
	b, err := m.Backend(name)
	if err != nil {
		return true // unknown: assume the worst
	}
	s, ok := b.(backend.DaemonUserSharer)
	return ok && s.SharesDaemonUser()
}
