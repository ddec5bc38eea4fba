// Package docker is the `docker` backend: each sandbox is a container, made
// through the Docker Engine API, from the template's image (default: the
// ds-sandbox base image built by scripts/docker-setup.sh). The agent binary is
// bind-mounted read-only and runs as the container's entrypoint (under
// docker-init), serving on a socket in a host directory bind-mounted at
// /run/ds-sandbox, which the manager dials from the host.
//
// Containers run as a non-root user with every capability dropped,
// no-new-privileges, a read-only root filesystem with a tmpfs /tmp, a pids
// limit and the template's memory and CPU limits. Network policy deny is
// network "none". allow and whitelist, when the daemon runs as root next to
// a local dockerd with ip and nft installed, are network "none" plus a
// network of internal/sandboxnet joined to the container's namespace right
// after start (host-side rules, DNS server, egress proxy: the same
// enforcement as the oci backend, changeable per execution); otherwise allow
// is Docker's default bridge (no filtering of private or metadata addresses)
// and whitelist is refused. Containers carry the labels
// ds-sandbox.managed=true and ds-sandbox.sandbox-id, so a restarted daemon
// re-attaches to them (Recover) and reaps the ones it lost (ReapOrphans).
package docker

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

// DefaultImage is the image of sandboxes whose template names none: the base
// image scripts/docker-setup.sh builds from Debian packages.
const DefaultImage = "ds-sandbox/base:bookworm"

// Labels on every container this backend makes.
const (
	LabelManaged   = "ds-sandbox.managed"
	LabelSandboxID = "ds-sandbox.sandbox-id"
	// LabelOwner is the backend's StateDir: daemons with different state
	// directories on one Docker host never reap each other's containers.
	LabelOwner = "ds-sandbox.owner"
	// LabelProcess is "pid:start-time" of the embedding program that owns the
	// container (Config.Embedded); absent on a daemon's containers.
	LabelProcess = "ds-sandbox.process"
)

// Paths inside the container.
const (
	agentPath = "/opt/ds-sandbox/ds-sandbox"
	socketDir = "/run/ds-sandbox"
)

// Config configures the docker backend.
type Config struct {
	// AgentPath is the ds-sandbox binary mounted into containers as the agent;
	// it must be statically linked (CGO_ENABLED=0). "" finds it as the local
	// backend does (agent.Command).
	AgentPath string
	// StateDir holds one directory per sandbox with the agent's socket.
	// Default: a directory under os.TempDir.
	StateDir string
	// Image is the default image; "" means DefaultImage.
	Image string
	// Host is the Docker Engine address; "" means DOCKER_HOST or the default
	// socket.
	Host string
	// SandboxUID and SandboxGID run containers whose workspace is owned by
	// root (the workspace is chowned to them first); default 1000. A workspace
	// owned by anyone else is used as it is, the container running as its
	// owner.
	SandboxUID, SandboxGID int
	// PidsLimit bounds the processes of one sandbox; default 4096.
	PidsLimit int64
	// StartTimeout bounds the agent start; default 60s.
	StartTimeout time.Duration
	// Embedded says sandboxes belong to this program (embedded mode: `run`,
	// the SDK) and should die with it. Containers cannot be tied to a process
	// as the local backend's agents are (parent-death signal), so each carries
	// the program's pid and start time, and the first Create removes the
	// containers of programs that are gone.
	Embedded bool
	// NetPool and Resolver configure sandbox networks as for the oci backend
	// (sandboxnet.Config.Pool and Resolver).
	NetPool  netip.Prefix
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Backend is the docker backend.
type Backend struct {
	cfg Config
	// nets makes allow and whitelist networks; nil (netErr says why) when
	// the config cannot.
	nets   *sandboxnet.Manager
	netErr error

	mu  sync.Mutex
	cli *client.Client
	// checked holds "imageID python" pairs known to have ipykernel.
	checked sync.Map
	// reapOnce runs reapDeadOwners once (Embedded).
	reapOnce sync.Once
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Recoverer      = (*Backend)(nil)
	_ backend.NetworkChecker = (*Backend)(nil)
)

// New returns a docker backend. It does not contact the daemon.
func New(cfg Config) *Backend {
	if cfg.Image == "" {
		cfg.Image = DefaultImage
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(os.TempDir(), "ds-sandbox-docker")
	}
	if cfg.SandboxUID == 0 {
		cfg.SandboxUID = 1000
	}
	if cfg.SandboxGID == 0 {
		cfg.SandboxGID = cfg.SandboxUID
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = 4096
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	b := &Backend{cfg: cfg}
	sum := sha256.Sum256([]byte("docker " + cfg.StateDir))
	b.nets, b.netErr = sandboxnet.New(sandboxnet.Config{Tag: hex.EncodeToString(sum[:4]), Pool: cfg.NetPool, Resolver: cfg.Resolver})
	return b
}

// networkAvailable returns nil when allow and whitelist sandboxes can get a
// network of ours: the daemon is root (sandboxnet says what else), and
// dockerd runs on this host (its containers' pids are ours to join).
func (b *Backend) networkAvailable(c *client.Client) error {
	if b.netErr != nil {
		return b.netErr
	}
	if h := c.DaemonHost(); !strings.HasPrefix(h, "unix://") {
		return fmt.Errorf("dockerd at %s is not on this host", h)
	}
	return b.nets.Available()
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "docker" }

// CheckNetwork implements backend.NetworkChecker: deny and allow always
// (allow falls back to Docker's bridge), whitelist only with a network of
// ours (see networkAvailable).
func (b *Backend) CheckNetwork(policy string) error {
	switch policy {
	case "", api.NetworkAllow, api.NetworkDeny:
		return nil
	case api.NetworkWhitelist:
		c, err := b.client()
		if err == nil {
			err = b.networkAvailable(c)
		}
		if err != nil {
			return api.Errorf(api.ErrUnsupported, "the docker backend cannot enforce network policy %q here: %v; use deny or allow", policy, err)
		}
		return nil
	}
	return api.Errorf(api.ErrUnsupported, "the docker backend does not know network policy %q", policy)
}

// Enforces implements backend.Enforcer.
func (b *Backend) Enforces() []string {
	out := []string{
		"a container per sandbox: non-root user, no capabilities, no-new-privileges, Docker's seccomp profile, read-only root",
		"memory_mb and cpu_count: cgroup limits",
		fmt.Sprintf("pids_limit (default %d): cgroup pids.max; the agent keeps threads in reserve against fork bombs", b.cfg.PidsLimit),
		"max_open_files: nofile ulimit of the code",
		"network deny: loopback only",
	}
	c, err := b.client()
	if err == nil {
		err = b.networkAvailable(c)
	}
	if err != nil {
		return append(out, "network allow: Docker's default bridge (private and metadata addresses not filtered)",
			"network whitelist: refused here ("+err.Error()+")")
	}
	return append(out, sandboxnet.Enforces()...)
}

// client returns the Engine API client, made on first use. The API version is
// negotiated: Debian 12's docker.io speaks 1.41.
func (b *Backend) client() (*client.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cli != nil {
		return b.cli, nil
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if b.cfg.Host != "" {
		opts = append(opts, client.WithHost(b.cfg.Host))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker backend: %w", err)
	}
	b.cli = c
	return c, nil
}

// Available implements backend.Backend: it needs a daemon that answers, a
// static agent binary and the default image.
func (b *Backend) Available(ctx context.Context) error {
	if _, err := b.agentBinary(); err != nil {
		return err
	}
	c, err := b.client()
	if err != nil {
		return err
	}
	if _, err := c.Ping(ctx); err != nil {
		return fmt.Errorf("docker backend: no Docker daemon answers (%v); install docker.io and start dockerd (scripts/docker-setup.sh does both)", err)
	}
	if _, err := c.ImageInspect(ctx, b.cfg.Image); err != nil {
		return fmt.Errorf("docker backend: image %s: %v; build it with scripts/docker-setup.sh", b.cfg.Image, err)
	}
	return nil
}

// agentBinary returns the host path of the agent binary, checking that it is
// statically linked: it runs in images with whatever libc (or none).
func (b *Backend) agentBinary() (string, error) {
	argv, _, err := agent.Command(b.cfg.AgentPath)
	if err != nil {
		return "", fmt.Errorf("docker backend: %w", err)
	}
	if len(argv) < 2 || argv[1] != "agent" {
		return "", errors.New("docker backend: the agent must be a ds-sandbox binary (set SANDBOX_AGENT_PATH); this program only re-executes itself as one")
	}
	f, err := elf.Open(argv[0])
	if err != nil {
		return "", fmt.Errorf("docker backend: agent binary %s: %w", argv[0], err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("docker backend: agent binary %s is dynamically linked (built with cgo), so it cannot run inside the sandbox's image: "+
				"build it with CGO_ENABLED=0 (ds-sandbox: scripts/build.sh, or CGO_ENABLED=0 go install github.com/ds-sandbox/ds-sandbox/cmd/ds-sandbox@latest), "+
				"or set SANDBOX_AGENT_PATH to a static ds-sandbox", argv[0])
		}
	}
	return argv[0], nil
}

// minAgentNofile is the least RLIMIT_NOFILE the agent keeps for itself when
// the code's is set lower.
const minAgentNofile = 4096

// MinPidsLimit is the smallest pids limit the backend accepts: the agent, a
// kernel and its threads need a few dozen tasks before any code runs.
const MinPidsLimit = 128

// Create implements backend.Backend in steps: check the spec, choose the
// network, find the image and the workspace's owner, make the socket
// directory and (when ours) the network, create and start the container, join
// it to the network, wait for its agent, seal the socket directory and check
// the image's Python. Every failure after the socket directory exists goes
// through fail, which removes what was made so far.
func (b *Backend) Create(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if err := checkLimits(spec); err != nil {
		return nil, err
	}
	bin, err := b.agentBinary()
	if err != nil {
		return nil, err
	}
	c, err := b.client()
	if err != nil {
		return nil, err
	}
	netMode, ours, err := b.networkMode(c, spec.Network.Policy)
	if err != nil {
		return nil, err
	}
	image := spec.Image
	if image == "" {
		image = b.cfg.Image
	}
	imgID, err := imageID(ctx, c, image)
	if err != nil {
		return nil, err
	}
	uid, gid, err := b.workspaceOwner(spec.WorkspaceDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("docker backend: %w", err)
	}
	dir, err := os.MkdirTemp(b.cfg.StateDir, "sb-")
	if err != nil {
		return nil, fmt.Errorf("docker backend: %w", err)
	}
	name := containerName(spec.ID)
	resolvConf := filepath.Join(b.cfg.StateDir, "resolv-"+sandboxnet.KeyFor(name)+".conf")
	var (
		sn *sandboxnet.Net
		in *instance
	)
	// fail removes what Create made: the instance (its container, socket
	// directory and network) once there is one, else the network, its
	// resolv.conf and the socket directory.
	fail := func(err error) (backend.Instance, error) {
		if in != nil {
			_ = in.Destroy(context.Background())
			return nil, err
		}
		if sn != nil {
			_ = sn.Close(context.Background())
			os.Remove(resolvConf)
		}
		os.RemoveAll(dir)
		return nil, err
	}
	// The agent (uid) creates its socket here; nobody else may.
	if err := os.Chown(dir, uid, gid); err != nil {
		return fail(fmt.Errorf("docker backend: %w", err))
	}
	b.removeStale(ctx, c, name)
	if ours {
		pol := spec.Network
		if pol.Policy == "" {
			pol.Policy = api.NetworkAllow
		}
		key := sandboxnet.KeyFor(name)
		_ = b.nets.Remove(ctx, key) // a crashed daemon's, under the same name
		if sn, err = b.nets.Create(ctx, key, pol); err != nil {
			return fail(fmt.Errorf("docker backend: network: %w", err))
		}
		if err := os.WriteFile(resolvConf, []byte(sn.ResolvConf()), 0o644); err != nil {
			return fail(fmt.Errorf("docker backend: %w", err))
		}
	}
	if b.cfg.Embedded {
		b.reapOnce.Do(func() { go b.reapDeadOwners(c) })
	}
	cc, hc := b.containerConfig(spec, containerPlan{image: image, agentBin: bin, dir: dir, uid: uid, gid: gid,
		netMode: netMode, net: sn, resolvConf: resolvConf})
	created, err := c.ContainerCreate(ctx, cc, hc, nil, nil, name)
	if err != nil {
		return fail(fmt.Errorf("docker backend: create container: %w", err))
	}
	in = b.newInstance(c, created.ID, dir)
	if sn != nil {
		in.net, in.network, in.resolvConf = sn, spec.Network, resolvConf
	}
	if err := c.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fail(fmt.Errorf("docker backend: start container: %w", err))
	}
	if sn != nil {
		// The agent is starting; no sandbox code runs before Create returns.
		if err := joinNet(ctx, c, created.ID, sn); err != nil {
			return fail(fmt.Errorf("docker backend: network: %w", err))
		}
	}
	go in.watch()
	if err := backend.WaitReady(ctx, in.sock, in.done, b.cfg.StartTimeout); err != nil {
		// The logs are read before fail removes the container.
		return fail(fmt.Errorf("docker backend: agent did not start: %w; container output: %s", err, in.logs(4<<10)))
	}
	// The agent has made its socket; from now on the sandbox must not replace
	// it (say, with a symlink to a host socket the daemon would then dial).
	if os.Geteuid() == 0 {
		err = os.Chown(dir, 0, 0)
	} else {
		err = os.Chmod(dir, 0o500)
	}
	if err != nil {
		return fail(fmt.Errorf("docker backend: seal the socket directory: %w", err))
	}
	if err := b.checkPython(ctx, in, imgID, spec.Python); err != nil {
		return fail(err)
	}
	return in, nil
}

// imageID returns the ID of the image named image, which must exist.
func imageID(ctx context.Context, c *client.Client, image string) (string, error) {
	img, err := c.ImageInspect(ctx, image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", api.Errorf(api.ErrInvalid, "docker backend: image %s not found; build it (ds-sandbox template build, or scripts/docker-setup.sh for the default image)", image)
		}
		return "", fmt.Errorf("docker backend: image %s: %w", image, err)
	}
	return img.ID, nil
}

// joinNet joins the started container id to the network sn.
func joinNet(ctx context.Context, c *client.Client, id string, sn *sandboxnet.Net) error {
	js, err := c.ContainerInspect(ctx, id)
	if err != nil {
		return err
	}
	if js.State == nil || js.State.Pid <= 0 {
		return errors.New("the container has no process")
	}
	return sn.Join(ctx, js.State.Pid)
}

// checkLimits refuses limits the backend cannot apply.
func checkLimits(spec backend.Spec) error {
	if spec.PidsLimit < 0 || spec.MaxOpenFiles < 0 || spec.MaxOutputBytes < 0 {
		return api.Errorf(api.ErrInvalid, "docker backend: negative limits (pids_limit %d, max_open_files %d, max_output_bytes %d)", spec.PidsLimit, spec.MaxOpenFiles, spec.MaxOutputBytes)
	}
	if spec.PidsLimit > 0 && spec.PidsLimit < MinPidsLimit {
		return api.Errorf(api.ErrInvalid, "docker backend: pids_limit %d is below the minimum %d (the agent and a kernel need that many tasks)", spec.PidsLimit, MinPidsLimit)
	}
	return nil
}

// networkMode is the container's Docker network mode for policy, and whether
// the sandbox gets a network of sandboxnet (ours: mode "none" plus a veth
// joined after start).
func (b *Backend) networkMode(c *client.Client, policy string) (mode string, ours bool, err error) {
	switch policy {
	case "", api.NetworkAllow:
		if b.networkAvailable(c) == nil {
			return "none", true, nil
		}
		return "bridge", false, nil
	case api.NetworkDeny:
		return "none", false, nil
	case api.NetworkWhitelist:
		// Never fail open: without our network a whitelist cannot be
		// enforced.
		if err := b.networkAvailable(c); err != nil {
			return "", false, api.Errorf(api.ErrUnsupported,
				"the docker backend cannot enforce network policy %q here: %v; use deny or allow", policy, err)
		}
		return "none", true, nil
	default:
		return "", false, api.Errorf(api.ErrUnsupported, "the docker backend does not know network policy %q", policy)
	}
}

// checkPython makes sure the image's interpreter can run a kernel, once per
// image and interpreter: an image without Python or ipykernel fails here, at
// create, rather than at the first cell.
func (b *Backend) checkPython(ctx context.Context, in *instance, imageID, python string) error {
	key := imageID + " " + python
	if _, ok := b.checked.Load(key); ok {
		return nil
	}
	ac := agentclient.NewClient(in.sock)
	defer ac.Close()
	res, err := ac.RunCommand(ctx, api.ProcessRequest{Cmd: shellQuote(python) + ` -c "import ipykernel"`, TimeoutMs: 60000}, nil)
	if err != nil {
		return fmt.Errorf("docker backend: check the image's Python: %w", err)
	}
	if res.ExitCode != 0 {
		return api.Errorf(api.ErrInvalid, "docker backend: image %s cannot run Python kernels: `%s -c \"import ipykernel\"` failed (exit %d): %s; install python3 and ipykernel in the image (see docs/DOCKER.md)",
			imageID, python, res.ExitCode, strings.TrimSpace(res.Stderr+" "+res.Error))
	}
	b.checked.Store(key, true)
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
