package backend

import "context"

// Entry says how a process started outside a sandbox joins it completely, as
// `runc exec` would: the namespaces it enters, the cgroup it is charged to,
// who it runs as and under which restrictions. An engine forked from a
// zygote outside every sandbox becomes a sandbox's process this way, so the
// pre-imported memory it shares with its siblings is all it shares.
//
// Applying an Entry must be all or nothing: a process that could not apply
// every part of it must exit, never run with less.
type Entry struct {
	// Namespaces maps a namespace name — "user", "mnt", "pid", "net", "ipc",
	// "uts", "cgroup" — to a path that opens it (/proc/PID/ns/NAME). "user"
	// is entered first; "pid" applies to the entering process's children.
	Namespaces map[string]string
	// CgroupProcs are the host paths of the cgroup.procs files of the
	// sandbox's cgroups (one per hierarchy: cgroup v2, or each v1 controller
	// of a v1 or hybrid machine), written before any namespace is entered.
	CgroupProcs []string
	// UID, GID and Groups are the ids inside the sandbox's user namespace.
	UID, GID uint32
	Groups   []uint32
	// Rlimits are the process's resource limits.
	Rlimits []Rlimit
	// Seccomp is the classic BPF program of the sandbox's seccomp filter
	// (loaded with no_new_privs); never empty.
	Seccomp []byte
	// OOMScoreAdj is the sandbox's oom_score_adj, when it sets one.
	OOMScoreAdj *int
	// Cwd and Env are the process's working directory (inside the sandbox)
	// and its base environment.
	Cwd string
	Env []string
}

// Rlimit is one resource limit, by its name as in setrlimit(2) (RLIMIT_NOFILE, …).
type Rlimit struct {
	Type       string
	Soft, Hard uint64
}

// Enterer is an Instance that outside processes can join (Entry). Backends
// whose sandboxes are not made of host namespaces (gVisor, a VM) do not
// implement it, or return an error wrapping api.ErrUnsupported.
type Enterer interface {
	Entry(ctx context.Context) (Entry, error)
}

// EnterChecker is a Backend whose instances implement Enterer. CanEnter
// says whether they can be entered on this machine (nil) or why not.
type EnterChecker interface {
	CanEnter(ctx context.Context) error
}
