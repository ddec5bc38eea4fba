package oci

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Rootless operation (the daemon's euid is not 0).
//
// An unprivileged runtime cannot give the container an arbitrary uid map,
// and runc insists on chowning its exec fifo to the host uid of the
// container's root, which an ordinary user can only do for its own uid. So,
// as podman does, every runtime command runs in an outer user (and mount)
// namespace made by util-linux's unshare: the daemon's uid is root there
// (outer uid 0) and the user's /etc/subuid range follows (outer uids
// 1..n-1, written by the setuid newuidmap/newgidmap). Inside it the runtime
// is root of that namespace, and the container's map is expressed in outer
// uids:
//
//	container 0..999      → outer 1..1000       (subordinate ids)
//	container 1000        → outer 0             (the daemon's own uid)
//	container 1001..n-1   → outer 1001..n-1     (subordinate ids)
//
// The sandbox user (1000) is thus the daemon's own user on the host: the
// workspace needs no chown (which an ordinary user could not do), and files
// the sandbox writes there are the daemon's. Container root and every other
// container uid are subordinate ids that own nothing on the host.
//
// What an unprivileged runtime cannot do on this kind of host: cgroup
// limits (a cgroup v1 hierarchy is root's; cgroup v2 needs systemd's
// delegation, not built) and host networking (veths, nftables). Those are
// refused at Create, not ignored; the pids limit becomes RLIMIT_NPROC.

// minSubIDs is the least subordinate range rootless mode needs: the
// container's uids 0..999 must map somewhere other than the daemon's uid.
const minSubIDs = 1000

// outerNamespaceArgs is the unshare command line that makes the outer
// namespaces (without the command to run in them).
func outerNamespaceArgs(unshareBin string) []string {
	return []string{unshareBin, "--user", "--mount", "--map-root-user", "--map-auto", "--"}
}

// size is how many ids a map covers.
func mapSize(m []specs.LinuxIDMapping) uint32 {
	var n uint32
	for _, r := range m {
		n += r.Size
	}
	return n
}

// containerMap is the container's map in outer ids (see above), for an
// outer namespace of n ids, capped at the container's usual 65536.
func containerMap(n uint32) []specs.LinuxIDMapping {
	n = min(n, idMapSize)
	m := []specs.LinuxIDMapping{
		{ContainerID: 0, HostID: 1, Size: sandboxUID},
		{ContainerID: sandboxUID, HostID: 0, Size: 1},
	}
	if n > sandboxUID+1 {
		m = append(m, specs.LinuxIDMapping{ContainerID: sandboxUID + 1, HostID: sandboxUID + 1, Size: n - sandboxUID - 1})
	}
	return m
}

// rootlessMaps returns the container's uid and gid maps for rootless mode,
// probing the outer namespace once (and again after a failure).
func (b *Backend) rootlessMaps(ctx context.Context) (uid, gid []specs.LinuxIDMapping, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.outer == nil {
		m, err := probeOuter(ctx)
		if err != nil {
			return nil, nil, err
		}
		b.outer = &m
	}
	return containerMap(mapSize(b.outer.uid)), containerMap(mapSize(b.outer.gid)), nil
}

// probeOuter makes the outer namespaces once and reads their maps: it
// proves unprivileged user namespaces, newuidmap and the subordinate ranges
// all work, and says which failed if not.
func probeOuter(ctx context.Context) (idMaps, error) {
	var m idMaps
	unshareBin, err := exec.LookPath("unshare")
	if err != nil {
		return m, errors.New("the unshare command is not installed (apt-get install util-linux)")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := append(outerNamespaceArgs(unshareBin), "cat", "/proc/self/uid_map", "/proc/self/gid_map")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return m, fmt.Errorf("cannot make a user namespace with the subordinate ids (%s): %v: %s", strings.Join(argv[:len(argv)-3], " "), err, bytes.TrimSpace(out))
	}
	var all []specs.LinuxIDMapping
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		var v [3]uint64
		for i := range f {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				return m, fmt.Errorf("unexpected id map line %q", sc.Text())
			}
		}
		all = append(all, specs.LinuxIDMapping{ContainerID: uint32(v[0]), HostID: uint32(v[1]), Size: uint32(v[2])})
	}
	// uid_map then gid_map: each starts at id 0.
	for i := 1; i < len(all); i++ {
		if all[i].ContainerID == 0 {
			m.uid, m.gid = all[:i], all[i:]
		}
	}
	for _, x := range []struct {
		name string
		m    []specs.LinuxIDMapping
	}{{"uid", m.uid}, {"gid", m.gid}} {
		if len(x.m) < 2 || x.m[0].Size != 1 || x.m[1].ContainerID != 1 || mapSize(x.m) < minSubIDs+1 {
			return m, fmt.Errorf("the outer user namespace's %s map %v lacks a subordinate range of at least %d ids after the daemon's own", x.name, x.m, minSubIDs)
		}
	}
	return m, nil
}

// rootlessMissing lists what rootless mode lacks on this host, each with
// what to do; empty when it may work (the probe then says for sure).
func rootlessMissing(runtime string) []string {
	var missing []string
	if isRunsc(runtime) {
		// Tried: under the outer namespace runsc starts, but each create
		// takes about 25 s, its Sentry runs as a subordinate uid that the
		// later runtime commands (each in a fresh outer namespace) cannot
		// signal, so kill and delete fail, and its host threads are not
		// bounded by the sandbox's RLIMIT_NPROC.
		missing = append(missing, "runsc (gVisor) is not supported rootless (kill and delete cannot reach its Sentry, which runs as a subordinate uid); run the daemon as root for gVisor, or use runc")
	}
	sysctl := func(p string) string {
		b, err := os.ReadFile(filepath.Join("/proc/sys", p))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if sysctl("user/max_user_namespaces") == "0" {
		missing = append(missing, "user namespaces are disabled (sysctl user.max_user_namespaces=0)")
	}
	if sysctl("kernel/unprivileged_userns_clone") == "0" {
		missing = append(missing, "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)")
	}
	if sysctl("kernel/apparmor_restrict_unprivileged_userns") == "1" {
		missing = append(missing, "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 23.10+): set it to 0 or give the runtime an AppArmor profile allowing userns")
	}
	for _, bin := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/bin/" + bin); err != nil {
				missing = append(missing, fmt.Sprintf("%s is not installed (apt-get install uidmap)", bin))
			}
		}
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		missing = append(missing, "the unshare command is not installed (apt-get install util-linux)")
	}
	var short []string
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if n := subIDCount(f); n < minSubIDs {
			short = append(short, fmt.Sprintf("%s gives it %d", f, n))
		}
	}
	if len(short) > 0 {
		u := strconv.Itoa(os.Getuid())
		if me, err := user.Current(); err == nil {
			u = me.Username
		}
		missing = append(missing, fmt.Sprintf("user %s has no subordinate id range of at least %d ids (%s): add one of 65536 ids no other user has, e.g. usermod --add-subuids 200000-265535 --add-subgids 200000-265535 %s",
			u, minSubIDs, strings.Join(short, ", "), u))
	}
	return missing
}

// subIDCount is the size of the current user's first range in an
// /etc/subuid-format file (0 without one).
func subIDCount(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	names := map[string]bool{strconv.Itoa(os.Getuid()): true}
	if me, err := user.Current(); err == nil {
		names[me.Username] = true
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 3 && names[f[0]] {
			n, _ := strconv.Atoi(f[2])
			return n
		}
	}
	return 0
}

// delegatedCgroupV2 returns the path of a cgroup v2 the daemon's user could
// manage (a unified hierarchy whose cgroup of ours it owns, as systemd's
// delegation gives), or "". Limits could be enforced there; that path is
// not built.
func delegatedCgroupV2() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return ""
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	rel, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "0::")
	if !ok {
		return ""
	}
	dir := filepath.Join("/sys/fs/cgroup", rel)
	if unix.Access(filepath.Join(dir, "cgroup.subtree_control"), unix.W_OK) != nil {
		return ""
	}
	return dir
}
