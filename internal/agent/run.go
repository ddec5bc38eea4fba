package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ReexecEnv is set in the environment of a program that re-executes itself as
// the agent (see EnableReexec and Command).
const ReexecEnv = "DS_SANDBOX_AGENT_REEXEC"

var (
	reexecEnabled atomic.Bool
	selfAgent     atomic.Bool
)

// ServeFromSelf declares that this executable has an `agent` subcommand (the
// ds-sandbox CLI does, whatever the binary is named), so Command starts the
// agent from it rather than looking for another ds-sandbox binary.
func ServeFromSelf() { selfAgent.Store(true) }

// EnableReexec declares that this program serves the agent when started with
// ReexecEnv=1 (it calls MainIfReexec first thing in main or TestMain), so
// Command may use the current executable as the agent.
func EnableReexec() { reexecEnabled.Store(true) }

// MainIfReexec runs the agent and exits when this process was started as a
// re-executed agent; otherwise it enables re-exec and returns.
func MainIfReexec() {
	EnableReexec()
	if os.Getenv(ReexecEnv) != "1" {
		return
	}
	os.Exit(Main(os.Args[1:], os.Stderr))
}

// Command returns the argv prefix and extra environment that start the agent:
// explicit (a path to a ds-sandbox binary) when given; else this executable when
// it is ds-sandbox or has re-exec enabled; else ds-sandbox on PATH.
func Command(explicit string) (argv []string, env []string, err error) {
	if explicit != "" {
		p, err := exec.LookPath(explicit)
		if err != nil {
			return nil, nil, fmt.Errorf("agent binary %s: %w", explicit, err)
		}
		return []string{p, "agent"}, nil, nil
	}
	self, err := os.Executable()
	if err == nil {
		// A program that re-executes itself as the agent (tests, programs
		// embedding the SDK) must never be started without the marker: it
		// would run as itself, which may start sandboxes in turn.
		if reexecEnabled.Load() {
			return []string{self}, []string{ReexecEnv + "=1"}, nil
		}
		if selfAgent.Load() || filepath.Base(self) == "ds-sandbox" {
			return []string{self, "agent"}, nil, nil
		}
	}
	if p, err := exec.LookPath("ds-sandbox"); err == nil {
		return []string{p, "agent"}, nil, nil
	}
	return nil, nil, errors.New("cannot find the ds-sandbox binary that runs the in-sandbox agent: " +
		"put it on PATH, set SANDBOX_AGENT_PATH, or call dssandbox.ServeAgentIfChild() first thing in main")
}

type mountFlags []Mount

func (m *mountFlags) String() string { return fmt.Sprint(*m) }
func (m *mountFlags) Set(v string) error {
	p, h, ok := strings.Cut(v, "=")
	if !ok || p == "" || h == "" {
		return fmt.Errorf("mount %q: want SANDBOX_PATH=HOST_PATH", v)
	}
	*m = append(*m, Mount{Path: p, HostPath: h})
	return nil
}

// NetSocketsArg, as the agent's first argument, makes it the network
// sockets helper instead: a rootless backend starts it (through nsenter)
// inside a sandbox's user and network namespaces, where the daemon itself
// cannot go (a multi-threaded process cannot join a user namespace), to make
// there the sockets the daemon then serves: the listeners of the sandbox's
// DNS server and egress proxy and a netfilter netlink socket for its
// packet log. The arguments after it are the unix socket's descriptor the
// sockets are sent over (SCM_RIGHTS, in order) and one spec per socket:
// tcp:ADDR:PORT, udp:ADDR:PORT or netfilter. It exits once they are sent.
const NetSocketsArg = "net-sockets"

// Main is `ds-sandbox agent`: it parses args, serves on the socket until
// SIGTERM or SIGINT, then kills everything the sandbox started. It returns the
// process exit status.
func Main(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == NetSocketsArg {
		return netSocketsMain(args[1:], stderr)
	}
	fl := flag.NewFlagSet("agent", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		socket  = fl.String("socket", "", "unix socket to serve on (required)")
		workdir = fl.String("workdir", "/home/user", "the sandbox's working directory")
		user    = fl.String("user", "user", "the sandbox's default user")
		python  = fl.String("python", "/usr/bin/python3", "interpreter that runs the code engines")
		engine  = fl.String("engine", api.EngineIPykernel, "what runs the code contexts: "+strings.Join(api.Engines, " or "))
		preload = fl.String("preload", "", "comma-separated Python modules every fresh engine imports (empty = the engine's default list)")
		handoff = fl.Bool("engine-handoff", false, "the default context's engine is handed to the agent from outside (lean engine only)")
		timeout = fl.Duration("default-timeout", 5*time.Minute, "timeout of cells and commands that give none")
		nproc   = fl.Int("max-procs", 0, "RLIMIT_NPROC of the processes the agent starts (0 = inherited)")
		nofile  = fl.Int("max-open-files", 0, "RLIMIT_NOFILE of the processes the agent starts (0 = inherited)")
		output  = fl.Int64("max-output-bytes", DefaultMaxOutputBytes, "stdout/stderr bound of one execution")
		kstart  = fl.Duration("kernel-start-timeout", 0, "how long a kernel may take to start (0 = 60s)")
		bindDir = fl.String("bind-workdir", "", "HOST_DIR: bind it at --workdir first (the agent runs in a private mount namespace the backend made); give it as --bind-workdir=HOST_DIR")
		verbose = fl.Bool("v", false, "log diagnostics to stderr")
		mounts  mountFlags
	)
	fl.Var(&mounts, "mount", "SANDBOX_PATH=HOST_PATH: describe the sandbox's view (repeatable; none = the real filesystem)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	// Our own marker must not reach the sandbox's code: a program using the
	// SDK started inside the sandbox would run as an agent.
	marker := os.Getenv(ReexecEnv)
	os.Unsetenv(ReexecEnv)
	if *bindDir != "" {
		if err := bindWorkdir(*workdir, *bindDir); err != nil {
			fmt.Fprintln(stderr, "agent: bind workdir:", err)
			return 1
		}
		if os.Geteuid() != 0 {
			err := dropPrivilegeAndReexec(marker)
			fmt.Fprintln(stderr, "agent: bind workdir: drop privileges:", err)
			return 1
		}
	}
	if *socket == "" {
		fmt.Fprintln(stderr, "agent: --socket is required")
		return 2
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := Run(ctx, Config{
		Workdir: *workdir, User: *user, Mounts: mounts, Python: *python, Engine: *engine, Preload: splitList(*preload), EngineHandoff: *handoff,
		DefaultTimeout: *timeout, Logger: log, KernelStartTimeout: *kstart,
		Limits: ProcessLimits{MaxProcs: *nproc, MaxOpenFiles: *nofile}, MaxOutputBytes: *output,
	}, *socket)
	if err != nil {
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
	return 0
}

// splitList splits a comma-separated flag value; "" is nil.
func splitList(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// reservedThreads is how many idle OS threads the agent keeps for itself (see
// warmThreads).
const reservedThreads = 32

// Run serves an agent on a unix socket until ctx is done. The agent becomes the
// child subreaper, so processes that daemonize stay its descendants and die with
// the sandbox.
func Run(ctx context.Context, cfg Config, socketPath string) error {
	if err := setSubreaper(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("become subreaper: %w", err)
	}
	if err := setNotDumpable(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("refuse ptrace: %w", err)
	}
	s, err := New(cfg)
	if err != nil {
		return err
	}
	warmThreads(reservedThreads)
	if isSubreaper() {
		// The reaper outlives Serve: the shutdown's Close kills every
		// process group and waits until their orphans are reaped.
		rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		go reapOrphans(rctx, s.ownChild)
	}
	_ = os.Remove(socketPath)
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("listen: %w", err)
	}
	defer os.Remove(socketPath)
	if cfg.EngineHandoff {
		hl, err := listenHandoffs(socketPath)
		if err != nil {
			ln.Close()
			return err
		}
		defer os.Remove(HandoffSocket(socketPath))
		defer hl.Close()
		go serveHandoffs(hl, s.ctxs.adopt)
	}
	err = s.Serve(ctx, ln)
	killDescendants(os.Getpid())
	return err
}

// KillTree SIGKILLs every descendant of root (not root itself), stopping them
// all first so none escapes by forking: what a backend does to a sandbox whose
// agent did not clean up after itself.
func KillTree(root int) { killDescendants(root) }
