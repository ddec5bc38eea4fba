package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
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
	liveNets := map[string]bool{}
	for _, ct := range list {
		if live(ct.Labels[LabelSandboxID]) {
			for _, name := range ct.Names {
				liveNets[sandboxnet.KeyFor(strings.TrimPrefix(name, "/"))] = true
			}
			continue
		}
		if b.remove(ctx, c, ct) {
			n++
		}
	}
	// Networks whose container is gone.
	if b.networkAvailable(c) == nil {
		if _, err := b.nets.Reap(ctx, func(key string) bool { return liveNets[key] }); err != nil {
			return n, fmt.Errorf("docker backend: %w", err)
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

// processLabel identifies process pid across pid reuse: "pid:start-time" (the
// start time in clock ticks since boot, /proc/PID/stat field 22), or "" when
// it cannot be read.
func processLabel(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return strconv.Itoa(pid) + ":" + f[19]
}

// reapDeadOwners removes the embedded-mode containers (same StateDir) whose
// program is gone: killed before it could destroy them. It only works with a
// daemon on this host (the pids are this host's), so it does nothing for a
// remote DOCKER_HOST. It runs once, in the background, bounded by a minute.
func (b *Backend) reapDeadOwners(c *client.Client) {
	if h := c.DaemonHost(); !strings.HasPrefix(h, "unix://") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelOwner+"="+b.cfg.StateDir),
		filters.Arg("label", LabelProcess),
	)})
	if err != nil {
		return
	}
	for _, ct := range list {
		owner := ct.Labels[LabelProcess]
		pid, _, ok := strings.Cut(owner, ":")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 || processLabel(n) == owner {
			continue
		}
		b.remove(ctx, c, ct)
	}
}

// remove removes a container of ours and its socket directory.
func (b *Backend) remove(ctx context.Context, c *client.Client, ct container.Summary) bool {
	err := c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return false
	}
	for _, m := range ct.Mounts {
		if m.Destination == socketDir && strings.HasPrefix(m.Source, b.cfg.StateDir+"/") {
			removeSocketDir(m.Source)
		}
	}
	if b.networkAvailable(c) == nil {
		for _, name := range ct.Names {
			key := sandboxnet.KeyFor(strings.TrimPrefix(name, "/"))
			_ = b.nets.Remove(ctx, key)
			os.Remove(filepath.Join(b.cfg.StateDir, "resolv-"+key+".conf"))
		}
	}
	return true
}
