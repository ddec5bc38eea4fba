// Package oci is the `oci` backend: each sandbox is a container described by
// an OCI runtime bundle we generate (runtime-spec types) and run by an OCI
// runtime binary through its command-line interface (`runc`, `crun`, or a
// drop-in such as `runsc`): create, start, state, kill, delete, with the
// runtime's state under our state directory.
//
// The container sees the host's /usr (read-only) and a minimal /etc of its
// own, its own /proc, /dev, /sys and a fresh /tmp; the workspace is
// bind-mounted read-write at the workdir, the agent binary read-only, and the
// agent runs as PID 1 as the sandbox user. A user namespace maps the sandbox's
// uids to an unprivileged host range; every capability is dropped,
// no_new_privs is set, Docker's default seccomp profile applies, and the
// container has its own pid, ipc, uts, mount, net and cgroup namespaces.
//
// Network: "deny" is a network namespace with loopback alone, made by the
// runtime. "allow" and "whitelist" get a namespace of internal/sandboxnet
// (a veth to the host, the policy enforced by host-side nftables rules, a
// DNS server and, for whitelist, the egress proxy on the host end), which
// the container joins; the policy can change while the sandbox runs
// (backend.NetworkController). Those need iproute2 and nftables as root
// (slirp4netns, nftables and nsenter rootless); without them allow and
// whitelist are refused.
//
// Rootless: a daemon that is not root runs the runtime in a user namespace
// of its own with the user's subordinate ids (see rootless_linux.go); the
// sandbox user is the daemon's user on the host, cgroup limits are refused,
// and the pids limit becomes RLIMIT_NPROC. allow and whitelist get
// sandboxnet's rootless networks instead: slirp4netns (as the daemon's
// user) on the container's own namespace, the rules inside that namespace,
// the DNS server and proxy listening there.
package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

// Config configures the oci backend.
type Config struct {
	// Runtime is the OCI runtime binary (a name looked up in PATH, or a
	// path); default "runc".
	Runtime string
	// RuntimeFlags are global flags given to every runtime command, before
	// the subcommand. Default for runsc (gVisor): "--host-uds=create" (the
	// agent's socket must be a host socket the daemon can dial); runsc
	// creates deny sandboxes with "--network=none" (a loopback-only
	// netstack) and the others with its netstack on the namespace's veth.
	RuntimeFlags []string
	// AgentPath is the ds-sandbox binary bind-mounted into the container as
	// its PID 1; "" finds it (see agent.Command). It must run with only the
	// host's /usr and /lib: a static build (CGO_ENABLED=0) is safest.
	AgentPath string
	// StateDir holds the runtime's own state (--root). Required.
	StateDir string
	// BundleDir holds the bundles, one per sandbox. The runtime's init,
	// already inside the user namespace (so without any privilege over host
	// files), walks to each bundle's rootfs: every ancestor of BundleDir must
	// be searchable by others, which a state directory of mode 0700 is not.
	// Default: /run/ds-sandbox/oci-<hash of StateDir> (bundles do not outlive
	// a reboot, and neither do containers); rootless, StateDir/bundles (the
	// container's root can walk the user's own directories: its uid is
	// mapped there).
	BundleDir string
	// UIDBase is the first host uid (and gid) of the range the container's
	// uids 0..65535 map to; default 1000000000, far from the 100000+ ranges
	// /etc/subuid hands to users' rootless containers (sharing uids with
	// them would share file access). The sandbox user (uid 1000 inside) is
	// UIDBase+1000 on the host. Not used rootless (the subordinate ids of
	// /etc/subuid serve, and the sandbox user is the daemon's own).
	UIDBase uint32
	// PidsLimit bounds the number of tasks (processes and threads) in a
	// sandbox whose Spec asks for none; default 512. The sandbox's code gets
	// an RLIMIT_NPROC below it (see codeProcs). Rootless (no pids cgroup) it
	// is the agent's RLIMIT_NPROC.
	PidsLimit int64
	// StartTimeout bounds the agent start; default 30s.
	StartTimeout time.Duration
	// NetPool is the address pool of allow and whitelist sandboxes' veths
	// (a /30 each); default sandboxnet.DefaultPool (10.213.0.0/16).
	NetPool netip.Prefix
	// Resolver resolves names for sandboxes' DNS and egress proxy; default
	// the host's resolver.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
}

// idMaps are a user namespace's uid and gid maps.
type idMaps struct {
	uid, gid []specs.LinuxIDMapping
}

// Backend is the oci backend.
type Backend struct {
	cfg Config
	// rootless: the daemon is not root (see rootless_linux.go).
	rootless bool
	mu       sync.Mutex
	outer    *idMaps // rootless: the outer namespace's maps, once probed

	// bpf caches compiled seccomp profiles (Entry), by the profile's hash; guarded by mu.
	bpf map[[32]byte][]byte

	nets *sandboxnet.Manager // nil when the config makes none (netErr says why)
	// netErr is why allow and whitelist cannot be had, if they cannot.
	netErr error
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.NetworkChecker = (*Backend)(nil)
)

// The sandbox user's ids inside the container.
const (
	sandboxUID = 1000
	sandboxGID = 1000
	// idMapSize is how many container ids the user namespace maps.
	idMapSize = 65536
)

// Paths inside the container.
const (
	agentInContainer  = "/.dss/ds-sandbox"
	socketDirInside   = "/run/dss"
	socketInContainer = socketDirInside + "/agent.sock"
)

// New returns an oci backend.
func New(cfg Config) *Backend {
	if cfg.Runtime == "" {
		cfg.Runtime = "runc"
	}
	if cfg.RuntimeFlags == nil && isRunsc(cfg.Runtime) {
		cfg.RuntimeFlags = []string{"--host-uds=create"}
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 1_000_000_000
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = 512
	}
	rootless := os.Geteuid() != 0
	if cfg.BundleDir == "" && cfg.StateDir != "" && rootless {
		cfg.BundleDir = filepath.Join(cfg.StateDir, "bundles")
	}
	if cfg.BundleDir == "" && cfg.StateDir != "" {
		sum := sha256.Sum256([]byte(cfg.StateDir))
		cfg.BundleDir = filepath.Join("/run/ds-sandbox", "oci-"+hex.EncodeToString(sum[:6]))
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	b := &Backend{cfg: cfg, rootless: rootless}
	sum := sha256.Sum256([]byte(cfg.StateDir))
	b.nets, b.netErr = sandboxnet.New(sandboxnet.Config{
		Tag: hex.EncodeToString(sum[:4]), Pool: cfg.NetPool, Resolver: cfg.Resolver,
	})
	return b
}

func isRunsc(runtime string) bool { return filepath.Base(runtime) == "runsc" }

// networkAvailable returns nil when allow and whitelist sandboxes can be
// made, or why not.
func (b *Backend) networkAvailable() error {
	if b.netErr != nil {
		return b.netErr
	}
	if b.rootless {
		return b.rootlessNetworkAvailable()
	}
	return b.nets.Available()
}

// rootlessNetworkAvailable is networkAvailable in rootless mode (see
// sandboxnet's rootless.go): slirp4netns, nft and nsenter, and the
// runtime is not runsc (refused rootless anyway).
func (b *Backend) rootlessNetworkAvailable() error {
	if b.netErr != nil {
		return b.netErr
	}
	return b.nets.AvailableRootless()
}

// Config returns the backend's configuration, defaults filled in.
func (b *Backend) Config() Config { return b.cfg }

// Name implements backend.Backend.
func (b *Backend) Name() string { return "oci" }

// Enforces implements backend.Enforcer: what a sandbox is protected by, as
// root or rootless.
func (b *Backend) Enforces() []string {
	if b.rootless {
		return b.rootlessEnforces()
	}
	out := []string{
		"runtime " + b.cfg.Runtime,
		fmt.Sprintf("user namespace: the sandbox user is host uid %d; no capabilities; no_new_privs", b.HostUID()),
		"seccomp: Docker's default profile" + map[bool]string{true: " (gVisor: its Sentry serves system calls instead)", false: ""}[isRunsc(b.cfg.Runtime)],
		"read-only root with the host's /usr and a generated /etc; own pid, ipc, uts, mount, net and cgroup namespaces",
		"memory_mb: cgroup memory and swap limit (an OOM kill is reported as DeadKernelError); cpu_count: CFS quota; /tmp bounded",
		b.pidsEnforced(),
		fmt.Sprintf("max_open_files: RLIMIT_NOFILE of the code (default %d)", defaultNofile),
		"network deny: loopback only",
	}
	if err := b.networkAvailable(); err != nil {
		out = append(out, "network allow and whitelist: refused here ("+err.Error()+")")
	} else {
		out = append(out, sandboxnet.Enforces()...)
	}
	return out
}

// pidsEnforced says how pids_limit is enforced with this runtime.
func (b *Backend) pidsEnforced() string {
	if isRunsc(b.cfg.Runtime) {
		return fmt.Sprintf("pids_limit (default %d): the code's RLIMIT_NPROC, enforced by gVisor's Sentry; the pids cgroup bounds the Sentry's host threads", b.cfg.PidsLimit)
	}
	return fmt.Sprintf("pids_limit (default %d): cgroup pids.max, and the code's RLIMIT_NPROC below it so a fork bomb leaves the agent room", b.cfg.PidsLimit)
}

// HostUID is the host uid the sandbox user runs as (and owns the workspace
// files as): the daemon's own when rootless.
func (b *Backend) HostUID() uint32 {
	if b.rootless {
		return uint32(os.Getuid())
	}
	return b.cfg.UIDBase + sandboxUID
}

// hostGID is the host gid of the sandbox user's group.
func (b *Backend) hostGID() uint32 {
	if b.rootless {
		return uint32(os.Getgid())
	}
	return b.cfg.UIDBase + sandboxGID
}

// Rootless reports whether the backend runs its runtime without root.
func (b *Backend) Rootless() bool { return b.rootless }

// SharesDaemonUser implements backend.DaemonUserSharer: rootless, the
// sandbox user is the daemon's own host user.
func (b *Backend) SharesDaemonUser() bool { return b.rootless }

// MinPidsLimit is the smallest pids limit the backend accepts: the agent, a
// kernel and its threads need a few dozen tasks before any code runs.
const MinPidsLimit = 128

// checkLimits refuses limits the backend cannot apply.
func checkLimits(s backend.Spec) error {
	if s.MemoryMB < 0 || s.CPUCount < 0 || s.PidsLimit < 0 || s.MaxOpenFiles < 0 || s.MaxOutputBytes < 0 {
		return api.Errorf(api.ErrInvalid, "oci backend: negative limits (memory_mb %d, cpu_count %d, pids_limit %d, max_open_files %d, max_output_bytes %d)",
			s.MemoryMB, s.CPUCount, s.PidsLimit, s.MaxOpenFiles, s.MaxOutputBytes)
	}
	if s.PidsLimit > 0 && s.PidsLimit < MinPidsLimit {
		return api.Errorf(api.ErrInvalid, "oci backend: pids_limit %d is below the minimum %d (the agent and a kernel need that many tasks)", s.PidsLimit, MinPidsLimit)
	}
	return nil
}

// defaultNofile is the sandbox's RLIMIT_NOFILE when none is asked for.
const defaultNofile = 4096
