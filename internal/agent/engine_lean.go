package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/pyengine"
)

// leanStarter runs contexts on lean engines (internal/pyengine). Unless the
// agent waits for engines handed to it from outside (Config.EngineHandoff),
// it keeps a zygote of the sandbox's own: one Python that imports the
// preload list once, started in the background with the agent, inside the
// sandbox and under its limits; each context's engine is a fork of it
// (milliseconds, the imported pages shared copy-on-write). A start waits for
// the zygote while it starts. When the zygote cannot start (a preload module
// is missing or starts a thread), or dies, contexts get cold engines
// (pyengine.Start, the preload not done) — a start never fails because of
// the zygote; a zygote that died is started again for later contexts.
type leanStarter struct {
	python  string
	timeout time.Duration
	preload []string
	hooks   engineHooks
	log     *slog.Logger

	mu     sync.Mutex
	zyg    *zygoteAttempt // nil: none yet (or handoff mode)
	closed bool
}

// zygoteAttempt is one start of the sandbox's zygote.
type zygoteAttempt struct {
	done chan struct{} // closed when the start ended
	z    *pyengine.Zygote
	err  error
}

func newLeanStarter(cfg *Config, hooks engineHooks, env []string, dir string) *leanStarter {
	s := &leanStarter{python: cfg.Python, timeout: cfg.KernelStartTimeout, preload: cfg.Preload, hooks: hooks, log: cfg.Logger}
	if !cfg.EngineHandoff {
		s.startZygote(env, dir)
	}
	return s
}

// startZygote begins a zygote start in the background. s.mu must not be held.
func (s *leanStarter) startZygote(env []string, dir string) {
	a := &zygoteAttempt{done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.zyg = a
	s.mu.Unlock()
	go func() {
		defer close(a.done)
		z, err := pyengine.StartZygote(context.Background(), pyengine.ZygoteConfig{
			Python: s.python, Env: env, Dir: dir, Preload: s.preload, StartTimeout: s.timeout,
			Started: s.hooks.Started, Reaped: s.hooks.Reaped,
		})
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed && z != nil {
			_ = z.Close()
			z, err = nil, errors.New("the agent is shutting down")
		}
		a.z, a.err = z, err
		if err != nil {
			s.log.Warn("lean engine: the sandbox's zygote did not start; contexts get cold engines", "err", err)
		}
	}()
}

// zygote waits for the current zygote attempt and returns its zygote, or nil
// when there is none to fork from (handoff mode, a failed start, ctx ended).
func (s *leanStarter) zygote(ctx context.Context) *pyengine.Zygote {
	s.mu.Lock()
	a := s.zyg
	s.mu.Unlock()
	if a == nil {
		return nil
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return nil
	}
	return a.z
}

func (s *leanStarter) start(ctx context.Context, st engineStart) (engine, error) {
	if z := s.zygote(ctx); z != nil {
		e, err := z.Fork(ctx, pyengine.ForkConfig{Dir: st.Dir, Env: st.Env, Started: s.hooks.Started, Reaped: s.hooks.Reaped})
		if err == nil {
			return e, nil
		}
		select {
		case <-z.Done():
			s.log.Warn("lean engine: the sandbox's zygote died; starting another, this context gets a cold engine", "err", err)
			s.mu.Lock()
			restart := s.zyg != nil && s.zyg.z == z
			s.mu.Unlock()
			if restart {
				s.startZygote(st.Env, st.Dir)
			}
		default:
			s.log.Warn("lean engine: fork failed; this context gets a cold engine", "err", err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return pyengine.Start(ctx, pyengine.Config{
		Python: s.python, Dir: st.Dir, Env: st.Env, StartTimeout: s.timeout,
		Started: s.hooks.Started, Reaped: s.hooks.Reaped,
	})
}

// adopt wraps an engine handed to the agent (see handoff.go).
func (s *leanStarter) adopt(ctx context.Context, conn *os.File) (engine, error) {
	return pyengine.Attach(ctx, conn, pyengine.ForkConfig{Started: s.hooks.Started, Reaped: s.hooks.Reaped})
}

func (s *leanStarter) close() {
	s.mu.Lock()
	s.closed = true
	a := s.zyg
	s.mu.Unlock()
	if a == nil {
		return
	}
	<-a.done
	if a.z != nil {
		_ = a.z.Close()
	}
}
