package docker_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon/daemontest"
)

// startServe runs the static ds-sandbox binary as the daemon over state.
func startServe(t *testing.T, state string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(agentBin, "serve", "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "SANDBOX_STATE_DIR="+state)
	return cmd, daemontest.StartServe(t, cmd)
}

func containerOf(t *testing.T, state, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "sandboxes", id+".json"))
	if err != nil {
		t.Fatalf("record of %s: %v", id, err)
	}
	var rec struct {
		BackendState map[string]string `json:"backend_state"`
	}
	json.Unmarshal(b, &rec)
	return rec.BackendState["container"]
}

// TestDaemonKill9 kills `ds-sandbox serve` with SIGKILL: the next daemon
// re-attaches to the docker sandbox that still runs (kernel state intact) and
// reaps the one whose container was removed meanwhile; killing the recovered
// sandbox removes its container.
func TestDaemonKill9(t *testing.T) {
	t.Parallel()
	setup(t)
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	d1, url := startServe(t, state)
	var a, b api.SandboxInfo
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{Backend: "docker"}, &a)
	daemontest.Call(t, "POST", url+"/v1/sandboxes", api.CreateSandboxRequest{Backend: "docker"}, &b)
	if a.SandboxID == "" || b.SandboxID == "" {
		t.Fatal("create failed")
	}
	ca, cb := containerOf(t, state, a.SandboxID), containerOf(t, state, b.SandboxID)
	t.Cleanup(func() {
		for _, id := range []string{ca, cb} {
			dc.ContainerRemove(t.Context(), id, container.RemoveOptions{Force: true})
		}
	})
	var ex api.Execution
	daemontest.Call(t, "POST", url+"/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "x = 7"}, &ex)

	d1.Process.Kill()
	d1.Wait()
	if err := dc.ContainerRemove(t.Context(), cb, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

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
	if st := daemontest.Call(t, "DELETE", url2+"/v1/sandboxes/"+a.SandboxID, nil, nil); st != 204 {
		t.Fatalf("kill after recovery: %d", st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := dc.ContainerInspect(t.Context(), ca)
		if cerrdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container of the killed sandbox still there: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEmbeddedProgramKilled kills `ds-sandbox run` with SIGKILL while its
// docker sandbox runs: the next embedded program over the same state
// directory removes the container left behind.
func TestEmbeddedProgramKilled(t *testing.T) {
	t.Parallel()
	cfg := setup(t)
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	run := exec.Command(agentBin, "run", "--backend", "docker", "-c", "import time; time.sleep(600)")
	run.Env = append(os.Environ(), "SANDBOX_STATE_DIR="+state)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer run.Process.Kill()
	owner := filters.NewArgs(filters.Arg("label", docker.LabelOwner+"="+filepath.Join(state, "docker")))
	var left []container.Summary
	for deadline := time.Now().Add(60 * time.Second); len(left) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the run's container never appeared")
		}
		left, _ = dc.ContainerList(t.Context(), container.ListOptions{All: true, Filters: owner})
	}
	t.Cleanup(func() { dc.ContainerRemove(context.Background(), left[0].ID, container.RemoveOptions{Force: true}) })
	run.Process.Kill()
	run.Wait()

	cfg.StateDir, cfg.Embedded = filepath.Join(state, "docker"), true
	b := docker.New(cfg)
	s := spec(t)
	start(t, b, s)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := dc.ContainerInspect(t.Context(), left[0].ID)
		if cerrdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed program's container is still there: %v", err)
		}
	}
}
