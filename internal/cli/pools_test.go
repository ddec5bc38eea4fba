package cli

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon/daemontest"
)

// TestDaemonPools: the daemon keeps its warm pools; /readyz and /metrics
// show them (ready, size, hits, misses, refill failures) and a create
// through the REST API takes a pooled sandbox with its envs applied; doctor
// lists the pools and says which cannot be filled.
func TestDaemonPools(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DefaultBackend = "local"
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.Listen = "127.0.0.1:0"
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "templates", "cmd.yaml"), []byte("id: cmd\nstart_cmd: sleep 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Pools = []config.Pool{{Size: 1}, {Template: "cmd", Size: 1}}
	daemontest.ReapOnFailure(t, cfg.StateDir)
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Manager.Close(context.Background())
		d.Shutdown(time.Second)
	}()
	type readyz struct {
		Pools []struct {
			Ready          int    `json:"ready"`
			RefillFailures int    `json:"refill_failures"`
			LastError      string `json:"last_error"`
		} `json:"pools"`
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var r readyz
		daemontest.Call(t, "GET", d.URL+"/readyz", nil, &r)
		if len(r.Pools) == 2 && r.Pools[0].Ready == 1 && r.Pools[1].RefillFailures > 0 {
			if !strings.Contains(r.Pools[1].LastError, "start_cmd") {
				t.Fatalf("the failing pool's error: %q", r.Pools[1].LastError)
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("/readyz: %+v", r)
		}
	}
	var info api.SandboxInfo
	if code := daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{Envs: map[string]string{"POOLED": "yes"}}, &info); code != 201 && code != 200 {
		t.Fatalf("create: %d", code)
	}
	var ex api.Execution
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes/"+info.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "import os; os.environ['POOLED']"}, &ex)
	if ex.Text() != "'yes'" {
		t.Fatalf("execute in the claimed sandbox: %+v", ex)
	}
	resp, err := http.Get(d.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`dssandbox_pool_hits_total{backend="local",pool="0",template=""} 1`,
		`dssandbox_pool_misses_total{backend="local",pool="0",template=""} 0`,
		`dssandbox_pool_size{backend="local",pool="0",template=""} 1`,
		`dssandbox_pool_ready{backend="local",pool="0",template=""}`,
		`dssandbox_pool_failing{backend="local",pool="1",template="cmd"} 1`,
		`dssandbox_pool_refill_failures_total{backend="local",pool="1",template="cmd"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	conf := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "templates_dir: " + filepath.Join(cfg.StateDir, "templates") + "\npools:\n  - {size: 1}\n  - {template: cmd, size: 2}\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "", "doctor", "--config", conf)
	if code != 0 {
		t.Fatalf("doctor: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`pools[0]: template "" on local, network allow, size 1: ok`, `pools[1]: template "cmd" on local, network allow, size 2: cannot fill: cannot be pooled: template cmd has files, start_cmd or ready_cmd`} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}
