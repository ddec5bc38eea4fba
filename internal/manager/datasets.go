package manager

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/dataset"
)

// Ownership: a dataset belongs to the key that registered it; other keys
// neither list, read nor prepare it (ErrNotFound, as if it did not exist)
// unless an admin published it to every key. Names are one namespace: a key
// that registers a name another key holds gets ErrExists.

func canRead(id auth.Identity, d api.Dataset) bool { return d.Public || id.CanSee(d.Owner) }

func datasetNotFound(name string) error {
	return api.Errorf(api.ErrNotFound, "dataset %s (it does not exist, or belongs to another API key)", name)
}

// ListDatasets returns the datasets the caller may see that match f.
func (m *Manager) ListDatasets(ctx context.Context, f dataset.Filter) ([]api.Dataset, error) {
	all, err := m.datasets.List(f)
	if err != nil {
		return nil, err
	}
	who := auth.FromContext(ctx)
	return slices.DeleteFunc(all, func(d api.Dataset) bool { return !canRead(who, d) }), nil
}

// GetDataset returns dataset name when the caller may see it.
func (m *Manager) GetDataset(ctx context.Context, name string) (api.Dataset, error) {
	d, err := m.datasets.Get(name)
	if errors.Is(err, api.ErrNotFound) || err == nil && !canRead(auth.FromContext(ctx), d) {
		return api.Dataset{}, datasetNotFound(name)
	}
	return d, err
}

// RegisterDataset copies source, a path on the daemon's host, into the
// registry as dataset name, owned by the caller. It reads any file the
// daemon can: admin keys (and in-process callers) only.
func (m *Manager) RegisterDataset(ctx context.Context, source, name, description string, tags []string) (api.Dataset, error) {
	who := auth.FromContext(ctx)
	if !who.Admin {
		return api.Dataset{}, api.Errorf(api.ErrPermission, "registering a path on the daemon's host needs an admin key; upload the file instead (PUT /v1/datasets/{name})")
	}
	return m.datasets.RegisterAs(who.KeyID, source, name, description, tags)
}

// RegisterUpload registers staged, a file the face wrote the caller's
// uploaded bytes into (a staging file of the daemon's own, never a path the
// caller named), as dataset name owned by the caller.
func (m *Manager) RegisterUpload(ctx context.Context, staged, name, description string, tags []string) (api.Dataset, error) {
	return m.datasets.RegisterAs(auth.FromContext(ctx).KeyID, staged, name, description, tags)
}

// RemoveDataset deletes dataset name: its owner or an admin only.
func (m *Manager) RemoveDataset(ctx context.Context, name string) error {
	d, err := m.GetDataset(ctx, name)
	if err != nil {
		return err
	}
	if who := auth.FromContext(ctx); !who.CanSee(d.Owner) {
		return api.Errorf(api.ErrPermission, "dataset %s belongs to key %q: only it or an admin key may remove it", name, d.Owner)
	}
	return m.datasets.Remove(name)
}

// PublishDataset makes dataset name visible to every key (public) or only
// to its owner again. Admin keys only.
func (m *Manager) PublishDataset(ctx context.Context, name string, public bool) (api.Dataset, error) {
	if !auth.FromContext(ctx).Admin {
		return api.Dataset{}, api.Errorf(api.ErrPermission, "publishing datasets needs an admin key")
	}
	return m.datasets.SetPublic(name, public)
}

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
	// Both owners: the sandbox (so its workspace) is the caller's, checked
	// by Get; the dataset must be one the caller may read.
	if _, err := m.GetDataset(ctx, name); err != nil {
		return "", err
	}
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
