package config

import (
	"errors"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// envVar binds one environment variable to the field it sets.
type envVar struct {
	name string
	set  func(c *Config, v string) error
}

// envVars are read by ApplyEnv, in this order. The first ten are the seed's.
var envVars = []envVar{
	{"SANDBOX_DEFAULT_BACKEND", str(func(c *Config) *string { return &c.DefaultBackend })},
	{"SANDBOX_WORKSPACE_BASE", str(func(c *Config) *string { return &c.WorkspaceBaseDir })},
	{"SANDBOX_DATASET_DIR", str(func(c *Config) *string { return &c.DatasetRegistryDir })},
	{"SANDBOX_ALLOW_INTERNET", boolean(func(c *Config) *bool { return &c.AllowInternet })},
	{"SANDBOX_NETWORK_POLICY", str(func(c *Config) *string { return &c.DefaultNetworkPolicy })},
	{"SANDBOX_NETWORK_WHITELIST", func(c *Config, v string) error {
		c.NetworkWhitelist = SplitList(v)
		return nil
	}},
	{"SANDBOX_TIMEOUT", integer(func(c *Config) *int { return &c.DefaultTimeoutSec })},
	{"SANDBOX_MEMORY_MB", integer(func(c *Config) *int { return &c.DefaultMemoryMB })},
	{"SANDBOX_ENABLE_GPU", boolean(func(c *Config) *bool { return &c.EnableGPU })},
	{"SANDBOX_LIFETIME", integer(func(c *Config) *int { return &c.SandboxTimeoutSec })},
	{"SANDBOX_CPU_COUNT", integer(func(c *Config) *int { return &c.DefaultCPUCount })},
	{"SANDBOX_PIDS_LIMIT", integer(func(c *Config) *int { return &c.DefaultPidsLimit })},
	{"SANDBOX_MAX_OPEN_FILES", integer(func(c *Config) *int { return &c.DefaultMaxOpenFiles })},
	{"SANDBOX_DISK_QUOTA_MB", integer(func(c *Config) *int { return &c.DefaultDiskQuotaMB })},
	{"SANDBOX_MAX_OUTPUT_BYTES", func(c *Config, v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return errors.New("want a whole number")
		}
		c.MaxOutputBytes = n
		return nil
	}},
	{"SANDBOX_MAX_LIFETIME", integer(func(c *Config) *int { return &c.MaxSandboxTimeoutSec })},
	{"SANDBOX_STATE_DIR", str(func(c *Config) *string { return &c.StateDir })},
	{"SANDBOX_TEMPLATES_DIR", str(func(c *Config) *string { return &c.TemplatesDir })},
	{"SANDBOX_DEFAULT_USER", str(func(c *Config) *string { return &c.DefaultUser })},
	{"SANDBOX_DEFAULT_WORKDIR", str(func(c *Config) *string { return &c.DefaultWorkdir })},
	{"SANDBOX_DEFAULT_WORKSPACE", str(func(c *Config) *string { return &c.DefaultWorkspaceID })},
	{"SANDBOX_PYTHON", str(func(c *Config) *string { return &c.Python })},
	{"SANDBOX_AGENT_PATH", str(func(c *Config) *string { return &c.AgentPath })},
	{"SANDBOX_OCI_RUNTIME", str(func(c *Config) *string { return &c.OCIRuntime })},
	{"SANDBOX_NETWORK_POOL", str(func(c *Config) *string { return &c.NetworkPool })},
	{"SANDBOX_NETWORK_DNS", str(func(c *Config) *string { return &c.NetworkDNS })},
	{"SANDBOX_LISTEN", str(func(c *Config) *string { return &c.Listen })},
	{"SANDBOX_SCANNER_MODE", str(func(c *Config) *string { return &c.ScannerMode })},
	{"SANDBOX_KERNEL_START_TIMEOUT", integer(func(c *Config) *int { return &c.KernelStartTimeoutSec })},
	{"SANDBOX_ENGINE", str(func(c *Config) *string { return &c.Engine })},
	{"SANDBOX_PRELOAD", func(c *Config, v string) error {
		c.Preload = SplitList(v)
		return nil
	}},
	{"DS_SANDBOX_API_KEY", func(c *Config, v string) error {
		c.APIKeys = append(c.APIKeys, APIKey{ID: "env", Key: v, Admin: true})
		return nil
	}},
}

// EnvVars returns the names of the environment variables ApplyEnv reads.
func EnvVars() []string {
	names := make([]string, len(envVars))
	for i, v := range envVars {
		names[i] = v.name
	}
	return names
}

// ApplyEnv overrides c with the SANDBOX_* variables that getenv returns
// non-empty (see EnvVars):
//
//	SANDBOX_DEFAULT_BACKEND   default_backend
//	SANDBOX_WORKSPACE_BASE    workspace_base_dir
//	SANDBOX_DATASET_DIR       dataset_registry_dir
//	SANDBOX_ALLOW_INTERNET    allow_internet (true/false/1/0/yes/no)
//	SANDBOX_NETWORK_POLICY    default_network_policy
//	SANDBOX_NETWORK_WHITELIST network_whitelist (comma-separated)
//	SANDBOX_TIMEOUT           default_timeout_sec (per execution)
//	SANDBOX_MEMORY_MB         default_memory_mb
//	SANDBOX_ENABLE_GPU        enable_gpu_by_default
//	SANDBOX_LIFETIME          sandbox_timeout_sec (sandbox lifetime)
//	SANDBOX_CPU_COUNT         default_cpu_count
//	SANDBOX_PIDS_LIMIT        default_pids_limit
//	SANDBOX_MAX_OPEN_FILES    default_max_open_files
//	SANDBOX_DISK_QUOTA_MB     default_disk_quota_mb
//	SANDBOX_MAX_OUTPUT_BYTES  max_output_bytes
//	SANDBOX_MAX_LIFETIME      max_sandbox_timeout_sec
//	SANDBOX_STATE_DIR         state_dir
//	SANDBOX_TEMPLATES_DIR     templates_dir
//	SANDBOX_DEFAULT_USER      default_user
//	SANDBOX_DEFAULT_WORKDIR   default_workdir
//	SANDBOX_DEFAULT_WORKSPACE default_workspace_id
//	SANDBOX_PYTHON            python
//	SANDBOX_AGENT_PATH        agent_path
//	SANDBOX_OCI_RUNTIME       oci_runtime
//	SANDBOX_NETWORK_POOL      network_pool
//	SANDBOX_NETWORK_DNS       network_dns
//	SANDBOX_LISTEN            listen
//	SANDBOX_SCANNER_MODE      scanner_mode (off, warn, block)
//	SANDBOX_KERNEL_START_TIMEOUT kernel_start_timeout_sec
//	SANDBOX_ENGINE            engine (ipykernel, lean)
//	SANDBOX_PRELOAD           preload (comma-separated modules)
//	DS_SANDBOX_API_KEY        an admin API key with id "env"
//
// Values that cannot be parsed are errors naming the variable and the value
// (all of them, joined, wrapping api.ErrInvalid); the others are still applied.
// Ranges and choices are checked by Validate.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	var errs []error
	for _, v := range envVars {
		val := getenv(v.name)
		if val == "" {
			continue
		}
		if err := v.set(c, val); err != nil {
			errs = append(errs, api.Errorf(api.ErrInvalid, "environment variable %s=%q: %v", v.name, val, err))
		}
	}
	return errors.Join(errs...)
}

// SplitList splits a comma-separated list, trimming spaces and dropping empty
// items. It never returns nil.
func SplitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// ParseBool accepts true/false, 1/0 and yes/no, in any case and with
// surrounding spaces.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, errors.New("want true, false, 1, 0, yes or no")
}

func str(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = strings.TrimSpace(v)
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := ParseBool(v)
		if err == nil {
			*field(c) = b
		}
		return err
	}
}

func integer(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("want a whole number")
		}
		*field(c) = n
		return nil
	}
}
