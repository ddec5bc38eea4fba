// Package backend defines what an isolation backend is: something that starts
// an isolated environment running the in-sandbox agent, hands back the agent's
// socket, and destroys the environment. Backends live in sub-packages (local,
// oci, docker, …), none of which imports another; backendtest holds the one
// conformance suite every backend passes.
package backend

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Spec is everything a backend needs to start one sandbox. The manager has
// already validated it and resolved templates and defaults.
type Spec struct {
	// ID is the sandbox id, unique on this host.
	ID string
	// User and Workdir are the sandbox's default user and working directory as
	// its code sees them.
	User    string
	Workdir string
	// WorkspaceDir is the host directory mounted (or mapped) at Workdir.
	WorkspaceDir string
	// Env is the sandbox environment (template env, create envs and the
	// WORKSPACE* variables), given to kernels and commands.
	Env map[string]string
	// Network is the policy to enforce. A backend that cannot enforce it must
	// fail Create with an error wrapping api.ErrUnsupported.
	Network api.NetworkPolicy
	// Python is the interpreter (inside the sandbox) that runs the code
	// engines.
	Python string
	// Engine runs the sandbox's code contexts (the agent's --engine):
	// api.EngineIPykernel or api.EngineLean; "" = the agent's default.
	Engine string
	// Preload lists the Python modules every fresh engine imports before its
	// first cell (the agent's --preload); nil = the engine's default list.
	Preload []string
	// EngineHandoff: the default context's engine will be forked from the
	// daemon's zygote into the sandbox (backend.Entry) and handed to the
	// agent (its --engine-handoff), so the agent starts none itself.
	EngineHandoff bool
	// DefaultTimeout bounds cells and commands that ask for no timeout.
	DefaultTimeout time.Duration
	// Image is the template's image; backends without images refuse it.
	Image string
	// MemoryMB and CPUCount are limits asked for by the template (0 = none).
	// A backend that cannot enforce them must refuse with api.ErrUnsupported.
	MemoryMB int
	CPUCount int
	// PidsLimit bounds the tasks (processes and threads) of the whole
	// sandbox, agent included; 0 = the backend's default. A backend that
	// cannot bound them refuses a non-zero one with api.ErrUnsupported.
	PidsLimit int
	// MaxOpenFiles is RLIMIT_NOFILE of the sandbox's processes; 0 = the
	// backend's default.
	MaxOpenFiles int
	// MaxOutputBytes bounds one execution's stdout and stderr (the agent's
	// --max-output-bytes); 0 = the agent's default.
	MaxOutputBytes int64
	// KernelStartTimeout bounds the start of a code context's kernel (the
	// agent's --kernel-start-timeout); 0 = the agent's default.
	KernelStartTimeout time.Duration
}

// AgentArgs returns the agent flags every backend passes the same way:
// spec's engine and preload list, output bound, kernel start timeout and the
// limits the agent applies to the processes it starts.
func AgentArgs(spec Spec, maxProcs int) []string {
	var args []string
	if spec.Engine != "" {
		args = append(args, "--engine", spec.Engine)
	}
	if len(spec.Preload) > 0 {
		args = append(args, "--preload", strings.Join(spec.Preload, ","))
	}
	if spec.EngineHandoff {
		args = append(args, "--engine-handoff")
	}
	if maxProcs > 0 {
		args = append(args, "--max-procs", strconv.Itoa(maxProcs))
	}
	if spec.MaxOpenFiles > 0 {
		args = append(args, "--max-open-files", strconv.Itoa(spec.MaxOpenFiles))
	}
	if spec.MaxOutputBytes > 0 {
		args = append(args, "--max-output-bytes", strconv.FormatInt(spec.MaxOutputBytes, 10))
	}
	if spec.KernelStartTimeout > 0 {
		args = append(args, "--kernel-start-timeout", spec.KernelStartTimeout.String())
	}
	return args
}

// Instance is one running sandbox.
type Instance interface {
	// AgentSocket is the host path of the agent's unix socket.
	AgentSocket() string
	// Done is closed when the sandbox stopped, by itself or through Destroy.
	Done() <-chan struct{}
	// Destroy stops the sandbox and everything it started, and releases what the
	// backend allocated for it (not the workspace: that is the manager's).
	// It is idempotent.
	Destroy(ctx context.Context) error
}

// Backend starts sandboxes.
type Backend interface {
	// Name is the backend's config name ("local", "oci", …).
	Name() string
	// Available returns nil when the backend can create sandboxes on this host,
	// or an error saying why not and what to install.
	Available(ctx context.Context) error
	// Create starts a sandbox and returns once its agent answers.
	Create(ctx context.Context, spec Spec) (Instance, error)
}

// WorkspaceEnv returns the WORKSPACE* variables for a workspace visible to the
// sandbox's code at root.
func WorkspaceEnv(root string) map[string]string {
	return map[string]string{
		"WORKSPACE":         root,
		"WORKSPACE_DATA":    root + "/data",
		"WORKSPACE_MODELS":  root + "/models",
		"WORKSPACE_OUTPUTS": root + "/outputs",
	}
}

// Recoverable is an Instance whose backend can find it again after a daemon
// restart: State is persisted with the sandbox's record.
type Recoverable interface {
	State() map[string]string
}

// Reaper is a Backend that can find sandboxes of its own that no record names
// (a daemon that died between starting one and recording it) and remove them.
// live reports whether the manager knows a sandbox id.
type Reaper interface {
	ReapOrphans(ctx context.Context, live func(sandboxID string) bool) (int, error)
}

// Recoverer is a Backend that can re-attach to a sandbox from its persisted
// State. An error wrapping api.ErrNotFound means the sandbox is gone (the
// manager reaps its record and anonymous workspace).
type Recoverer interface {
	Recover(ctx context.Context, state map[string]string) (Instance, error)
}

// NetworkController is an Instance whose network policy can change while it
// runs (the seed's per-run_code network arguments) and that reports what
// its policy refused.
type NetworkController interface {
	// SetNetwork puts pol in force until the next call. An error wrapping
	// api.ErrUnsupported means this sandbox cannot have pol (one created
	// with deny has no interface to open); the policy in force is then
	// unchanged.
	SetNetwork(ctx context.Context, pol api.NetworkPolicy) error
	// OnNetworkDenial sets the function told of every denial (nil: none).
	// It is called synchronously from the enforcement path: keep it quick.
	OnNetworkDenial(fn func(api.NetworkDenial))
	// FlushNetworkDenials reports, before it returns, every denial the
	// enforcement has recorded but not yet reported (refused packets reach
	// the daemon asynchronously): the manager calls it as an execution ends.
	FlushNetworkDenials()
}

// Detacher is an Instance holding resources in the daemon's process (such as
// a network's DNS server and proxy) that a daemon shutting down without
// stopping its sandboxes releases with Detach; the next daemon's Recover
// makes them again. The sandbox keeps running, its policy still enforced
// by what lives outside the process.
type Detacher interface {
	Detach()
}

// OOMCounter is an Instance with a memory cgroup of its own: OOMKills is
// how many of its processes the kernel's OOM killer has killed so far. The
// manager compares it before and after a cell to tell a kernel killed by
// the memory limit from one that died otherwise.
type OOMCounter interface {
	OOMKills() (uint64, error)
}

// Enforcer is a Backend that says what it enforces on this host right now
// (isolation, limits, network policies), for /readyz and operators: one
// short sentence each. Backends whose guarantees depend on the host (root
// or not, tools installed) answer for the host they run on.
type Enforcer interface {
	Enforces() []string
}

// Warner is an Instance that lacks something on this host that sandboxes
// usually have (local without a private mount namespace: code does not see
// its workspace at the workdir). The manager puts the warnings in the
// sandbox's info and its created event.
type Warner interface {
	Warnings() []string
}

// DaemonUserSharer is a Backend whose sandbox code may run as the daemon's
// own host user (local; oci without root). Hard links to the daemon's files
// (linked datasets) would then be writable by sandbox code, so the manager
// refuses them.
type DaemonUserSharer interface {
	SharesDaemonUser() bool
}
