package oci

import (
	"fmt"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/sandboxnet"
)

var _ backend.Enforcer = (*Backend)(nil)

// checkRootless refuses what a rootless runtime cannot enforce here: cgroup
// limits (the network policies are CheckNetwork's).
func (b *Backend) checkRootless(s backend.Spec) error {
	if s.MemoryMB > 0 || s.CPUCount > 0 {
		why := "this host gives an unprivileged user no cgroup to set limits in"
		if d := delegatedCgroupV2(); d != "" {
			why = fmt.Sprintf("cgroup v2 delegation is present (%s), but the oci backend does not use it yet", d)
		}
		return api.Errorf(api.ErrUnsupported, "the oci backend runs rootless (the daemon is not root) and cannot enforce memory_mb %d / cpu_count %d: %s; remove the limits, or run the daemon as root", s.MemoryMB, s.CPUCount, why)
	}
	return nil
}

// rootlessEnforces is Enforces in rootless mode.
func (b *Backend) rootlessEnforces() []string {
	common := []string{
		"runtime " + b.cfg.Runtime,
		"no capabilities; no_new_privs; seccomp: Docker's default profile",
		"read-only root with the host's /usr and a generated /etc; own pid, ipc, uts, mount, net and cgroup namespaces",
		"all processes killed with the sandbox",
	}
	cg := "memory_mb, cpu_count: refused (rootless: no cgroup to set them in)"
	if d := delegatedCgroupV2(); d != "" {
		cg = fmt.Sprintf("memory_mb, cpu_count: refused (rootless; cgroup v2 delegation present at %s could enforce them, not used yet)", d)
	}
	out := append(common,
		fmt.Sprintf("rootless: user namespace made with the daemon user's subordinate ids; sandbox user is the daemon's own host uid %d (workspace files are the daemon user's)", b.HostUID()),
		fmt.Sprintf("processes: RLIMIT_NPROC %d (rootless: no pids cgroup)", b.cfg.PidsLimit),
		cg,
		"/tmp bounded (1 GiB)",
		"network deny: loopback only")
	if err := b.rootlessNetworkAvailable(); err != nil {
		out = append(out, "network allow and whitelist: refused here (rootless: "+err.Error()+")")
	} else {
		out = append(out, sandboxnet.RootlessEnforces()...)
	}
	return append(out, "linked datasets refused (the sandbox user is the daemon's)")
}
