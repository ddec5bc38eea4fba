package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon/daemontest"
)

// startServe runs this test binary as `ds-sandbox serve` on a free port.
func startServe(t *testing.T, stateDir string, flags ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	args := strings.Join(append([]string{"serve", "--listen", "127.0.0.1:0"}, flags...), "\x1f")
	cmd.Env = append(os.Environ(), "DS_TEST_RUN_CLI="+args, "SANDBOX_STATE_DIR="+stateDir)
	return cmd, daemontest.StartServe(t, cmd)
}

func agentPID(t *testing.T, stateDir, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "sandboxes", id+".json"))
	if err != nil {
		t.Fatalf("record of %s: %v", id, err)
	}
	var rec struct {
		BackendState map[string]string `json:"backend_state"`
	}
	json.Unmarshal(b, &rec)
	pid, err := strconv.Atoi(rec.BackendState["pid"])
	if err != nil {
		t.Fatalf("record %s: %v", b, err)
	}
	return pid
}

// TestDaemonKill9 kills the daemon with SIGKILL: the next daemon re-attaches
// to the sandboxes that still run (state intact) and reaps the others, and
// named workspaces survive.
func TestDaemonKill9(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	daemontest.ReapOnFailure(t, state)
	d1, url := startServe(t, state)
	var a, b, c api.SandboxInfo
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{}, &a)
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{WorkspaceID: "keep"}, &b)
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{}, &c)
	if a.SandboxID == "" || b.SandboxID == "" || c.SandboxID == "" {
		t.Fatal("create failed")
	}
	var ex api.Execution
	daemontest.Call(t, "POST", url+"/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "x = 7"}, &ex)
	daemontest.Call(t, "PUT", url+"/v1/sandboxes/"+b.SandboxID+"/files?path=outputs/kept.txt", nil, nil)

	d1.Process.Kill()
	d1.Wait()
	// B and C die while no daemon watches.
	for _, id := range []string{b.SandboxID, c.SandboxID} {
		pid := agentPID(t, state, id)
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)

	_, url2 := startServe(t, state)
	var list []api.SandboxInfo
	daemontest.Call(t, "GET", url2+"/v1/sandboxes", nil, &list)
	if len(list) != 1 || list[0].SandboxID != a.SandboxID {
		t.Fatalf("after restart: %+v", list)
	}
	ex = api.Execution{}
	daemontest.Call(t, "POST", url2+"/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "x * 6"}, &ex)
	if ex.Text() != "42" {
		t.Fatalf("kernel state after the daemon's kill -9: %+v", ex)
	}
	if st := daemontest.Call(t, "GET", url2+"/v1/sandboxes/"+b.SandboxID, nil, nil); st != 404 {
		t.Fatalf("dead sandbox B: %d", st)
	}
	if _, err := os.Stat(filepath.Join(state, "workspaces", "keep", "outputs", "kept.txt")); err != nil {
		t.Fatalf("named workspace lost: %v", err)
	}
	if _, err := os.Stat(c.WorkspacePath); !os.IsNotExist(err) {
		t.Fatalf("anonymous workspace of the reaped sandbox C was kept: %v", err)
	}
	var evs []api.Event
	daemontest.Call(t, "GET", url2+"/v1/events", nil, &evs)
	got := map[string]string{}
	for _, e := range evs {
		got[e.SandboxID] = e.Type
	}
	if got[a.SandboxID] != api.EventSandboxRecovered || got[b.SandboxID] != api.EventSandboxReaped || got[c.SandboxID] != api.EventSandboxReaped {
		t.Fatalf("recovery events: %v", got)
	}
	if st := daemontest.Call(t, "DELETE", url2+"/v1/sandboxes/"+a.SandboxID, nil, nil); st != 204 {
		t.Fatalf("kill after recovery: %d", st)
	}
	if n := len(mustReadDir(t, filepath.Join(state, "sandboxes"))); n != 0 {
		t.Fatalf("%d records left", n)
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestEphemeralServe: a private server (what the Python client starts) takes
// its sandboxes with it when it stops.
func TestEphemeralServe(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	d, url := startServe(t, state, "--ephemeral")
	var a api.SandboxInfo
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{}, &a)
	var ex api.Execution
	daemontest.Call(t, "POST", url+"/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "import os; os.getpid()"}, &ex)
	kernel, err := strconv.Atoi(ex.Text())
	if err != nil {
		t.Fatalf("kernel pid: %+v", ex)
	}
	if _, err := os.Stat(filepath.Join(state, "sandboxes")); !os.IsNotExist(err) {
		t.Fatalf("an ephemeral server keeps records: %v", err)
	}
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(kernel, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("kernel %d outlived its ephemeral server", kernel)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(a.WorkspacePath); !os.IsNotExist(err) {
		t.Fatalf("anonymous workspace left behind: %v", err)
	}
}
