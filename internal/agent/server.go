package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// Mount maps a directory of the sandbox's view (Path) onto a host directory
// (HostPath). The local backend has no filesystem of its own, so it describes the
// sandbox's view as mounts: the workspace at the workdir, and at its own host path.
type Mount struct {
	Path     string `json:"path"`
	HostPath string `json:"host_path"`
}

// Config configures an agent.
type Config struct {
	// Workdir is the sandbox's working directory as its code sees it (absolute).
	Workdir string
	// User is the sandbox's default user name (a label on backends that cannot
	// switch users).
	User string
	// Mounts describe the sandbox's filesystem view. Nil means the agent runs
	// inside a real sandbox filesystem and sees it as it is ("/" is "/").
	Mounts []Mount
	// Python is the interpreter that runs the engines; default /usr/bin/python3.
	Python string
	// Engine runs the code contexts: api.EngineIPykernel (the default) or
	// api.EngineLean. An engine this build cannot start fails New.
	Engine string
	// Preload lists modules (dotted Python names) every fresh engine
	// imports before its first cell; nil means the engine's default list
	// (none for ipykernel).
	Preload []string
	// EngineHandoff: the default context's engine is started outside the
	// sandbox and handed to the agent on its hand-off socket (handoff.go),
	// so the agent starts none for it at start (nor a zygote of its own);
	// other contexts, and a default context whose engine died, get engines
	// started here. Only the lean engine takes hand-offs.
	EngineHandoff bool
	// Env is the environment of kernels and commands; nil means os.Environ().
	Env []string
	// DefaultTimeout bounds cells and foreground commands that give no timeout.
	DefaultTimeout time.Duration
	// Limits are applied to every process the agent starts (kernels and
	// commands, and through inheritance everything they start), never to the
	// agent itself; see ProcessLimits.
	Limits ProcessLimits
	// MaxOutputBytes bounds the stdout and stderr of one execution; the rest
	// is dropped with a notice and the Execution is marked truncated. 0 means
	// DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// KernelStartTimeout bounds a kernel's start (process start → ready);
	// 0 means the jupyter package's default (60s). Its config key is
	// kernel_start_timeout_sec, which the error names.
	KernelStartTimeout time.Duration
	// Logger receives the agent's own diagnostics; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Workdir == "" || !path.IsAbs(c.Workdir) {
		return fmt.Errorf("agent: workdir %q must be an absolute path", c.Workdir)
	}
	c.Workdir = path.Clean(c.Workdir)
	if c.Python == "" {
		c.Python = "/usr/bin/python3"
	}
	if c.Engine == "" {
		c.Engine = api.EngineIPykernel
	}
	if err := checkPreload(c.Preload); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.EngineHandoff && c.Engine != api.EngineLean {
		return fmt.Errorf("agent: engine hand-off needs the %s engine, not %s", api.EngineLean, c.Engine)
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 5 * time.Minute
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if err := c.Limits.check(); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Server is the agent: it owns the sandbox's code contexts and processes, and
// serves the routes listed in the package doc.
type Server struct {
	cfg   Config
	log   *slog.Logger
	fs    *FS
	procs *processTable
	ctxs  *contextTable
	env   *environ // cfg.Env, extended by POST /env
	mux   *http.ServeMux
}

// New builds an agent. It starts nothing until Serve (the default code context's
// kernel is started in the background then, so the first cell does not wait for
// the whole kernel start).
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	fs, err := newFS(cfg.Mounts, cfg.Workdir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, fs: fs, mux: http.NewServeMux(), env: &environ{list: cfg.Env}}
	s.procs = newProcessTable(&s.cfg, fs)
	s.procs.env = s.env
	if s.ctxs, err = newContextTable(&s.cfg, fs, s.env); err != nil {
		return nil, err
	}
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.registerContextRoutes()
	s.registerFileRoutes()
	s.registerProcessRoutes()
	s.registerEnvRoutes()
	return s, nil
}

// Handler returns the agent's HTTP handler.
func (s *Server) Handler() http.Handler { return readBodyFirst(s.mux) }

// readBodyFirst makes every handler's early error reach the client. A handler
// that rejects a request (unknown pid, a path outside the sandbox) before
// reading its body would otherwise close the connection while the client is
// still writing the body, and the client sees a broken pipe instead of the
// answer. JSON bodies are read up front (they are bounded anyway); for
// streamed uploads, an error status first drains a bounded part of the body.
func readBodyFirst(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Body == nil || r.Body == http.NoBody:
		case r.Method == http.MethodPost:
			b, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
			if err != nil {
				writeError(w, api.Errorf(api.ErrInvalid, "request body: %v", err))
				return
			}
			if len(b) > maxJSONBody {
				writeError(w, api.Errorf(api.ErrTooLarge, "request body is larger than %d MiB", maxJSONBody>>20))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		default:
			w = &drainOnError{ResponseWriter: w, body: r.Body}
		}
		h.ServeHTTP(w, r)
	})
}

// drainOnError reads (and discards) up to 64 MiB of an unread request body
// before an error status goes out.
type drainOnError struct {
	http.ResponseWriter
	body  io.Reader
	wrote bool
}

func (d *drainOnError) WriteHeader(code int) {
	if !d.wrote && code >= 400 {
		_, _ = io.Copy(io.Discard, io.LimitReader(d.body, 64<<20))
	}
	d.wrote = true
	d.ResponseWriter.WriteHeader(code)
}

func (d *drainOnError) Write(b []byte) (int, error) {
	d.wrote = true
	return d.ResponseWriter.Write(b)
}

func (d *drainOnError) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// Serve serves on ln until ctx is done, then shuts down: it stops every kernel
// and kills every process the sandbox started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ctxs.startDefault()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	// Kill first: killing the kernels and processes is what ends the
	// executions and command streams still open, so the HTTP shutdown after
	// it does not wait for them.
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = srv.Close()
	return nil
}

// Close stops every code context and kills every process of the sandbox,
// including ones that left their process group or daemonized.
func (s *Server) Close() {
	s.ctxs.closeAll()
	s.procs.killAll()
}
