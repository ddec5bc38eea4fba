// Package manager owns sandbox lifecycle: ids, templates and defaults resolved
// into a backend.Spec, workspaces attached and removed, deadlines (a sandbox is
// killed when its timeout passes; SetTimeout moves the deadline), and the
// per-sandbox agent connection. It is the one place both the embedded SDK and
// the daemon go through.
package manager

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/dataset"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// Reasons a sandbox stopped, as recorded in its events.
const (
	reasonKilled  = "killed"
	reasonTimeout = "timeout"
	reasonExited  = "sandbox exited"
)

// MaxTimeout is the longest sandbox lifetime one request may ask for; the
// configuration (max_sandbox_timeout_sec) may lower it.
const MaxTimeout = 24 * time.Hour

// Limits on what one create request may carry.
const (
	maxEnvs     = 256
	maxMetadata = 64
	maxValueLen = 32 << 10
)

// Manager creates, tracks and kills sandboxes. It is safe for concurrent use.
type Manager struct {
	cfg        config.Config
	log        *slog.Logger
	backends   map[string]backend.Backend
	choice     backend.Choice // how cfg.DefaultBackend was chosen
	workspaces *workspace.Store
	datasets   *dataset.Registry

	events events
	adm    admission
	starts *startGate
	eng    engineHost

	mu         sync.Mutex
	sandboxes  map[string]*Sandbox
	pending    map[string]int // creates in flight per key (see reserveCreate)
	closed     bool
	recordsDir string   // "" = records are not persisted
	stateLock  *os.File // held while persisting (see Persist)

	wsMu    sync.Mutex
	wsUsers map[string]int // running sandboxes per workspace id (see workspaces.go)

	// Warm pools (pools.go). pools and poolsStop are set once by
	// StartPools; pooled and creating count, under mu, the pooled
	// sandboxes (ready and starting) and the cold creates in flight,
	// for max_sandboxes.
	pools     []*pool
	poolsStop chan struct{}
	poolsOnce sync.Once
	poolsWG   sync.WaitGroup // refill loops, refills, watchers of ready sandboxes
	dropWG    sync.WaitGroup // destroys of dropped pooled sandboxes
	pooled    int
	creating  int
	unmatched atomic.Uint64
}

// New returns a manager over the given backends (keyed by their names). A
// DefaultBackend of auto is resolved here, once, to the strongest backend
// available (backend.Choose), so Config().DefaultBackend is always a real
// name; DefaultChoice says which and why.
func New(cfg config.Config, log *slog.Logger, backends ...backend.Backend) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ws, err := workspace.New(cfg.WorkspaceBaseDir)
	if err != nil {
		return nil, fmt.Errorf("workspaces: %w", err)
	}
	ds, err := dataset.Open(cfg.DatasetRegistryDir)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	m := &Manager{
		cfg: cfg, log: log, backends: make(map[string]backend.Backend),
		workspaces: ws, datasets: ds, sandboxes: make(map[string]*Sandbox), wsUsers: map[string]int{},
		pending: map[string]int{},
	}
	m.adm.init(cfg)
	m.starts = newStartGate(cfg.MaxConcurrentStarts, cfg.StartQueueMax, time.Duration(cfg.StartQueueTimeoutSec)*time.Second)
	for _, b := range backends {
		m.backends[b.Name()] = b
	}
	m.choose(backends)
	if w := m.choice.Warning(); w != "" {
		m.log.Warn(w, "backend", m.choice.Name)
	}
	if b, ok := m.backends[m.cfg.DefaultBackend]; ok && m.cfg.Engine == api.EngineLean {
		// Start the default zygote now, so the first creates need not start
		// their own engines.
		go m.handsEngines(context.Background(), b, m.cfg.Engine, m.cfg.Preload)
	}
	return m, nil
}

// chooseTimeout bounds the availability probes of default_backend auto (a
// docker ping, a rootless namespace probe).
const chooseTimeout = 20 * time.Second

// choose resolves the default backend (see New).
func (m *Manager) choose(bs []backend.Backend) {
	if m.cfg.DefaultBackend != config.AutoBackend {
		m.choice = backend.Choice{Name: m.cfg.DefaultBackend, Isolated: true,
			Reason: "default_backend is " + m.cfg.DefaultBackend + " in the configuration"}
		if b, ok := m.backends[m.cfg.DefaultBackend]; ok {
			m.choice.Isolated = backend.Isolates(b)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), chooseTimeout)
	defer cancel()
	m.choice = backend.Choose(ctx, bs, m.cfg.Network().Policy)
	if m.choice.Name == "" {
		// Nothing qualifies: keep a real name so creates fail with that
		// backend's own reason rather than with "auto".
		m.choice.Name = "local"
		if _, ok := m.backends["local"]; !ok && len(bs) > 0 {
			m.choice.Name = bs[0].Name()
		}
		m.choice.Isolated = false
		if b, ok := m.backends[m.choice.Name]; ok {
			m.choice.Isolated = backend.Isolates(b)
		}
	}
	m.cfg.DefaultBackend = m.choice.Name
	m.log.Debug("default backend chosen", "backend", m.choice.Name, "reason", m.choice.Reason)
}

// DefaultChoice says which backend serves requests that name none, and why.
func (m *Manager) DefaultChoice() backend.Choice { return m.choice }

// Config returns the manager's configuration.
func (m *Manager) Config() config.Config { return m.cfg }

// EngineStatus is the code engine of sandboxes whose template and request
// name none (the config's engine and preload), and whether this build runs
// it: for /readyz and `ds-sandbox doctor`.
type EngineStatus struct {
	Name    string   `json:"name"`
	Preload []string `json:"preload,omitempty"`
	Ready   bool     `json:"ready"`
	// Reason says why a sandbox on it cannot start here.
	Reason string `json:"reason,omitempty"`
}

// DefaultEngine reports the default code engine.
func (m *Manager) DefaultEngine() EngineStatus {
	st := EngineStatus{Name: m.cfg.Engine, Preload: m.cfg.Preload, Ready: true}
	if err := agent.CheckEngine(m.cfg.Engine); err != nil {
		st.Ready, st.Reason = false, err.Error()
	}
	return st
}

// Backend returns the named backend ("" = the default).
func (m *Manager) Backend(name string) (backend.Backend, error) {
	if name == "" {
		name = m.cfg.DefaultBackend
	}
	b, ok := m.backends[name]
	if !ok {
		return nil, api.Errorf(api.ErrUnsupported, "backend %q is not available (available: %s)",
			name, strings.Join(slices.Sorted(maps.Keys(m.backends)), ", "))
	}
	return b, nil
}

// BackendNames lists the configured backends, sorted.
func (m *Manager) BackendNames() []string { return slices.Sorted(maps.Keys(m.backends)) }

// SaveTemplate stores t as YAML in the state directory's templates/:
// admin keys (and in-process callers) only, since every key creates from
// the stored templates.
func (m *Manager) SaveTemplate(ctx context.Context, t api.Template) error {
	if !auth.FromContext(ctx).Admin {
		return api.Errorf(api.ErrPermission, "saving templates needs an admin key")
	}
	if err := template.Validate(t); err != nil {
		return err
	}
	return template.Save(filepath.Join(m.cfg.StateDir, "templates"), t)
}

// DeleteTemplate removes a template stored in the state directory (those
// in templates_dir are read-only): admin keys only.
func (m *Manager) DeleteTemplate(ctx context.Context, id string) error {
	if !auth.FromContext(ctx).Admin {
		return api.Errorf(api.ErrPermission, "deleting templates needs an admin key")
	}
	if err := template.ValidateID(id); err != nil {
		return err
	}
	dir := filepath.Join(m.cfg.StateDir, "templates")
	removed := false
	for _, ext := range []string{".yaml", ".yml"} {
		if err := os.Remove(filepath.Join(dir, id+ext)); err == nil {
			removed = true
		}
	}
	if !removed {
		return api.Errorf(api.ErrNotFound, "template %s in %s (templates in %s are read-only)", id, dir, m.cfg.TemplatesDir)
	}
	return nil
}

// ListTemplates lists the stored templates the caller may create from (a
// key with api_keys[].templates sees only those: templates carry env values
// and files).
func (m *Manager) ListTemplates(ctx context.Context) ([]api.Template, error) {
	list, err := template.List(m.cfg.TemplateDirs())
	return slices.DeleteFunc(list, func(t api.Template) bool { return m.templateAllowed(ctx, t.ID) != nil }), err
}

// GetTemplate returns a stored template the caller may create from; another
// is ErrNotFound.
func (m *Manager) GetTemplate(ctx context.Context, id string) (api.Template, error) {
	if m.templateAllowed(ctx, id) != nil {
		return api.Template{}, api.Errorf(api.ErrNotFound, "template %s", id)
	}
	return m.LoadTemplate(id)
}

// LoadTemplate loads a stored template by id from the template directories.
func (m *Manager) LoadTemplate(id string) (api.Template, error) {
	return template.Load(m.cfg.TemplateDirs(), id)
}

// Sandbox is one running sandbox.
type Sandbox struct {
	m     *Manager
	inst  backend.Instance
	agent *agentclient.Client
	net   netState
	owner string // the key that created it (info.Owner; a pooled sandbox gets it at claim, before it is registered, and keeps it)

	mu    sync.Mutex
	info  api.SandboxInfo
	timer *time.Timer
	// kept is set by KillKeep: the workspace stays, and stays readable at
	// its host path (a disk quota's image is left mounted).
	kept bool
	// pooled is set while the sandbox waits, unclaimed, in a warm pool:
	// it is nobody's, so its end is not an event.
	pooled bool
}

// Info returns a snapshot of the sandbox's description.
func (s *Sandbox) Info() api.SandboxInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := s.info
	info.Metadata = maps.Clone(s.info.Metadata)
	return info
}

// ID returns the sandbox id.
func (s *Sandbox) ID() string { return s.info.SandboxID }

// Agent returns the client of the sandbox's agent.
func (s *Sandbox) Agent() *agentclient.Client { return s.agent }

// AgentSocket returns the host path of the agent's socket.
func (s *Sandbox) AgentSocket() string { return s.inst.AgentSocket() }

// Get returns a running sandbox that the caller in ctx may see (see
// auth.Identity.CanSee); another key's sandbox is ErrNotFound, as if it did
// not exist.
func (m *Manager) Get(ctx context.Context, id string) (*Sandbox, error) {
	m.mu.Lock()
	s, ok := m.sandboxes[id]
	m.mu.Unlock()
	if !ok || !auth.FromContext(ctx).CanSee(s.Info().Owner) {
		return nil, api.Errorf(api.ErrNotFound, "sandbox %s (it never existed, was killed, or its timeout passed)", id)
	}
	return s, nil
}

// List returns every running sandbox the caller may see whose metadata
// contains all of match.
func (m *Manager) List(ctx context.Context, match map[string]string) []api.SandboxInfo {
	id := auth.FromContext(ctx)
	m.mu.Lock()
	all := slices.Collect(maps.Values(m.sandboxes))
	m.mu.Unlock()
	out := make([]api.SandboxInfo, 0, len(all))
	for _, s := range all {
		info := s.Info()
		ok := id.CanSee(info.Owner)
		for k, v := range match {
			if info.Metadata[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b api.SandboxInfo) int { return a.StartedAt.Compare(b.StartedAt) })
	return out
}

// Seconds converts a count of seconds from a request to a Duration without
// overflow: a count beyond any Duration saturates (at the longest positive or
// negative one), so range checks on the result refuse it instead of seeing a
// wrapped-around value.
func Seconds(n int64) time.Duration {
	const max = int64(math.MaxInt64 / int64(time.Second))
	switch {
	case n > max:
		return math.MaxInt64
	case n < -max:
		return math.MinInt64
	}
	return time.Duration(n) * time.Second
}

// SetTimeout moves the sandbox's deadline to now + d.
func (m *Manager) SetTimeout(ctx context.Context, id string, d time.Duration) (api.SandboxInfo, error) {
	if max := m.maxTimeout(); d < time.Second || d > max {
		return api.SandboxInfo{}, api.Errorf(api.ErrInvalid, "timeout %s must be between 1s and %s (max_sandbox_timeout_sec)", d, max)
	}
	s, err := m.Get(ctx, id)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	s.mu.Lock()
	if s.info.State != api.StateRunning {
		s.mu.Unlock()
		return api.SandboxInfo{}, api.Errorf(api.ErrNotFound, "sandbox %s (it was killed or its timeout passed)", id)
	}
	s.info.EndAt = time.Now().Add(d).UTC()
	s.timer.Reset(d)
	owner, end := s.info.Owner, s.info.EndAt
	s.mu.Unlock()
	m.saveRecord(s)
	m.emit(api.EventSandboxTimeout, id, owner, map[string]string{"end_at": end.Format(time.RFC3339)})
	return s.Info(), nil
}

// Kill stops the sandbox and everything it started, and removes its workspace
// when that is anonymous. Killing a sandbox that is gone is ErrNotFound.
func (m *Manager) Kill(ctx context.Context, id string) error { return m.KillKeep(ctx, id, false) }

// KillKeep is Kill that keeps an anonymous workspace when keepWorkspace is set
// (the CLI keeps one that holds outputs).
func (m *Manager) KillKeep(ctx context.Context, id string, keepWorkspace bool) error {
	m.mu.Lock()
	s, ok := m.sandboxes[id]
	if ok && !auth.FromContext(ctx).CanSee(s.Info().Owner) {
		ok = false
	}
	if ok {
		delete(m.sandboxes, id)
	}
	m.mu.Unlock()
	if !ok {
		return api.Errorf(api.ErrNotFound, "sandbox %s (it never existed, was killed, or its timeout passed)", id)
	}
	if keepWorkspace {
		s.mu.Lock()
		s.info.Anonymous = false
		s.kept = true
		s.mu.Unlock()
	}
	return m.destroy(ctx, s, reasonKilled)
}

func (m *Manager) destroy(ctx context.Context, s *Sandbox, why string) error {
	s.mu.Lock()
	s.timer.Stop()
	s.info.State = api.StateKilled
	info := s.info
	s.mu.Unlock()
	s.agent.Close()
	err := s.inst.Destroy(ctx)
	m.deleteRecord(info.SandboxID)
	s.mu.Lock()
	kept := s.kept
	s.mu.Unlock()
	if rerr := m.releaseWorkspace(info.WorkspaceID, info.Anonymous, kept); rerr != nil {
		err = errors.Join(err, rerr)
	}
	s.mu.Lock()
	pooled := s.pooled
	s.mu.Unlock()
	if pooled {
		if err != nil {
			m.log.Warn("pooled sandbox stopped with an error", "sandbox_id", info.SandboxID, "reason", why, "err", err)
		}
		return err
	}
	m.log.Info("sandbox stopped", "sandbox_id", info.SandboxID, "reason", why)
	typ := api.EventSandboxKilled
	switch why {
	case reasonTimeout:
		typ = api.EventSandboxExpired
	case reasonExited:
		typ = api.EventSandboxExited
	}
	data := map[string]string{"reason": why}
	if err != nil {
		data["error"] = err.Error()
	}
	m.emit(typ, info.SandboxID, info.Owner, data)
	return err
}

// Close kills every sandbox; the manager refuses new ones afterwards.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	pooled := m.stopPools()
	m.mu.Lock()
	all := append(slices.Collect(maps.Values(m.sandboxes)), pooled...)
	clear(m.sandboxes)
	m.mu.Unlock()
	defer m.dropWG.Wait()
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, s := range all {
		wg.Go(func() { errs[i] = m.destroy(ctx, s, "manager closed") })
	}
	wg.Wait()
	m.closeEngines()
	m.mu.Lock()
	m.unlock()
	m.mu.Unlock()
	return errors.Join(errs...)
}

// newID returns a 20-character lower-case alphanumeric id, the shape E2B
// clients expect.
func newID() string { return strings.ToLower(rand.Text()[:20]) }
