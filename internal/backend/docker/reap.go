package docker

import (
	"context"
	"fmt"
	"os"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
)

// Present reports, without contacting anything, whether this host looks set
// up for the docker backend: a daemon endpoint is configured (DOCKER_HOST) or
// the default socket exists, and the agent is a ds-sandbox binary rather than
// a program re-executing itself (tests, SDK embedders), which no container can
// run. Builders of the backend list offer docker only then, so hosts without
// Docker do not report an unusable backend.
func Present(agentPath string) bool {
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			return false
		}
	}
	argv, _, err := agent.Command(agentPath)
	return err == nil && len(argv) >= 2 && argv[1] == "agent"
}

// ReapOrphans removes the containers this backend (same StateDir) made whose
// sandbox id live does not know: those of sandboxes a crashed daemon never
// recorded. Call it after recovering the recorded sandboxes. It returns how
// many it removed.
func (b *Backend) ReapOrphans(ctx context.Context, live func(sandboxID string) bool) (int, error) {
	c, err := b.client()
	if err != nil {
		return 0, err
	}
	list, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelOwner+"="+b.cfg.StateDir),
	)})
	if err != nil {
		return 0, fmt.Errorf("docker backend: list containers: %w", err)
	}
	n := 0
	for _, ct := range list {
		if live(ct.Labels[LabelSandboxID]) {
			continue
		}
		if err := c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true}); err == nil || errdefs.IsNotFound(err) {
			n++
		}
	}
	return n, nil
}

// removeStale removes a container of ours left under name by a daemon that
// died mid-create.
func (b *Backend) removeStale(ctx context.Context, c *client.Client, name string) {
	js, err := c.ContainerInspect(ctx, name)
	if err != nil || js.Config == nil || js.Config.Labels[LabelManaged] != "true" {
		return
	}
	_ = c.ContainerRemove(ctx, js.ID, container.RemoveOptions{Force: true})
}
