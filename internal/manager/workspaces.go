package manager

import (
	"errors"
	"fmt"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Workspace attachment. A workspace with a disk quota is a mounted image
// (workspace.Store.SetQuota); it is mounted while at least one sandbox uses
// it and unmounted when the last one stops, so an image is never mounted
// twice (a named workspace may be shared by several sandboxes). wsMu orders
// attach and release; users counts the sandboxes per workspace id.

// attachWorkspace creates or attaches the sandbox's workspace ("" = the
// configured default, else a fresh anonymous one) and mounts its disk quota
// (quotaMB, or the one a named workspace already has). It returns the
// workspace and its quota in MiB.
func (m *Manager) attachWorkspace(id string, quotaMB int) (api.Workspace, int, error) {
	if id == "" {
		id = m.cfg.DefaultWorkspaceID
	}
	var ws api.Workspace
	var err error
	if id == "" {
		ws, err = m.workspaces.CreateAnonymous()
	} else {
		ws, err = m.workspaces.Create(id)
	}
	if err != nil {
		return ws, 0, err
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
