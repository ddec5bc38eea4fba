package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// engine is the interpreter behind one code context: an ipykernel process
// (*jupyter.Kernel) or, once it is built, a lean engine forked from a zygote.
//
// Execute runs one cell, calling onOutput for each output in order. Its errors
// are the jupyter package's: one wrapping jupyter.ErrDead when the engine died
// (or was closed) during the cell, jupyter.ErrInterrupted when ctx ended and
// the interrupted cell stopped with the engine's state kept. Done is closed
// once the engine's process is gone; Close kills it and is idempotent; PID is
// its process id.
type engine interface {
	Execute(ctx context.Context, req jupyter.ExecuteRequest, onOutput func(jupyter.Output)) (*jupyter.Reply, error)
	Done() <-chan struct{}
	Close() error
	PID() int
}

var _ engine = (*jupyter.Kernel)(nil)

// engineStart is what starting one context's engine needs from the context.
type engineStart struct {
	// Dir is the host path of the context's working directory.
	Dir string
	// Env is the engine's full environment.
	Env []string
	// TmpDir is the agent's private directory for engine sockets.
	TmpDir string
}

// engineStarter starts the engines of a sandbox's code contexts. It is safe
// for concurrent use.
type engineStarter interface {
	// start returns a ready engine: started, set up, its preload imported.
	// An engine not ready within the start timeout is an error wrapping
	// jupyter.ErrStartTimeout; an error wrapping an api sentinel is passed
	// to the caller as it is; any other means the engine could not start.
	start(ctx context.Context, s engineStart) (engine, error)
	// close releases what the starter itself holds (a zygote). The engines
	// it started belong to their contexts, which close them.
	close()
}

// engineAdopter is an engineStarter that can also take an engine started
// outside the sandbox and handed to the agent (handoff.go).
type engineAdopter interface {
	adopt(ctx context.Context, conn *os.File) (engine, error)
}

// engineHooks are called by a starter with the pid of every engine process
// it starts (Started, before the process runs code of the sandbox's: limits
// are applied there) and reaps (Reaped).
type engineHooks struct {
	Started func(pid int) error
	Reaped  func(pid int)
}

// newEngineStarter returns the starter of cfg.Engine. An engine this build
// does not have is an error wrapping api.ErrUnsupported, which fails the
// agent's start: a sandbox must never silently run on another engine than
// the one asked for.
//
// zygoteEnv and zygoteDir are the environment and working directory of a
// zygote the starter may keep (those of the default context).
func newEngineStarter(cfg *Config, hooks engineHooks, zygoteEnv []string, zygoteDir string) (engineStarter, error) {
	if err := CheckEngine(cfg.Engine); err != nil {
		return nil, err
	}
	switch cfg.Engine {
	case api.EngineIPykernel:
		return &ipykernelStarter{python: cfg.Python, timeout: cfg.KernelStartTimeout, preload: cfg.Preload, hooks: hooks}, nil
	case api.EngineLean:
		return newLeanStarter(cfg, hooks, zygoteEnv, zygoteDir), nil
	}
	return nil, fmt.Errorf("engine %q: CheckEngine accepts it but there is no starter for it", cfg.Engine)
}

// CheckEngine reports whether this build's agent runs engine: nil, or an
// error saying why not, wrapping api.ErrUnsupported (an engine not built
// yet) or api.ErrInvalid (not an engine). The manager refuses such a
// sandbox before starting it; /readyz and `ds-sandbox doctor` report it.
func CheckEngine(engine string) error {
	switch engine {
	case api.EngineIPykernel, api.EngineLean:
		return nil
	}
	return api.Errorf(api.ErrInvalid, "engine %q: want one of %s", engine, strings.Join(api.Engines, ", "))
}

// ipykernelStarter starts an ipykernel process per context (jupyter.Start)
// and runs kernelSetup and the preload imports in it.
type ipykernelStarter struct {
	python  string
	timeout time.Duration
	preload []string
	hooks   engineHooks
}

func (s *ipykernelStarter) start(ctx context.Context, st engineStart) (engine, error) {
	k, err := jupyter.Start(ctx, jupyter.Config{
		Python:       s.python,
		Dir:          st.Dir,
		Env:          st.Env,
		SocketDir:    st.TmpDir,
		Started:      s.hooks.Started,
		Reaped:       s.hooks.Reaped,
		StartTimeout: s.timeout,
	})
	if err != nil {
		return nil, err
	}
	if _, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: kernelSetup, Silent: true}, nil); err != nil {
		_ = k.Close()
		return nil, api.Errorf(api.ErrUnavailable, "set up python kernel: %v", err)
	}
	if len(s.preload) > 0 {
		if err := preload(ctx, k, s.preload); err != nil {
			_ = k.Close()
			return nil, err
		}
	}
	return k, nil
}

func (*ipykernelStarter) close() {}

// preload imports mods in a fresh engine, silently. A module that fails to
// import fails the start with the exception, naming the setting to fix.
func preload(ctx context.Context, e engine, mods []string) error {
	r, err := e.Execute(ctx, jupyter.ExecuteRequest{Code: preloadCode(mods), Silent: true}, nil)
	switch {
	case err != nil:
		return api.Errorf(api.ErrUnavailable, "preload %s: %v", strings.Join(mods, ","), err)
	case r != nil && r.Status == "error":
		return api.Errorf(api.ErrInvalid, "preload: importing the modules of the preload list (%s) failed: %s: %s; fix preload in the template or the configuration",
			strings.Join(mods, ", "), r.EName, stripANSI(r.EValue))
	}
	return nil
}

// preloadCode imports mods one by one, so the error names the first that
// fails, and leaves no name behind in the user's namespace.
func preloadCode(mods []string) string {
	var b strings.Builder
	b.WriteString("import importlib as _ds_il\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "_ds_il.import_module(%q)\n", m)
	}
	b.WriteString("del _ds_il\n")
	return b.String()
}

// Bounds of a preload list, as the configuration and templates enforce them.
const (
	maxPreload = 64
)

// checkPreload refuses a preload list that is not a short list of Python
// module names (dotted identifiers): they become code run in every engine.
func checkPreload(mods []string) error {
	if len(mods) > maxPreload {
		return fmt.Errorf("preload lists %d modules; at most %d", len(mods), maxPreload)
	}
	for _, m := range mods {
		if !api.PreloadModuleName(m) {
			return fmt.Errorf("preload module %q: want a Python module name (dotted identifiers of [A-Za-z0-9_], at most %d characters)", m, api.MaxPreloadModule)
		}
	}
	return nil
}

// startError turns a starter's error into the one a cell reports.
func startError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, jupyter.ErrStartTimeout):
		return api.Errorf(api.ErrUnavailable, "the kernel did not start within %s (kernel_start_timeout_sec); "+
			"the machine may be overloaded: retry, or raise kernel_start_timeout_sec", startTimeout(timeout))
	case api.CodeOf(err) != api.CodeInternal:
		return err
	}
	return api.Errorf(api.ErrUnavailable, "start python kernel: %v", err)
}
