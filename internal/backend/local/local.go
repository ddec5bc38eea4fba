// Package local is the `local` backend: the agent runs as a plain host process
// with the workspace as its working directory. It isolates nothing beyond a
// clean environment, a separate process group and the files API's confinement
// to the workspace: use it for development and trusted code. It refuses network
// policies it cannot enforce (anything but "allow").
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// Config configures the local backend.
type Config struct {
	// AgentPath is the ds-sandbox binary that runs the agent; "" finds it (see
	// agent.Command).
	AgentPath string
	// CacheDir holds caches shared by local sandboxes (matplotlib's font cache),
	// so each sandbox does not rebuild them. "" means none.
	CacheDir string
	// StartTimeout bounds the agent start; default 30s.
	StartTimeout time.Duration
	// Detach starts agents in their own session without a parent-death
	// signal, so sandboxes outlive a daemon restart (or crash) and Recover can
	// re-attach to them. Embedded mode leaves it off: its sandboxes die with
	// the program.
	Detach bool
}

// Backend is the local backend.
type Backend struct {
	cfg Config
}

var (
	_ backend.Backend          = (*Backend)(nil)
	_ backend.Enforcer         = (*Backend)(nil)
	_ backend.DaemonUserSharer = (*Backend)(nil)
	_ backend.NetworkChecker   = (*Backend)(nil)
	_ backend.Isolator         = (*Backend)(nil)
	_ backend.Warner           = (*instance)(nil)
)

// New returns a local backend.
func New(cfg Config) *Backend {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	return &Backend{cfg: cfg}
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "local" }

// SharesDaemonUser implements backend.DaemonUserSharer: sandbox code runs
// as the daemon's user.
func (b *Backend) SharesDaemonUser() bool { return true }

// Isolates implements backend.Isolator: local isolates nothing.
func (b *Backend) Isolates() bool { return false }

// CheckNetwork implements backend.NetworkChecker: allow only.
func (b *Backend) CheckNetwork(policy string) error {
	if policy != "" && policy != api.NetworkAllow {
		return api.Errorf(api.ErrUnsupported,
			"the local backend cannot enforce network policy %q (its processes share the host's network); use an isolating backend such as oci", policy)
	}
	return nil
}

// Enforces implements backend.Enforcer.
func (b *Backend) Enforces() []string {
	return []string{
		"no isolation: code runs as the daemon's user on the host (development and trusted code only)",
		"files API confined to the workspace",
		"code sees the workspace at the workdir through a private mount namespace where the host allows one (else a warning on the sandbox); not isolation",
		"all processes killed with the sandbox",
		"clean environment",
		"network: allow only (deny and whitelist refused)",
		"max_open_files: RLIMIT_NOFILE of the sandbox's processes (up to the daemon's hard limit)",
		"refused: memory_mb, cpu_count, pids_limit (no isolation of resources)",
	}
}

// Available implements backend.Backend: it needs the agent binary.
func (b *Backend) Available(context.Context) error {
	if err := supported(); err != nil {
		return err
	}
	_, _, err := agent.Command(b.cfg.AgentPath)
	return err
}

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	if err := b.CheckNetwork(spec.Network.Policy); err != nil {
		return nil, err
	}
	switch {
	case spec.Image != "":
		return nil, api.Errorf(api.ErrUnsupported, "the local backend runs no images (template image %q); use the docker backend", spec.Image)
	case spec.MemoryMB != 0 || spec.CPUCount != 0 || spec.PidsLimit != 0:
		return nil, api.Errorf(api.ErrUnsupported,
			"the local backend cannot enforce resource limits (memory_mb %d, cpu_count %d, pids_limit %d): its processes share your user's; use an isolating backend such as oci, or drop the limits",
			spec.MemoryMB, spec.CPUCount, spec.PidsLimit)
	}
	if err := checkOpenFiles(spec.MaxOpenFiles); err != nil {
		return nil, err
	}
	if spec.WorkspaceDir == spec.Workdir {
		return b.start(ctx, spec, false)
	}
	// Code sees its workspace at the workdir (as on the isolating backends
	// and in the files API) where the host lets the agent have a private
	// mount namespace; elsewhere it finds it at its host path, and the
	// sandbox carries a warning saying so. (Each create tries: whether it
	// works can depend on the workdir. Where namespaces are refused the
	// attempt fails at once.)
	in, why := b.start(ctx, spec, true)
	if !errors.Is(why, errBind) {
		return in, why
	}
	in, err := b.start(ctx, spec, false)
	if err != nil {
		return nil, err
	}
	in.warnings = []string{fmt.Sprintf("the local backend cannot show the workspace at %s to code on this host (%v): "+
		"code finds it at %s (its working directory; relative paths and $WORKSPACE work), while the files API also accepts %s",
		spec.Workdir, why, spec.WorkspaceDir, spec.Workdir)}
	return in, nil
}

// errBind marks a failure to give the agent a private mount namespace
// with the workspace at the workdir.
var errBind = errors.New("no private mount namespace for the workdir")

// start starts the agent; bound puts it in a private mount namespace where
// it binds the workspace at the workdir first.
func (b *Backend) start(ctx context.Context, spec backend.Spec, bound bool) (*instance, error) {
	argv, extraEnv, err := agent.Command(b.cfg.AgentPath)
	if err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	dir, err := os.MkdirTemp("", "dss-")
	if err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	sock := filepath.Join(dir, "agent.sock")
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("local backend: %w", err)
	}
	args := append(argv[1:],
		"--socket", sock,
		"--workdir", spec.Workdir,
		"--user", spec.User,
		"--python", spec.Python,
	)
	if bound {
		// The files API sees what the code sees: the workdir is the
		// workspace itself inside the namespace.
		args = append(args, "--bind-workdir="+spec.WorkspaceDir, "--mount", spec.Workdir+"="+spec.Workdir)
	} else {
		args = append(args, "--mount", spec.Workdir+"="+spec.WorkspaceDir)
	}
	if spec.DefaultTimeout > 0 {
		args = append(args, "--default-timeout", spec.DefaultTimeout.String())
	}
	if spec.WorkspaceDir != spec.Workdir {
		args = append(args, "--mount", spec.WorkspaceDir+"="+spec.WorkspaceDir)
	}
	// Open files and the output bound are the agent's to apply; a process
	// limit (RLIMIT_NPROC) would count every process of this user.
	args = append(args, backend.AgentArgs(spec, 0)...)
	cmd := exec.Command(argv[0], args...)
	cmd.Dir = spec.WorkspaceDir
	// WORKSPACE* name the workspace where the code sees it: the workdir
	// when it is bound there, else its host path.
	root := spec.WorkspaceDir
	if bound {
		root = spec.Workdir
	}
	cmd.Env = append(b.environ(spec, tmp, root), extraEnv...)
	// The agent logs to a file, not a pipe: a detached agent must not die of
	// SIGPIPE when the daemon that read the pipe is gone.
	logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("local backend: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = agentProcAttr(b.cfg.Detach)
	if bound {
		mountNamespace(cmd.SysProcAttr)
	}
	if err := startLocked(cmd); err != nil {
		os.RemoveAll(dir)
		if bound {
			return nil, fmt.Errorf("%w: %v", errBind, err)
		}
		return nil, fmt.Errorf("local backend: start agent: %w", err)
	}
	in := &instance{pid: cmd.Process.Pid, dir: dir, sock: sock, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(in.done)
	}()
	if err := backend.WaitReady(ctx, sock, in.done, b.cfg.StartTimeout); err != nil {
		out := backend.Tail(filepath.Join(dir, "agent.log"), 4<<10)
		_ = in.Destroy(context.Background())
		if bound && errors.Is(err, backend.ErrExited) && strings.Contains(out, "agent: bind workdir:") {
			return nil, fmt.Errorf("%w: %s", errBind, strings.TrimPrefix(out, "agent: bind workdir: "))
		}
		return nil, fmt.Errorf("local backend: agent did not start: %w; agent output: %s", err, out)
	}
	return in, nil
}

// startLocked starts cmd from a locked OS thread: Pdeathsig fires when the
// thread that forked exits, so the thread must not be reused and retired.
func startLocked(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// environ builds the sandbox's clean environment: nothing of the daemon's own
// environment leaks into user code except PATH and the locale.
func (b *Backend) environ(spec backend.Spec, tmp, root string) []string {
	env := map[string]string{
		"PATH":   os.Getenv("PATH"),
		"HOME":   spec.WorkspaceDir,
		"TMPDIR": tmp,
	}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	if b.cfg.CacheDir != "" {
		mpl := filepath.Join(b.cfg.CacheDir, "matplotlib")
		if os.MkdirAll(mpl, 0o700) == nil {
			env["MPLCONFIGDIR"] = mpl
		}
	}
	// Code runs on the host, so the workspace is where the host has it.
	return backend.Environ(spec, env, root)
}

type instance struct {
	// warnings are what the sandbox lacks here (see backend.Warner).
	warnings []string
	pid      int
	dir      string
	sock     string
	done     chan struct{}
	once     sync.Once
	err      error
}

func (in *instance) AgentSocket() string   { return in.sock }
func (in *instance) Warnings() []string    { return in.warnings }
func (in *instance) Done() <-chan struct{} { return in.done }

// State implements backend.Recoverable: what Recover needs to find the
// sandbox again.
func (in *instance) State() map[string]string {
	return map[string]string{"pid": strconv.Itoa(in.pid), "dir": in.dir, "socket": in.sock}
}

// Destroy asks the agent to stop (SIGTERM: it kills every kernel, process and
// descendant of the sandbox). When the agent does not finish within the grace
// (or ctx ends first), Destroy kills the agent's whole process tree itself —
// descendants first, while the agent (their subreaper) still holds them — and
// then the agent. It returns an error when something survived.
func (in *instance) Destroy(ctx context.Context) error {
	in.once.Do(func() {
		_ = syscall.Kill(in.pid, syscall.SIGTERM)
		grace := time.NewTimer(destroyGrace)
		defer grace.Stop()
		select {
		case <-in.done:
		case <-grace.C:
		case <-ctx.Done():
		}
		select {
		case <-in.done:
		default:
			agent.KillTree(in.pid)
			_ = syscall.Kill(-in.pid, syscall.SIGKILL)
			_ = syscall.Kill(in.pid, syscall.SIGKILL)
			select {
			case <-in.done:
			case <-time.After(10 * time.Second):
				in.err = fmt.Errorf("local backend: agent %d did not exit after SIGKILL", in.pid)
			}
		}
		os.RemoveAll(in.dir)
	})
	return in.err
}

// destroyGrace is how long the agent gets to clean up after SIGTERM; its own
// shutdown kills kernels and processes first, so it needs far less.
const destroyGrace = 10 * time.Second
