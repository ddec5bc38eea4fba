package docker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
)

// BenchmarkDockerCreateToFirstResult is create → first cell result ("1+1")
// → destroy, through the backend.
func BenchmarkDockerCreateToFirstResult(b *testing.B) {
	be := docker.New(setup(b))
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		ws := b.TempDir()
		inst, err := be.Create(ctx, backend.Spec{ID: "bench", User: "user", Workdir: "/home/user", WorkspaceDir: ws,
			Network: api.NetworkPolicy{Policy: api.NetworkDeny}, Python: "/usr/bin/python3"})
		if err != nil {
			b.Fatal(err)
		}
		c := agentclient.NewClient(inst.AgentSocket())
		e, err := c.Execute(ctx, api.ExecuteRequest{Code: "1+1"}, nil)
		if err != nil || e.Error != nil || len(e.Results) == 0 || !strings.Contains(e.Results[0].Text, "2") {
			b.Fatalf("1+1: %v %+v", err, e)
		}
		c.Close()
		if err := inst.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDockerRunPython is the baseline: what `docker run --rm IMAGE
// python3 -c 'print(1)'` does, through the same API.
func BenchmarkDockerRunPython(b *testing.B) {
	setup(b)
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		ct, err := c.ContainerCreate(ctx, &container.Config{Image: docker.DefaultImage, Cmd: []string{"python3", "-c", "print(1)"}},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.ContainerStart(ctx, ct.ID, container.StartOptions{}); err != nil {
			b.Fatal(err)
		}
		okc, errc := c.ContainerWait(ctx, ct.ID, container.WaitConditionNotRunning)
		select {
		case r := <-okc:
			if r.StatusCode != 0 {
				b.Fatalf("exit %d", r.StatusCode)
			}
		case err := <-errc:
			b.Fatal(err)
		}
		if err := c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
	}
}
