package manager

import (
	"context"
	"path"
	"path/filepath"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// PrepareDataset places a registered dataset into the sandbox's data/
// directory (by copy or hard link) and returns its path as the sandbox's code
// sees it.
func (m *Manager) PrepareDataset(ctx context.Context, sandboxID, name, strategy string) (string, error) {
	s, err := m.Get(ctx, sandboxID)
	if err != nil {
		return "", err
	}
	info := s.Info()
	if strategy == "" {
		strategy = m.cfg.DefaultDatasetStrategy
	}
	dst, err := m.datasets.Prepare(name, info.WorkspacePath, strategy)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(info.WorkspacePath, dst)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", api.Errorf(api.ErrInvalid, "dataset %s was prepared outside the workspace", name)
	}
	return path.Join(info.Workdir, filepath.ToSlash(rel)), nil
}
