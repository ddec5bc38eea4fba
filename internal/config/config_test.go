package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// env returns a getenv over a map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// testDefaults are resolved defaults for a non-root user with a fixed home.
func testDefaults() Config {
	c := defaults(env(nil), 1000, "/home/u")
	c.Resolve()
	return c
}

func TestDefaultsValidate(t *testing.T) {
	t.Parallel()
	c := testDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"state_dir", c.StateDir, "/home/u/.local/share/ds-sandbox"},
		{"workspace_base_dir", c.WorkspaceBaseDir, "/home/u/.local/share/ds-sandbox/workspaces"},
		{"dataset_registry_dir", c.DatasetRegistryDir, "/home/u/.local/share/ds-sandbox/datasets"},
		{"audit_log_path", c.AuditLogPath, "/home/u/.local/share/ds-sandbox/audit.jsonl"},
		{"templates", strings.Join(c.TemplateDirs(), ","), "/home/u/.local/share/ds-sandbox/templates,/etc/ds-sandbox/templates"},
		{"backend", c.DefaultBackend, "auto"},
		{"listen", c.Listen, "127.0.0.1:8000"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.KernelStartTimeoutSec != 60 {
		t.Errorf("kernel_start_timeout_sec = %d, want 60", c.KernelStartTimeoutSec)
	}
	if c.DefaultTimeoutSec != 3600 || c.SandboxTimeoutSec != 3600 || c.DefaultMemoryMB != 0 || !c.AllowInternet {
		t.Errorf("numeric defaults = %+v", c)
	}
}

func TestDefaultStateDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		euid int
		home string
		want string
	}{
		{"root", nil, 0, "/root", "/var/lib/ds-sandbox"},
		{"root ignores XDG", map[string]string{"XDG_DATA_HOME": "/home/u/.data"}, 0, "/root", "/var/lib/ds-sandbox"},
		{"user XDG", map[string]string{"XDG_DATA_HOME": "/data"}, 1000, "/home/u", "/data/ds-sandbox"},
		{"user relative XDG ignored", map[string]string{"XDG_DATA_HOME": "rel"}, 1000, "/home/u", "/home/u/.local/share/ds-sandbox"},
		{"user home", nil, 1000, "/home/u", "/home/u/.local/share/ds-sandbox"},
		{"no home", nil, 1000, "", filepath.Join(os.TempDir(), "ds-sandbox-1000")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := defaultStateDir(env(tt.env), tt.euid, tt.home); got != tt.want {
				t.Errorf("defaultStateDir = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	c := testDefaults()
	c.StateDir = "/srv/dss"
	c.DatasetRegistryDir = "/data/sets" // set explicitly after the first Resolve
	c.Resolve()
	if c.WorkspaceBaseDir != "/srv/dss/workspaces" || c.AuditLogPath != "/srv/dss/audit.jsonl" {
		t.Errorf("derived paths not re-derived: %q %q", c.WorkspaceBaseDir, c.AuditLogPath)
	}
	if c.DatasetRegistryDir != "/data/sets" {
		t.Errorf("explicit dataset_registry_dir overwritten: %q", c.DatasetRegistryDir)
	}
}

func writeConfig(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	t.Parallel()
	yamlFile := writeConfig(t, "c.yaml", `
default_backend: oci
state_dir: /srv/dss
network_whitelist: [pypi.org, "*.pythonhosted.org"]
default_network_policy: whitelist
`)
	jsonFile := writeConfig(t, "c.json", `{"default_timeout_sec": 60, "allow_internet": false, "listen": "0.0.0.0:9000"}`)

	c, err := load(yamlFile, env(map[string]string{"SANDBOX_DEFAULT_BACKEND": "docker"}), 1000, "/home/u")
	if err != nil {
		t.Fatalf("load yaml: %v", err)
	}
	if c.DefaultBackend != "docker" { // env beats file
		t.Errorf("default_backend = %q, want docker from the environment", c.DefaultBackend)
	}
	if c.WorkspaceBaseDir != "/srv/dss/workspaces" || c.DatasetRegistryDir != "/srv/dss/datasets" {
		t.Errorf("paths not derived from the file's state_dir: %q %q", c.WorkspaceBaseDir, c.DatasetRegistryDir)
	}
	if want := []string{"pypi.org", "*.pythonhosted.org"}; !reflect.DeepEqual(c.NetworkWhitelist, want) {
		t.Errorf("network_whitelist = %q", c.NetworkWhitelist)
	}
	if c.DefaultUser != "user" {
		t.Errorf("a key absent from the file lost its default: %q", c.DefaultUser)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	c, err = load(jsonFile, env(nil), 1000, "/home/u")
	if err != nil {
		t.Fatalf("load json: %v", err)
	}
	if c.DefaultTimeoutSec != 60 || c.AllowInternet || c.Listen != "0.0.0.0:9000" {
		t.Errorf("json values not applied: %+v", c)
	}
	if c, err := load("", env(map[string]string{"SANDBOX_STATE_DIR": "/x"}), 1000, "/home/u"); err != nil || c.WorkspaceBaseDir != "/x/workspaces" {
		t.Errorf("load without a file: %q, %v", c.WorkspaceBaseDir, err)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, data string
		env              map[string]string
		want             error
		msg              []string
	}{
		{name: "unknown yaml key", file: "c.yaml", data: "listen: x:1\nstate_dri: /x\n", want: api.ErrInvalid, msg: []string{"c.yaml", `line 2: unknown key "state_dri"`}},
		{name: "retired key hint", file: "c.yml", data: "api_port: 8000\n", want: api.ErrInvalid, msg: []string{`unknown key "api_port": use listen`}},
		{name: "yaml syntax", file: "c.yaml", data: "a: [\n", want: api.ErrInvalid, msg: []string{"c.yaml", "line"}},
		{name: "yaml type", file: "c.yaml", data: "default_memory_mb: lots\n", want: api.ErrInvalid, msg: []string{"line 1", "cannot unmarshal"}},
		{name: "two documents", file: "c.yaml", data: "listen: a:1\n---\nlisten: b:2\n", want: api.ErrInvalid, msg: []string{"more than one"}},
		{name: "unknown json key", file: "c.json", data: `{"listen": "a:1", "bogus": 1}`, want: api.ErrInvalid, msg: []string{"c.json", `unknown key "bogus"`}},
		{name: "json syntax", file: "c.json", data: "{\n\"listen\": ,\n}", want: api.ErrInvalid, msg: []string{"line 2"}},
		{name: "json type", file: "c.json", data: "{\n\"default_timeout_sec\": \"1h\"}", want: api.ErrInvalid, msg: []string{`line 2: key "default_timeout_sec": want int`}},
		{name: "extension", file: "c.toml", data: "", want: api.ErrInvalid, msg: []string{`unsupported extension ".toml"`}},
		{name: "bad env", file: "c.yaml", data: "", env: map[string]string{"SANDBOX_TIMEOUT": "soon"}, want: api.ErrInvalid, msg: []string{`SANDBOX_TIMEOUT="soon"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := writeConfig(t, tt.file, tt.data)
			_, err := load(p, env(tt.env), 1000, "/home/u")
			if !errors.Is(err, tt.want) {
				t.Fatalf("load = %v, want %v", err, tt.want)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if _, err := load(missing, env(nil), 1000, "/home/u"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want ErrNotFound naming it", err)
	}
	if _, err := load(writeConfig(t, "empty.yaml", ""), env(nil), 1000, "/home/u"); err != nil {
		t.Errorf("empty yaml file: %v", err)
	}
}
