package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

// workspaceOwner decides the uid and gid the container runs as: the owner of
// the workspace, so it stays writable; a root-owned workspace is chowned to
// the sandbox uid first, since sandboxes never run as root.
func (b *Backend) workspaceOwner(ws string) (int, int, error) {
	st, err := os.Stat(ws)
	if err != nil {
		return 0, 0, fmt.Errorf("docker backend: workspace: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, api.Errorf(api.ErrUnsupported, "docker backend: cannot read the owner of %s", ws)
	}
	if sys.Uid != 0 {
		return int(sys.Uid), int(sys.Gid), nil
	}
	uid, gid := b.cfg.SandboxUID, b.cfg.SandboxGID
	err = filepath.WalkDir(ws, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		// A file with other hard links is shared with something outside the
		// workspace (a dataset linked from the registry): giving it to the
		// sandbox would let it rewrite the registry's copy.
		if st, ok := info.Sys().(*syscall.Stat_t); ok && !d.IsDir() && st.Nlink > 1 {
			return nil
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("docker backend: give the workspace to the sandbox user %d: %w", uid, err)
	}
	return uid, gid, nil
}

// containerName is the container's name for sandbox id: Docker allows only
// [a-zA-Z0-9][a-zA-Z0-9_.-]; other bytes become '_'.
func containerName(id string) string {
	b := []byte("ds-sandbox-" + id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// environ is the container's environment on top of the image's (whose PATH
// it keeps).
func environ(spec backend.Spec) []string {
	return backend.Environ(spec, map[string]string{
		"HOME":   spec.Workdir,
		"TMPDIR": "/tmp",
		// The root filesystem is read-only and HOME is the workspace.
		"MPLCONFIGDIR": "/tmp/.matplotlib",
	}, spec.Workdir)
}

// containerPlan is what Create decided before it makes the container.
type containerPlan struct {
	image      string          // the image's name
	agentBin   string          // the agent binary on the host, mounted at agentPath
	dir        string          // the socket directory on the host, mounted at socketDir
	uid, gid   int             // the container's user: the workspace's owner
	netMode    string          // Docker's network mode
	net        *sandboxnet.Net // our network, or nil
	resolvConf string          // its resolv.conf, mounted when net is not nil
}

// containerConfig is the container's configuration for spec: the agent as
// its entrypoint (under docker-init), the workspace at the workdir, and the
// confinement and limits of the package doc.
func (b *Backend) containerConfig(spec backend.Spec, p containerPlan) (*container.Config, *container.HostConfig) {
	args := []string{"agent",
		"--socket", socketDir + "/agent.sock",
		"--workdir", spec.Workdir,
		"--user", spec.User,
		"--python", spec.Python,
	}
	if spec.DefaultTimeout > 0 {
		args = append(args, "--default-timeout", spec.DefaultTimeout.String())
	}
	// No RLIMIT_NPROC for the code: without a user namespace it would count
	// every process of the sandbox's uid on the host and in every other
	// sandbox. The agent keeps a reserve of threads instead (see agent.Run).
	args = append(args, backend.AgentArgs(spec, 0)...)
	pids := b.cfg.PidsLimit
	if spec.PidsLimit > 0 {
		pids = int64(spec.PidsLimit)
	}
	init := true
	hc := &container.HostConfig{
		Init:           &init,
		NetworkMode:    container.NetworkMode(p.netMode),
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,nosuid,nodev,exec,mode=1777," + backend.TmpSize(spec.MemoryMB)},
		Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: p.agentBin, Target: agentPath, ReadOnly: true},
			{Type: mount.TypeBind, Source: p.dir, Target: socketDir},
			{Type: mount.TypeBind, Source: spec.WorkspaceDir, Target: spec.Workdir},
		},
		Resources: container.Resources{PidsLimit: &pids},
	}
	if spec.MaxOpenFiles > 0 {
		// The agent's own limit; it gives the code spec.MaxOpenFiles.
		n := int64(max(spec.MaxOpenFiles, minAgentNofile))
		hc.Resources.Ulimits = []*container.Ulimit{{Name: "nofile", Soft: n, Hard: n}}
	}
	if p.net != nil {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: p.resolvConf, Target: "/etc/resolv.conf", ReadOnly: true})
	}
	if spec.MemoryMB > 0 {
		hc.Resources.Memory = int64(spec.MemoryMB) << 20
		hc.Resources.MemorySwap = hc.Resources.Memory
	}
	if spec.CPUCount > 0 {
		hc.Resources.NanoCPUs = int64(spec.CPUCount) * 1e9
	}
	cc := &container.Config{
		Image:      p.image,
		Entrypoint: append([]string{agentPath}, args...),
		Cmd:        nil,
		User:       strconv.Itoa(p.uid) + ":" + strconv.Itoa(p.gid),
		WorkingDir: spec.Workdir,
		Env:        environ(spec),
		Labels: map[string]string{
			LabelManaged:   "true",
			LabelSandboxID: spec.ID,
			LabelOwner:     b.cfg.StateDir,
		},
	}
	if b.cfg.Embedded {
		cc.Labels[LabelProcess] = processLabel(os.Getpid())
	}
	if p.net != nil && spec.Network.Policy == api.NetworkWhitelist {
		proxy := p.net.ProxyURL()
		cc.Env = append(cc.Env, "HTTP_PROXY="+proxy, "HTTPS_PROXY="+proxy, "http_proxy="+proxy, "https_proxy="+proxy,
			"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1")
	}
	return cc, hc
}
