package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
)

// Workspace attachment. A workspace with a disk quota is a mounted image
// (workspace.Store.SetQuota); it is mounted while at least one sandbox uses
// it and unmounted when the last one stops, so an image is never mounted
// twice (a named workspace may be shared by several sandboxes). wsMu orders
// attach and release; users counts the sandboxes per workspace id.

// Ownership: a named workspace belongs to the key that created it (the
// first sandbox to name it); other keys get ErrNotFound for it, as for a
// sandbox, unless an admin granted it to them. Admins see and use all.

// canUse reports whether the caller may use workspace ws.
func canUse(id auth.Identity, ws api.Workspace) bool {
	return id.CanSee(ws.Owner) || slices.Contains(ws.Grants, id.KeyID)
}

func workspaceNotFound(id string) error {
	return api.Errorf(api.ErrNotFound, "workspace %s (it does not exist, or belongs to another API key)", id)
}

// attachWorkspace creates or attaches the sandbox's workspace ("" = the
// configured default, else a fresh anonymous one) and mounts its disk quota
// (quotaMB, or the one a named workspace already has). It returns the
// workspace and its quota in MiB. A named workspace another key owns is
// ErrNotFound.
func (m *Manager) attachWorkspace(ctx context.Context, id string, quotaMB int) (api.Workspace, int, error) {
	who := auth.FromContext(ctx)
	if id == "" {
		id = m.cfg.DefaultWorkspaceID
	}
	var ws api.Workspace
	var err error
	if id == "" {
		ws, err = m.workspaces.CreateAnonymous(who.KeyID)
	} else {
		ws, err = m.workspaces.Create(id, who.KeyID)
	}
	if err != nil {
		return ws, 0, err
	}
	if !canUse(who, ws) {
		return api.Workspace{}, 0, workspaceNotFound(id)
	}
	m.wsMu.Lock()
	defer m.wsMu.Unlock()
	if err := m.workspaces.SetQuota(ws.ID, quotaMB); err != nil {
		if ws.Anonymous {
			_ = m.workspaces.Remove(ws.ID)
		}
		return ws, 0, fmt.Errorf("create sandbox: %w", err)
	}
	quota, err := m.workspaces.Quota(ws.ID)
	if err != nil {
		if ws.Anonymous {
			_ = m.workspaces.Remove(ws.ID)
		}
		return ws, 0, err
	}
	m.wsUsers[ws.ID]++
	return ws, quota, nil
}

// holdWorkspace counts a re-attached sandbox as a user of its workspace.
func (m *Manager) holdWorkspace(id string) {
	m.wsMu.Lock()
	m.wsUsers[id]++
	m.wsMu.Unlock()
}

// releaseWorkspace is the end of one sandbox's use of workspace ws: the last
// user of an anonymous workspace removes it (with its image), the last user
// of a named one unmounts its image (the files stay in it) unless kept (a
// workspace kept for its outputs stays readable where it is).
func (m *Manager) releaseWorkspace(id string, anonymous, kept bool) error {
	m.wsMu.Lock()
	defer m.wsMu.Unlock()
	if m.wsUsers[id] > 1 {
		m.wsUsers[id]--
		return nil
	}
	delete(m.wsUsers, id)
	var err error
	switch {
	case anonymous:
		err = m.workspaces.Remove(id)
	case !kept:
		err = m.workspaces.Unmount(id)
	}
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("workspace %s: %w", id, err)
	}
	return nil
}

// ListWorkspaces returns the workspaces the caller may use, sorted by id.
func (m *Manager) ListWorkspaces(ctx context.Context) ([]api.Workspace, error) {
	all, err := m.workspaces.List()
	if err != nil {
		return nil, err
	}
	who := auth.FromContext(ctx)
	return slices.DeleteFunc(all, func(ws api.Workspace) bool { return !canUse(who, ws) }), nil
}

// GetWorkspace returns workspace id when the caller may use it.
func (m *Manager) GetWorkspace(ctx context.Context, id string) (api.Workspace, error) {
	ws, err := m.workspaces.Get(id)
	if errors.Is(err, api.ErrNotFound) || err == nil && !canUse(auth.FromContext(ctx), ws) {
		return api.Workspace{}, workspaceNotFound(id)
	}
	return ws, err
}

// RemoveWorkspace deletes workspace id and its files. Only its owner and
// admins may (a grant lets a key use a workspace, not delete it); one that a
// running sandbox uses is ErrExists.
func (m *Manager) RemoveWorkspace(ctx context.Context, id string) error {
	ws, err := m.GetWorkspace(ctx, id)
	if err != nil {
		return err
	}
	if who := auth.FromContext(ctx); !who.CanSee(ws.Owner) {
		return api.Errorf(api.ErrPermission, "workspace %s belongs to key %q: only it or an admin key may remove it", id, ws.Owner)
	}
	m.wsMu.Lock()
	defer m.wsMu.Unlock()
	if m.wsUsers[id] > 0 {
		return api.Errorf(api.ErrExists, "workspace %s is attached to %d running sandbox(es); kill them first", id, m.wsUsers[id])
	}
	return m.workspaces.Remove(id)
}

// GrantWorkspace lets the key keyID use workspace id (grant) or no longer
// (!grant). Admin keys only.
func (m *Manager) GrantWorkspace(ctx context.Context, id, keyID string, grant bool) (api.Workspace, error) {
	if !auth.FromContext(ctx).Admin {
		return api.Workspace{}, api.Errorf(api.ErrPermission, "granting workspaces needs an admin key")
	}
	if _, ok := m.keyOf(keyID); !ok && m.HasKeys() {
		return api.Workspace{}, api.Errorf(api.ErrInvalid, "key %q is not one of the configured api_keys", keyID)
	}
	return m.workspaces.SetGrant(id, keyID, grant)
}
