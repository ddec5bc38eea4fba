package api

import (
	"net"
	"strconv"
	"strings"
	"time"
)

// Network policy modes, in the seed's terms.
const (
	NetworkAllow     = "allow"
	NetworkDeny      = "deny"
	NetworkWhitelist = "whitelist"
)

// Code engines: what runs a sandbox's code contexts.
const (
	// EngineIPykernel runs each code context as an ipykernel process spoken
	// to over ZeroMQ: full Jupyter fidelity.
	EngineIPykernel = "ipykernel"
	// EngineLean runs each code context on IPython's InteractiveShell,
	// forked from a zygote that has imported the preload list.
	EngineLean = "lean"
)

// Engines lists the code engines a template, the configuration or a create
// request may name.
var Engines = []string{EngineIPykernel, EngineLean}

// MaxPreloadModule bounds one name of a preload list.
const MaxPreloadModule = 200

// PreloadModuleName reports whether m can be a name of a preload list: a
// Python module name, dotted identifiers of [A-Za-z0-9_] without a leading
// digit, at most MaxPreloadModule characters (the names become code run in
// every engine, so nothing else is let through).
func PreloadModuleName(m string) bool {
	if m == "" || len(m) > MaxPreloadModule {
		return false
	}
	for part := range strings.SplitSeq(m, ".") {
		if part == "" || part[0] >= '0' && part[0] <= '9' {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return true
}

// NetworkPolicy is a sandbox's (or one execution's) network policy.
type NetworkPolicy struct {
	// Policy is "allow", "deny" or "whitelist".
	Policy string `json:"policy"`
	// Whitelist lists the destinations allowed under "whitelist": domains,
	// "*.wildcards", IPs and CIDRs.
	Whitelist []string `json:"whitelist,omitempty"`
}

// NetworkDenial is one connection, request or name lookup the sandbox's
// network policy refused.
type NetworkDenial struct {
	Time time.Time `json:"time"`
	// Host is the name asked for ("" for an IP literal or a nameless flow).
	Host string `json:"host,omitempty"`
	// IP is the address refused, when one was known.
	IP string `json:"ip,omitempty"`
	// Port and Protocol (tcp, udp, icmp) are set for packets the rules
	// refused (rather than the egress proxy or the DNS server).
	Port     int    `json:"port,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	// Reason says which rule refused it.
	Reason string `json:"reason"`
}

// Target names what was refused: the name asked for, or the protocol and
// address of a refused packet ("tcp to 10.0.0.5:5432"), or the address.
func (d NetworkDenial) Target() string {
	switch {
	case d.Host != "":
		return d.Host
	case d.Protocol != "" && d.Port != 0:
		return d.Protocol + " to " + net.JoinHostPort(d.IP, strconv.Itoa(d.Port))
	case d.Protocol != "":
		return d.Protocol + " to " + d.IP
	default:
		return d.IP
	}
}

// Sandbox states.
const (
	StateRunning = "running"
	StateKilled  = "killed"
)

// CreateSandboxRequest creates a sandbox. Every field is optional.
type CreateSandboxRequest struct {
	// Template names a stored template (YAML in a templates directory).
	Template string `json:"template,omitempty"`
	// TemplateSpec is an inline template; it wins over Template.
	TemplateSpec *Template `json:"template_spec,omitempty"`
	// Backend chooses the isolation backend; "" means the configured default.
	Backend  string            `json:"backend,omitempty"`
	Envs     map[string]string `json:"envs,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// TimeoutSeconds is the sandbox's lifetime: it is killed when it passes.
	// 0 means the configured default.
	TimeoutSeconds int `json:"timeout,omitempty"`
	// WorkspaceID attaches a named workspace (created when missing; kept after
	// kill). "" gives an anonymous workspace, removed on kill.
	WorkspaceID string `json:"workspace_id,omitempty"`
	// Network overrides the configured default network policy.
	Network *NetworkPolicy `json:"network,omitempty"`
	// User and Workdir override the configured defaults (a template wins over both).
	User    string `json:"user,omitempty"`
	Workdir string `json:"workdir,omitempty"`
	// ScannerMode is the code scanner's mode for this sandbox: off, warn or
	// block. It can only make the configured mode (and the template's)
	// stricter; "" keeps it.
	ScannerMode string `json:"scanner_mode,omitempty"`
	// Engine runs the sandbox's code contexts (see Engines); "" = the
	// configured engine. A template's engine wins.
	Engine string `json:"engine,omitempty"`
	// Resource limits (see Limits); 0 means the template's, else the
	// configured default. A backend that cannot enforce one refuses the
	// sandbox (ErrUnsupported) rather than ignoring it.
	MemoryMB       int   `json:"memory_mb,omitempty"`
	CPUCount       int   `json:"cpu_count,omitempty"`
	PidsLimit      int   `json:"pids_limit,omitempty"`
	MaxOpenFiles   int   `json:"max_open_files,omitempty"`
	MaxOutputBytes int64 `json:"max_output_bytes,omitempty"`
	DiskQuotaMB    int   `json:"disk_quota_mb,omitempty"`
}

// Limits are the resource limits a sandbox runs with (0 = none or the
// backend's own default).
type Limits struct {
	// MemoryMB bounds the sandbox's memory (and swap): past it the kernel
	// OOM-kills a process, and a cell whose kernel died reports
	// DeadKernelError.
	MemoryMB int `json:"memory_mb,omitempty"`
	// CPUCount is a CPU quota of that many CPUs.
	CPUCount int `json:"cpu_count,omitempty"`
	// PidsLimit bounds the sandbox's tasks (processes and threads).
	PidsLimit int `json:"pids_limit,omitempty"`
	// MaxOpenFiles is the open-file limit (RLIMIT_NOFILE) of the sandbox's
	// processes.
	MaxOpenFiles int `json:"max_open_files,omitempty"`
	// MaxOutputBytes bounds the stdout and stderr one execution returns; the
	// rest is dropped and the Execution is marked Truncated.
	MaxOutputBytes int64 `json:"max_output_bytes,omitempty"`
	// DiskQuotaMB bounds the workspace's size: past it writes fail with
	// ENOSPC.
	DiskQuotaMB int `json:"disk_quota_mb,omitempty"`
}

// SandboxInfo describes a sandbox.
type SandboxInfo struct {
	SandboxID string `json:"sandbox_id"`
	// Owner is the id of the API key that created the sandbox ("" without keys).
	Owner      string            `json:"owner,omitempty"`
	TemplateID string            `json:"template_id,omitempty"`
	Backend    string            `json:"backend"`
	State      string            `json:"state"`
	User       string            `json:"user"`
	Workdir    string            `json:"workdir"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// WorkspaceID is the attached workspace; Anonymous workspaces are removed on kill.
	WorkspaceID string `json:"workspace_id"`
	Anonymous   bool   `json:"anonymous_workspace,omitempty"`
	// WorkspacePath is the workspace directory on the host.
	WorkspacePath string        `json:"workspace_path"`
	Network       NetworkPolicy `json:"network"`
	// ScannerMode is the code scanner's mode for this sandbox's cells.
	ScannerMode string `json:"scanner_mode,omitempty"`
	// Engine runs the sandbox's code contexts (see Engines).
	Engine    string    `json:"engine,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// EndAt is the deadline: the sandbox is killed when it passes.
	EndAt time.Time `json:"end_at"`
	// Limits are the resource limits in force.
	Limits Limits `json:"limits"`
	// Warnings say what this sandbox lacks on this host that sandboxes
	// usually have (local without a private mount namespace: code finds
	// its workspace at WorkspacePath, not at Workdir).
	Warnings []string `json:"warnings,omitempty"`
}

// SetTimeoutRequest moves a sandbox's deadline to now + TimeoutSeconds.
type SetTimeoutRequest struct {
	TimeoutSeconds int `json:"timeout"`
}

// Template describes a sandbox environment, with the seed's fields. Only ID is
// required; the zero value of every other field means "the default".
type Template struct {
	ID          string            `json:"id" yaml:"id"`
	Name        string            `json:"name,omitempty" yaml:"name"`
	Description string            `json:"description,omitempty" yaml:"description"`
	Image       string            `json:"image,omitempty" yaml:"image"`
	Env         map[string]string `json:"env,omitempty" yaml:"env"`
	// Files are written into the workdir (relative paths) when a sandbox starts.
	Files    map[string]string `json:"files,omitempty" yaml:"files"`
	User     string            `json:"user,omitempty" yaml:"user"`
	Workdir  string            `json:"workdir,omitempty" yaml:"workdir"`
	Cmd      string            `json:"cmd,omitempty" yaml:"cmd"`
	StartCmd string            `json:"start_cmd,omitempty" yaml:"start_cmd"`
	ReadyCmd string            `json:"ready_cmd,omitempty" yaml:"ready_cmd"`
	// ReadyTimeout is in seconds.
	ReadyTimeout int `json:"ready_timeout,omitempty" yaml:"ready_timeout"`
	CPUCount     int `json:"cpu_count,omitempty" yaml:"cpu_count"`
	MemoryMB     int `json:"memory_mb,omitempty" yaml:"memory_mb"`
	// PidsLimit, MaxOpenFiles, MaxOutputBytes and DiskQuotaMB are limits as in
	// Limits; a template's limits win over a create request's.
	PidsLimit      int               `json:"pids_limit,omitempty" yaml:"pids_limit"`
	MaxOpenFiles   int               `json:"max_open_files,omitempty" yaml:"max_open_files"`
	MaxOutputBytes int64             `json:"max_output_bytes,omitempty" yaml:"max_output_bytes"`
	DiskQuotaMB    int               `json:"disk_quota_mb,omitempty" yaml:"disk_quota_mb"`
	RunCmds        []string          `json:"run_cmds,omitempty" yaml:"run_cmds"`
	Aliases        []string          `json:"aliases,omitempty" yaml:"aliases"`
	Metadata       map[string]string `json:"metadata,omitempty" yaml:"metadata"`
	// ScannerMode (off, warn, block) makes the code scanner stricter for
	// sandboxes of this template; it never loosens the configured mode.
	ScannerMode string `json:"scanner_mode,omitempty" yaml:"scanner_mode"`
	// Engine runs the code contexts of this template's sandboxes (see
	// Engines); "" = the configured engine.
	Engine string `json:"engine,omitempty" yaml:"engine"`
	// Preload lists the Python modules (dotted names) every fresh engine
	// imports before its first cell; none = the configured list.
	Preload []string `json:"preload,omitempty" yaml:"preload"`
}

// Dataset is one entry of the dataset registry.
type Dataset struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	// Format is csv, tsv, parquet, json, excel, feather, text, dir or unknown.
	Format string `json:"format"`
	// SHA256 is the hex digest of the file; for a directory, of its sorted
	// (relative path, file digest) listing.
	SHA256       string    `json:"sha256"`
	Size         int64     `json:"size"`
	IsDir        bool      `json:"is_dir,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	// Owner is the API key id that registered the dataset; only it and admin
	// keys see and prepare it, unless an admin made it Public (every key).
	Owner  string `json:"owner,omitempty"`
	Public bool   `json:"public,omitempty"`
}

// Workspace describes a workspace directory.
type Workspace struct {
	ID   string `json:"id"`
	Path string `json:"path"`
	// Anonymous workspaces belong to one sandbox and are removed when it is killed.
	Anonymous bool      `json:"anonymous,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Owner is the API key id that created the workspace; only it, the keys
	// in Grants and admin keys may use it ("" on a daemon without keys).
	Owner  string   `json:"owner,omitempty"`
	Grants []string `json:"grants,omitempty"`
}

// Event is one lifecycle or audit-worthy event (sandbox created, killed,
// timed out, policy changed, …), queryable per sandbox and globally.
type Event struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	SandboxID string            `json:"sandbox_id,omitempty"`
	Time      time.Time         `json:"time"`
	Data      map[string]string `json:"data,omitempty"`
}

// Lifecycle event types.
const (
	EventSandboxCreated   = "sandbox.created"
	EventSandboxKilled    = "sandbox.killed"
	EventSandboxExpired   = "sandbox.timeout"
	EventSandboxExited    = "sandbox.exited"
	EventSandboxTimeout   = "sandbox.timeout_set"
	EventSandboxRecovered = "sandbox.recovered"
	EventSandboxReaped    = "sandbox.reaped"
	// EventNetworkDenied: the sandbox's network policy refused a connection
	// or lookup (Data: host, ip, reason; rate-limited per sandbox, with
	// suppressed_before counting those left out).
	EventSandboxNetworkDenied = "network.denied"
	// EventSandboxNetworkSet: the sandbox's own network policy was changed
	// (Data: network, whitelist).
	EventSandboxNetworkSet = "sandbox.network_set"
	// EventCodeBlocked: the code scanner, in block mode, refused a cell. Data:
	// findings (count), types (the blocking categories), code_sha256, code_size.
	EventCodeBlocked = "sandbox.code_blocked"
)
