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
// Network: only "deny" (a network namespace with loopback alone) is enforced;
// "allow" and "whitelist" need the egress machinery and are refused.
package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// Config configures the oci backend.
type Config struct {
	// Runtime is the OCI runtime binary (a name looked up in PATH, or a
	// path); default "runc".
	Runtime string
	// RuntimeFlags are global flags given to every runtime command, before
	// the subcommand. Default for runsc (gVisor): "--host-uds=create" (the
	// agent's socket must be a host socket the daemon can dial) and
	// "--network=none" (a loopback-only netstack: policy deny, the only one
	// this backend runs).
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
	// a reboot, and neither do containers).
	BundleDir string
	// UIDBase is the first host uid (and gid) of the range the container's
	// uids 0..65535 map to; default 1000000000, far from the 100000+ ranges
	// /etc/subuid hands to users' rootless containers (sharing uids with
	// them would share file access). The sandbox user (uid 1000 inside) is
	// UIDBase+1000 on the host.
	UIDBase uint32
	// PidsLimit bounds the number of processes in a sandbox; default 512.
	PidsLimit int64
	// StartTimeout bounds the agent start; default 30s.
	StartTimeout time.Duration
}

// Backend is the oci backend.
type Backend struct {
	cfg Config
}

var _ backend.Backend = (*Backend)(nil)

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
	if cfg.RuntimeFlags == nil && filepath.Base(cfg.Runtime) == "runsc" {
		cfg.RuntimeFlags = []string{"--host-uds=create", "--network=none"}
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 1_000_000_000
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = 512
	}
	if cfg.BundleDir == "" && cfg.StateDir != "" {
		sum := sha256.Sum256([]byte(cfg.StateDir))
		cfg.BundleDir = filepath.Join("/run/ds-sandbox", "oci-"+hex.EncodeToString(sum[:6]))
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	return &Backend{cfg: cfg}
}

// Config returns the backend's configuration, defaults filled in.
func (b *Backend) Config() Config { return b.cfg }

// Name implements backend.Backend.
func (b *Backend) Name() string { return "oci" }

// HostUID is the host uid the sandbox user runs as (and owns the workspace
// files as).
func (b *Backend) HostUID() uint32 { return b.cfg.UIDBase + sandboxUID }
