package backend

import (
	"fmt"
	"maps"
	"sort"
)

// Environ returns a sandbox's environment, sorted: the variables every
// backend sets the same way (USER, LANG=C.UTF-8, PYTHONUNBUFFERED=1), then
// the backend's own in base (PATH, HOME, TMPDIR, MPLCONFIGDIR … as the
// sandbox sees them), then spec.Env, then the WORKSPACE* variables for the
// workspace at workspace; a later one wins. Nothing of the daemon's own
// environment is in it unless base puts it there. base is not modified.
func Environ(spec Spec, base map[string]string, workspace string) []string {
	env := map[string]string{
		"USER":             spec.User,
		"LANG":             "C.UTF-8",
		"PYTHONUNBUFFERED": "1",
	}
	maps.Copy(env, base)
	maps.Copy(env, spec.Env)
	maps.Copy(env, WorkspaceEnv(workspace))
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// TmpSize is the tmpfs option bounding a sandbox's /tmp, so filling it cannot
// exhaust the host's memory: half the memory limit when there is one (tmpfs
// pages are charged to the sandbox's cgroup and cannot be reclaimed, so a
// full /tmp at the limit would get the agent OOM-killed), at least 16 MiB,
// else 1 GiB — never the kernel's default of half the host's RAM.
func TmpSize(memoryMB int) string {
	if memoryMB > 0 {
		return fmt.Sprintf("size=%dm", max(memoryMB/2, 16))
	}
	return "size=1024m"
}
