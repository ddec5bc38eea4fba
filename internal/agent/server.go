package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"time"
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
	// Python is the interpreter that runs ipykernel; default /usr/bin/python3.
	Python string
	// Env is the environment of kernels and commands; nil means os.Environ().
	Env []string
	// DefaultTimeout bounds cells and foreground commands that give no timeout.
	DefaultTimeout time.Duration
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
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 5 * time.Minute
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
	s := &Server{cfg: cfg, log: cfg.Logger, fs: fs, mux: http.NewServeMux()}
	s.procs = newProcessTable(&s.cfg, fs)
	s.ctxs = newContextTable(&s.cfg, fs)
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.registerContextRoutes()
	s.registerFileRoutes()
	s.registerProcessRoutes()
	return s, nil
}

// Handler returns the agent's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on ln until ctx is done, then shuts down: it stops every kernel
// and kills every process the sandbox started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ctxs.startDefault()
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
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
	// Streams (executions, watches) may be open forever; close them hard after a
	// short grace rather than wait.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = srv.Close()
	s.Close()
	return nil
}

// Close stops every code context and kills every process of the sandbox,
// including ones that left their process group or daemonized.
func (s *Server) Close() {
	s.ctxs.closeAll()
	s.procs.killAll()
}
