package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// Warm pools. Each configured pool (config.Pool) keeps Size sandboxes
// started ahead of time, their default kernel up. A create whose resolved
// spec — everything that is baked in when a sandbox starts: backend,
// template, user, workdir, network policy, limits (see poolKey) — equals a
// pool's takes its oldest ready sandbox (claim) instead of starting one,
// and the pool refills in the background. What a create may still differ
// in is applied at claim without a restart: envs (the agent's POST /env:
// the default kernel's os.environ, later kernels and commands), metadata,
// the timeout, the scanner mode, the owner (and its anonymous workspace's).
// A create with a named workspace (its own or default_workspace_id), or
// from a template with files, start_cmd or ready_cmd (which would run
// before the create's envs are known) never claims: it starts cold.
//
// Invariants:
//   - a ready sandbox is in exactly one pool's ready list; whoever removes
//     it from the list under the pool's lock (a claim, its watcher when it
//     dies, recycling, eviction) owns it, so none is handed out twice;
//   - pooled sandboxes are not in m.sandboxes (no key sees or counts
//     them) but m.pooled counts them (ready and starting) against
//     max_sandboxes;
//   - refills take a start slot only when one is free, nobody waits for
//     one, and one more stays free for creates (tryAcquireBackground);
//   - a pool whose refill fails backs off (1 s doubling to 5 min) and says
//     why (PoolStats); creates then start cold.
//
// Lock order: m.mu before a pool's mu.

// pool is one configured warm pool.
type pool struct {
	idx  int
	cfg  config.Pool
	wake chan struct{} // a claim or a finished refill: look again

	mu                                        sync.Mutex
	key                                       string // poolKey of the spec its sandboxes were made with
	ready                                     []*pooled
	starting                                  int
	hits, misses, dropped, recycled, failures uint64
	lastErr                                   string
	failedAt                                  time.Time
	backoff                                   time.Duration
}

// pooled is one ready sandbox of a pool.
type pooled struct {
	s     *Sandbox
	born  time.Time
	taken chan struct{} // closed by whoever removed it from the ready list
}

// Backoff of a pool whose refills fail.
const (
	poolBackoffMin = time.Second
	poolBackoffMax = 5 * time.Minute
)

func (p *pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// poolKey is the fingerprint of what a sandbox is started with and cannot
// change afterwards.
func poolKey(p plan) string {
	net := p.network
	if len(net.Whitelist) == 0 {
		net.Whitelist = nil
	}
	b, _ := json.Marshal(struct {
		Backend  string
		Template api.Template
		User     string
		Workdir  string
		Network  api.NetworkPolicy
		Limits   api.Limits
		Engine   string
		Preload  []string
	}{p.backend.Name(), p.tmpl, p.user, p.workdir, net, p.limits, p.engine, p.preload})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// unpoolable says why a create of plan with workspaceID cannot take a
// pooled sandbox ("" when it can).
func (m *Manager) unpoolable(workspaceID string, p plan) string {
	switch {
	case workspaceID != "" || m.cfg.DefaultWorkspaceID != "":
		return "a named workspace (workspace_id or default_workspace_id) is attached when the sandbox starts"
	case len(p.tmpl.Files) > 0 || p.tmpl.StartCmd != "" || p.tmpl.ReadyCmd != "":
		return fmt.Sprintf("template %s has files, start_cmd or ready_cmd, which must see the create's envs", p.tmpl.ID)
	}
	return ""
}

// StartPools starts the configured warm pools' refills. The daemon calls
// it after Recover (which reaps the pooled sandboxes of an earlier run);
// Close and Detach stop them.
func (m *Manager) StartPools() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.poolsStop != nil {
		return
	}
	m.poolsStop = make(chan struct{})
	for i, c := range m.cfg.Pools {
		p := &pool{idx: i, cfg: c, wake: make(chan struct{}, 1)}
		m.pools = append(m.pools, p)
		m.poolsWG.Go(func() { m.runPool(p) })
	}
}

// stopPools stops the refills and returns every ready sandbox, removed
// from its pool, for the caller to destroy or detach.
func (m *Manager) stopPools() []*Sandbox {
	m.mu.Lock()
	stop := m.poolsStop
	pools := m.pools
	m.mu.Unlock()
	if stop == nil {
		return nil
	}
	m.poolsOnce.Do(func() { close(stop) })
	m.poolsWG.Wait()
	var out []*Sandbox
	for _, p := range pools {
		p.mu.Lock()
		for _, e := range p.ready {
			close(e.taken)
			out = append(out, e.s)
		}
		p.ready = nil
		p.mu.Unlock()
	}
	m.mu.Lock()
	m.pooled -= len(out)
	m.mu.Unlock()
	return out
}

// runPool refills p until the pools stop.
func (m *Manager) runPool(p *pool) {
	for {
		wait := m.tendPool(p)
		t := time.NewTimer(wait)
		select {
		case <-m.poolsStop:
			t.Stop()
			return
		case <-p.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// tendPool recycles p's sandboxes past max_age_sec and starts the refills
// it can; it returns when to look again.
func (m *Manager) tendPool(p *pool) time.Duration {
	now := time.Now()
	wait := 5 * time.Second
	var old []*Sandbox
	p.mu.Lock()
	if p.cfg.MaxAgeSec > 0 {
		maxAge := time.Duration(p.cfg.MaxAgeSec) * time.Second
		for len(p.ready) > 0 && now.Sub(p.ready[0].born) >= maxAge {
			close(p.ready[0].taken)
			old = append(old, p.ready[0].s)
			p.ready = p.ready[1:]
			p.recycled++
		}
		if len(p.ready) > 0 {
			wait = min(wait, p.ready[0].born.Add(maxAge).Sub(now))
		}
	}
	need := p.cfg.Size - len(p.ready) - p.starting
	retry := p.failedAt.Add(p.backoff)
	p.mu.Unlock()
	for _, s := range old {
		m.dropPooled(s, "recycled: older than max_age_sec")
	}
	if need <= 0 {
		return wait
	}
	if now.Before(retry) {
		return min(wait, retry.Sub(now))
	}
	for range need {
		if !m.reservePooled() {
			return min(wait, 250*time.Millisecond)
		}
		release, ok := m.starts.tryAcquireBackground()
		if !ok {
			m.unreservePooled()
			return min(wait, 50*time.Millisecond)
		}
		p.mu.Lock()
		p.starting++
		p.mu.Unlock()
		m.poolsWG.Go(func() { m.refill(p, release) })
	}
	return wait
}

// refill starts one sandbox for p, holding a start slot until its default
// kernel answers.
func (m *Manager) refill(p *pool, release func()) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(m.cfg.KernelStartTimeoutSec)*time.Second+2*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-m.poolsStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := m.refillOne(auth.WithIdentity(ctx, auth.Local), p)
	release()
	p.mu.Lock()
	p.starting--
	if err != nil {
		p.failures++
		p.lastErr = err.Error()
		p.failedAt = time.Now()
		p.backoff = min(max(2*p.backoff, poolBackoffMin), poolBackoffMax)
	} else {
		p.backoff, p.lastErr = 0, ""
	}
	backoff := p.backoff
	p.mu.Unlock()
	if err != nil {
		m.unreservePooled()
		select {
		case <-m.poolsStop: // stopping: not the pool's fault
		default:
			m.log.Warn("warm pool refill failed; creates that match it start cold", "pool", p.idx, "err", err, "retry_in", backoff)
		}
	}
	p.signal()
}

func (m *Manager) refillOne(ctx context.Context, p *pool) error {
	pl, err := m.plan(p.cfg.Request())
	if err != nil {
		return fmt.Errorf("pools[%d]: %w", p.idx, err)
	}
	if why := m.unpoolable("", pl); why != "" {
		return fmt.Errorf("pools[%d] cannot be pooled: %s", p.idx, why)
	}
	key := poolKey(pl)
	// The template may have changed on disk: sandboxes made from its old
	// version no longer match, and go.
	var stale []*Sandbox
	p.mu.Lock()
	if p.key != key {
		for _, e := range p.ready {
			close(e.taken)
			stale = append(stale, e.s)
		}
		p.ready, p.key = nil, key
		p.recycled += uint64(len(stale))
	}
	p.mu.Unlock()
	for _, s := range stale {
		m.dropPooled(s, "its pool's spec changed")
	}

	s, err := m.start(ctx, pl, "")
	if err != nil {
		return err
	}
	s.pooled = true
	s.timer = time.NewTimer(MaxTimeout)
	s.timer.Stop()
	m.saveRecord(s)
	// Ready means the default engine runs and has run a silent warm-up
	// cell (a forked engine's first copy-on-write faults are paid then).
	rctx, cancel := context.WithTimeout(ctx, time.Duration(m.cfg.KernelStartTimeoutSec)*time.Second+10*time.Second)
	err = s.agent.ContextReady(rctx, agent.DefaultContextID)
	cancel()
	if err != nil {
		_ = m.destroy(context.Background(), s, "pool refill failed")
		return fmt.Errorf("pools[%d]: the default kernel of a new sandbox did not come up: %w", p.idx, err)
	}
	e := &pooled{s: s, born: time.Now(), taken: make(chan struct{})}
	p.mu.Lock()
	select {
	case <-m.poolsStop:
		p.mu.Unlock()
		_ = m.destroy(context.Background(), s, "pools stopped")
		return fmt.Errorf("pools stopped")
	default:
	}
	if p.key != key {
		p.mu.Unlock()
		_ = m.destroy(context.Background(), s, "its pool's spec changed")
		return nil
	}
	p.ready = append(p.ready, e)
	p.mu.Unlock()
	m.poolsWG.Go(func() { m.watchPooled(p, e) })
	return nil
}

// watchPooled drops a ready sandbox whose environment stopped by itself.
func (m *Manager) watchPooled(p *pool, e *pooled) {
	select {
	case <-e.taken:
		return
	case <-m.poolsStop:
		return
	case <-e.s.inst.Done():
	}
	p.mu.Lock()
	found := false
	for i, r := range p.ready {
		if r == e {
			p.ready = append(p.ready[:i:i], p.ready[i+1:]...)
			found = true
			p.dropped++
			break
		}
	}
	p.mu.Unlock()
	if found {
		close(e.taken)
		m.dropPooled(e.s, "its sandbox exited while pooled")
		p.signal()
	}
}

// dropPooled destroys a pooled sandbox the caller removed from its pool.
func (m *Manager) dropPooled(s *Sandbox, why string) {
	m.mu.Lock()
	m.pooled--
	m.mu.Unlock()
	m.log.Info("pooled sandbox dropped", "sandbox_id", s.ID(), "reason", why)
	m.dropWG.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.destroy(ctx, s, why)
	})
}

// reservePooled counts one more pooled sandbox when max_sandboxes leaves
// room for it.
func (m *Manager) reservePooled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || (m.cfg.MaxSandboxes > 0 && m.totalLocked() >= m.cfg.MaxSandboxes) {
		return false
	}
	m.pooled++
	return true
}

func (m *Manager) unreservePooled() {
	m.mu.Lock()
	m.pooled--
	m.mu.Unlock()
}

// totalLocked counts the sandboxes max_sandboxes bounds. m.mu is held.
func (m *Manager) totalLocked() int { return len(m.sandboxes) + m.creating + m.pooled }

// reserveRoom counts a cold create against max_sandboxes: when the daemon
// is full, a ready pooled sandbox is given up to make room (a user's create
// goes before a pool); when none is left it is api.ErrLimit.
func (m *Manager) reserveRoom() (release func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.cfg.MaxSandboxes; n > 0 && m.totalLocked() >= n {
		var victim *Sandbox
		for _, p := range m.pools {
			p.mu.Lock()
			if k := len(p.ready); k > 0 {
				e := p.ready[k-1]
				p.ready = p.ready[:k-1]
				p.recycled++
				close(e.taken)
				victim = e.s
			}
			p.mu.Unlock()
			if victim != nil {
				break
			}
		}
		if victim == nil {
			return nil, api.Errorf(api.ErrLimit, "the daemon already runs or starts %d sandboxes (max_sandboxes %d); retry after some are killed", m.totalLocked(), n)
		}
		m.pooled--
		m.log.Info("pooled sandbox dropped", "sandbox_id", victim.ID(), "reason", "room for a create (max_sandboxes)")
		m.dropWG.Go(func() { _ = m.destroy(context.Background(), victim, "room for a create") })
	}
	m.creating++
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			m.creating--
			m.mu.Unlock()
		})
	}, nil
}

// PoolStats describes one warm pool, for metrics, /readyz and doctor.
type PoolStats struct {
	// Index is the pool's place in the configuration's pools list.
	Index    int    `json:"index"`
	Template string `json:"template"`
	Backend  string `json:"backend"`
	Network  string `json:"network"`
	// Size is the configured size; Ready the sandboxes ready now;
	// Starting those being started.
	Size     int `json:"size"`
	Ready    int `json:"ready"`
	Starting int `json:"starting"`
	// Hits counts creates that took a pooled sandbox, Misses creates that
	// matched the pool while it had none ready (they started cold).
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// Dropped counts pooled sandboxes found dead (by their watcher or at
	// claim), Recycled those replaced (max_age_sec, a changed template,
	// room for a create under max_sandboxes).
	Dropped  uint64 `json:"dropped"`
	Recycled uint64 `json:"recycled"`
	// RefillFailures counts refills that failed; LastError is the last
	// one's error while the pool is failing ("" once a refill succeeds),
	// and RetryAt when it tries again.
	RefillFailures uint64    `json:"refill_failures"`
	LastError      string    `json:"last_error,omitempty"`
	RetryAt        time.Time `json:"retry_at,omitzero"`
}

// PoolStats reports every warm pool (none before StartPools).
func (m *Manager) PoolStats() []PoolStats {
	m.mu.Lock()
	pools := m.pools
	m.mu.Unlock()
	out := make([]PoolStats, 0, len(pools))
	for _, p := range pools {
		p.mu.Lock()
		st := PoolStats{Index: p.idx, Template: p.cfg.Template, Backend: p.cfg.Backend, Network: p.cfg.Network,
			Size: p.cfg.Size, Ready: len(p.ready), Starting: p.starting, Hits: p.hits, Misses: p.misses,
			Dropped: p.dropped, Recycled: p.recycled, RefillFailures: p.failures, LastError: p.lastErr}
		if p.lastErr != "" {
			st.RetryAt = p.failedAt.Add(p.backoff).UTC()
		}
		p.mu.Unlock()
		if st.Backend == "" {
			st.Backend = m.cfg.DefaultBackend
		}
		if st.Network == "" {
			st.Network = m.cfg.Network().Policy
		}
		out = append(out, st)
	}
	return out
}

// UnmatchedCreates counts creates (while pools are configured) that
// matched no pool, or could not take a pooled sandbox at all.
func (m *Manager) UnmatchedCreates() uint64 { return m.unmatched.Load() }
