package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

// instance is one sandbox container.
type instance struct {
	c    *client.Client
	id   string // container id
	dir  string // host directory with the agent's socket
	sock string

	// stop ends watch; done closes when the container is gone or stopped.
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	doneOnce sync.Once

	once sync.Once
	err  error

	// net is the sandbox's network of ours (nil: Docker's none or bridge),
	// network the policy it was made with, resolvConf its DNS file.
	net        *sandboxnet.Net
	netMu      sync.Mutex // guards network
	network    api.NetworkPolicy
	resolvConf string

	pidMu sync.Mutex
	pid   int // the container's init on the host, once looked up (OOMKills)
}

var (
	_ backend.OOMCounter        = (*instance)(nil)
	_ backend.Recoverable       = (*instance)(nil)
	_ backend.NetworkController = (*instance)(nil)
	_ backend.Detacher          = (*instance)(nil)
)

func (b *Backend) newInstance(c *client.Client, id, dir string) *instance {
	return &instance{c: c, id: id, dir: dir, sock: filepath.Join(dir, "agent.sock"),
		stop: make(chan struct{}), done: make(chan struct{})}
}

func (in *instance) AgentSocket() string   { return in.sock }
func (in *instance) Done() <-chan struct{} { return in.done }

// State implements backend.Recoverable.
func (in *instance) State() map[string]string {
	st := map[string]string{"container": in.id, "dir": in.dir}
	if in.net != nil {
		maps.Copy(st, in.net.State())
		in.netMu.Lock()
		pol, _ := json.Marshal(in.network)
		in.netMu.Unlock()
		st["network"], st["resolv_conf"] = string(pol), in.resolvConf
	}
	return st
}

// OOMKills implements backend.OOMCounter from the container's memory cgroup.
func (in *instance) OOMKills() (uint64, error) {
	in.pidMu.Lock()
	defer in.pidMu.Unlock()
	if in.pid == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		js, err := in.c.ContainerInspect(ctx, in.id)
		if err != nil {
			return 0, err
		}
		if js.State == nil || js.State.Pid <= 0 {
			return 0, fmt.Errorf("container %s has no process", in.id)
		}
		in.pid = js.State.Pid
	}
	return backend.OOMKills(in.pid)
}

// SetNetwork implements backend.NetworkController: only a sandbox with a
// network of ours can change its policy.
func (in *instance) SetNetwork(ctx context.Context, pol api.NetworkPolicy) error {
	if in.net == nil {
		return api.Errorf(api.ErrUnsupported, "this docker sandbox's network is Docker's own (none or bridge) and cannot change while it runs; create it with the policy the execution needs")
	}
	if err := in.net.SetPolicy(ctx, pol); err != nil {
		return err
	}
	in.netMu.Lock()
	in.network = pol // what State records, so a recovery starts from it
	in.netMu.Unlock()
	return nil
}

// OnNetworkDenial implements backend.NetworkController.
func (in *instance) OnNetworkDenial(fn func(api.NetworkDenial)) {
	if in.net != nil {
		in.net.OnDenial(fn)
	}
}

// FlushNetworkDenials implements backend.NetworkController.
func (in *instance) FlushNetworkDenials() {
	if in.net != nil {
		in.net.FlushDenials()
	}
}

// Detach implements backend.Detacher.
func (in *instance) Detach() {
	if in.net != nil {
		in.net.Detach()
	}
}

func (in *instance) markDone() { in.doneOnce.Do(func() { close(in.done) }) }

// watch closes done when the container stops or disappears — also when it
// was removed behind our back. A broken wait stream (a dockerd restart) is not
// an end: watch then asks the daemon until it answers for the container again.
func (in *instance) watch() {
	defer in.markDone()
	for {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-in.stop:
			case <-ctx.Done():
			}
			cancel()
		}()
		okc, errc := in.c.ContainerWait(ctx, in.id, container.WaitConditionNotRunning)
		select {
		case <-okc:
			cancel()
			return
		case err := <-errc:
			cancel()
			if cerrdefs.IsNotFound(err) {
				return
			}
		case <-in.stop:
			cancel()
			return
		}
		// The stream broke: find out whether the container still runs.
		for {
			select {
			case <-in.stop:
				return
			case <-time.After(time.Second):
			}
			ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
			js, err := in.c.ContainerInspect(ictx, in.id)
			icancel()
			if cerrdefs.IsNotFound(err) || (err == nil && (js.State == nil || !js.State.Running)) {
				return
			}
			if err == nil {
				break // running: wait again
			}
		}
	}
}

// Destroy removes the container (SIGKILL to everything in it: the sandbox has
// its own pid namespace, so nothing survives) and the socket directory. It is
// idempotent; ctx bounds nothing that could leave processes behind, so a done
// ctx still destroys.
func (in *instance) Destroy(context.Context) error {
	in.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := in.c.ContainerRemove(ctx, in.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			in.err = fmt.Errorf("docker backend: remove container %s: %w", shortID(in.id), err)
		}
		in.stopOnce.Do(func() { close(in.stop) })
		if in.err == nil {
			in.markDone()
		}
		removeSocketDir(in.dir)
		if in.net != nil && in.err == nil {
			if err := in.net.Close(ctx); err != nil {
				in.err = fmt.Errorf("docker backend: container %s: remove its network: %w", shortID(in.id), err)
			}
			os.Remove(in.resolvConf)
		}
	})
	return in.err
}

// logs returns the tail of the container's output, for error messages.
func (in *instance) logs(n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := in.c.ContainerLogs(ctx, in.id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "40"})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, _ = stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, int64(n)))
	return strings.TrimSpace(buf.String())
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Recover implements backend.Recoverer: the container must still run and its
// agent answer. A container that stopped is removed; anything gone is an error
// wrapping api.ErrNotFound, so the manager reaps the sandbox.
func (b *Backend) Recover(ctx context.Context, state map[string]string) (backend.Instance, error) {
	id, dir := state["container"], state["dir"]
	if id == "" || dir == "" || !strings.HasPrefix(dir, b.cfg.StateDir+"/") {
		return nil, api.Errorf(api.ErrInvalid, "docker backend: unusable recovery state %v", state)
	}
	c, err := b.client()
	if err != nil {
		return nil, err
	}
	in := b.newInstance(c, id, dir)
	js, err := c.ContainerInspect(ctx, id)
	switch {
	case cerrdefs.IsNotFound(err):
		removeSocketDir(dir)
		return nil, api.Errorf(api.ErrNotFound, "docker backend: container %s is gone", shortID(id))
	case err != nil:
		return nil, fmt.Errorf("docker backend: inspect container %s: %w", shortID(id), err)
	case js.Config == nil || js.Config.Labels[LabelManaged] != "true":
		return nil, api.Errorf(api.ErrNotFound, "docker backend: container %s is not a ds-sandbox container", shortID(id))
	case js.State == nil || !js.State.Running:
		_ = in.Destroy(context.Background())
		return nil, api.Errorf(api.ErrNotFound, "docker backend: container %s stopped", shortID(id))
	}
	if state["net_key"] != "" {
		var pol api.NetworkPolicy
		err := json.Unmarshal([]byte(state["network"]), &pol)
		var sn *sandboxnet.Net
		if err == nil {
			sn, err = b.nets.Recover(ctx, state, pol)
		}
		if err != nil {
			// Without its network's enforcement the sandbox must not run on.
			_ = in.Destroy(context.Background())
			return nil, api.Errorf(api.ErrNotFound, "docker backend: container %s: its network cannot be recovered: %v", shortID(id), err)
		}
		in.net, in.network, in.resolvConf = sn, pol, state["resolv_conf"]
	}
	ac := agentclient.NewClient(in.sock)
	defer ac.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ac.Health(hctx); err != nil {
		_ = in.Destroy(context.Background())
		return nil, api.Errorf(api.ErrNotFound, "docker backend: agent in container %s does not answer: %v", shortID(id), err)
	}
	go in.watch()
	return in, nil
}

// removeSocketDir removes a sandbox's socket directory, which a daemon not
// run by root sealed with mode 0500.
func removeSocketDir(dir string) {
	_ = os.Chmod(dir, 0o700)
	os.RemoveAll(dir)
}
