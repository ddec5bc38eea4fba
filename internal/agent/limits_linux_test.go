package agent

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// newLimitedAgent is newLocalAgent with cfg's limits.
func newLimitedAgent(t *testing.T, limits ProcessLimits, maxOutput int64) *testAgent {
	t.Helper()
	ws := t.TempDir()
	a := startAgent(t, Config{
		Workdir: "/home/user", User: "user",
		Mounts: []Mount{{Path: "/home/user", HostPath: ws}, {Path: ws, HostPath: ws}},
		Limits: limits, MaxOutputBytes: maxOutput,
	})
	a.workspace = ws
	return a
}

// TestProcessLimitsReachCommandsAndKernels: the rlimits the agent is given
// are those of its commands, of its kernels and of what they start; the
// agent's own stay as they were.
func TestProcessLimitsReachCommandsAndKernels(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	a := newLimitedAgent(t, ProcessLimits{MaxOpenFiles: 200, MaxProcs: 5000}, 0)
	r, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "ulimit -Sn; ulimit -Hn; sh -c 'ulimit -n'; cat /proc/self/limits | grep -i processes"}, nil)
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("command: %v %+v", err, r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 4 || lines[0] != "200" || lines[1] != "200" || lines[2] != "200" || !strings.Contains(lines[3], "5000                 5000") {
		t.Fatalf("limits in a command: %q", r.Stdout)
	}
	// A command cannot raise them again (unless it is root: CAP_SYS_RESOURCE).
	if os.Geteuid() != 0 {
		r, _ = a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "ulimit -n 4096"}, nil)
		if r.ExitCode == 0 {
			t.Fatal("a command raised its open-files limit")
		}
	}

	a.s.ctxs.startDefault()
	e, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "import resource, subprocess\n" +
		"print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_NPROC))\n" +
		"fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\nexcept OSError as e: print(e.errno, len(fs) < 200)\n" +
		"del fs\nprint(subprocess.run(['sh', '-c', 'ulimit -n'], capture_output=True, text=True).stdout.strip())"}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e.Error)
	}
	if got := strings.Join(e.Logs.Stdout, ""); got != "(200, 200) (5000, 5000)\n24 True\n200\n" {
		t.Fatalf("limits in a kernel: %q", got)
	}
	// The agent's own limit is untouched.
	own, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(own), "Max open files            200 ") {
		t.Fatal("the agent limited itself")
	}
}

// TestOutputLimit: a flood past max_output_bytes is cut there, marked, and
// the agent's memory stays bounded however much the cell prints.
func TestOutputLimit(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	a := newLimitedAgent(t, ProcessLimits{}, 1<<20)
	a.s.ctxs.startDefault()
	// 1 GiB of stdout, in 1 MiB writes and in one print; the race detector
	// slows the agent down tenfold and multiplies its memory, so under it the
	// flood is smaller and the memory bound is not checked.
	mib, maxRSS := 1024, int64(300<<20)
	if raceEnabled {
		mib, maxRSS = 64, 0
	}
	for _, code := range []string{
		fmt.Sprintf("import sys\nfor i in range(%d): sys.stdout.write('x' * (1 << 20))", mib),
		fmt.Sprintf("print('y' * (%d << 20))", mib),
	} {
		e, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: code, TimeoutMs: 600_000}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("execute: %v %+v", err, e.Error)
		}
		total := 0
		for _, s := range e.Logs.Stdout {
			total += len(s)
		}
		if total != 1<<20 || !e.Truncated {
			t.Fatalf("kept %d bytes (want %d), truncated %v, notices %q", total, 1<<20, e.Truncated, e.Notices)
		}
		if n := e.Notices[len(e.Notices)-1]; !strings.Contains(n, "output truncated") || !strings.Contains(n, "max_output_bytes") {
			t.Fatalf("notice %q", n)
		}
		// This process is the agent: its peak RSS must stay far below the
		// GiB the cell printed.
		hwm := vmHWM(t)
		t.Logf("%d MiB printed, peak RSS %d MiB", mib, hwm>>20)
		if maxRSS > 0 && hwm > maxRSS {
			t.Fatalf("the agent's peak RSS is %d MiB after a %d MiB flood", hwm>>20, mib)
		}
	}
}

// vmHWM returns this process's peak resident set size, from /proc.
func vmHWM(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// reapChildEnv makes TestOrphansAreReaped run its child part: this test
// binary, re-executed, is the subreaper agent.
const reapChildEnv = "DS_AGENT_TEST_REAP"

// TestOrphansAreReaped: processes the agent adopts as subreaper are reaped
// when they exit (unreaped, each would count against the sandbox's pids
// limit for good), while its own commands keep their exit status. Being the
// subreaper is process-wide, so the agent side runs in a re-executed child.
func TestOrphansAreReaped(t *testing.T) {
	if os.Getenv(reapChildEnv) != "" {
		reapChild(t)
		return
	}
	t.Parallel()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOrphansAreReaped$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), reapChildEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func reapChild(t *testing.T) {
	if err := setSubreaper(); err != nil {
		t.Fatalf("setSubreaper: %v", err)
	}
	a := newLocalAgent(t)
	go reapOrphans(t.Context(), a.s.ownChild)
	// 50 orphans that exit at once, reparented to us when their sh exits.
	r, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "for i in $(seq 50); do (sleep 0.2 &) ; done"}, nil)
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("command: %v %+v", err, r)
	}
	self := os.Getpid()
	deadline := time.Now().Add(30 * time.Second)
	for {
		zombies := 0
		for _, st := range readProcs() {
			if st.ppid == self && st.zombie() {
				zombies++
			}
		}
		if zombies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d zombies of adopted orphans were never reaped", zombies)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Our own commands still get their exit status.
	for range 20 {
		r, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "exit 7"}, nil)
		if err != nil || r.ExitCode != 7 {
			t.Fatalf("own command's exit status: %v %+v", err, r)
		}
	}
}
