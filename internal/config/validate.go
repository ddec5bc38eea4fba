package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/netpolicy"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// Validate checks every field and returns all problems joined (errors.Join),
// each naming its key and wrapping api.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, api.Errorf(api.ErrInvalid, "%s: %s", key, fmt.Sprintf(format, args...)))
	}
	wrap := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	oneOf := func(key, v string, valid []string) {
		if !slices.Contains(valid, v) {
			fail(key, "%q is not one of %s", v, strings.Join(valid, ", "))
		}
	}
	inRange := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			fail(key, "%d is out of range %d..%d", v, lo, hi)
		}
	}
	absPath := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			fail(key, "is empty")
		case p != "" && !filepath.IsAbs(p):
			fail(key, "%q is not an absolute path", p)
		}
	}

	oneOf("default_backend", c.DefaultBackend, backends)
	if c.NetworkPool != "" {
		if pf, err := netip.ParsePrefix(c.NetworkPool); err != nil || !pf.Addr().Is4() || pf.Bits() > 24 {
			fail("network_pool", "%q is not an IPv4 prefix of /24 or wider (such as 10.213.0.0/16)", c.NetworkPool)
		}
	}
	if c.NetworkDNS != "" {
		if _, err := DNSServer(c.NetworkDNS); err != nil {
			fail("network_dns", "%v", err)
		}
	}
	oneOf("scanner_mode", c.ScannerMode, api.ScannerModes)
	wrap("engine", template.ValidateEngine(c.Engine))
	wrap("preload", template.ValidatePreload(c.Preload))
	wrap("default_user", template.ValidateUser(c.DefaultUser))
	wrap("default_workdir", template.ValidateWorkdir(c.DefaultWorkdir))
	if c.DefaultWorkspaceID != "" {
		wrap("default_workspace_id", workspace.ValidateID(c.DefaultWorkspaceID))
	}
	inRange("default_timeout_sec", c.DefaultTimeoutSec, 1, 86400)
	inRange("sandbox_timeout_sec", c.SandboxTimeoutSec, 1, 86400)
	if c.DefaultMemoryMB != 0 {
		inRange("default_memory_mb", c.DefaultMemoryMB, 512, 65536)
	}
	inRange("max_sandbox_timeout_sec", c.MaxSandboxTimeoutSec, 1, 86400)
	inRange("kernel_start_timeout_sec", c.KernelStartTimeoutSec, 5, 3600)
	if c.SandboxTimeoutSec > c.MaxSandboxTimeoutSec {
		fail("sandbox_timeout_sec", "%d is longer than max_sandbox_timeout_sec %d", c.SandboxTimeoutSec, c.MaxSandboxTimeoutSec)
	}
	if c.MaxOutputBytes < template.MinOutputBytes || c.MaxOutputBytes > template.MaxOutputBytes {
		fail("max_output_bytes", "%d is out of range %d..%d", c.MaxOutputBytes, template.MinOutputBytes, template.MaxOutputBytes)
	}
	for _, l := range []struct {
		key    string
		v      int
		lo, hi int
	}{
		{"default_cpu_count", c.DefaultCPUCount, 1, template.MaxCPUCount},
		{"default_pids_limit", c.DefaultPidsLimit, template.MinPidsLimit, template.MaxPidsLimit},
		{"default_max_open_files", c.DefaultMaxOpenFiles, template.MinOpenFiles, template.MaxOpenFiles},
		{"default_disk_quota_mb", c.DefaultDiskQuotaMB, template.MinDiskQuotaMB, template.MaxDiskQuotaMB},
	} {
		if l.v != 0 {
			inRange(l.key, l.v, l.lo, l.hi)
		}
	}
	for k, v := range map[string]int{
		"max_sandboxes": c.MaxSandboxes, "max_sandboxes_per_key": c.MaxSandboxesPerKey, "creates_per_minute": c.CreatesPerMinute,
		"max_streams_per_key": c.MaxStreamsPerKey, "max_upload_mb": c.MaxUploadMB,
		"audit_backups": c.AuditBackups,
	} {
		inRange(k, v, 0, 1<<30)
	}
	inRange("max_concurrent_starts", c.MaxConcurrentStarts, 0, 4096)
	inRange("start_queue_max", c.StartQueueMax, 0, 1<<20)
	inRange("start_queue_timeout_sec", c.StartQueueTimeoutSec, 1, 86400)
	inRange("max_body_mb", c.MaxBodyMB, 1, 1024)
	inRange("audit_max_mb", c.AuditMaxMB, 1, 1<<20)
	seenKeys, seenSecrets, nonAdmin := map[string]bool{}, map[string]bool{}, false
	for i, k := range c.APIKeys {
		key := fmt.Sprintf("api_keys[%d]", i)
		switch {
		case k.ID == "" || len(k.ID) > 64 || strings.ContainsAny(k.ID, " \t\n\"'"):
			fail(key, "id %q must be 1-64 characters without spaces or quotes", k.ID)
		case len(k.Key) < 16:
			fail(key, "key of %q is shorter than 16 characters", k.ID)
		case seenKeys[k.ID]:
			fail(key, "id %q is used twice", k.ID)
		}
		seenKeys[k.ID] = true
		if seenSecrets[k.Key] {
			fail(key, "the key of %q is also another entry's: every key must be different (which would it be?)", k.ID)
		}
		seenSecrets[k.Key] = true
		nonAdmin = nonAdmin || !k.Admin
		for j, b := range k.Backends {
			oneOf(fmt.Sprintf("%s.backends[%d]", key, j), b, backends)
		}
		for j, t := range k.Templates {
			if t != "" && t != "inline" {
				wrap(fmt.Sprintf("%s.templates[%d]", key, j), template.ValidateID(t))
			}
		}
	}
	if nonAdmin && c.DefaultWorkspaceID != "" {
		fail("default_workspace_id", "%q would be one workspace for every API key's sandboxes; with non-admin api_keys leave it empty (each sandbox gets its own, or names one)", c.DefaultWorkspaceID)
	}
	for i, b := range c.AllowedBackends {
		oneOf(fmt.Sprintf("allowed_backends[%d]", i), b, backends)
	}

	oneOf("default_network_policy", c.DefaultNetworkPolicy, policies)
	for i, d := range c.NetworkWhitelist {
		wrap(fmt.Sprintf("network_whitelist[%d] %q", i, d), checkDestination(d))
	}
	if c.AllowInternet && c.DefaultNetworkPolicy == api.NetworkWhitelist && len(c.NetworkWhitelist) == 0 {
		fail("network_whitelist", "the whitelist policy needs at least one entry")
	}

	c.validatePools(fail, wrap)
	if total := c.pooledTotal(); c.MaxSandboxes > 0 && total > c.MaxSandboxes {
		fail("pools", "their sizes add up to %d, more than max_sandboxes %d", total, c.MaxSandboxes)
	}

	absPath("state_dir", c.StateDir, true)
	absPath("templates_dir", c.TemplatesDir, false)
	absPath("workspace_base_dir", c.WorkspaceBaseDir, true)
	absPath("dataset_registry_dir", c.DatasetRegistryDir, true)
	oneOf("default_dataset_strategy", c.DefaultDatasetStrategy, datasetStrategies)
	if c.Python == "" {
		fail("python", "is empty")
	} else if strings.Contains(c.Python, "/") && !filepath.IsAbs(c.Python) {
		fail("python", "%q: want an absolute path or a bare command name", c.Python)
	}
	absPath("agent_path", c.AgentPath, false)
	absPath("audit_log_path", c.AuditLogPath, c.EnableAuditLog)
	if err := checkListen(c.Listen); err != nil {
		fail("listen", "%q: %v", c.Listen, err)
	}
	return errors.Join(errs...)
}

// DefaultLimits returns the configured default limits (MemoryMB as
// configured, MaxOutputBytes always set).
func (c Config) DefaultLimits() api.Limits {
	return api.Limits{
		MemoryMB: c.DefaultMemoryMB, CPUCount: c.DefaultCPUCount, PidsLimit: c.DefaultPidsLimit,
		MaxOpenFiles: c.DefaultMaxOpenFiles, MaxOutputBytes: c.MaxOutputBytes, DiskQuotaMB: c.DefaultDiskQuotaMB,
	}
}

func checkListen(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New(`want "host:port", e.g. "127.0.0.1:8000"`)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	return nil
}

var policies = []string{api.NetworkAllow, api.NetworkDeny, api.NetworkWhitelist}

// ValidateNetworkPolicy checks a (per-sandbox or per-request) network policy:
// Policy is allow, deny or whitelist; every whitelist entry is a domain, a
// "*.domain" wildcard, an IP address or a CIDR; the whitelist policy has at
// least one entry. Entries under allow or deny are checked but have no effect.
// All problems are joined, each wrapping api.ErrInvalid.
func ValidateNetworkPolicy(p api.NetworkPolicy) error {
	var errs []error
	switch {
	case p.Policy == "":
		errs = append(errs, api.Errorf(api.ErrInvalid, "network policy is empty: want %s", strings.Join(policies, ", ")))
	case !slices.Contains(policies, p.Policy):
		errs = append(errs, api.Errorf(api.ErrInvalid, "network policy %q is not one of %s", p.Policy, strings.Join(policies, ", ")))
	case p.Policy == api.NetworkWhitelist && len(p.Whitelist) == 0:
		errs = append(errs, api.Errorf(api.ErrInvalid, "whitelist policy needs at least one entry"))
	case p.Policy != api.NetworkWhitelist && len(p.Whitelist) > 0:
		// Entries that would be ignored are refused, so nobody believes a
		// list restricts anything under allow.
		errs = append(errs, api.Errorf(api.ErrInvalid, "network whitelist entries only apply to the whitelist policy (policy is %q)", p.Policy))
	}
	for i, d := range p.Whitelist {
		if err := checkDestination(d); err != nil {
			errs = append(errs, fmt.Errorf("network whitelist[%d] %q: %w", i, d, err))
		}
	}
	return errors.Join(errs...)
}

// DNSServer parses a network_dns value: an IP with an optional port (53).
func DNSServer(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address or ip:port", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

// checkDestination reports whether s is a valid whitelist entry; the syntax
// rules live in netpolicy so the config and the enforcement agree.
func checkDestination(s string) error { return netpolicy.CheckEntry(s) }
