package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func TestApplyEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		check func(c Config) bool
	}{
		{"backend", map[string]string{"SANDBOX_DEFAULT_BACKEND": "oci"}, func(c Config) bool { return c.DefaultBackend == "oci" }},
		{"workspace base", map[string]string{"SANDBOX_WORKSPACE_BASE": "/ws"}, func(c Config) bool { return c.WorkspaceBaseDir == "/ws" }},
		{"dataset dir", map[string]string{"SANDBOX_DATASET_DIR": "/ds"}, func(c Config) bool { return c.DatasetRegistryDir == "/ds" }},
		{"internet false", map[string]string{"SANDBOX_ALLOW_INTERNET": "false"}, func(c Config) bool { return !c.AllowInternet }},
		{"internet NO", map[string]string{"SANDBOX_ALLOW_INTERNET": " NO "}, func(c Config) bool { return !c.AllowInternet }},
		{"internet 0", map[string]string{"SANDBOX_ALLOW_INTERNET": "0"}, func(c Config) bool { return !c.AllowInternet }},
		{"gpu yes", map[string]string{"SANDBOX_ENABLE_GPU": "Yes"}, func(c Config) bool { return c.EnableGPU }},
		{"gpu 1", map[string]string{"SANDBOX_ENABLE_GPU": "1"}, func(c Config) bool { return c.EnableGPU }},
		{"gpu TRUE", map[string]string{"SANDBOX_ENABLE_GPU": "TRUE"}, func(c Config) bool { return c.EnableGPU }},
		{"policy", map[string]string{"SANDBOX_NETWORK_POLICY": "deny"}, func(c Config) bool { return c.DefaultNetworkPolicy == "deny" }},
		{"whitelist", map[string]string{"SANDBOX_NETWORK_WHITELIST": " pypi.org, ,*.github.com,, 10.0.0.0/8 "}, func(c Config) bool {
			return reflect.DeepEqual(c.NetworkWhitelist, []string{"pypi.org", "*.github.com", "10.0.0.0/8"})
		}},
		{"timeout", map[string]string{"SANDBOX_TIMEOUT": " 120 "}, func(c Config) bool { return c.DefaultTimeoutSec == 120 }},
		{"lifetime", map[string]string{"SANDBOX_LIFETIME": "600"}, func(c Config) bool { return c.SandboxTimeoutSec == 600 }},
		{"limits", map[string]string{"SANDBOX_PIDS_LIMIT": "300", "SANDBOX_MAX_OPEN_FILES": "1024", "SANDBOX_MAX_OUTPUT_BYTES": "1048576",
			"SANDBOX_DISK_QUOTA_MB": "64", "SANDBOX_CPU_COUNT": "2", "SANDBOX_MAX_LIFETIME": "7200"}, func(c Config) bool {
			return c.DefaultPidsLimit == 300 && c.DefaultMaxOpenFiles == 1024 && c.MaxOutputBytes == 1<<20 &&
				c.DefaultDiskQuotaMB == 64 && c.DefaultCPUCount == 2 && c.MaxSandboxTimeoutSec == 7200
		}},
		{"memory", map[string]string{"SANDBOX_MEMORY_MB": "1024"}, func(c Config) bool { return c.DefaultMemoryMB == 1024 }},
		{"state", map[string]string{"SANDBOX_STATE_DIR": "/st"}, func(c Config) bool { return c.StateDir == "/st" }},
		{"templates", map[string]string{"SANDBOX_TEMPLATES_DIR": "/tp"}, func(c Config) bool { return c.TemplatesDir == "/tp" }},
		{"user", map[string]string{"SANDBOX_DEFAULT_USER": "dev"}, func(c Config) bool { return c.DefaultUser == "dev" }},
		{"workdir", map[string]string{"SANDBOX_DEFAULT_WORKDIR": "/w"}, func(c Config) bool { return c.DefaultWorkdir == "/w" }},
		{"python", map[string]string{"SANDBOX_PYTHON": "python3.12"}, func(c Config) bool { return c.Python == "python3.12" }},
		{"agent", map[string]string{"SANDBOX_AGENT_PATH": "/bin/agent"}, func(c Config) bool { return c.AgentPath == "/bin/agent" }},
		{"listen", map[string]string{"SANDBOX_LISTEN": ":9000"}, func(c Config) bool { return c.Listen == ":9000" }},
		{"engine", map[string]string{"SANDBOX_ENGINE": " lean "}, func(c Config) bool { return c.Engine == "lean" }},
		{"preload", map[string]string{"SANDBOX_PRELOAD": "numpy, pandas,,matplotlib.pyplot"}, func(c Config) bool {
			return reflect.DeepEqual(c.Preload, []string{"numpy", "pandas", "matplotlib.pyplot"})
		}},
		{"empty means unset", map[string]string{"SANDBOX_DEFAULT_BACKEND": ""}, func(c Config) bool { return c.DefaultBackend == "auto" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testDefaults()
			if err := c.ApplyEnv(env(tt.env)); err != nil {
				t.Fatalf("ApplyEnv: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("ApplyEnv(%v) gave %+v", tt.env, c)
			}
		})
	}
	if got := EnvVars(); len(got) != len(envVars) || got[0] != "SANDBOX_DEFAULT_BACKEND" {
		t.Errorf("EnvVars = %v", got)
	}
}

func TestApplyEnvErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		msg  []string
	}{
		{"bool", map[string]string{"SANDBOX_ALLOW_INTERNET": "maybe"}, []string{`SANDBOX_ALLOW_INTERNET="maybe"`, "want true, false"}},
		{"gpu", map[string]string{"SANDBOX_ENABLE_GPU": "on"}, []string{`SANDBOX_ENABLE_GPU="on"`}},
		{"int", map[string]string{"SANDBOX_TIMEOUT": "1h"}, []string{`SANDBOX_TIMEOUT="1h"`, "whole number"}},
		{"memory", map[string]string{"SANDBOX_MEMORY_MB": "4G"}, []string{`SANDBOX_MEMORY_MB="4G"`}},
		{"joined", map[string]string{"SANDBOX_TIMEOUT": "x", "SANDBOX_LIFETIME": "y", "SANDBOX_ALLOW_INTERNET": "z"},
			[]string{"SANDBOX_TIMEOUT", "SANDBOX_LIFETIME", "SANDBOX_ALLOW_INTERNET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testDefaults()
			err := c.ApplyEnv(env(tt.env))
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("ApplyEnv = %v, want ErrInvalid", err)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // keys named in the error; none means valid
	}{
		{"defaults", func(c *Config) {}, nil},
		{"whitelist ok", func(c *Config) {
			c.DefaultNetworkPolicy = "whitelist"
			c.NetworkWhitelist = []string{"pypi.org", "*.github.com", "1.2.3.4", "10.0.0.0/8", "::1", "2001:db8::/32", "example.com."}
		}, nil},
		{"no internet empty whitelist", func(c *Config) { c.AllowInternet = false; c.DefaultNetworkPolicy = "whitelist" }, nil},
		{"bare python", func(c *Config) { c.Python = "python3" }, nil},
		{"backend", func(c *Config) { c.DefaultBackend = "best" }, []string{`default_backend: "best" is not one of auto, local, oci, docker, kubernetes`}},
		{"kernel start timeout", func(c *Config) { c.KernelStartTimeoutSec = 2 }, []string{`kernel_start_timeout_sec: 2 is out of range 5..3600`}},
		{"lean engine with a preload list", func(c *Config) { c.Engine = "lean"; c.Preload = []string{"numpy", "matplotlib.pyplot"} }, nil},
		{"engine", func(c *Config) { c.Engine = "" }, []string{`engine: "" is not one of ipykernel, lean`}},
		{"preload", func(c *Config) { c.Preload = []string{"pandas", "import os"} }, []string{`preload: module "import os": want a Python module name`}},
		{"one secret for two keys", func(c *Config) {
			c.APIKeys = []APIKey{{ID: "a", Key: "0123456789abcdef"}, {ID: "b", Key: "0123456789abcdef", Admin: true}}
		}, []string{`api_keys[1]: the key of "b" is also another entry's`}},
		{"a shared default workspace with non-admin keys", func(c *Config) {
			c.APIKeys, c.DefaultWorkspaceID = []APIKey{{ID: "a", Key: "0123456789abcdef"}}, "shared"
		}, []string{`default_workspace_id: "shared" would be one workspace for every API key's sandboxes`}},
		{"a key's backend", func(c *Config) {
			c.APIKeys = []APIKey{{ID: "a", Key: "0123456789abcdef", Backends: []string{"vm"}}}
		}, []string{`api_keys[0].backends[0]: "vm" is not one of`}},
		{"allowed backend", func(c *Config) { c.AllowedBackends = []string{"oci", "vm"} }, []string{`allowed_backends[1]: "vm"`}},
		{"user", func(c *Config) { c.DefaultUser = "Root User" }, []string{"default_user"}},
		{"workdir", func(c *Config) { c.DefaultWorkdir = "home" }, []string{"default_workdir"}},
		{"timeout low", func(c *Config) { c.DefaultTimeoutSec = 0 }, []string{"default_timeout_sec: 0 is out of range 1..86400"}},
		{"timeout high", func(c *Config) { c.DefaultTimeoutSec = 86401 }, []string{"default_timeout_sec"}},
		{"lifetime", func(c *Config) { c.SandboxTimeoutSec = -1 }, []string{"sandbox_timeout_sec"}},
		{"memory", func(c *Config) { c.DefaultMemoryMB = 256 }, []string{"default_memory_mb: 256 is out of range 512..65536"}},
		{"pids", func(c *Config) { c.DefaultPidsLimit = 10 }, []string{"default_pids_limit: 10 is out of range 128.."}},
		{"open files", func(c *Config) { c.DefaultMaxOpenFiles = 3 }, []string{"default_max_open_files"}},
		{"output", func(c *Config) { c.MaxOutputBytes = 0 }, []string{"max_output_bytes: 0 is out of range"}},
		{"quota", func(c *Config) { c.DefaultDiskQuotaMB = 1 }, []string{"default_disk_quota_mb"}},
		{"cpu", func(c *Config) { c.DefaultCPUCount = 99 }, []string{"default_cpu_count"}},
		{"lifetime over the cap", func(c *Config) { c.MaxSandboxTimeoutSec = 600 }, []string{"sandbox_timeout_sec: 3600 is longer than max_sandbox_timeout_sec 600"}},
		{"policy", func(c *Config) { c.DefaultNetworkPolicy = "proxy" }, []string{`default_network_policy: "proxy"`}},
		{"empty whitelist", func(c *Config) { c.DefaultNetworkPolicy = "whitelist" }, []string{"network_whitelist: the whitelist policy needs at least one entry"}},
		{"bad entry", func(c *Config) { c.NetworkWhitelist = []string{"ok.org", "http://x.org"} }, []string{`network_whitelist[1] "http://x.org"`, "not a URL"}},
		{"state dir", func(c *Config) { c.StateDir = "rel" }, []string{`state_dir: "rel" is not an absolute path`}},
		{"state dir empty", func(c *Config) { c.StateDir = "" }, []string{"state_dir: is empty"}},
		{"workspaces", func(c *Config) { c.WorkspaceBaseDir = "" }, []string{"workspace_base_dir"}},
		{"datasets", func(c *Config) { c.DatasetRegistryDir = "./d" }, []string{"dataset_registry_dir"}},
		{"templates", func(c *Config) { c.TemplatesDir = "t" }, []string{"templates_dir"}},
		{"strategy", func(c *Config) { c.DefaultDatasetStrategy = "symlink" }, []string{"default_dataset_strategy"}},
		{"python", func(c *Config) { c.Python = "bin/python" }, []string{"python"}},
		{"python empty", func(c *Config) { c.Python = "" }, []string{"python: is empty"}},
		{"agent", func(c *Config) { c.AgentPath = "agent/x" }, []string{"agent_path"}},
		{"audit", func(c *Config) { c.AuditLogPath = "" }, []string{"audit_log_path"}},
		{"listen", func(c *Config) { c.Listen = "8000" }, []string{"listen"}},
		{"listen port", func(c *Config) { c.Listen = "localhost:http" }, []string{"listen", "port"}},
		{"pools ok", func(c *Config) {
			c.MaxSandboxes = 10
			c.Pools = []Pool{{Size: 2}, {Template: "ds", Backend: "oci", Network: "whitelist", NetworkWhitelist: []string{"pypi.org"},
				Limits: PoolLimits{MemoryMB: 1024, CPUCount: 1}, Size: 3, MaxAgeSec: 600}}
		}, nil},
		{"pool size", func(c *Config) { c.Pools = []Pool{{Size: 0}} }, []string{"pools[0].size: 0 is out of range 1..1000"}},
		{"pool backend", func(c *Config) { c.Pools = []Pool{{Size: 1, Backend: "auto"}} }, []string{`pools[0].backend: "auto" is not one of`}},
		{"pool network", func(c *Config) { c.Pools = []Pool{{Size: 1, Network: "whitelist"}} }, []string{"pools[0].network: whitelist policy needs at least one entry"}},
		{"pool whitelist without policy", func(c *Config) { c.Pools = []Pool{{Size: 1, NetworkWhitelist: []string{"x.org"}}} }, []string{"pools[0].network_whitelist"}},
		{"pool limits", func(c *Config) { c.Pools = []Pool{{Size: 1, Limits: PoolLimits{PidsLimit: 3}}} }, []string{"pools[0].limits"}},
		{"pool template", func(c *Config) { c.Pools = []Pool{{Size: 1, Template: "../x"}} }, []string{"pools[0].template"}},
		{"pool max age", func(c *Config) { c.Pools = []Pool{{Size: 1, MaxAgeSec: 5}} }, []string{"pools[0].max_age_sec: 5 is out of range 10..86400"}},
		{"pool twice", func(c *Config) { c.Pools = []Pool{{Size: 1}, {Size: 2}} }, []string{"pools[1]: describes the same sandboxes as pools[0]"}},
		{"pools over max_sandboxes", func(c *Config) { c.MaxSandboxes = 2; c.Pools = []Pool{{Size: 3}} }, []string{"pools: their sizes add up to 3, more than max_sandboxes 2"}},
		{"joined", func(c *Config) {
			c.DefaultBackend, c.DefaultMemoryMB, c.DefaultNetworkPolicy, c.Listen = "x", 1, "y", "z"
		}, []string{"default_backend", "default_memory_mb", "default_network_policy", "listen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testDefaults()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			for _, m := range tt.want {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Validate error %q does not contain %q", err, m)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); tt.name == "joined" && n != 4 {
				t.Errorf("joined error has %d lines, want 4: %v", n, err)
			}
		})
	}
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	list := []string{"pypi.org"}
	tests := []struct {
		name     string
		internet bool
		policy   string
		want     api.NetworkPolicy
	}{
		{"allow", true, "allow", api.NetworkPolicy{Policy: "allow"}},
		{"deny", true, "deny", api.NetworkPolicy{Policy: "deny"}},
		{"whitelist", true, "whitelist", api.NetworkPolicy{Policy: "whitelist", Whitelist: list}},
		{"no internet beats allow", false, "allow", api.NetworkPolicy{Policy: "deny"}},
		{"no internet beats whitelist", false, "whitelist", api.NetworkPolicy{Policy: "deny"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testDefaults()
			c.AllowInternet, c.DefaultNetworkPolicy, c.NetworkWhitelist = tt.internet, tt.policy, list
			got := c.Network()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Network() = %+v, want %+v", got, tt.want)
			}
			if len(got.Whitelist) > 0 {
				got.Whitelist[0] = "changed"
				if c.NetworkWhitelist[0] != "pypi.org" {
					t.Error("Network() shares the config's whitelist slice")
				}
			}
		})
	}
}

func TestValidateNetworkPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    api.NetworkPolicy
		msg  []string // none means valid
	}{
		{"allow", api.NetworkPolicy{Policy: "allow"}, nil},
		{"deny", api.NetworkPolicy{Policy: "deny"}, nil},
		{"whitelist", api.NetworkPolicy{Policy: "whitelist", Whitelist: []string{"*.example.com", "192.168.0.0/16", "fd00::1"}}, nil},
		{"empty policy", api.NetworkPolicy{}, []string{"network policy is empty"}},
		{"unknown policy", api.NetworkPolicy{Policy: "proxy"}, []string{`"proxy" is not one of allow, deny, whitelist`}},
		{"empty whitelist", api.NetworkPolicy{Policy: "whitelist"}, []string{"whitelist policy needs at least one entry"}},
		{"bad entries joined", api.NetworkPolicy{Policy: "whitelist", Whitelist: []string{"a b", "10.0.0.1/8"}}, []string{`whitelist[0] "a b"`, `whitelist[1] "10.0.0.1/8": host bits are set; did you mean 10.0.0.0/8?`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateNetworkPolicy(tt.p)
			if len(tt.msg) == 0 {
				if err != nil {
					t.Fatalf("ValidateNetworkPolicy = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("ValidateNetworkPolicy = %v, want ErrInvalid", err)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
}

func TestCheckDestination(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, msg string }{
		{"example.com", ""}, {"localhost", ""}, {"*.example.com", ""}, {"EXAMPLE.com.", ""}, {"xn--bcher-kva.ch", ""},
		{"1.2.3.4", ""}, {"::1", ""}, {"10.0.0.0/8", ""}, {"0.0.0.0/0", ""},
		{"", "empty entry"},
		{" a.com", "surrounding spaces"},
		{"*", "bare wildcard"},
		{"https://a.com", "not a URL"},
		{"a.com/path", "not a valid CIDR"},
		{"10.0.0.0/33", "not a valid CIDR"},
		{"a.com:443", "ports are not supported"},
		{"[::1]:80", "ports are not supported"},
		{"fe80::1%eth0", "zones"},
		{"1.2.3.999", "last label is numeric"},
		{"a.*.com", "leading"},
		{"-a.com", "must not start or end"},
		{"a..com", "want 1 to 63"},
		{"a_b.com", "only letters"},
		{strings.Repeat("a", 64) + ".com", "want 1 to 63"},
		{strings.Repeat("abcdefghi.", 26) + "com", "longer than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			err := checkDestination(tt.in)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("checkDestination(%q) = %v, want nil", tt.in, err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("checkDestination(%q) = %v, want ErrInvalid containing %q", tt.in, err, tt.msg)
			}
		})
	}
}

func FuzzWhitelistEnv(f *testing.F) {
	for _, s := range []string{"", "pypi.org", " a.com , ,*.b.org,,", "10.0.0.0/8,::1", "http://x, a:1", ",,,", "\t,\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := testDefaults()
		c.DefaultNetworkPolicy = api.NetworkWhitelist
		if err := c.ApplyEnv(env(map[string]string{"SANDBOX_NETWORK_WHITELIST": s})); err != nil {
			t.Fatalf("whitelist parsing failed: %v", err)
		}
		for _, e := range c.NetworkWhitelist {
			if e == "" || strings.TrimSpace(e) != e || strings.Contains(e, ",") {
				t.Fatalf("entry %q from %q is empty, untrimmed or holds a comma", e, s)
			}
		}
		// Joining and splitting again is stable.
		if again := SplitList(strings.Join(c.NetworkWhitelist, ",")); s != "" && !reflect.DeepEqual(again, c.NetworkWhitelist) {
			t.Fatalf("re-split %q = %q, want %q", s, again, c.NetworkWhitelist)
		}
		cfgErr := c.Validate()
		polErr := ValidateNetworkPolicy(c.Network())
		if (cfgErr == nil) != (polErr == nil) {
			t.Fatalf("Validate and ValidateNetworkPolicy disagree on %q: %v vs %v", s, cfgErr, polErr)
		}
	})
}
