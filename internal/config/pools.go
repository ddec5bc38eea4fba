package config

import (
	"fmt"
	"slices"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
)

// Pool is a warm pool: Size sandboxes started ahead of time, each as a
// create naming Template, Backend, Network and Limits would make it. A
// create whose resolved spec equals a pool's takes one of them (see the
// manager's pools.go and docs/CONFIG.md, "Warm pools", for what may differ).
type Pool struct {
	// Template is a stored template's id; "" = none.
	Template string `yaml:"template" json:"template"`
	// Backend is the backend; "" = default_backend.
	Backend string `yaml:"backend" json:"backend"`
	// Network is the policy (allow, deny, whitelist); "" = the configured
	// default. NetworkWhitelist holds the whitelist policy's entries.
	Network          string   `yaml:"network" json:"network"`
	NetworkWhitelist []string `yaml:"network_whitelist" json:"network_whitelist"`
	// Limits are the limits a create would ask for (0 = the template's,
	// else the configured default), resolved as a create resolves them.
	Limits PoolLimits `yaml:"limits" json:"limits"`
	// Size is how many ready sandboxes the pool keeps: 1..1000.
	Size int `yaml:"size" json:"size"`
	// MaxAgeSec recycles a ready sandbox older than this (0 = never).
	MaxAgeSec int `yaml:"max_age_sec" json:"max_age_sec"`
}

// PoolLimits are a pool's requested limits (see api.Limits).
type PoolLimits struct {
	MemoryMB       int   `yaml:"memory_mb" json:"memory_mb"`
	CPUCount       int   `yaml:"cpu_count" json:"cpu_count"`
	PidsLimit      int   `yaml:"pids_limit" json:"pids_limit"`
	MaxOpenFiles   int   `yaml:"max_open_files" json:"max_open_files"`
	MaxOutputBytes int64 `yaml:"max_output_bytes" json:"max_output_bytes"`
	DiskQuotaMB    int   `yaml:"disk_quota_mb" json:"disk_quota_mb"`
}

// API returns the limits as api.Limits.
func (l PoolLimits) API() api.Limits {
	return api.Limits{MemoryMB: l.MemoryMB, CPUCount: l.CPUCount, PidsLimit: l.PidsLimit,
		MaxOpenFiles: l.MaxOpenFiles, MaxOutputBytes: l.MaxOutputBytes, DiskQuotaMB: l.DiskQuotaMB}
}

// Request returns the create request that describes the pool's sandboxes.
func (p Pool) Request() api.CreateSandboxRequest {
	l := p.Limits
	req := api.CreateSandboxRequest{Template: p.Template, Backend: p.Backend,
		MemoryMB: l.MemoryMB, CPUCount: l.CPUCount, PidsLimit: l.PidsLimit,
		MaxOpenFiles: l.MaxOpenFiles, MaxOutputBytes: l.MaxOutputBytes, DiskQuotaMB: l.DiskQuotaMB}
	if p.Network != "" {
		req.Network = &api.NetworkPolicy{Policy: p.Network, Whitelist: slices.Clone(p.NetworkWhitelist)}
	}
	return req
}

// MaxPoolSize bounds one pool's size.
const MaxPoolSize = 1000

// validatePools reports every problem of c.Pools through fail and wrap.
func (c Config) validatePools(fail func(key, format string, args ...any), wrap func(key string, err error)) {
	seen := map[string]int{}
	for i, p := range c.Pools {
		key := fmt.Sprintf("pools[%d]", i)
		if p.Template != "" {
			wrap(key+".template", template.ValidateID(p.Template))
		}
		if p.Backend != "" && (p.Backend == AutoBackend || !slices.Contains(backends, p.Backend)) {
			fail(key+".backend", "%q is not one of local, oci, docker, kubernetes (or empty for default_backend)", p.Backend)
		}
		if p.Network != "" {
			wrap(key+".network", ValidateNetworkPolicy(api.NetworkPolicy{Policy: p.Network, Whitelist: p.NetworkWhitelist}))
		} else if len(p.NetworkWhitelist) > 0 {
			fail(key+".network_whitelist", "is set but network is empty: set network: whitelist")
		}
		wrap(key+".limits", template.ValidateLimits(p.Limits.API()))
		if p.Size < 1 || p.Size > MaxPoolSize {
			fail(key+".size", "%d is out of range 1..%d", p.Size, MaxPoolSize)
		}
		if p.MaxAgeSec != 0 && (p.MaxAgeSec < 10 || p.MaxAgeSec > 86400) {
			fail(key+".max_age_sec", "%d is out of range 10..86400 (or 0: never recycle)", p.MaxAgeSec)
		}
		id := fmt.Sprintf("%q %q %q %q %+v", p.Template, p.Backend, p.Network, p.NetworkWhitelist, p.Limits)
		if j, ok := seen[id]; ok {
			fail(key, "describes the same sandboxes as pools[%d]: merge them (sizes add up)", j)
		}
		seen[id] = i
	}
}

// pooledTotal is the sum of the pools' sizes.
func (c Config) pooledTotal() int {
	n := 0
	for _, p := range c.Pools {
		n += p.Size
	}
	return n
}
