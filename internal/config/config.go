// Package config holds ds-sandbox's one Config and how it is assembled:
// defaults → file (YAML or JSON, strict) → environment (the seed's SANDBOX_*
// variables plus ours) → flags (the CLI's job) → Resolve → Validate, whose
// messages name the offending key.
//
// Field names and file keys follow the seed's SandboxConfig where the setting
// still means something, so a seed config file mostly loads unchanged; the
// seed's keys that no longer exist are reported by name (with a hint where one
// helps) instead of being silently ignored.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"go.yaml.in/yaml/v3"
)

// backends are the names DefaultBackend accepts. Whether one is available on
// this host is decided where backends are built, not here; "auto" is
// resolved there too (the manager picks the strongest available backend).
var backends = []string{AutoBackend, "local", "oci", "docker", "kubernetes"}

// AutoBackend is the DefaultBackend that lets the manager choose the
// strongest backend this host can run (oci, then docker, then local).
const AutoBackend = "auto"

// datasetStrategies are the values DefaultDatasetStrategy accepts.
var datasetStrategies = []string{"copy", "link"}

// Config is the configuration of the daemon, the CLI and embedded mode.
type Config struct {
	// DefaultBackend is the isolation backend used when a request names none:
	// auto (the default: the strongest one this host can run, resolved once
	// when the manager starts), local, oci, docker or kubernetes.
	DefaultBackend string `yaml:"default_backend" json:"default_backend"`
	// DefaultUser and DefaultWorkdir apply when neither the request nor its
	// template sets them.
	DefaultUser    string `yaml:"default_user" json:"default_user"`
	DefaultWorkdir string `yaml:"default_workdir" json:"default_workdir"`
	// DefaultWorkspaceID, when set, is the named workspace of sandboxes that
	// name none (so consecutive sandboxes share files); "" gives each sandbox
	// an anonymous workspace, removed when it is killed.
	DefaultWorkspaceID string `yaml:"default_workspace_id" json:"default_workspace_id"`
	// DefaultTimeoutSec is the per-execution timeout (one run_code or command)
	// when the request gives none, as in the seed: 3600, range 1..86400.
	DefaultTimeoutSec int `yaml:"default_timeout_sec" json:"default_timeout_sec"`
	// SandboxTimeoutSec is a sandbox's lifetime when the create request gives
	// none: 3600, range 1..86400. (E2B clients always send their own, 300 by
	// default; the seed's sandboxes never expired, so ours default to an hour.)
	SandboxTimeoutSec int `yaml:"sandbox_timeout_sec" json:"sandbox_timeout_sec"`
	// DefaultMemoryMB is the memory limit when a request gives none (0 = no
	// limit; a backend that cannot enforce a limit refuses a non-zero one):
	// range 512..65536.
	DefaultMemoryMB int `yaml:"default_memory_mb" json:"default_memory_mb"`
	// DefaultCPUCount, DefaultPidsLimit, DefaultMaxOpenFiles and
	// DefaultDiskQuotaMB are the other limits when neither the template nor
	// the request sets one (0 = none, or the backend's own default for pids
	// and open files; see api.Limits and docs/SECURITY.md). A backend that
	// cannot enforce a non-zero one refuses the sandbox.
	DefaultCPUCount     int `yaml:"default_cpu_count" json:"default_cpu_count"`
	DefaultPidsLimit    int `yaml:"default_pids_limit" json:"default_pids_limit"`
	DefaultMaxOpenFiles int `yaml:"default_max_open_files" json:"default_max_open_files"`
	DefaultDiskQuotaMB  int `yaml:"default_disk_quota_mb" json:"default_disk_quota_mb"`
	// MaxOutputBytes bounds the stdout and stderr of one execution when the
	// template and request set none: 16 MiB.
	MaxOutputBytes int64 `yaml:"max_output_bytes" json:"max_output_bytes"`
	// MaxSandboxTimeoutSec caps a sandbox's lifetime: a create request or a
	// set-timeout asking for more is refused. Default 86400.
	MaxSandboxTimeoutSec int `yaml:"max_sandbox_timeout_sec" json:"max_sandbox_timeout_sec"`
	// EnableGPU is parsed for compatibility; GPU requests are refused
	// (api.ErrUnsupported) where sandboxes are created.
	EnableGPU bool `yaml:"enable_gpu_by_default" json:"enable_gpu_by_default"`
	// AllowInternet false forces the effective policy to deny (see Network).
	AllowInternet bool `yaml:"allow_internet" json:"allow_internet"`
	// DefaultNetworkPolicy is allow, deny or whitelist.
	DefaultNetworkPolicy string `yaml:"default_network_policy" json:"default_network_policy"`
	// NetworkWhitelist lists domains, "*.domain" wildcards, IPs and CIDRs;
	// used only under the whitelist policy.
	NetworkWhitelist []string `yaml:"network_whitelist" json:"network_whitelist"`
	// StateDir holds workspaces, datasets, templates and caches. Default:
	// /var/lib/ds-sandbox for root (even when XDG_DATA_HOME is set, which sudo
	// may have carried over from a user), otherwise $XDG_DATA_HOME/ds-sandbox or
	// ~/.local/share/ds-sandbox.
	StateDir string `yaml:"state_dir" json:"state_dir"`
	// TemplatesDir is the system template directory, searched after
	// <state_dir>/templates.
	TemplatesDir string `yaml:"templates_dir" json:"templates_dir"`
	// WorkspaceBaseDir defaults to <state_dir>/workspaces (see Resolve).
	WorkspaceBaseDir string `yaml:"workspace_base_dir" json:"workspace_base_dir"`
	// DatasetRegistryDir defaults to <state_dir>/datasets (see Resolve).
	DatasetRegistryDir string `yaml:"dataset_registry_dir" json:"dataset_registry_dir"`
	// DefaultDatasetStrategy is copy or link.
	DefaultDatasetStrategy string `yaml:"default_dataset_strategy" json:"default_dataset_strategy"`
	// Python is the interpreter that runs the code engines: an absolute
	// path, or a bare name looked up in PATH.
	Python string `yaml:"python" json:"python"`
	// Engine runs the code contexts of sandboxes whose template names none:
	// ipykernel (the default) or lean (see api.Engines).
	Engine string `yaml:"engine" json:"engine"`
	// Preload lists the Python modules every fresh engine imports before its
	// first cell, for templates that list none; empty = the engine's own
	// default list (none for ipykernel).
	Preload []string `yaml:"preload" json:"preload"`
	// OCIRuntime is the OCI runtime binary of the oci backend: runc (the
	// default), crun, or runsc for gVisor; a name looked up in PATH or a path.
	OCIRuntime string `yaml:"oci_runtime" json:"oci_runtime"`
	// NetworkPool is the IPv4 prefix (/24 or wider) the veths of allow and
	// whitelist sandboxes take their /30s from; default 10.213.0.0/16. It
	// must overlap no network of the host.
	NetworkPool string `yaml:"network_pool" json:"network_pool"`
	// NetworkDNS is the DNS server (ip or ip:port) that resolves names for
	// sandboxes (their DNS answers and the egress proxy); default the
	// host's resolver (/etc/resolv.conf).
	NetworkDNS string `yaml:"network_dns" json:"network_dns"`
	// AgentPath is the in-sandbox agent binary; "" means this executable.
	AgentPath string `yaml:"agent_path" json:"agent_path"`
	// Listen is the HTTP API's host:port. The default is loopback only, since
	// the API runs code.
	Listen string `yaml:"listen" json:"listen"`
	// EnableAuditLog and AuditLogPath control the audit log; the path defaults
	// to <state_dir>/audit.jsonl (see Resolve).
	EnableAuditLog bool   `yaml:"enable_audit_log" json:"enable_audit_log"`
	AuditLogPath   string `yaml:"audit_log_path" json:"audit_log_path"`
	// AuditLogCode records the executed code itself in the audit log (its
	// sha256 and size are always recorded).
	AuditLogCode bool `yaml:"audit_log_code" json:"audit_log_code"`
	// AuditMaxMB and AuditBackups rotate the audit log: past AuditMaxMB it is
	// renamed to .1 (older ones shift up, AuditBackups are kept).
	AuditMaxMB   int `yaml:"audit_max_mb" json:"audit_max_mb"`
	AuditBackups int `yaml:"audit_backups" json:"audit_backups"`
	// EnableMetrics exposes Prometheus metrics.
	EnableMetrics bool `yaml:"enable_metrics" json:"enable_metrics"`

	// APIKeys are the keys the HTTP API accepts. With none, the API is open,
	// which the daemon only allows on a loopback address.
	APIKeys []APIKey `yaml:"api_keys" json:"api_keys"`
	// AllowedBackends lists the backends API keys may use (empty = every
	// backend of this build). A key's own Backends narrows it further. The
	// local backend runs code on the host unisolated: a non-admin key gets
	// it only when its own backends list names it.
	AllowedBackends []string `yaml:"allowed_backends" json:"allowed_backends"`
	// MaxSandboxes bounds the sandboxes of the whole daemon: running ones,
	// warm pools' ready ones and creates in flight (0 = no bound).
	MaxSandboxes int `yaml:"max_sandboxes" json:"max_sandboxes"`
	// MaxSandboxesPerKey bounds running sandboxes per key (0 = no bound).
	MaxSandboxesPerKey int `yaml:"max_sandboxes_per_key" json:"max_sandboxes_per_key"`
	// CreatesPerMinute is the per-key rate of sandbox creation (burst = the
	// same number); 0 = no limit.
	CreatesPerMinute int `yaml:"creates_per_minute" json:"creates_per_minute"`
	// MaxStreamsPerKey bounds a key's open streams (executions, watches,
	// command streams, downloads); 0 = no bound.
	MaxStreamsPerKey int `yaml:"max_streams_per_key" json:"max_streams_per_key"`
	// MaxConcurrentStarts bounds the sandboxes starting at once (the
	// backend's create and the default kernel's boot); 0 = the number of
	// CPUs, at least 2. StartQueueMax bounds the creates waiting for a start
	// slot (more are refused at once: HTTP 429 with Retry-After), and
	// StartQueueTimeoutSec how long one waits (then 429 too).
	MaxConcurrentStarts  int `yaml:"max_concurrent_starts" json:"max_concurrent_starts"`
	StartQueueMax        int `yaml:"start_queue_max" json:"start_queue_max"`
	StartQueueTimeoutSec int `yaml:"start_queue_timeout_sec" json:"start_queue_timeout_sec"`
	// MaxBodyMB bounds JSON request bodies; MaxUploadMB file uploads (0 = no
	// bound).
	MaxBodyMB   int `yaml:"max_body_mb" json:"max_body_mb"`
	MaxUploadMB int `yaml:"max_upload_mb" json:"max_upload_mb"`
	// ScannerMode is the code scanner's mode: off, warn (the default: findings
	// are attached to the Execution) or block (a critical finding means the
	// cell is not run). Templates, create requests and single executions can
	// only make it stricter.
	ScannerMode string `yaml:"scanner_mode" json:"scanner_mode"`
	// KernelStartTimeoutSec bounds the start of a code context's kernel
	// (process start → ready): 60, range 5..3600. A loaded machine may need
	// more.
	KernelStartTimeoutSec int `yaml:"kernel_start_timeout_sec" json:"kernel_start_timeout_sec"`
	// CORSOrigins lists origins allowed to call the API from a browser; CORS
	// is off when empty.
	CORSOrigins []string `yaml:"cors_origins" json:"cors_origins"`
	// Pools are warm pools of ready sandboxes (see Pool).
	Pools []Pool `yaml:"pools" json:"pools"`

	// derived remembers what Resolve filled in, so a later Resolve (after a
	// flag changed StateDir) re-derives those fields but not ones set since.
	derived struct{ workspaces, datasets, audit string }
}

// APIKey is one accepted key. ID names it in audit logs and as the owner of
// its sandboxes; the key itself is never logged.
type APIKey struct {
	ID    string `yaml:"id" json:"id"`
	Key   string `yaml:"key" json:"key"`
	Admin bool   `yaml:"admin" json:"admin"`
	// Backends, when set, are the only backends this key may use (within
	// allowed_backends). A non-admin key may use local only when listed here.
	Backends []string `yaml:"backends" json:"backends"`
	// Templates, when set, are the only templates this key may create
	// sandboxes from ("" for the default; "inline" allows inline templates).
	Templates []string `yaml:"templates" json:"templates"`
	// Metrics lets a non-admin key read /metrics (admins always may).
	Metrics bool `yaml:"metrics" json:"metrics"`
}

// Default returns the built-in defaults for this user, resolved (see Resolve).
func Default() Config {
	home, _ := os.UserHomeDir()
	c := defaults(os.Getenv, os.Geteuid(), home)
	c.Resolve()
	return c
}

// defaults returns the unresolved defaults; its arguments make the state
// directory rule testable.
func defaults(getenv func(string) string, euid int, home string) Config {
	return Config{
		DefaultBackend:         AutoBackend,
		DefaultUser:            "user",
		DefaultWorkdir:         "/home/user",
		DefaultTimeoutSec:      3600,
		SandboxTimeoutSec:      3600,
		DefaultMemoryMB:        0,
		MaxOutputBytes:         16 << 20,
		MaxSandboxTimeoutSec:   86400,
		AllowInternet:          true,
		DefaultNetworkPolicy:   api.NetworkAllow,
		NetworkWhitelist:       []string{},
		StateDir:               defaultStateDir(getenv, euid, home),
		TemplatesDir:           "/etc/ds-sandbox/templates",
		DefaultDatasetStrategy: "copy",
		Python:                 "/usr/bin/python3",
		Engine:                 api.EngineIPykernel,
		Listen:                 "127.0.0.1:8000",
		EnableAuditLog:         true,
		AuditMaxMB:             100,
		AuditBackups:           5,
		EnableMetrics:          true,
		MaxSandboxesPerKey:     50,
		CreatesPerMinute:       120,
		MaxStreamsPerKey:       256,
		StartQueueMax:          1000,
		StartQueueTimeoutSec:   120,
		MaxBodyMB:              16,
		MaxUploadMB:            0,
		ScannerMode:            api.ScannerWarn,
		KernelStartTimeoutSec:  60,
	}
}

func defaultStateDir(getenv func(string) string, euid int, home string) string {
	if euid == 0 {
		return "/var/lib/ds-sandbox"
	}
	if x := getenv("XDG_DATA_HOME"); filepath.IsAbs(x) { // the spec says ignore a relative one
		return filepath.Join(x, "ds-sandbox")
	}
	if home != "" {
		return filepath.Join(home, ".local", "share", "ds-sandbox")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ds-sandbox-%d", euid))
}

// Resolve fills the paths derived from StateDir (WorkspaceBaseDir,
// DatasetRegistryDir, AuditLogPath) when they are empty or still hold the value
// an earlier Resolve derived. Load calls it last; a flag layer that changes
// StateDir calls it again.
func (c *Config) Resolve() {
	derive := func(field *string, last *string, name string) {
		if *field == "" || *field == *last {
			*field = filepath.Join(c.StateDir, name)
			*last = *field
		}
	}
	derive(&c.WorkspaceBaseDir, &c.derived.workspaces, "workspaces")
	derive(&c.DatasetRegistryDir, &c.derived.datasets, "datasets")
	derive(&c.AuditLogPath, &c.derived.audit, "audit.jsonl")
}

// TemplateDirs returns the template search path: <state_dir>/templates, then
// TemplatesDir.
func (c Config) TemplateDirs() []string {
	return []string{filepath.Join(c.StateDir, "templates"), c.TemplatesDir}
}

// Network returns the effective default network policy: deny when
// AllowInternet is false (the seed's meaning), otherwise DefaultNetworkPolicy,
// carrying the whitelist entries only under the whitelist policy.
func (c Config) Network() api.NetworkPolicy {
	switch {
	case !c.AllowInternet:
		return api.NetworkPolicy{Policy: api.NetworkDeny}
	case c.DefaultNetworkPolicy == api.NetworkWhitelist:
		return api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: slices.Clone(c.NetworkWhitelist)}
	}
	return api.NetworkPolicy{Policy: c.DefaultNetworkPolicy}
}

// Load assembles a Config from the defaults, the file at path ("" for none) and
// the process environment, then resolves derived paths. It does not validate:
// apply flags, then call Validate. Errors: api.ErrNotFound for a missing file,
// api.ErrInvalid for a malformed one or a bad environment value (each naming
// the key or variable).
func Load(path string) (Config, error) {
	home, _ := os.UserHomeDir()
	return load(path, os.Getenv, os.Geteuid(), home)
}

func load(path string, getenv func(string) string, euid int, home string) (Config, error) {
	c := defaults(getenv, euid, home)
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			return Config{}, err
		}
	}
	if err := c.ApplyEnv(getenv); err != nil {
		return Config{}, err
	}
	c.Resolve()
	return c, nil
}

// LoadFile merges the file at path into c: keys present in the file replace
// c's values. .yaml and .yml files are YAML, .json files JSON; both are strict,
// so an unknown key is an error naming the key and the file.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return api.Errorf(api.ErrNotFound, "config file %s", path)
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		err = decodeYAML(data, c)
	case ".json":
		err = decodeJSON(data, c)
	default:
		return api.Errorf(api.ErrInvalid, "config file %s: unsupported extension %q: use .yaml, .yml or .json", path, ext)
	}
	if err != nil {
		return api.Errorf(api.ErrInvalid, "config file %s: %v", path, err)
	}
	return nil
}

func decodeYAML(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); errors.Is(err, io.EOF) {
		return nil // an empty file changes nothing
	} else if err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
		}
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = yamlKeyMessage(m)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// yamlKeyMessage rewrites "line 3: field foo not found in type config.Config"
// as `line 3: unknown key "foo"` plus a hint for the seed's retired keys.
func yamlKeyMessage(m string) string {
	line, rest, ok := strings.Cut(m, ": field ")
	if !ok {
		return m
	}
	key, _, ok := strings.Cut(rest, " not found in type ")
	if !ok {
		return m
	}
	return line + ": " + unknownKey(key)
}

func unknownKey(key string) string {
	msg := fmt.Sprintf("unknown key %q", key)
	if hint, ok := retiredKeys[key]; ok {
		msg += ": " + hint
	}
	return msg
}

// retiredKeys are seed SandboxConfig keys with no meaning here.
var retiredKeys = map[string]string{
	"api_host":                        `use listen: "host:port"`,
	"api_port":                        `use listen: "host:port"`,
	"api_endpoint":                    "remote mode is chosen by the client, not the server config",
	"default_isolation":               "isolation follows default_backend",
	"use_jupyter":                     "not needed: code runs in a Jupyter kernel",
	"workspace_retention_days":        "a seed setting that is not supported",
	"paused_workspaces_base_dir":      "a seed setting that is not supported",
	"paused_workspace_retention_days": "a seed setting that is not supported",
	"firecracker_pool_size":           "a seed setting that is not supported",
	"firecracker_memory_mb":           "a seed setting that is not supported",
	"storage_mounts":                  "a seed setting that is not supported",
	"storage_base_dir":                "a seed setting that is not supported",
}

func decodeJSON(data []byte, c *Config) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(c)
	if err == nil {
		if dec.More() {
			return errors.New("unexpected data after the JSON object")
		}
		return nil
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("line %d: %v", lineOf(data, se.Offset), se)
	case errors.As(err, &te):
		return fmt.Errorf("line %d: key %q: want %s, not a JSON %s", lineOf(data, te.Offset), te.Field, te.Type, te.Value)
	}
	if key, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return errors.New(unknownKey(strings.Trim(key, `"`)))
	}
	return err
}

func lineOf(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}
