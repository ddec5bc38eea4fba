package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/atomicfile"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// record is a sandbox as persisted in <state_dir>/sandboxes/<id>.json.
type record struct {
	Info         api.SandboxInfo   `json:"info"`
	BackendState map[string]string `json:"backend_state"`
	// Pooled marks a warm pool's sandbox nobody claimed: a restarted
	// daemon reaps it (its pools start afresh).
	Pooled bool `json:"pooled,omitempty"`
}

// Persist makes the manager keep a record of every sandbox on disk (written
// atomically on create and SetTimeout, removed when the sandbox stops), so a
// restarted daemon can Recover them. The daemon calls it; embedded mode does
// not (its sandboxes die with the program).
func (m *Manager) Persist() error {
	dir := filepath.Join(m.cfg.StateDir, "sandboxes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sandbox records: %w", err)
	}
	lock, err := lockStateDir(m.cfg.StateDir)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.recordsDir = dir
	m.stateLock = lock
	m.mu.Unlock()
	return nil
}

// unlock releases the state directory for the next daemon.
func (m *Manager) unlock() {
	if m.stateLock != nil {
		m.stateLock.Close()
		m.stateLock = nil
	}
}

func (m *Manager) saveRecord(s *Sandbox) {
	m.mu.Lock()
	dir := m.recordsDir
	m.mu.Unlock()
	if dir == "" {
		return
	}
	rec := record{Info: s.Info()}
	s.mu.Lock()
	rec.Pooled = s.pooled
	s.mu.Unlock()
	if rec.Info.State != api.StateRunning {
		return
	}
	if r, ok := s.inst.(backend.Recoverable); ok {
		rec.BackendState = r.State()
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = atomicfile.Write(filepath.Join(dir, rec.Info.SandboxID+".json"), b, 0o600)
	}
	if err != nil {
		m.log.Error("persist sandbox record", "sandbox_id", rec.Info.SandboxID, "err", err)
	}
}

func (m *Manager) deleteRecord(id string) {
	m.mu.Lock()
	dir := m.recordsDir
	m.mu.Unlock()
	if dir != "" {
		if err := os.Remove(filepath.Join(dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Error("remove sandbox record", "sandbox_id", id, "err", err)
		}
	}
}

// RecoveryReport says what Recover found.
type RecoveryReport struct {
	// Reattached sandboxes still ran and are managed again.
	Reattached []string `json:"reattached"`
	// Reaped sandboxes were gone (or past their deadline): their records and
	// anonymous workspaces were removed.
	Reaped []string `json:"reaped"`
	// Orphans counts running sandboxes that no record named, removed.
	Orphans int `json:"orphans"`
	// Workspaces counts anonymous workspaces no sandbox used, removed.
	Workspaces int `json:"workspaces"`
}

// Recover loads the persisted records (see Persist) and re-attaches to every
// sandbox whose backend still runs it, re-arming its deadline; the others are
// reaped. Named workspaces are never removed.
func (m *Manager) Recover(ctx context.Context) (RecoveryReport, error) {
	var rep RecoveryReport
	m.mu.Lock()
	dir := m.recordsDir
	m.mu.Unlock()
	if dir == "" {
		return rep, errors.New("recover: persistence is off (call Persist first)")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return rep, fmt.Errorf("recover: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			if strings.HasPrefix(name, ".tmp-") {
				os.Remove(filepath.Join(dir, name))
			}
			continue
		}
		var rec record
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil || rec.Info.SandboxID+".json" != name {
			m.log.Error("unreadable sandbox record; moving it aside", "file", name, "err", err)
			os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".bad"))
			continue
		}
		if m.reattach(ctx, rec) {
			rep.Reattached = append(rep.Reattached, rec.Info.SandboxID)
		} else {
			rep.Reaped = append(rep.Reaped, rec.Info.SandboxID)
		}
	}
	// Sandboxes no record names: started by a daemon that died before it
	// could record them.
	live := func(id string) bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.sandboxes[id]
		return ok
	}
	for _, name := range m.BackendNames() {
		if r, ok := m.backends[name].(backend.Reaper); ok {
			n, err := r.ReapOrphans(ctx, live)
			if err != nil {
				m.log.Warn("reap unrecorded sandboxes", "backend", name, "err", err)
			}
			rep.Orphans += n
		}
	}
	rep.Workspaces = m.reapAnonymousWorkspaces()
	return rep, nil
}

// reapAnonymousWorkspaces removes the anonymous workspaces no sandbox uses:
// those of creates a daemon crash cut before their sandbox was recorded (an
// anonymous workspace belongs to one sandbox, so nothing else can claim it).
// Recover calls it once the records are read, before any create runs.
func (m *Manager) reapAnonymousWorkspaces() int {
	all, err := m.workspaces.List()
	if err != nil {
		m.log.Warn("list workspaces", "err", err)
		return 0
	}
	m.mu.Lock()
	used := map[string]bool{}
	for _, s := range m.sandboxes {
		used[s.info.WorkspaceID] = true
	}
	m.mu.Unlock()
	n := 0
	for _, ws := range all {
		if !ws.Anonymous || used[ws.ID] {
			continue
		}
		m.holdWorkspace(ws.ID)
		if err := m.releaseWorkspace(ws.ID, true, false); err != nil {
			m.log.Warn("remove an unused anonymous workspace", "workspace_id", ws.ID, "err", err)
			continue
		}
		m.log.Info("removed an anonymous workspace no sandbox used (a create cut by a crash)", "workspace_id", ws.ID)
		n++
	}
	return n
}

// reattach re-attaches one recorded sandbox, or reaps it.
func (m *Manager) reattach(ctx context.Context, rec record) bool {
	info := rec.Info
	reap := func(why string) bool {
		if rec.Pooled {
			why = "an unclaimed pooled sandbox: " + why
		}
		// An anonymous workspace (its image too) goes with its sandbox. A
		// named one with a disk quota stays mounted: another recorded
		// sandbox may still use it, and the next attach finds it mounted.
		if info.Anonymous {
			m.holdWorkspace(info.WorkspaceID)
			_ = m.releaseWorkspace(info.WorkspaceID, true, false)
		}
		m.deleteRecord(info.SandboxID)
		m.log.Info("sandbox reaped after restart", "sandbox_id", info.SandboxID, "reason", why)
		m.emit(api.EventSandboxReaped, info.SandboxID, info.Owner, map[string]string{"reason": why})
		return false
	}
	b, ok := m.backends[info.Backend]
	if !ok {
		return reap("backend " + info.Backend + " is not configured")
	}
	rb, ok := b.(backend.Recoverer)
	if !ok || rec.BackendState == nil {
		return reap("backend " + info.Backend + " cannot re-attach")
	}
	inst, err := rb.Recover(ctx, rec.BackendState)
	if err != nil {
		return reap(err.Error())
	}
	if rec.Pooled {
		// Nobody's yet: never handed out by a daemon that did not make it
		// (its pool's spec may have changed), so it goes, quietly.
		err := inst.Destroy(ctx)
		m.holdWorkspace(info.WorkspaceID)
		_ = m.releaseWorkspace(info.WorkspaceID, true, false)
		m.deleteRecord(info.SandboxID)
		m.log.Info("unclaimed pooled sandbox reaped after restart", "sandbox_id", info.SandboxID, "err", err)
		return false
	}
	left := time.Until(info.EndAt)
	if left <= 0 {
		_ = inst.Destroy(ctx)
		return reap("its timeout passed while the daemon was down")
	}
	s := &Sandbox{m: m, owner: info.Owner, inst: inst, agent: agentclient.NewClient(inst.AgentSocket()), info: info}
	m.holdWorkspace(info.WorkspaceID)
	m.mu.Lock()
	m.sandboxes[info.SandboxID] = s
	s.timer = time.AfterFunc(left, func() { m.expire(info.SandboxID) })
	m.mu.Unlock()
	// The recorded policy is the sandbox's own: a backend recovers the one
	// it was made with, and the policy may have changed since (SetNetwork),
	// or the daemon died during an execution with a policy of its own.
	if nc, ok := inst.(backend.NetworkController); ok {
		// Unsupported: a network that cannot change, so still the one the
		// record names.
		if err := nc.SetNetwork(ctx, info.Network); err != nil && !errors.Is(err, api.ErrUnsupported) {
			m.mu.Lock()
			delete(m.sandboxes, info.SandboxID)
			m.mu.Unlock()
			s.timer.Stop()
			_ = inst.Destroy(ctx)
			return reap("its network policy cannot be restored: " + err.Error())
		}
	}
	m.watchNetwork(s)
	go m.watch(s)
	m.log.Info("sandbox re-attached after restart", "sandbox_id", info.SandboxID)
	m.emit(api.EventSandboxRecovered, info.SandboxID, info.Owner, nil)
	return true
}

// Detach forgets every sandbox without stopping it, leaving the records for
// the next daemon's Recover (a graceful daemon shutdown).
func (m *Manager) Detach() { m.detach(false) }

// detach is Detach; keepPooled leaves the pooled sandboxes running with
// their records, as a daemon that crashed would (for tests of Recover).
func (m *Manager) detach(keepPooled bool) {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	// Ready pooled sandboxes belong to no one and would only be reaped by
	// the next daemon: they are removed now. (A daemon killed without a
	// graceful stop leaves them to the next one's Recover.)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var wg sync.WaitGroup
	for _, s := range m.stopPools() {
		if keepPooled {
			s.agent.Close()
			if d, ok := s.inst.(backend.Detacher); ok {
				d.Detach()
			}
			continue
		}
		wg.Go(func() { _ = m.destroy(ctx, s, "daemon stopped") })
	}
	wg.Wait()
	cancel()
	m.dropWG.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.unlock()
	for id, s := range m.sandboxes {
		s.mu.Lock()
		s.timer.Stop()
		s.mu.Unlock()
		s.agent.Close()
		if d, ok := s.inst.(backend.Detacher); ok {
			d.Detach()
		}
		delete(m.sandboxes, id)
	}
}
