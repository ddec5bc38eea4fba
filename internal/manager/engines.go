package manager

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/enginehost"
)

// Engines forked into sandboxes (enginehost): a lean sandbox on a backend
// whose sandboxes can be entered from outside (backend.EnterChecker: oci on
// runc/crun as root) gets its default engine forked from the daemon's zygote
// of its preload list instead of starting one inside — a fork instead of an
// interpreter and its imports, the imported pages shared with every other
// such sandbox. Whenever that cannot be done (no zygote ready yet, a failed
// fork or hand-off) the agent starts the engine itself, as on every other
// backend: a create never fails because of a zygote.

// enterTimeout bounds one fork and hand-off, with the wait for a zygote
// that is starting.
const enterTimeout = 15 * time.Second

// engineHost is the manager's zygote keeper, made on first use.
type engineHost struct {
	once sync.Once
	h    *enginehost.Host

	mu       sync.Mutex
	canEnter map[string]error // per backend, once checked
}

func (m *Manager) engineHost() *enginehost.Host {
	m.eng.once.Do(func() {
		m.eng.h = enginehost.New(enginehost.Config{
			Python: m.cfg.Python, Dir: filepath.Join(m.cfg.StateDir, "zygotes"),
			StartTimeout: time.Duration(m.cfg.KernelStartTimeoutSec) * time.Second, Logger: m.log,
		})
	})
	return m.eng.h
}

// handsEngines reports whether sandboxes of engine on b get their default
// engine from the daemon's zygote; when they do, it makes sure that zygote
// is starting.
//
// Only the configured preload list (the operator's) gets the daemon's
// zygote: the zygote imports its list as root on the host, outside every
// sandbox, so a list a caller chose (a template given inline with the
// request, or a stored one) is imported by the sandbox's own zygote, inside
// it, like any other code of the sandbox. That also keeps the daemon to one
// zygote.
func (m *Manager) handsEngines(ctx context.Context, b backend.Backend, engine string, preload []string) bool {
	if engine != api.EngineLean || m.cfg.StateDir == "" || !slices.Equal(preload, m.cfg.Preload) {
		return false
	}
	ec, ok := b.(backend.EnterChecker)
	if !ok {
		return false
	}
	m.eng.mu.Lock()
	err, checked := m.eng.canEnter[b.Name()]
	m.eng.mu.Unlock()
	if !checked {
		err = ec.CanEnter(ctx)
		if err != nil {
			m.log.Info("sandboxes of this backend start their own engines", "backend", b.Name(), "why", err)
		}
		m.eng.mu.Lock()
		if m.eng.canEnter == nil {
			m.eng.canEnter = map[string]error{}
		}
		m.eng.canEnter[b.Name()] = err
		m.eng.mu.Unlock()
	}
	if err != nil {
		return false
	}
	m.engineHost().Warm(preload)
	return true
}

// handEngine forks the sandbox's default engine into it. Its failure is
// logged, not returned: the agent then starts the engine itself.
func (m *Manager) handEngine(ctx context.Context, id string, inst backend.Instance, preload []string) {
	en, ok := inst.(backend.Enterer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, enterTimeout)
	defer cancel()
	start := time.Now()
	// A zygote that is starting (the first creates after the daemon
	// started, or after it died) is waited for: its fork is much cheaper
	// than the cold start the agent would do meanwhile.
	err := m.engineHost().WaitReady(ctx, preload)
	var e backend.Entry
	if err == nil {
		e, err = en.Entry(ctx)
	}
	if err == nil {
		err = m.engineHost().Spawn(ctx, preload, e, inst.AgentSocket())
	}
	switch {
	case errors.Is(err, enginehost.ErrNotReady):
		m.log.Debug("engine not forked: the zygote is not ready; the sandbox starts its own", "sandbox_id", id, "err", err)
	case err != nil:
		m.log.Warn("engine not forked into the sandbox; it starts its own", "sandbox_id", id, "err", err)
	default:
		m.log.Debug("engine forked into the sandbox", "sandbox_id", id, "took", time.Since(start).Round(time.Microsecond))
	}
}

// closeEngines stops the zygotes (forked engines live on in their sandboxes).
func (m *Manager) closeEngines() {
	if m.eng.h != nil {
		m.eng.h.Close()
	}
}
