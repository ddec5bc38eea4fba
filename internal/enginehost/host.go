// Package enginehost keeps the daemon's zygotes and puts engines forked from
// them into sandboxes. A zygote (internal/pyengine) is one Python per preload
// list that imported it once, on the host, outside every sandbox, with an
// environment of its own (nothing of the daemon's); a sandbox's default
// engine is a fork of it that enters the sandbox completely
// (backend.Entry: its cgroups, its namespaces, its user, no capabilities,
// its rlimits, no_new_privs, its seccomp filter) before it runs anything,
// and is then handed to the sandbox's agent (agent.HandEngine). Forked
// engines share the zygote's pages copy-on-write, so a sandbox that has
// pandas loaded costs what its engine writes, and starting its engine costs
// a fork instead of an interpreter and its imports.
//
// A zygote that dies is started again by the next Spawn (and a Spawn while
// none is ready fails at once: the caller falls back to the agent's own
// engine start, so a create never waits for or fails because of a zygote).
package enginehost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/pyengine"
)

// Config configures a Host.
type Config struct {
	// Python is the host's interpreter (the sandboxes see the same /usr);
	// default /usr/bin/python3.
	Python string
	// Dir is a private directory of the daemon's for the zygotes' IPython
	// state (created when missing).
	Dir string
	// StartTimeout bounds a zygote's start and preload (default 60s).
	StartTimeout time.Duration
	// RetryAfter is how long a zygote whose start failed is not tried
	// again (default 30s).
	RetryAfter time.Duration
	Logger     *slog.Logger
}

// Host owns the zygotes. It is safe for concurrent use.
type Host struct {
	cfg Config

	mu      sync.Mutex
	zygotes map[string]*slot // by preload list
	closed  bool
}

// slot is one preload list's zygote and its (re)starts.
type slot struct {
	starting chan struct{} // non-nil while a start runs; closed when it ends
	z        *pyengine.Zygote
	err      error
	failedAt time.Time
}

// New returns a Host; zygotes start on first use (or Warm).
func New(cfg Config) *Host {
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Host{cfg: cfg, zygotes: map[string]*slot{}}
}

// ErrNotReady is Spawn's error while the preload list's zygote is starting
// (or failed to start and is not retried yet).
var ErrNotReady = errors.New("enginehost: the zygote is not ready")

// Warm starts the zygote of preload in the background, if it is not running.
func (h *Host) Warm(preload []string) { h.zygote(preload) }

// WaitReady starts preload's zygote if needed and waits until it runs (or
// its start failed: the error says why).
func (h *Host) WaitReady(ctx context.Context, preload []string) error {
	for {
		z, err := h.zygote(preload)
		if z != nil {
			return nil
		}
		if !errors.Is(err, ErrNotReady) {
			return err
		}
		h.mu.Lock()
		s := h.zygotes[strings.Join(preload, ",")]
		starting, lastErr := s.starting, s.err
		h.mu.Unlock()
		if starting == nil {
			return fmt.Errorf("enginehost: zygote: %w", lastErr)
		}
		select {
		case <-starting:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// zygote returns the running zygote of preload, or nil after starting one
// in the background when there is none (or it died).
func (h *Host) zygote(preload []string) (*pyengine.Zygote, error) {
	key := strings.Join(preload, ",")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, api.Errorf(api.ErrUnavailable, "enginehost: closed")
	}
	s := h.zygotes[key]
	if s == nil {
		s = &slot{}
		h.zygotes[key] = s
	}
	if s.z != nil {
		select {
		case <-s.z.Done():
			h.cfg.Logger.Warn("zygote died; starting another", "preload", key, "pid", s.z.PID())
			_ = s.z.Close()
			s.z = nil
		default:
			return s.z, nil
		}
	}
	switch {
	case s.starting != nil:
		return nil, ErrNotReady
	case s.err != nil && time.Since(s.failedAt) < h.cfg.RetryAfter:
		return nil, fmt.Errorf("%w: its last start failed: %v", ErrNotReady, s.err)
	}
	s.starting = make(chan struct{})
	go h.start(s, preload)
	return nil, ErrNotReady
}

func (h *Host) start(s *slot, preload []string) {
	if err := os.MkdirAll(h.cfg.Dir, 0o700); err != nil {
		h.finish(s, nil, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.StartTimeout+10*time.Second)
	defer cancel()
	start := time.Now()
	z, err := pyengine.StartZygote(ctx, pyengine.ZygoteConfig{
		Python: h.cfg.Python, Env: zygoteEnv(h.cfg.Dir), Dir: h.cfg.Dir, Preload: preload,
		StartTimeout: h.cfg.StartTimeout,
	})
	if err == nil {
		h.cfg.Logger.Info("zygote ready", "preload", strings.Join(preload, ","), "pid", z.PID(), "took", time.Since(start).Round(time.Millisecond))
	} else {
		h.cfg.Logger.Warn("zygote did not start; sandboxes start their own engines", "preload", strings.Join(preload, ","), "err", err)
	}
	h.finish(s, z, err)
}

func (h *Host) finish(s *slot, z *pyengine.Zygote, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed && z != nil {
		_ = z.Close()
		z, err = nil, errors.New("enginehost: closed")
	}
	s.z, s.err = z, err
	if err != nil {
		s.failedAt = time.Now()
	}
	close(s.starting)
	s.starting = nil
}

// zygoteEnv is a zygote's whole environment: nothing of the daemon's (its
// memory is every forked engine's). Engines get their sandbox's own.
func zygoteEnv(dir string) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=C.UTF-8",
		"HOME=" + dir,
		"IPYTHONDIR=" + dir + "/ipython",
		"MPLCONFIGDIR=" + dir + "/matplotlib",
		"PYTHONDONTWRITEBYTECODE=1",
	}
}

// Spawn forks an engine from preload's zygote, enters it into the sandbox e
// describes, and hands it to the agent serving on agentSocket as the engine
// of its default context. ErrNotReady means no zygote is ready yet (one is
// being started); any error leaves nothing running.
func (h *Host) Spawn(ctx context.Context, preload []string, e backend.Entry, agentSocket string) error {
	z, err := h.zygote(preload)
	if err != nil {
		return err
	}
	enter, closeNS, err := enterOf(e)
	if err != nil {
		return err
	}
	defer closeNS()
	env := append(append([]string(nil), e.Env...), "IPYTHONDIR=/tmp/.ipython")
	f, _, err := z.ForkConn(ctx, pyengine.ForkConfig{Dir: e.Cwd, Env: env, Enter: enter})
	if err != nil {
		return fmt.Errorf("enginehost: %w", err)
	}
	defer f.Close()
	// The engine exits when our end closes unless the agent took it.
	return agent.HandEngine(ctx, agentSocket, agent.DefaultContextID, f)
}

// enterOf turns an Entry into pyengine's Enter, opening the namespace files
// (closed by the returned func).
func enterOf(e backend.Entry) (*pyengine.Enter, func(), error) {
	if len(e.Seccomp) == 0 {
		return nil, nil, api.Errorf(api.ErrUnsupported, "enginehost: the sandbox gives no seccomp program: its engine cannot be confined as its other processes are")
	}
	if e.OOMScoreAdj != nil {
		return nil, nil, api.Errorf(api.ErrUnsupported, "enginehost: sandboxes with an oom_score_adj are not entered")
	}
	en := &pyengine.Enter{
		CgroupProcs: e.CgroupProcs,
		Namespaces:  map[string]*os.File{},
		Credential:  &pyengine.Credential{UID: e.UID, GID: e.GID, Groups: e.Groups},
		Seccomp:     e.Seccomp,
	}
	closeAll := func() {
		for _, f := range en.Namespaces {
			f.Close()
		}
	}
	for name, p := range e.Namespaces {
		f, err := os.Open(p)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("enginehost: namespace %s: %w", name, err)
		}
		en.Namespaces[name] = f
	}
	for _, rl := range e.Rlimits {
		res, ok := rlimits[rl.Type]
		if !ok {
			closeAll()
			return nil, nil, api.Errorf(api.ErrUnsupported, "enginehost: rlimit %s is unknown here", rl.Type)
		}
		en.Rlimits = append(en.Rlimits, pyengine.Rlimit{Resource: res, Cur: rl.Soft, Max: rl.Hard})
	}
	return en, closeAll, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": 10,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15, "RLIMIT_SIGPENDING": 11, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// Close stops every zygote (the engines forked from them live on: each
// belongs to its sandbox).
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	var zs []*pyengine.Zygote
	var starting []chan struct{}
	for _, s := range h.zygotes {
		if s.z != nil {
			zs = append(zs, s.z)
		}
		if s.starting != nil {
			starting = append(starting, s.starting)
		}
	}
	h.mu.Unlock()
	for _, z := range zs {
		_ = z.Close()
	}
	for _, c := range starting {
		<-c
	}
}
