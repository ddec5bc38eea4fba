package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// What the bench scenarios read from /proc: which processes belong to a
// sandbox, their proportional set size, the machine's available memory.
// Linux only; elsewhere the files are missing and the errors say so.

// Machine describes the host a scenario ran on, taken at its start.
type Machine struct {
	NProc       int     `json:"nproc"`
	MemTotalMiB float64 `json:"mem_total_mib"`
	Kernel      string  `json:"kernel"`
	LoadAvg     string  `json:"loadavg"` // the 1, 5 and 15 minute load averages
}

func machineNow() Machine {
	m := Machine{NProc: runtime.NumCPU()}
	if kb, err := meminfoKB("MemTotal"); err == nil {
		m.MemTotalMiB = float64(kb) / 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

func (m Machine) String() string {
	return fmt.Sprintf("machine: %d CPUs, MemTotal %.1f GiB, kernel %s, loadavg %s at start", m.NProc, m.MemTotalMiB/1024, m.Kernel, m.LoadAvg)
}

// meminfoKB reads one field of /proc/meminfo, in kB.
func meminfoKB(field string) (int64, error) {
	return kbField("/proc/meminfo", field)
}

// kbField reads a "Name:   123 kB" line of a /proc file.
func kbField(path, field string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no %s line", path, field)
}

// pssKB is a process's proportional set size: its private pages plus its
// share of the pages it shares (smaps_rollup, Linux 4.14+).
func pssKB(pid int) (int64, error) {
	return kbField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

// proc is one process as /proc shows it.
type proc struct {
	ppid      int
	startTime string // field 22 of stat: tells a reused pid apart
	cgroups   []string
}

// readProcs snapshots every process's parent, start time and cgroups.
func readProcs() map[int]proc {
	out := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := readProc(pid)
		if ok {
			out[pid] = p
		}
	}
	return out
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return proc{}, false // a zombie holds no memory
	}
	ppid, _ := strconv.Atoi(f[1])
	p := proc{ppid: ppid, startTime: f[19]}
	if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
		p.cgroups = strings.Split(strings.TrimSpace(string(cg)), "\n")
	}
	return p, true
}

// sandboxRoot is how a sandbox's processes are found, read from the
// daemon's record of it (<state>/sandboxes/<id>.json): the pid of its agent
// (local) or of its container's first process (oci), with that process's
// start time, or its container id (docker).
type sandboxRoot struct {
	ID        string `json:"sandbox_id"`
	Backend   string `json:"backend"`
	Pid       int    `json:"pid,omitempty"`
	StartTime string `json:"start_time,omitempty"`
	Container string `json:"container,omitempty"`
}

// readSandboxRoot reads the daemon's record of sandbox id.
func readSandboxRoot(state, id string) (sandboxRoot, error) {
	b, err := os.ReadFile(filepath.Join(state, "sandboxes", id+".json"))
	if err != nil {
		return sandboxRoot{}, fmt.Errorf("the daemon's record of sandbox %s: %w", id, err)
	}
	var rec struct {
		Info         struct{ Backend string } `json:"info"`
		BackendState map[string]string        `json:"backend_state"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return sandboxRoot{}, fmt.Errorf("the daemon's record of sandbox %s: %w", id, err)
	}
	r := sandboxRoot{ID: id, Backend: rec.Info.Backend}
	if p := rec.BackendState["pid"]; p != "" {
		if r.Pid, err = strconv.Atoi(p); err != nil || r.Pid <= 0 {
			return r, fmt.Errorf("the daemon's record of sandbox %s: bad pid %q", id, p)
		}
		if pr, ok := readProc(r.Pid); ok {
			r.StartTime = pr.startTime
		}
	}
	if r.Backend == "docker" {
		r.Container = rec.BackendState["container"]
	}
	if r.Pid == 0 && r.Container == "" {
		return r, fmt.Errorf("the daemon's record of sandbox %s (backend %s) names neither a pid nor a container", id, r.Backend)
	}
	return r, nil
}

// processes lists, with how they were found, the live processes of the sandbox in the snapshot procs,
// excluding self (the daemon, which is no sandbox's):
//   - a docker container's: every process whose cgroup path names the container;
//   - otherwise, when the root process is in a cgroup of its own (oci: runc
//     gives every container one; the daemon is not in it): every process in
//     that cgroup or below it, in each hierarchy;
//   - otherwise (local: the agent shares the daemon's cgroup): the root
//     process and its descendants (the agent is their subreaper, so orphans
//     stay in its tree).
func (r sandboxRoot) processes(procs map[int]proc, daemon int) (pids []int, how string, err error) {
	var out []int
	if r.Container != "" {
		for pid, p := range procs {
			for _, cg := range p.cgroups {
				if strings.Contains(cg, r.Container) {
					out = append(out, pid)
					break
				}
			}
		}
		return out, "container cgroup", nil
	}
	root, ok := procs[r.Pid]
	if !ok || (r.StartTime != "" && root.startTime != r.StartTime) {
		return nil, "", fmt.Errorf("sandbox %s: its process %d is gone", r.ID, r.Pid)
	}
	if own := ownCgroups(root.cgroups, procs[daemon].cgroups); len(own) > 0 {
		for pid, p := range procs {
			if pid != daemon && inCgroups(p.cgroups, own) {
				out = append(out, pid)
			}
		}
		return out, "cgroup", nil
	}
	out = append(out, r.Pid)
	for _, pid := range descendantsOf(procs, r.Pid) {
		if pid != daemon {
			out = append(out, pid)
		}
	}
	return out, "process tree", nil
}

// alive reports whether the sandbox's root process (the same one: its start
// time matches) or any process of its container still runs.
func (r sandboxRoot) alive(procs map[int]proc) bool {
	if r.Container != "" {
		ps, _, _ := r.processes(procs, -1)
		return len(ps) > 0
	}
	p, ok := procs[r.Pid]
	return ok && (r.StartTime == "" || p.startTime == r.StartTime)
}

// ownCgroups returns the lines of /proc/PID/cgroup ("id:controllers:path")
// in which the sandbox's root process is somewhere else than the daemon and
// not at a hierarchy's root: the cgroups that are the sandbox's own.
func ownCgroups(sandbox, daemon []string) []string {
	var own []string
	for _, l := range sandbox {
		if strings.HasSuffix(l, ":/") || l == "" || slices.Contains(daemon, l) {
			continue
		}
		own = append(own, l)
	}
	return own
}

// inCgroups reports whether a process is in one of the cgroups own (same
// hierarchy, same path or below it).
func inCgroups(cgs, own []string) bool {
	for _, l := range cgs {
		for _, o := range own {
			if l == o || strings.HasPrefix(l, o+"/") {
				return true
			}
		}
	}
	return false
}

func descendantsOf(procs map[int]proc, root int) []int {
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	var out []int
	queue := []int{root}
	seen := map[int]bool{root: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// pssOf sums the PSS of pids. A process that ended meanwhile counts zero;
// one whose smaps_rollup cannot be read is an error (it would be counted
// short).
func pssOf(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		kb, err := pssKB(pid)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("PSS of process %d: %w", pid, err)
		}
		sum += kb
	}
	return sum, nil
}
