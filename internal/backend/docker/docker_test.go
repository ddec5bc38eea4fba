package docker_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet/nettest"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

var (
	setupOnce sync.Once
	setupErr  string // why the docker tests skip
	agentBin  string
	stateDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stateDir != "" {
		os.RemoveAll(filepath.Dir(agentBin))
		os.RemoveAll(stateDir)
	}
	os.Exit(code)
}

// setup skips the test unless a Docker daemon answers and the default image
// exists (scripts/docker-setup.sh provides both), and builds a static agent
// once.
func setup(t testing.TB) docker.Config {
	t.Helper()
	setupOnce.Do(func() {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = c.Ping(ctx)
			cancel()
		}
		if err != nil {
			setupErr = "no Docker daemon reachable (run scripts/docker-setup.sh): " + err.Error()
			return
		}
		if _, err := c.ImageInspect(context.Background(), docker.DefaultImage); err != nil {
			setupErr = "image " + docker.DefaultImage + " missing (run scripts/docker-setup.sh): " + err.Error()
			return
		}
		bin, _, err := backendtest.BuildStaticAgent() // removed with its directory in TestMain
		if err != nil {
			setupErr = err.Error()
			return
		}
		agentBin = bin
		stateDir, _ = os.MkdirTemp("", "dss-docker-state-")
	})
	testenv.Require(t, "a Docker daemon with the base image", setupErr == "", setupErr)
	return docker.Config{AgentPath: agentBin, StateDir: stateDir, Resolver: nettest.Resolver}
}

func spec(t *testing.T) backend.Spec {
	ws := t.TempDir()
	return backend.Spec{
		ID: "t" + strings.ToLower(strings.NewReplacer("/", "-", " ", "-", ",", "").Replace(t.Name())), User: "user", Workdir: "/home/user",
		WorkspaceDir: ws, Network: api.NetworkPolicy{Policy: api.NetworkAllow}, Python: "/usr/bin/python3",
	}
}

func start(t *testing.T, b *docker.Backend, s backend.Spec) (backend.Instance, *agentclient.Client) {
	t.Helper()
	inst, err := b.Create(t.Context(), s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	c := agentclient.NewClient(inst.AgentSocket())
	t.Cleanup(func() {
		c.Close()
		_ = inst.Destroy(context.Background())
	})
	return inst, c
}

func run(t *testing.T, c *agentclient.Client, cmd string) api.CommandResult {
	t.Helper()
	r, err := c.RunCommand(t.Context(), api.ProcessRequest{Cmd: cmd}, nil)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

func TestConformance(t *testing.T) {
	b := docker.New(setup(t))
	backendtest.ForEachEngine(t, func(t *testing.T, engine string) {
		backendtest.Run(t, b, backendtest.Options{
			EnforcesNetwork:  []string{api.NetworkAllow, api.NetworkDeny, api.NetworkWhitelist},
			WorkspaceEnvRoot: func(s backend.Spec, _ backend.Instance) string { return s.Workdir },
			// TestDestroyLeavesNothing proves the pid namespace dies with the
			// container.
			OwnPIDNamespace: true,
			Engine:          engine,
		})
	})
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	s := spec(t)
	s.Network = api.NetworkPolicy{Policy: api.NetworkDeny}
	_, c := start(t, b, s)
	tests := []struct {
		name, cmd, want string
	}{
		{"network deny leaves only loopback", "ls /sys/class/net", "lo"},
		{"no capabilities", "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u", "0000000000000000"},
		{"no new privileges", "grep NoNewPrivs /proc/self/status | awk '{print $2}'", "1"},
		{"user is not root", "test $(id -u) -ne 0 && echo nonroot", "nonroot"},
		{"root fs is read-only", "touch /usr/x 2>/dev/null && echo writable || echo read-only", "read-only"},
		{"tmp is writable", "touch /tmp/x && echo ok", "ok"},
		{"workspace is writable", "touch /home/user/x && echo ok", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, c, tt.cmd)
			if got := strings.TrimSpace(r.Stdout); got != tt.want {
				t.Errorf("%s = %q (stderr %q), want %q", tt.cmd, got, r.Stderr, tt.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	s := spec(t)
	s.MemoryMB, s.CPUCount = 256, 1
	_, c := start(t, b, s)
	// cgroup v2 inside the container (Debian 12's docker.io with systemd's
	// unified hierarchy); v1 hosts name the files differently.
	r := run(t, c, "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/pids/pids.max")
	got := strings.Fields(r.Stdout)
	want := []string{"268435456", "100000", "100000", "4096"}
	if len(got) == 3 { // v1: quota only
		want = []string{"268435456", "100000", "4096"}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("limits = %q (stderr %q), want %q", got, r.Stderr, want)
	}
}

func TestRemovedBehindOurBackIsDead(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	inst, _ := start(t, b, spec(t))
	removeContainer(t, inst)
	select {
	case <-inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed after the container was removed")
	}
}

func removeContainer(t *testing.T, inst backend.Instance) {
	t.Helper()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	id := inst.(backend.Recoverable).State()["container"]
	if err := c.ContainerRemove(t.Context(), id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverAfterDaemonRestart(t *testing.T) {
	t.Parallel()
	cfg := setup(t)
	// A state directory of its own: ReapOrphans removes the networks of its
	// state directory that no container of it has yet, which includes those
	// of sandboxes other tests are creating at the same moment.
	dir, err := os.MkdirTemp("", "dss-docker-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.StateDir = dir
	old := docker.New(cfg)
	live, _ := start(t, old, spec(t))
	s := spec(t)
	s.ID += "-gone"
	gone, _ := start(t, old, s)
	s = spec(t)
	s.ID += "-orphan"
	orphan, _ := start(t, old, s)
	removeContainer(t, gone)

	// A new daemon: a fresh backend with the same state directory (the old
	// one's in-process parts, such as a network's proxy, are gone).
	for _, i := range []backend.Instance{live, orphan} {
		i.(backend.Detacher).Detach()
	}
	b := docker.New(cfg)
	in, err := b.Recover(t.Context(), live.(backend.Recoverable).State())
	if err != nil {
		t.Fatalf("Recover a running sandbox: %v", err)
	}
	c := agentclient.NewClient(in.AgentSocket())
	defer c.Close()
	if r := run(t, c, "echo back"); strings.TrimSpace(r.Stdout) != "back" {
		t.Fatalf("recovered sandbox answers %q", r.Stdout)
	}
	if _, err := b.Recover(t.Context(), gone.(backend.Recoverable).State()); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Recover a removed container: %v, want ErrNotFound", err)
	}
	liveID := s.ID[:len(s.ID)-len("-orphan")]
	n, err := b.ReapOrphans(t.Context(), func(id string) bool { return id == liveID || !strings.HasPrefix(id, liveID) })
	if err != nil || n != 1 {
		t.Fatalf("ReapOrphans = %d, %v; want 1 (the orphan)", n, err)
	}
	select {
	case <-orphan.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the reaped orphan's Done did not close")
	}
	if err := in.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-live.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the old instance did not see its container go")
	}
}

func TestImageWithoutIpykernel(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	// The base image minus ipykernel, made with a commit (no registry here).
	const image = "ds-sandbox/test-no-ipykernel:latest"
	ctx := t.Context()
	ct, err := c.ContainerCreate(ctx, &container.Config{Image: docker.DefaultImage,
		Entrypoint: []string{"sh", "-c", "rm -rf /usr/lib/python3/dist-packages/ipykernel*"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.ContainerRemove(context.Background(), ct.ID, container.RemoveOptions{Force: true})
	if err := c.ContainerStart(ctx, ct.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	okc, errc := c.ContainerWait(ctx, ct.ID, container.WaitConditionNotRunning)
	select {
	case <-okc:
	case err := <-errc:
		t.Fatal(err)
	}
	if _, err := c.ContainerCommit(ctx, ct.ID, container.CommitOptions{Reference: image}); err != nil {
		t.Fatal(err)
	}
	s := spec(t)
	s.Image = image
	inst, err := b.Create(ctx, s)
	if err == nil {
		inst.Destroy(context.Background())
		t.Fatal("Create succeeded on an image without ipykernel")
	}
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "ipykernel") {
		t.Fatalf("Create: %v; want ErrInvalid naming ipykernel", err)
	}
}

// TestWhitelistRefused: without a network of ours (here: an unusable
// address pool) a whitelist cannot be enforced, so it is refused.
func TestWhitelistRefused(t *testing.T) {
	t.Parallel()
	cfg := setup(t)
	cfg.NetPool = netip.MustParsePrefix("fd00::/64")
	b := docker.New(cfg)
	s := spec(t)
	s.Network = api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: []string{"example.org"}}
	if _, err := b.Create(t.Context(), s); !errors.Is(err, api.ErrUnsupported) {
		t.Fatalf("whitelist: %v, want ErrUnsupported", err)
	}
}

// TestDestroyLeavesNothing backs the conformance suite, which cannot check the
// pids of a sandbox with its own pid namespace: Destroy removes the container,
// and with it the namespace and every process in it.
func TestDestroyLeavesNothing(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	inst, c := start(t, b, spec(t))
	run(t, c, "setsid sh -c 'sleep 1000 &' </dev/null >/dev/null 2>&1")
	id := inst.(backend.Recoverable).State()["container"]
	if err := inst.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ContainerInspect(t.Context(), id); !cerrdefs.IsNotFound(err) {
		t.Fatalf("container after Destroy: %v, want not found", err)
	}
	if _, err := os.Stat(inst.AgentSocket()); !os.IsNotExist(err) {
		t.Fatalf("socket after Destroy: %v", err)
	}
}

func TestSandboxCannotReplaceItsSocket(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	inst, c := start(t, b, spec(t))
	run(t, c, "rm -f /run/ds-sandbox/agent.sock; ln -sf /var/run/docker.sock /run/ds-sandbox/agent.sock")
	st, err := os.Lstat(inst.AgentSocket())
	if err != nil || st.Mode().Type() != os.ModeSocket {
		t.Fatalf("the sandbox replaced its agent socket: %v %v", st, err)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestSecurity runs the shared attack suite (backendtest.Security).
func TestSecurity(t *testing.T) {
	b := docker.New(setup(t))
	backendtest.ForEachEngine(t, func(t *testing.T, engine string) {
		backendtest.Security(t, b, backendtest.SecurityOptions{
			SocketDir: "/run/ds-sandbox",
			HostUID:   1000, // docker.Config's default SandboxUID
			Engine:    engine,
		})
	})
}

// TestAllowReachesNeitherHostNorOtherSandbox attacks what policy allow
// gives on docker: the host's services listening on every address (through
// the default gateway) and another allow sandbox's server. With a network of
// ours (root, a local dockerd, ip and nft) both must be unreachable. Without
// one, allow is Docker's default bridge and both are reached: a KNOWN GAP,
// reported by skipping. Nothing leaves the machine.
func TestAllowReachesNeitherHostNorOtherSandbox(t *testing.T) {
	t.Parallel()
	b := docker.New(setup(t))
	port := nettest.HostService(t)
	s := spec(t)
	s.ID += "-other"
	_, other := start(t, b, s)
	if _, err := other.StartProcess(t.Context(), api.ProcessRequest{Cmd: "python3 -c \"import socket; s = socket.socket(); s.bind(('0.0.0.0', 8000)); s.listen()\nwhile True: c, _ = s.accept(); c.sendall(b'other-secret'); c.close()\""}); err != nil {
		t.Fatal(err)
	}
	otherAddr := strings.TrimSpace(run(t, other, "hostname -I").Stdout)
	inst, c := start(t, b, spec(t))
	_, ours := inst.(backend.Recoverable).State()["net_key"]
	connect := func(addr string, port int) string {
		r := run(t, c, fmt.Sprintf("python3 -c \"import socket, time\nfor _ in range(100):\n    try:\n        print(socket.create_connection(('%s', %d), timeout=3).recv(100)); break\n    except ConnectionRefusedError: time.sleep(0.1)\"", addr, port))
		return r.Stdout + r.Stderr
	}
	gateway := strings.TrimSpace(run(t, c, "python3 -c \"import socket, struct\nfor l in open('/proc/net/route').readlines()[1:]:\n    f = l.split()\n    if f[1] == '00000000': print(socket.inet_ntoa(struct.pack('<L', int(f[2], 16))))\"").Stdout)
	var reached []string
	if out := connect(gateway, port); strings.Contains(out, "host secret") {
		reached = append(reached, fmt.Sprintf("a host service on 0.0.0.0:%d through the bridge gateway %s", port, gateway))
	}
	if out := connect(otherAddr, 8000); strings.Contains(out, "other-secret") {
		reached = append(reached, "another allow sandbox's server at "+otherAddr+":8000")
	}
	switch {
	case !ours && os.Geteuid() == 0:
		t.Fatal("as root next to a local dockerd, the sandbox did not get a network of ours (are ip and nft installed?)")
	case len(reached) > 0 && ours:
		t.Errorf("under network allow (a network of ours) the sandbox reaches %s", strings.Join(reached, " and "))
	case len(reached) > 0:
		t.Skipf("KNOWN GAP: without a network of ours (not root, no ip/nft, or a remote dockerd) allow is Docker's bridge, and a sandbox reaches %s", strings.Join(reached, " and "))
	case !ours:
		t.Logf("Docker's bridge, yet nothing reached (a host firewall?)")
	}
}
