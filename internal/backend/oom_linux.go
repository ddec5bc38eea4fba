package backend

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// OOMKills returns how many processes the kernel's OOM killer has killed in
// the memory cgroup of the host process pid (a sandbox's init): the
// oom_kill count of memory.events (cgroup v2) or memory.oom_control (v1).
// Backends whose sandboxes have a memory cgroup use it for OOMCounter.
func OOMKills(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var v1, v2 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case hasController(parts[1], "memory"):
			v1 = parts[2]
		}
	}
	if v1 != "" {
		return oomKillCount(filepath.Join("/sys/fs/cgroup/memory", v1, "memory.oom_control"))
	}
	if v2 != "" {
		return oomKillCount(filepath.Join("/sys/fs/cgroup", v2, "memory.events"))
	}
	return 0, fmt.Errorf("process %d has no memory cgroup", pid)
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

func oomKillCount(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("oom_kill ")); ok {
			return strconv.ParseUint(string(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no oom_kill count", path)
}
