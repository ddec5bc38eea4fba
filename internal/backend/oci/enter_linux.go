package oci

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/seccompbpf"
	"github.com/moby/profiles/seccomp"
)

var (
	_ backend.Enterer      = (*instance)(nil)
	_ backend.EnterChecker = (*Backend)(nil)
)

// CanEnter implements backend.EnterChecker: runc or crun with a root
// daemon, and a seccomp profile libseccomp can compile here (the default
// one is compiled once to find out).
func (b *Backend) CanEnter(ctx context.Context) error {
	if b.rootless || isRunsc(b.cfg.Runtime) {
		return api.Errorf(api.ErrUnsupported, "oci backend: processes can join a sandbox from outside only on runc/crun with a root daemon")
	}
	prof, err := defaultSeccomp()
	if err != nil {
		return err
	}
	_, err = b.seccompProgram(ctx, prof)
	return err
}

// entryNamespaces are the namespaces of a container an entering process
// joins, in the order it joins them.
var entryNamespaces = []string{"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}

// Entry implements backend.Enterer for runc and crun as root: the init's
// namespaces, its cgroup, the sandbox user and the bundle's own rlimits and
// seccomp profile (compiled with libseccomp, as the runtime did). gVisor's
// sandboxes are not host namespaces, and a rootless daemon cannot enter the
// user namespace it made through unshare(1): both are unsupported.
func (in *instance) Entry(ctx context.Context) (backend.Entry, error) {
	if in.b == nil {
		return backend.Entry{}, api.Errorf(api.ErrUnsupported, "oci backend: container %s was not started by this backend", in.cid)
	}
	if in.b.rootless || isRunsc(in.b.cfg.Runtime) {
		return backend.Entry{}, api.Errorf(api.ErrUnsupported, "oci backend: processes can join a sandbox from outside only on runc/crun with a root daemon")
	}
	select {
	case <-in.done:
		return backend.Entry{}, api.Errorf(api.ErrNotFound, "oci backend: container %s is not running", in.cid)
	default:
	}
	raw, err := os.ReadFile(in.bundle.config())
	if err != nil {
		return backend.Entry{}, fmt.Errorf("oci backend: entry: %w", err)
	}
	var sp specs.Spec
	if err := json.Unmarshal(raw, &sp); err != nil {
		return backend.Entry{}, fmt.Errorf("oci backend: entry: %s: %w", in.bundle.config(), err)
	}
	if sp.Process == nil || sp.Linux == nil || sp.Linux.Seccomp == nil {
		return backend.Entry{}, fmt.Errorf("oci backend: entry: %s has no process or seccomp profile", in.bundle.config())
	}
	bpf, err := in.b.seccompProgram(ctx, sp.Linux.Seccomp)
	if err != nil {
		return backend.Entry{}, err
	}
	e := backend.Entry{
		Namespaces:  map[string]string{},
		UID:         sp.Process.User.UID,
		GID:         sp.Process.User.GID,
		Groups:      sp.Process.User.AdditionalGids,
		Seccomp:     bpf,
		OOMScoreAdj: sp.Process.OOMScoreAdj,
		Cwd:         sp.Process.Cwd,
		Env:         sp.Process.Env,
	}
	for _, r := range sp.Process.Rlimits {
		e.Rlimits = append(e.Rlimits, backend.Rlimit{Type: r.Type, Soft: r.Soft, Hard: r.Hard})
	}
	proc := "/proc/" + strconv.Itoa(in.pid)
	for _, ns := range entryNamespaces {
		e.Namespaces[ns] = proc + "/ns/" + ns
	}
	cg, err := cgroupProcs(proc + "/cgroup")
	if err != nil {
		return backend.Entry{}, fmt.Errorf("oci backend: entry: %w", err)
	}
	e.CgroupProcs = cg
	// The pid may have been recycled since the checks above: the init's
	// namespaces must still be the container's.
	select {
	case <-in.done:
		return backend.Entry{}, api.Errorf(api.ErrNotFound, "oci backend: container %s is not running", in.cid)
	default:
	}
	return e, nil
}

// cgroupProcs reads a process's cgroup membership (file is /proc/PID/cgroup)
// and returns the host paths of the cgroup.procs files of its cgroups: the
// v2 one and, on a v1 or hybrid machine, one per v1 hierarchy. A hierarchy
// in which the process sits at the root is not the sandbox's own and is left
// out; one whose cgroup cannot be found under /sys/fs/cgroup, or none at
// all, is an error (the engine would escape that hierarchy's limits).
func cgroupProcs(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s: unreadable line %q", file, l)
		}
		if parts[2] == "/" {
			continue // a hierarchy the container has no cgroup of its own in
		}
		if strings.Contains(parts[2], "..") {
			return nil, fmt.Errorf("%s: cgroup path %q", file, parts[2])
		}
		var dirs []string
		if parts[1] == "" { // v2
			dirs = []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}
		} else {
			ctrl := strings.TrimPrefix(parts[1], "name=")
			first, _, _ := strings.Cut(ctrl, ",")
			dirs = []string{"/sys/fs/cgroup/" + ctrl, "/sys/fs/cgroup/" + first}
		}
		found := false
		for _, d := range dirs {
			p := d + parts[2] + "/cgroup.procs"
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
				found = true
				break
			}
		}
		if !found {
			// An engine left outside one of the container's cgroups would
			// escape that hierarchy's limits: refuse instead.
			return nil, fmt.Errorf("%s: the container's cgroup %q (%s) is not mounted where this host is searched (%s)", file, parts[2], parts[1], strings.Join(dirs, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: the container has no cgroup of its own", file)
	}
	return out, nil
}

// seccompProgram compiles prof once per distinct profile.
func (b *Backend) seccompProgram(ctx context.Context, prof *specs.LinuxSeccomp) ([]byte, error) {
	raw, err := json.Marshal(prof)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(raw)
	b.mu.Lock()
	bpf, ok := b.bpf[key]
	b.mu.Unlock()
	if ok {
		return bpf, nil
	}
	bpf, err = seccompbpf.Compile(ctx, "", prof)
	if err != nil {
		return nil, api.Errorf(api.ErrUnsupported, "oci backend: the sandbox's seccomp profile cannot be compiled for an entering process: %v", err)
	}
	b.mu.Lock()
	if b.bpf == nil {
		b.bpf = map[[32]byte][]byte{}
	}
	b.bpf[key] = bpf
	b.mu.Unlock()
	return bpf, nil
}

// defaultSeccomp is the profile build gives a container (every capability
// dropped).
func defaultSeccomp() (*specs.LinuxSeccomp, error) {
	prof, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}, Linux: &specs.Linux{}})
	if err != nil {
		return nil, fmt.Errorf("oci backend: seccomp profile: %w", err)
	}
	return prof, nil
}
