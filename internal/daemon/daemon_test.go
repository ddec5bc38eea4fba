package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon/daemontest"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestMain(m *testing.M) {
	// The daemons here start their local sandboxes' agents from this binary.
	agent.MainIfReexec()
	os.Exit(m.Run())
}

// TestDaemonGracefulShutdown: on SIGTERM a running cell that fits in the
// grace finishes; one that does not is interrupted with a clear error; the
// sandbox itself survives for the next daemon.
func TestDaemonGracefulShutdown(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	cfg := localConfig(t)
	daemontest.ReapOnFailure(t, cfg.StateDir)
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var a, b, c api.SandboxInfo
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{}, &a)
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{}, &b)
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{}, &c)
	stream := func(id, code string, out chan<- string) {
		resp, err := http.Post(d.URL+"/v1/sandboxes/"+id+"/execute", "application/json", strings.NewReader(code))
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- string(body)
	}
	// Warm both kernels first, so the short cell's time is its own.
	for _, id := range []string{a.SandboxID, b.SandboxID, c.SandboxID} {
		var ex api.Execution
		daemontest.Call(t, "POST", d.URL+"/v1/sandboxes/"+id+"/execute?wait=true", api.ExecuteRequest{Code: "1"}, &ex)
	}
	short, long := make(chan string, 1), make(chan string, 1)
	go stream(a.SandboxID, `{"code": "import time; time.sleep(0.5); print('finished')"}`, short)
	go stream(b.SandboxID, `{"code": "import time; time.sleep(120)"}`, long)
	// A long cell whose stream already began: the shutdown is said in-band.
	printed, begun := make(chan string, 1), make(chan struct{})
	go func() {
		resp, err := http.Post(d.URL+"/v1/sandboxes/"+c.SandboxID+"/execute", "application/json",
			strings.NewReader(`{"code": "import time; print('begun', flush=True); time.sleep(120)"}`))
		if err != nil {
			close(begun)
			printed <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first, _ := br.ReadString('\n')
		close(begun)
		rest, _ := io.ReadAll(br)
		printed <- first + string(rest)
	}()
	<-begun
	time.Sleep(200 * time.Millisecond)
	if err := d.Shutdown(8 * time.Second); err != nil {
		t.Fatal(err)
	}
	if s := <-short; !strings.Contains(s, "finished") || !strings.Contains(s, `"type":"end"`) {
		t.Fatalf("short cell: %s", s)
	}
	if s := <-long; !strings.Contains(s, "shutting down") || strings.Contains(s, `"type":"end"`) {
		t.Fatalf("long cell: %s", s)
	}
	if s := <-printed; !strings.Contains(s, "begun") || !strings.Contains(s, `"type":"failure"`) || !strings.Contains(s, "shutting down") {
		t.Fatalf("long cell with output: %s", s)
	}
	d2, err := daemon.Start(context.Background(), cfg, daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d2.Manager.Close(context.Background())
		d2.Shutdown(time.Second)
	}()
	var list []api.SandboxInfo
	daemontest.Call(t, "GET", d2.URL+"/v1/sandboxes", nil, &list)
	if len(list) != 3 {
		t.Fatalf("sandboxes after a graceful restart: %d", len(list))
	}
}

// TestOneDaemonPerStateDir: a second daemon on the same state directory would
// re-attach (and reap) the first one's sandboxes; it is refused.
func TestOneDaemonPerStateDir(t *testing.T) {
	t.Parallel()
	cfg := localConfig(t)
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.Start(t.Context(), cfg, daemon.Options{}); !errors.Is(err, api.ErrExists) || !strings.Contains(err.Error(), "another ds-sandbox daemon") {
		t.Fatalf("second daemon: %v", err)
	}
	d.Shutdown(time.Second)
	d2, err := daemon.Start(t.Context(), cfg, daemon.Options{})
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	d2.Shutdown(time.Second)
}

// TestDaemonAuditsBlockedCells: a cell the code scanner blocks is audited
// with outcome "blocked" from the manager's event, whichever face ran it.
func TestDaemonAuditsBlockedCells(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	cfg := localConfig(t)
	cfg.ScannerMode = api.ScannerBlock
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(time.Second)
	defer d.Manager.Close(context.Background())
	// A request looser than the configured mode is refused, saying why.
	var e api.Error
	if code := daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{ScannerMode: api.ScannerOff}, &e); code != http.StatusForbidden ||
		!strings.Contains(e.Message, `scanner_mode "off" is looser than the configured "block"`) {
		t.Fatalf("create with scanner_mode off under block: %d %+v", code, e)
	}
	var a api.SandboxInfo
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes", api.CreateSandboxRequest{}, &a)
	var ex api.Execution
	daemontest.Call(t, "POST", d.URL+"/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "eval('1')"}, &ex)
	if ex.Error == nil || ex.Error.Name != api.ErrNameScanBlocked {
		t.Fatalf("execution %+v", ex)
	}
	b, err := os.ReadFile(cfg.AuditLogPath)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		found = found || rec.Action == api.EventCodeBlocked && rec.Outcome == audit.Blocked &&
			rec.SandboxID == a.SandboxID && rec.CodeSize == 9 && len(rec.CodeSHA256) == 64
	}
	if !found {
		t.Fatalf("no sandbox.code_blocked record with outcome blocked:\n%s", b)
	}
}

// TestNewReleasesOnFailure: when New fails after it has opened resources
// (the listener, the manager, the state directory's lock), it closes them:
// the address can be listened on again and a daemon over the same state
// directory starts once the cause is gone.
func TestNewReleasesOnFailure(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		breakIt func(t *testing.T, cfg *config.Config) (undo func())
		want    string
	}{
		{
			// m.Persist fails: the records directory cannot be made.
			name: "records",
			breakIt: func(t *testing.T, cfg *config.Config) func() {
				p := filepath.Join(cfg.StateDir, "sandboxes")
				if err := os.WriteFile(p, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return func() { os.Remove(p) }
			},
			want: "sandbox records",
		},
		{
			// audit.Open fails, after Persist took the state lock.
			name: "audit log",
			breakIt: func(t *testing.T, cfg *config.Config) func() {
				file := filepath.Join(t.TempDir(), "not-a-dir")
				if err := os.WriteFile(file, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				good := cfg.AuditLogPath
				cfg.AuditLogPath = filepath.Join(file, "audit.jsonl")
				return func() { cfg.AuditLogPath = good }
			},
			want: "audit log",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.DefaultBackend = "local"
			cfg.StateDir = t.TempDir()
			cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
			cfg.Resolve()
			cfg.Listen = freeAddr(t)
			undo := c.breakIt(t, &cfg)
			if d, err := daemon.New(t.Context(), cfg, daemon.Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
				if d != nil {
					d.Shutdown(time.Second)
				}
				t.Fatalf("New: %v, want an error about the %s", err, c.want)
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				t.Fatalf("the failed New kept its listener: %v", err)
			}
			ln.Close()
			undo()
			d, err := daemon.New(t.Context(), cfg, daemon.Options{})
			if err != nil {
				t.Fatalf("New over the same state directory after a failed one: %v", err)
			}
			if err := d.Shutdown(time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// localConfig is a daemon's config on the local backend, in a state
// directory of the test's own, listening on a free loopback port.
func localConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DefaultBackend = "local"
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.Listen = "127.0.0.1:0"
	return cfg
}
