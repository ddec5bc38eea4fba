package oci

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

// bundle is one sandbox's directory: config.json, the (empty, read-only)
// rootfs holding only mount points, its own /etc, the socket directory and
// the agent's log.
type bundle struct {
	dir string
}

func (l bundle) rootfs() string  { return filepath.Join(l.dir, "rootfs") }
func (l bundle) etc() string     { return filepath.Join(l.dir, "etc") }
func (l bundle) run() string     { return filepath.Join(l.dir, "run") }
func (l bundle) socket() string  { return filepath.Join(l.run(), "agent.sock") }
func (l bundle) log() string     { return filepath.Join(l.dir, "agent.log") }
func (l bundle) config() string  { return filepath.Join(l.dir, "config.json") }
func (l bundle) pidFile() string { return filepath.Join(l.dir, "init.pid") }

// Annotations of our bundles.
const (
	annotationSandbox   = "org.ds-sandbox.sandbox-id"
	annotationContainer = "org.ds-sandbox.container-id"
)

// hostname is every sandbox's host name.
const hostname = "sandbox"

// systemMounts are the container paths that belong to the system view; the
// workdir must not be one of them or lie under one.
var systemMounts = []string{"/usr", "/etc", "/proc", "/dev", "/sys", "/tmp", "/run", "/.dss", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// checkWorkdir refuses workdirs that would shadow or sit inside the system
// view.
func checkWorkdir(wd string) error {
	if !path.IsAbs(wd) || path.Clean(wd) != wd || wd == "/" {
		return api.Errorf(api.ErrInvalid, "oci backend: workdir %q must be a clean absolute path other than /", wd)
	}
	for _, m := range systemMounts {
		if wd == m || strings.HasPrefix(wd, m+"/") {
			return api.Errorf(api.ErrInvalid, "oci backend: workdir %q lies in the container's system directory %s; use a path such as /home/user", wd, m)
		}
	}
	return nil
}

// hostLinks are the top-level directories that are symlinks into /usr on a
// merged-/usr host (replicated as symlinks) or directories (bind-mounted
// read-only).
var hostLinks = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// etcFiles are copied from the host's /etc when present: what programs need
// to run (the loader cache, name service and MIME tables, shell start-up),
// and nothing secret. Symlinks are replicated.
var etcFiles = []string{
	"ld.so.cache", "ld.so.conf", "host.conf", "gai.conf", "protocols", "services", "networks",
	"mime.types", "magic", "magic.mime", "mailcap", "mailcap.order", "debian_version", "os-release",
	"timezone", "localtime", "inputrc", "bash.bashrc", "profile", "shells", "matplotlibrc",
	"locale.alias", "ca-certificates.conf", "ethertypes", "papersize", "mtab",
}

// etcDirs are bind-mounted read-only from the host's /etc when present.
var etcDirs = []string{
	"ld.so.conf.d", "alternatives", "ssl/certs", "ca-certificates", "fonts", "profile.d",
	"python3", "python3.11", "python3.12", "python3.13", "terminfo",
}

// etcCopies are single files under host directories we do not mount whole.
var etcCopies = []string{"ssl/openssl.cnf"}

// build writes the bundle for spec: rootfs mount points, /etc, the socket
// directory (owned by the mapped sandbox user) and config.json. sn is the
// sandbox's network, nil for deny; ids the container's id maps (in the
// runtime's view: outer-namespace ids when rootless).
func (b *Backend) build(l bundle, s backend.Spec, agentArgv, agentEnv []string, cid string, sn *sandboxnet.Net, ids idMaps) error {
	uid, gid := int(b.HostUID()), int(b.hostGID())
	rootfs := l.rootfs()
	for _, d := range []string{"proc", "dev", "sys", "usr", "etc", "tmp", "run/dss", ".dss", strings.TrimPrefix(s.Workdir, "/")} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	// The runtime gives a tmpfs the mode of the directory it covers.
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777|fs.ModeSticky); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rootfs, agentInContainer), nil, 0o555); err != nil {
		return err
	}
	var linkMounts []string
	for _, name := range hostLinks {
		fi, err := os.Lstat("/" + name)
		switch {
		case err != nil:
			continue
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink("/" + name)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
				return err
			}
		case fi.IsDir():
			if err := os.Mkdir(filepath.Join(rootfs, name), 0o755); err != nil {
				return err
			}
			linkMounts = append(linkMounts, "/"+name)
		}
	}
	etcMounts, err := b.buildEtc(l.etc(), s, hostname, sn)
	if err != nil {
		return err
	}
	// The agent (the sandbox user) creates its socket here; the host side
	// (root) reaches it through the bind mount.
	if err := os.Mkdir(l.run(), 0o700); err != nil {
		return err
	}
	if err := os.Chown(l.run(), uid, gid); err != nil {
		return err
	}

	sp := b.spec(l, s, agentArgv, agentEnv, cid, ids)
	if sn != nil {
		if isRunsc(b.cfg.Runtime) {
			for i, ns := range sp.Linux.Namespaces {
				if ns.Type == specs.NetworkNamespace {
					sp.Linux.Namespaces[i].Path = sn.NetnsPath()
				}
			}
		}
		if s.Network.Policy == api.NetworkWhitelist {
			// Programs that honour proxy variables ask the proxy by name;
			// the others are redirected to it anyway.
			p := sn.ProxyURL()
			sp.Process.Env = append(sp.Process.Env, "HTTP_PROXY="+p, "HTTPS_PROXY="+p, "http_proxy="+p, "https_proxy="+p,
				"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1")
		}
	}
	for _, d := range linkMounts {
		sp.Mounts = append(sp.Mounts, bindRO(d, d))
	}
	for _, d := range etcMounts {
		sp.Mounts = append(sp.Mounts, bindRO("/etc/"+d, "/etc/"+d))
	}
	sp.Mounts = append(sp.Mounts,
		bindRW(s.Workdir, s.WorkspaceDir),
		bindRW(socketDirInside, l.run()),
		bindRO(agentInContainer, agentArgv[0]),
	)
	prof, err := seccomp.GetDefaultProfile(sp)
	if err != nil {
		return fmt.Errorf("seccomp profile: %w", err)
	}
	sp.Linux.Seccomp = prof
	data, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(l.config(), data, 0o600)
}

// buildEtc writes the container's own /etc into dir and returns the host
// /etc directories (relative) to bind-mount on top of it. There is no shadow
// file: the container's users have no passwords.
func (b *Backend) buildEtc(dir string, s backend.Spec, hostname string, sn *sandboxnet.Net) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	gen := map[string]string{
		"passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n" +
			fmt.Sprintf("%s:x:%d:%d::%s:/bin/bash\n", s.User, sandboxUID, sandboxGID, s.Workdir) +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":    "root:x:0:\ntty:x:5:\n" + fmt.Sprintf("%s:x:%d:\n", s.User, sandboxGID) + "nogroup:x:65534:\n",
		"hosts":    "127.0.0.1\tlocalhost " + hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"hostname": hostname + "\n",
		// Network policy deny: there is no resolver to reach.
		"resolv.conf":   "# ds-sandbox: no DNS (network policy deny)\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nethers: files\nrpc: files\n",
	}
	if sn != nil {
		gen["resolv.conf"] = sn.ResolvConf()
	}
	for name, content := range gen {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	for _, name := range append(etcFiles, etcCopies...) {
		if err := copyEntry(filepath.Join("/etc", name), filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	var mounts []string
	for _, name := range etcDirs {
		fi, err := os.Stat(filepath.Join("/etc", name))
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return nil, err
		}
		mounts = append(mounts, name)
	}
	return mounts, nil
}

// copyEntry copies a regular file or replicates a symlink; a missing source
// is skipped.
func copyEntry(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(src)
		if err != nil {
			return nil // unreadable to us: leave it out
		}
		return os.WriteFile(dst, data, 0o644)
	}
	return nil
}

func bindRO(dst, src string) specs.Mount {
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "ro", "nosuid", "nodev"}}
}

func bindRW(dst, src string) specs.Mount {
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rw", "nosuid", "nodev"}}
}

// spec is the runtime spec of a sandbox, without the bind mounts that depend
// on the host layout and without seccomp (both added by build).
func (b *Backend) spec(l bundle, s backend.Spec, agentArgv, agentEnv []string, cid string, ids idMaps) *specs.Spec {
	args := append([]string{agentInContainer}, agentArgv[1:]...)
	args = append(args,
		"--socket", socketInContainer,
		"--workdir", s.Workdir,
		"--user", s.User,
		"--python", s.Python,
	)
	if s.DefaultTimeout > 0 {
		args = append(args, "--default-timeout", s.DefaultTimeout.String())
	}
	pids := b.pidsLimit(s)
	args = append(args, backend.AgentArgs(s, codeProcs(pids))...)
	noCaps := []string{}
	mem := int64(s.MemoryMB) << 20
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Pids:    &specs.LinuxPids{Limit: b.hostPids(pids)},
	}
	if mem > 0 {
		// Swap limited to the same amount: no swap beyond the limit.
		res.Memory = &specs.LinuxMemory{Limit: &mem, Swap: &mem}
	}
	if s.CPUCount > 0 {
		period := uint64(100_000)
		quota := int64(s.CPUCount) * int64(period)
		res.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	rlimits := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: agentNofile(s), Soft: agentNofile(s)}}
	cgroupsPath := "/ds-sandbox/" + cid
	if b.rootless {
		// No cgroup of ours (Create refused memory and CPU limits): the
		// pids limit becomes RLIMIT_NPROC, counted per user in the
		// container's user namespace, so only the sandbox's own processes
		// count against it. This is the agent's; the code's is lower
		// (codeProcs), as with a cgroup.
		res, cgroupsPath = nil, ""
		n := uint64(pids)
		rlimits = append(rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: n, Soft: n})
	}
	return &specs.Spec{
		Version: "1.0.2",
		Root:    &specs.Root{Path: l.rootfs(), Readonly: true},
		Process: &specs.Process{
			User: specs.User{UID: sandboxUID, GID: sandboxGID, AdditionalGids: []uint32{sandboxGID}},
			Args: args,
			Env:  environ(s, agentEnv),
			Cwd:  s.Workdir,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: noCaps, Effective: noCaps, Inheritable: noCaps, Permitted: noCaps, Ambient: noCaps,
			},
			Rlimits:         rlimits,
			NoNewPrivileges: true,
		},
		Hostname: hostname,
		// ReapOrphans finds the sandbox and container of a bundle here.
		Annotations: map[string]string{annotationSandbox: s.ID, annotationContainer: cid},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			bindRO("/usr", "/usr"),
			bindRO("/etc", l.etc()),
			// tmpfs lives in memory: bounded, by the memory limit when there
			// is one.
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", backend.TmpSize(s.MemoryMB)}},
		},
		Linux: &specs.Linux{
			UIDMappings: ids.uid,
			GIDMappings: ids.gid,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
				{Type: specs.UserNamespace},
			},
			Resources:   res,
			CgroupsPath: cgroupsPath,
			// Docker's lists.
			MaskedPaths: []string{
				"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}

// pidsLimit is the sandbox's pids cgroup limit: the spec's, else the
// backend's default.
func (b *Backend) pidsLimit(s backend.Spec) int64 {
	if s.PidsLimit > 0 {
		return int64(s.PidsLimit)
	}
	return b.cfg.PidsLimit
}

// hostPids is the pids cgroup limit for a sandbox of pids tasks. Under
// gVisor the cgroup holds the Sentry (the user-space kernel, a Go program
// with its own threads) and the host threads that run the sandbox's tasks,
// not the tasks themselves; the Sentry enforces RLIMIT_NPROC on those (see
// codeProcs), and the cgroup gets room for the Sentry on top, so a fork bomb
// meets the sandbox's limit before the Sentry meets the host's.
func (b *Backend) hostPids(pids int64) int64 {
	if filepath.Base(b.cfg.Runtime) == "runsc" {
		return 4*pids + sentryTasks
	}
	return pids
}

// sentryTasks is the room the pids cgroup leaves gVisor's Sentry. With
// systrap the host threads per sandbox task vary (measured up to about 2.5
// under a fork bomb, whose tasks all run): 4 per task plus this leaves the
// Sentry room while still bounding the host.
const sentryTasks = 512

// codeProcs is RLIMIT_NPROC of the sandbox's code, below the pids limit: the
// user namespace makes the count the sandbox's own, and the agent (whose own
// limit stays unlimited) keeps the difference, so a fork bomb cannot take
// the last tasks the agent needs to report it and start a fresh kernel.
func codeProcs(pids int64) int {
	return int(pids - max(agentTaskReserve, pids/8))
}

// agentTaskReserve is the least number of tasks a fork bomb leaves the agent.
const agentTaskReserve = 64

// agentNofile is the agent's own RLIMIT_NOFILE: at least the default, so a
// small limit for the code does not starve the agent of sockets, and at least
// the code's (which the agent then sets on what it starts).
func agentNofile(s backend.Spec) uint64 {
	return uint64(max(defaultNofile, s.MaxOpenFiles))
}

// environ is the agent's (so the sandbox code's) environment: nothing of the
// daemon's own; extra (the network's proxy variables) last.
func environ(s backend.Spec, extra []string) []string {
	env := backend.Environ(s, map[string]string{
		"PATH":         "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME":         s.Workdir,
		"TMPDIR":       "/tmp",
		"MPLCONFIGDIR": "/tmp/matplotlib",
	}, s.Workdir)
	return append(env, extra...)
}

// chownWorkspace gives the workspace to the mapped sandbox user, so code can
// write it and no file in it is owned by host root. It works through an
// os.Root: a workspace shared with a running sandbox may have a directory
// swapped for a symlink to a host path mid-walk, and the walk must never
// follow it (Lchown on the final component, os.Root on every other). Files
// with several hard links (datasets linked from the registry) are left
// alone: changing their owner would change the registry's copy too; they
// stay readable only.
func chownWorkspace(dir string, uid, gid int) error {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	return fs.WalkDir(r.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if int(st.Uid) == uid && int(st.Gid) == gid {
				return nil
			}
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				return nil
			}
		}
		return r.Lchown(p, uid, gid)
	})
}

// containerID makes a runtime container id from a sandbox id: the runtime
// accepts [A-Za-z0-9_+.-]; a time suffix keeps a re-created id unique.
func containerID(id string) string {
	var sb strings.Builder
	sb.WriteString("dss-")
	for _, r := range id {
		if sb.Len() >= 44 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			sb.WriteRune(r)
		default:
			sb.WriteByte('-')
		}
	}
	sb.WriteString("-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36))
	return sb.String()
}
