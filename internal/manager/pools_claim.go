package manager

import (
	"context"
	"strconv"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
)

// Claims: a create takes a warm pool's ready sandbox (see pools.go).

// claim hands the create a ready pooled sandbox matching its plan, made
// the caller's, or returns nil (start cold).
func (m *Manager) claim(ctx context.Context, req api.CreateSandboxRequest, pl plan) *Sandbox {
	m.mu.Lock()
	pools := m.pools
	m.mu.Unlock()
	if len(pools) == 0 {
		return nil
	}
	if m.unpoolable(req.WorkspaceID, pl) != "" {
		m.unmatched.Add(1)
		return nil
	}
	key := poolKey(pl)
	var p *pool
	for _, q := range pools {
		q.mu.Lock()
		k := q.key
		q.mu.Unlock()
		if k == key {
			p = q
			break
		}
	}
	if p == nil {
		m.unmatched.Add(1)
		return nil
	}
	for {
		p.mu.Lock()
		if len(p.ready) == 0 {
			p.misses++
			p.mu.Unlock()
			return nil
		}
		e := p.ready[0]
		p.ready = p.ready[1:]
		close(e.taken)
		p.mu.Unlock()
		p.signal()
		if s := m.adopt(ctx, p, e.s, req, pl); s != nil {
			p.mu.Lock()
			p.hits++
			p.mu.Unlock()
			return s
		}
	}
}

// adopt applies what a create may still differ in to a pooled sandbox the
// caller removed from p, and registers it as the caller's; a sandbox that
// is no longer healthy is dropped (nil).
func (m *Manager) adopt(ctx context.Context, p *pool, s *Sandbox, req api.CreateSandboxRequest, pl plan) *Sandbox {
	drop := func(why string) *Sandbox {
		p.mu.Lock()
		p.dropped++
		p.mu.Unlock()
		m.dropPooled(s, why)
		return nil
	}
	select {
	case <-s.inst.Done():
		return drop("its sandbox exited while pooled")
	default:
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := s.agent.SetEnv(actx, req.Envs)
	cancel()
	if err != nil {
		return drop("not healthy when claimed: " + err.Error())
	}
	owner := auth.FromContext(ctx).KeyID
	if err := m.workspaces.SetOwner(s.info.WorkspaceID, owner); err != nil {
		return drop("its workspace: " + err.Error())
	}
	now := time.Now().UTC()
	id := s.ID()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return drop("the manager is shutting down")
	}
	s.mu.Lock()
	s.owner, s.pooled = owner, false
	s.info.Owner, s.info.Metadata, s.info.ScannerMode = owner, pl.metadata, pl.scannerMode
	s.info.StartedAt, s.info.EndAt = now, now.Add(pl.timeout)
	s.timer = time.AfterFunc(pl.timeout, func() { m.expire(id) })
	s.mu.Unlock()
	m.sandboxes[id] = s
	m.pooled--
	m.mu.Unlock()
	m.saveRecord(s)
	m.watchNetwork(s)
	go m.watch(s)
	m.log.Info("sandbox created", "sandbox_id", id, "backend", s.info.Backend, "workspace_id", s.info.WorkspaceID, "pool", p.idx)
	data := map[string]string{
		"backend": s.info.Backend, "template_id": s.info.TemplateID, "workspace_id": s.info.WorkspaceID,
		"network": s.info.Network.Policy, "pool": strconv.Itoa(p.idx),
	}
	m.emit(api.EventSandboxCreated, id, owner, data)
	return s
}
