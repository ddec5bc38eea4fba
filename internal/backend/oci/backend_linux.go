package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

var (
	_ backend.Recoverer         = (*Backend)(nil)
	_ backend.Recoverable       = (*instance)(nil)
	_ backend.NetworkController = (*instance)(nil)
	_ backend.Detacher          = (*instance)(nil)
	_ backend.OOMCounter        = (*instance)(nil)
)

// Available implements backend.Backend: it needs the runtime binary, user
// namespaces, the agent binary and a state directory; without root also
// newuidmap/newgidmap and a subordinate id range (rootless mode, proved by
// making the namespace once).
func (b *Backend) Available(ctx context.Context) error {
	var missing []string
	if _, err := lookRuntime(b.cfg.Runtime); err != nil {
		how := "run scripts/oci-setup.sh, or apt-get install runc crun"
		if isRunsc(b.cfg.Runtime) {
			how = "gVisor is not packaged by Debian: scripts/gvisor-setup.sh builds runsc from the Go module proxy and prints its path for oci_runtime"
		}
		missing = append(missing, fmt.Sprintf("the OCI runtime %q is not installed (%s)", b.cfg.Runtime, how))
	}
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		missing = append(missing, "the kernel has no user namespaces (CONFIG_USER_NS)")
	} else if b.rootless {
		missing = append(missing, rootlessMissing(b.cfg.Runtime)...)
	} else if n, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(n)) == "0" {
		missing = append(missing, "user namespaces are disabled (sysctl user.max_user_namespaces=0)")
	}
	if _, _, err := agent.Command(b.cfg.AgentPath); err != nil {
		missing = append(missing, err.Error())
	}
	if filepath.Base(b.cfg.Runtime) == "crun" && hybridWithV2Controllers() {
		missing = append(missing, "crun refuses this host's hybrid cgroup hierarchy (cgroup v2 has controllers: "+
			"/sys/fs/cgroup/unified/cgroup.controllers is not empty), rootless too; use runc, or boot with a pure v1 or v2 hierarchy")
	}
	if b.cfg.StateDir == "" {
		missing = append(missing, "no state directory configured")
	}
	if len(missing) == 0 && b.rootless {
		if _, _, err := b.rootlessMaps(ctx); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) > 0 {
		mode := ""
		if b.rootless {
			mode = " (rootless: the daemon is not root)"
		}
		return fmt.Errorf("oci backend unavailable%s: %s", mode, strings.Join(missing, "; "))
	}
	return nil
}

// CheckNetwork implements backend.NetworkChecker: deny always; allow and
// whitelist need the host's network tools (see networkAvailable): as root
// ip and nft, rootless slirp4netns, nft and nsenter.
func (b *Backend) CheckNetwork(policy string) error {
	switch policy {
	case api.NetworkDeny:
		return nil
	case api.NetworkAllow, api.NetworkWhitelist:
		if err := b.networkAvailable(); err != nil {
			mode := ""
			if b.rootless {
				mode = " (rootless: the daemon is not root)"
			}
			return api.Errorf(api.ErrUnsupported, "the oci backend%s cannot enforce network policy %q here: %v; use network policy deny", mode, policy, err)
		}
		return nil
	}
	return api.Errorf(api.ErrInvalid, "oci backend: network policy %q is not one of allow, deny, whitelist", policy)
}

// hybridWithV2Controllers reports a hybrid cgroup hierarchy (v1 controllers
// plus a v2 mount) whose v2 side holds controllers, which crun refuses.
func hybridWithV2Controllers() bool {
	c, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	return err == nil && len(strings.TrimSpace(string(c))) > 0
}

// lookRuntime finds the runtime binary: in PATH, or for a bare name also in
// /usr/sbin and /usr/local/sbin, where Debian puts runc but an ordinary
// user's PATH does not look.
func lookRuntime(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil || strings.Contains(name, "/") {
		return p, err
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p, err2 := exec.LookPath(filepath.Join(dir, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

func (b *Backend) runtime() runtimeCLI {
	bin, err := lookRuntime(b.cfg.Runtime)
	if err != nil {
		bin = b.cfg.Runtime // the command fails, saying so
	}
	rt := runtimeCLI{bin: bin, root: filepath.Join(b.cfg.StateDir, "runtime"), flags: b.cfg.RuntimeFlags}
	if b.rootless {
		// The runtime is root of the outer user namespace, not of the host:
		// runc's rootless cgroup manager ignores the cgroups it cannot make
		// (there are no limits to set: Create refused them).
		unshareBin, err := exec.LookPath("unshare")
		if err != nil {
			unshareBin = "unshare" // the command fails, saying so
		}
		rt.wrap = outerNamespaceArgs(unshareBin)
		if filepath.Base(bin) == "runc" {
			rt.flags = append([]string{"--rootless=true"}, rt.flags...)
		}
	}
	return rt
}

// deny is the runtime for a sandbox of network policy deny: runsc gets
// gVisor's loopback-only netstack (its default takes the namespace's
// interfaces); other runtimes need nothing, the namespace they make has
// loopback alone.
func (r runtimeCLI) deny() runtimeCLI {
	if filepath.Base(r.bin) == "runsc" {
		r.flags = append(slices.Clip(r.flags), "--network=none")
	}
	return r
}

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if b.rootless {
		if err := b.checkRootless(spec); err != nil {
			return nil, err
		}
	}
	if err := b.CheckNetwork(spec.Network.Policy); err != nil {
		return nil, err
	}
	if spec.Image != "" {
		return nil, api.Errorf(api.ErrUnsupported, "the oci backend runs the host's system read-only, not images (template image %q); use the docker backend", spec.Image)
	}
	if err := checkLimits(spec); err != nil {
		return nil, err
	}
	ids := idMaps{
		uid: []specs.LinuxIDMapping{{ContainerID: 0, HostID: b.cfg.UIDBase, Size: idMapSize}},
		gid: []specs.LinuxIDMapping{{ContainerID: 0, HostID: b.cfg.UIDBase, Size: idMapSize}},
	}
	if b.rootless {
		var err error
		if ids.uid, ids.gid, err = b.rootlessMaps(ctx); err != nil {
			return nil, api.Errorf(api.ErrUnsupported, "oci backend (rootless): %v", err)
		}
	}
	if err := checkWorkdir(spec.Workdir); err != nil {
		return nil, err
	}
	argv, agentEnv, err := agent.Command(b.cfg.AgentPath)
	if err != nil {
		return nil, fmt.Errorf("oci backend: %w", err)
	}
	bundleDirs.RLock()
	err = mkdirSearchable(b.cfg.BundleDir, b.rootless)
	var dir string
	if err == nil {
		dir, err = os.MkdirTemp(b.cfg.BundleDir, "s-")
	}
	bundleDirs.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("oci backend: %w", err)
	}
	// The runtime's init, already in the user namespace, walks to the rootfs.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("oci backend: %w", err)
	}
	l := bundle{dir: dir}
	cid := containerID(spec.ID)
	rt := b.runtime()
	if spec.Network.Policy == api.NetworkDeny {
		rt = rt.deny()
	}
	var sn *sandboxnet.Net
	fail := func(err error) (backend.Instance, error) {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = rt.run(dctx, "delete", "--force", cid)
		if sn != nil {
			_ = sn.Close(dctx)
		}
		rt.removeBundle(dir)
		return nil, err
	}
	if spec.Network.Policy != api.NetworkDeny && b.rootless {
		// Made once the container (and with it its namespace) exists.
		if sn, err = b.nets.NewRootless(sandboxnet.KeyFor(cid), netHelper(argv), agentEnv); err != nil {
			return fail(fmt.Errorf("oci backend: network: %w", err))
		}
	} else if spec.Network.Policy != api.NetworkDeny {
		if sn, err = b.nets.Create(ctx, sandboxnet.KeyFor(cid), spec.Network); err != nil {
			return fail(fmt.Errorf("oci backend: network: %w", err))
		}
		// gVisor's netstack takes the interfaces of the namespace it is
		// created in: it must be ready first. runc and crun make the
		// namespace themselves (owned by the container's user namespace, as
		// mounting sysfs needs) and get the veth between create and start.
		if isRunsc(b.cfg.Runtime) {
			if err := sn.Join(ctx, 0); err != nil {
				return fail(fmt.Errorf("oci backend: network: %w", err))
			}
		}
	}
	// Rootless the sandbox user is the daemon's own: nothing to change
	// (the walk still refuses a workspace holding files of other users).
	if err := chownWorkspace(spec.WorkspaceDir, int(b.HostUID()), int(b.hostGID())); err != nil {
		return fail(fmt.Errorf("oci backend: give the workspace to the sandbox user: %w", err))
	}
	if err := b.build(l, spec, argv, agentEnv, cid, sn, ids); err != nil {
		return fail(fmt.Errorf("oci backend: bundle: %w", err))
	}
	logf, err := os.OpenFile(l.log(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail(fmt.Errorf("oci backend: %w", err))
	}
	// The container's stdio is the log file (never a pipe: the container
	// outlives this call and the daemon).
	cmd := rt.command(ctx, "create", "--bundle", dir, "--pid-file", l.pidFile(), cid)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, logf, logf
	err = cmd.Run()
	logf.Close()
	if err != nil {
		return fail(fmt.Errorf("oci backend: %s create: %w: %s", rt.bin, err, backend.Tail(l.log(), 4<<10)))
	}
	if sn != nil && !isRunsc(b.cfg.Runtime) {
		pid, err := readPid(l.pidFile())
		if err != nil {
			return fail(fmt.Errorf("oci backend: %w", err))
		}
		if b.rootless {
			err = sn.Attach(ctx, pid, spec.Network)
		} else {
			err = sn.Join(ctx, pid)
		}
		if err != nil {
			return fail(fmt.Errorf("oci backend: network: %w", err))
		}
	}
	if _, err := rt.run(ctx, "start", cid); err != nil {
		return fail(fmt.Errorf("oci backend: %w", err))
	}
	in, err := attach(ctx, rt, cid, l)
	if in != nil {
		in.b = b
	}
	if err != nil {
		return fail(fmt.Errorf("oci backend: %w", err))
	}
	in.net, in.network = sn, spec.Network
	if err := backend.WaitReady(ctx, l.socket(), in.done, b.cfg.StartTimeout); err != nil {
		out := backend.Tail(l.log(), 4<<10) // before Destroy removes the bundle
		_ = in.Destroy(context.Background())
		return nil, fmt.Errorf("oci backend: agent did not start: %w; agent output: %s", err, out)
	}
	// The agent has made its socket; from now on the sandbox must not
	// replace it (say, with a symlink to a host socket, or another
	// sandbox's, that the daemon would then dial as root). Host root is
	// unmapped inside, so the directory becomes nobody's, mode 0700.
	if err := rt.seal(ctx, l.run()); err != nil {
		_ = in.Destroy(context.Background())
		return nil, fmt.Errorf("oci backend: seal the socket directory: %w", err)
	}
	return in, nil
}

// seal gives the socket directory dir to someone the sandbox user is not:
// host root (mode 0700); rootless, where the sandbox user is the daemon's
// own uid, the container's root (a subordinate id, chowned from inside the
// outer namespace), mode 0711 so the daemon can still reach the socket.
func (r runtimeCLI) seal(ctx context.Context, dir string) error {
	if len(r.wrap) == 0 {
		return os.Chown(dir, 0, 0)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	return r.inOuter(ctx, "chown", "1:1", "--", dir)
}

// removeBundle removes a bundle directory; rootless, from inside the outer
// namespace, where its sealed socket directory (a subordinate id's) is
// root's to remove.
// The directory of the bundles goes too when it is left empty (an empty
// /run/ds-sandbox/oci-<hash> was left behind after every sandbox ended);
// bundleDirs keeps that from racing with a Create making a bundle in it.
func (r runtimeCLI) removeBundle(dir string) {
	defer func() {
		bundleDirs.Lock()
		_ = os.Remove(filepath.Dir(dir)) // only when empty
		bundleDirs.Unlock()
	}()
	if err := os.RemoveAll(dir); err == nil || len(r.wrap) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.inOuter(ctx, "rm", "-rf", "--", dir)
}

// bundleDirs is held shared while a Create makes its bundle's directory and
// exclusively while an emptied directory of bundles is removed.
var bundleDirs sync.RWMutex

// inOuter runs a command in the outer namespaces (rootless only).
func (r runtimeCLI) inOuter(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, r.wrap[0], append(r.wrap[1:len(r.wrap):len(r.wrap)], argv...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// netHelper is the command of the agent's network sockets helper (see
// agent.NetSocketsArg) for the agent command argv.
func netHelper(argv []string) []string {
	return append(argv[:len(argv):len(argv)], agent.NetSocketsArg)
}

// readPid reads the runtime's pid file of a created container.
func readPid(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid file %s: %q", p, b)
	}
	return pid, nil
}

// attach finds the container's init and watches it: Done closes when it
// exits (with it, the whole pid namespace).
func attach(ctx context.Context, rt runtimeCLI, cid string, l bundle) (*instance, error) {
	st, err := rt.state(ctx, cid)
	if err != nil {
		return nil, err
	}
	in := &instance{rt: rt, cid: cid, bundle: l, done: make(chan struct{})}
	if st.Status != "running" || st.Pid <= 0 {
		close(in.done)
		return in, nil
	}
	// A pidfd pins the process: a recycled pid cannot fool us.
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		close(in.done)
		return in, nil
	}
	go func() {
		backend.WaitPidfd(fd)
		close(in.done)
	}()
	in.pid = st.Pid
	return in, nil
}

// Recover implements backend.Recoverer: the container must still run and its
// agent answer; anything else is an error wrapping api.ErrNotFound, after the
// remains are cleaned up.
func (b *Backend) Recover(ctx context.Context, state map[string]string) (backend.Instance, error) {
	cid, dir := state["container"], state["dir"]
	if cid == "" || dir == "" || !strings.HasPrefix(dir, b.cfg.BundleDir+"/") {
		return nil, api.Errorf(api.ErrInvalid, "oci backend: unusable recovery state %v", state)
	}
	rt := b.runtime()
	if state["net_key"] == "" {
		rt = rt.deny()
	}
	l := bundle{dir: dir}
	gone := func(why string) (backend.Instance, error) {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = rt.run(dctx, "delete", "--force", cid)
		rt.removeBundle(dir)
		return nil, api.Errorf(api.ErrNotFound, "oci backend: container %s %s", cid, why)
	}
	in, err := attach(ctx, rt, cid, l)
	if in != nil {
		in.b = b
	}
	if errors.Is(err, api.ErrNotFound) {
		return gone("is gone")
	}
	if err != nil {
		return nil, fmt.Errorf("oci backend: %w", err)
	}
	select {
	case <-in.done:
		return gone("is not running")
	default:
	}
	if state["net_key"] != "" {
		var pol api.NetworkPolicy
		if err := json.Unmarshal([]byte(state["network"]), &pol); err != nil {
			_ = in.Destroy(context.Background())
			return nil, api.Errorf(api.ErrNotFound, "oci backend: container %s: unusable network state: %v", cid, err)
		}
		var sn *sandboxnet.Net
		if b.rootless {
			argv, env, aerr := agent.Command(b.cfg.AgentPath)
			if aerr != nil {
				_ = in.Destroy(context.Background())
				return nil, fmt.Errorf("oci backend: %w", aerr)
			}
			sn, err = b.nets.RecoverRootless(ctx, state, pol, in.pid, netHelper(argv), env)
		} else {
			sn, err = b.nets.Recover(ctx, state, pol)
		}
		if err != nil {
			// Without its network's enforcement the sandbox must not run on.
			_ = in.Destroy(context.Background())
			return nil, api.Errorf(api.ErrNotFound, "oci backend: container %s: its network cannot be recovered: %v", cid, err)
		}
		in.net, in.network = sn, pol
	}
	c := agentclient.NewClient(l.socket())
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Health(hctx); err != nil {
		_ = in.Destroy(context.Background())
		return nil, api.Errorf(api.ErrNotFound, "oci backend: the agent of container %s does not answer: %v", cid, err)
	}
	return in, nil
}

type instance struct {
	b      *Backend // nil for an instance found only to be reaped
	rt     runtimeCLI
	cid    string
	pid    int // the init's host pid
	bundle bundle
	done   chan struct{}
	once   sync.Once
	err    error
	// net is the sandbox's network (nil for deny: the runtime's namespace
	// with loopback alone); network the policy it was created with.
	net     *sandboxnet.Net
	netMu   sync.Mutex // guards network
	network api.NetworkPolicy
}

func (in *instance) AgentSocket() string   { return in.bundle.socket() }
func (in *instance) Done() <-chan struct{} { return in.done }

// OOMKills implements backend.OOMCounter from the container's memory
// cgroup (the init's; every process of the sandbox is in it).
func (in *instance) OOMKills() (uint64, error) { return backend.OOMKills(in.pid) }

// State implements backend.Recoverable.
func (in *instance) State() map[string]string {
	st := map[string]string{"container": in.cid, "dir": in.bundle.dir, "pid": strconv.Itoa(in.pid)}
	if in.net != nil {
		maps.Copy(st, in.net.State())
		in.netMu.Lock()
		pol, _ := json.Marshal(in.network)
		in.netMu.Unlock()
		st["network"] = string(pol)
	}
	return st
}

// SetNetwork implements backend.NetworkController.
func (in *instance) SetNetwork(ctx context.Context, pol api.NetworkPolicy) error {
	if in.net == nil {
		if pol.Policy == api.NetworkDeny {
			return nil
		}
		return api.Errorf(api.ErrUnsupported, "this sandbox was created with network policy deny and has no network interface to open for %q; create it with allow or whitelist to change the policy per execution", pol.Policy)
	}
	if err := in.net.SetPolicy(ctx, pol); err != nil {
		return err
	}
	in.netMu.Lock()
	in.network = pol // what State records, so a recovery starts from it
	in.netMu.Unlock()
	return nil
}

// Detach implements backend.Detacher: the network's DNS server and proxy
// stop; its rules, which keep everything but them shut, stay.
func (in *instance) Detach() {
	if in.net != nil {
		in.net.Detach()
	}
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

// Destroy kills the container (SIGKILL to its init ends the whole pid
// namespace), force-deletes it (which also kills anything left in its
// cgroup) and removes the bundle. ctx is not needed to stop anything: a done
// ctx still destroys. It returns an error when the runtime still knows the
// container afterwards.
func (in *instance) Destroy(context.Context) error {
	in.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = in.rt.run(ctx, "kill", in.cid, "KILL")
		select {
		case <-in.done:
		case <-time.After(10 * time.Second):
		}
		_, derr := in.rt.run(ctx, "delete", "--force", in.cid)
		if _, err := in.rt.state(ctx, in.cid); !errors.Is(err, api.ErrNotFound) {
			in.err = fmt.Errorf("oci backend: container %s survived delete: %v", in.cid, derr)
			return
		}
		select {
		case <-in.done:
		case <-time.After(10 * time.Second):
			in.err = fmt.Errorf("oci backend: init %d of container %s did not exit", in.pid, in.cid)
			return
		}
		if in.net != nil {
			if err := in.net.Close(ctx); err != nil {
				in.err = fmt.Errorf("oci backend: container %s: remove its network: %w", in.cid, err)
				return
			}
		}
		in.rt.removeBundle(in.bundle.dir)
	})
	return in.err
}

// mkdirSearchable creates dir and the parents it needs with mode 0711 (the
// runtime's init must walk through them; nobody may list them) and checks
// that every ancestor is searchable by others. Rootless, ancestors owned by
// the daemon's user and group may be private: both are mapped into the
// container, whose root may walk them.
func mkdirSearchable(dir string, rootless bool) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		owned := false
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && rootless {
			owned = int(st.Uid) == os.Getuid() && int(st.Gid) == os.Getgid()
		}
		if fi.Mode().Perm()&0o001 == 0 && !owned {
			return fmt.Errorf("bundle directory %s: its ancestor %s (mode %v) is not searchable by others; the container's init cannot reach the rootfs (set a BundleDir whose ancestors are)", dir, d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}
