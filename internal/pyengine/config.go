package pyengine

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runnerSource is the Python side, run with `python3 -c`.
//
//go:embed dsengine.py
var runnerSource string

// Config starts one cold engine (Start). The zero value is usable.
type Config struct {
	// Python is the interpreter (default "/usr/bin/python3"). It needs
	// IPython (Debian's python3-ipython) and, for inline figures,
	// matplotlib-inline.
	Python string
	// Dir is the engine's working directory ("" inherits ours).
	Dir string
	// Env is the engine's full environment (nil means os.Environ()).
	// MPLBACKEND is always set to the inline backend. IPython creates its
	// profile directory under IPYTHONDIR (default $HOME/.ipython), so give
	// it a writable one; history is kept in memory only.
	Env []string
	// StartTimeout bounds process start → the engine's hello (default 60s).
	StartTimeout time.Duration
	// InterruptGrace is how long Execute waits for an interrupted cell
	// before it kills the engine (default 5s).
	InterruptGrace time.Duration
	// MaxFrameBytes is the largest frame (one output) accepted from the
	// engine (default DefaultMaxFrameBytes, at least 8 MiB). A larger one
	// kills the engine: its cell ends with jupyter.ErrDead naming the size.
	MaxFrameBytes int
	// Stderr receives what the Python process writes to its stdout and
	// stderr before the runner redirects them (start-up errors), default
	// io.Discard. Start errors quote its tail.
	Stderr io.Writer
	// SysProcAttr is optional (credentials, namespaces …). Start copies it
	// and forces Setsid (the engine leads its session and process group:
	// interrupts and kills go to the group) and Pdeathsig SIGKILL.
	SysProcAttr *syscall.SysProcAttr
	// Started, when set, is called with the engine's pid right after the
	// process started (resource limits are set there). An error kills the
	// engine and fails Start.
	Started func(pid int) error
	// Reaped, when set, is called with the pid once the process has been
	// waited for: from then on the pid is no longer this engine's.
	Reaped func(pid int)
}

const (
	defaultPython       = "/usr/bin/python3"
	defaultStartTimeout = 60 * time.Second
	inlineBackend       = "module://matplotlib_inline.backend_inline"
	tailBytes           = 2048
)

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Python == "" {
		cfg.Python = defaultPython
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	var err error
	cfg.MaxFrameBytes, err = checkMaxFrame(cfg.MaxFrameBytes)
	return cfg, err
}

func checkMaxFrame(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultMaxFrameBytes, nil
	case n < minMaxFrameBytes:
		return 0, fmt.Errorf("MaxFrameBytes %d is below the minimum of %d (a stream chunk must fit)", n, minMaxFrameBytes)
	}
	return n, nil
}

// engineEnv is env (or ours) with MPLBACKEND forced to the inline backend.
func engineEnv(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MPLBACKEND=") {
			out = append(out, kv)
		}
	}
	return append(out, "MPLBACKEND="+inlineBackend)
}

// singleThreaded are the variables that keep BLAS and OpenMP from starting
// thread pools at import (numpy's OpenBLAS starts one per CPU).
var singleThreaded = []string{"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}

// zygoteEnv is engineEnv(env) with BLAS and OpenMP limited to one thread
// unless env sets them: a zygote must not have threads when it forks. The
// forked engines keep that setting (their libraries are initialized).
func zygoteEnv(env []string) []string {
	out := engineEnv(env)
	for _, name := range singleThreaded {
		set := false
		for _, kv := range out {
			if strings.HasPrefix(kv, name+"=") {
				set = true
			}
		}
		if !set {
			out = append(out, name+"=1")
		}
	}
	return out
}

// DefaultPreload is ZygoteConfig.Preload when it is nil: the data-science
// stack, and matplotlib's inline backend (importing it hooks the figure
// flush into the zygote's shell, so a fork's first plot pays nothing more).
var DefaultPreload = []string{"numpy", "pandas", "matplotlib", "matplotlib.pyplot", "matplotlib_inline.backend_inline"}

// ZygoteConfig starts a zygote (StartZygote). The zero value is usable.
type ZygoteConfig struct {
	// Python, Env, Dir, StartTimeout, Stderr and SysProcAttr are as in
	// Config, for the zygote process (forked engines get ForkConfig's Env
	// and Dir). The zygote leads its own process group.
	Python string
	Env    []string
	Dir    string
	// Preload lists the modules the zygote imports before it forks
	// anything (nil means DefaultPreload; empty means none beyond IPython
	// and the runner). A module that fails to import, or that leaves a
	// thread running, fails StartZygote with an error naming it.
	Preload []string
	// StartTimeout bounds the start and the whole preload (default 60s).
	StartTimeout time.Duration
	Stderr       io.Writer
	SysProcAttr  *syscall.SysProcAttr
	// Started and Reaped are called with the zygote's own pid, as in
	// Config.
	Started func(pid int) error
	Reaped  func(pid int)
}

// ForkConfig makes one engine from a zygote.
type ForkConfig struct {
	// Dir is the engine's working directory ("" keeps the zygote's).
	Dir string
	// Env is the engine's full os.environ (MPLBACKEND is forced to the
	// inline backend). Entries are "KEY=VALUE"; a later one wins.
	Env []string
	// Enter, when set, confines the engine before it runs anything.
	Enter *Enter
	// InterruptGrace and MaxFrameBytes are as in Config.
	InterruptGrace time.Duration
	MaxFrameBytes  int
	// Started, when set, is called with the engine's pid once it said
	// hello; an error kills it and fails Fork. Reaped is called once the
	// engine's exit was observed (it is reaped by the zygote, by us if we
	// adopted it as its subreaper, or by whoever adopted it).
	Started func(pid int) error
	Reaped  func(pid int)
}

// Enter confines a forked engine, for putting it inside a container. The
// child applies it before anything else, still root, in this order: its pid
// into CgroupProcs; setns into Namespaces (user, cgroup, ipc, uts, net, pid,
// mnt — nsenter's order; pid applies to children, so the child forks once
// more and the engine, a grandchild of the zygote, runs inside); chdir to ForkConfig.Dir; the capability
// bounding set emptied (this needs CAP_SETPCAP, so it comes before the uid
// changes); setgroups/setresgid/setresuid to Credential; every capability
// dropped (effective, permitted, inheritable, ambient); Rlimits;
// PR_SET_NO_NEW_PRIVS; the Seccomp filter. Any failure ends the child and
// Fork returns an error saying which step failed: there is never an engine
// running with fewer restrictions than asked.
type Enter struct {
	// CgroupProcs are the cgroup.procs files to join (one per hierarchy on
	// a cgroup v1 or hybrid machine; none joins none).
	CgroupProcs []string
	// Namespaces maps "user", "mnt", "ipc", "uts", "net", "cgroup" or "pid"
	// to an open namespace file (e.g. /proc/PID/ns/net). Fork only reads
	// them; the caller closes them.
	Namespaces map[string]*os.File
	// Credential, when set, is the uid, gid and supplementary groups to
	// run as.
	Credential *Credential
	// Rlimits are set in order.
	Rlimits []Rlimit
	// Seccomp is a classic BPF program (an array of struct sock_filter, 8
	// bytes each, native byte order), loaded with SECCOMP_MODE_FILTER
	// last. It must allow what the Python engine needs to run.
	Seccomp []byte
}

// Credential is a uid, a gid and the supplementary groups (none when
// empty: setgroups always runs).
type Credential struct {
	UID, GID uint32
	Groups   []uint32
}

// Rlimit is one resource limit (resource is RLIMIT_*; math.MaxUint64 is
// unlimited).
type Rlimit struct {
	Resource int
	Cur, Max uint64
}

var nsNames = map[string]bool{"user": true, "mnt": true, "ipc": true, "uts": true, "net": true, "cgroup": true, "pid": true}

// maxBPFInsns is the kernel's BPF_MAXINSNS.
const maxBPFInsns = 4096

// enterFrame is Enter on the wire.
type enterFrame struct {
	CgroupProcs []string      `json:"cgroup_procs,omitempty"`
	UID         *uint32       `json:"uid,omitempty"`
	GID         *uint32       `json:"gid,omitempty"`
	Groups      []uint32      `json:"groups,omitempty"`
	Rlimits     []rlimitFrame `json:"rlimits,omitempty"`
	Seccomp     []byte        `json:"seccomp,omitempty"`
}

type rlimitFrame struct {
	Resource int   `json:"resource"`
	Cur      int64 `json:"cur"`
	Max      int64 `json:"max"`
}

// frame validates en and returns it for the wire, with the namespace names
// and files in the order they are attached.
func (en *Enter) frame() (*enterFrame, []string, []*os.File, error) {
	f := &enterFrame{CgroupProcs: en.CgroupProcs}
	var names []string
	var files []*os.File
	for _, name := range []string{"user", "cgroup", "ipc", "uts", "net", "pid", "mnt"} {
		if file, ok := en.Namespaces[name]; ok {
			if file == nil {
				return nil, nil, nil, fmt.Errorf("Enter.Namespaces[%q] is nil", name)
			}
			names = append(names, name)
			files = append(files, file)
		}
	}
	for name := range en.Namespaces {
		if !nsNames[name] {
			return nil, nil, nil, fmt.Errorf("Enter.Namespaces: unknown namespace %q (want user, mnt, ipc, uts, net, cgroup or pid)", name)
		}
	}
	if c := en.Credential; c != nil {
		uid, gid := c.UID, c.GID
		f.UID, f.GID, f.Groups = &uid, &gid, c.Groups
	}
	for _, rl := range en.Rlimits {
		f.Rlimits = append(f.Rlimits, rlimitFrame{Resource: rl.Resource, Cur: rlim(rl.Cur), Max: rlim(rl.Max)})
	}
	if n := len(en.Seccomp); n%8 != 0 || n/8 > maxBPFInsns {
		return nil, nil, nil, fmt.Errorf("Enter.Seccomp is %d bytes: want a whole number of 8-byte instructions, at most %d", n, maxBPFInsns)
	}
	f.Seccomp = en.Seccomp
	return f, names, files, nil
}

// rlim maps unlimited to Python's resource.RLIM_INFINITY (-1).
func rlim(v uint64) int64 {
	if v > 1<<63-1 {
		return -1
	}
	return int64(v)
}

// forkFrame is a fork request on the wire.
type forkFrame struct {
	T     string            `json:"t"`
	Dir   string            `json:"dir,omitempty"`
	Env   map[string]string `json:"env"`
	Enter *enterFrame       `json:"enter,omitempty"`
	FDs   []string          `json:"fds"`
}

// preloadArg is the zygote's preload list as its command-line argument.
func preloadArg(mods []string) (string, error) {
	if mods == nil {
		mods = DefaultPreload
	}
	for _, m := range mods {
		if m == "" || strings.ContainsAny(m, " \t\n/") {
			return "", fmt.Errorf("preload: %q is not a module name", m)
		}
	}
	b, err := json.Marshal(append([]string{}, mods...))
	return string(b), err
}

// tail keeps the last bytes written to it and passes everything on to w.
type tail struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// String returns the kept tail, trimmed.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	_, _ = t.w.Write(p)
	return len(p), nil
}
