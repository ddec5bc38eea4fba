package pyengine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// bpf assembles a classic BPF program (struct sock_filter, native order).
func bpf(insns ...[4]uint32) []byte {
	var b bytes.Buffer
	for _, in := range insns {
		_ = binary.Write(&b, binary.NativeEndian, uint16(in[0]))
		b.WriteByte(byte(in[1]))
		b.WriteByte(byte(in[2]))
		_ = binary.Write(&b, binary.NativeEndian, in[3])
	}
	return b.Bytes()
}

const (
	bpfLdAbsW     = 0x20 // BPF_LD|BPF_W|BPF_ABS
	bpfJeqK       = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
	bpfRetK       = 0x06 // BPF_RET|BPF_K
	seccompAllow  = 0x7fff0000
	seccompErrno  = 0x00050000
	seccompKill   = 0x00000000
	seccompDataNr = 0 // offsetof(struct seccomp_data, nr)
)

var allowAll = bpf([4]uint32{bpfRetK, 0, 0, seccompAllow})

// denyGetppid returns EPERM for getppid and allows everything else.
func denyGetppid(t *testing.T) []byte {
	nr := map[string]uint32{"amd64": 110, "arm64": 173}[runtime.GOARCH]
	if nr == 0 {
		t.Skipf("no getppid number for %s", runtime.GOARCH)
	}
	return bpf(
		[4]uint32{bpfLdAbsW, 0, 0, seccompDataNr},
		[4]uint32{bpfJeqK, 0, 1, nr},
		[4]uint32{bpfRetK, 0, 0, seccompErrno | uint32(unix.EPERM)},
		[4]uint32{bpfRetK, 0, 0, seccompAllow},
	)
}

// nsInit is the init of the target's pid namespace: like the agent in a
// container, it reaps what is orphaned there.
const nsInit = `import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.05)`

// nsTarget starts `unshare … python3 nsInit` and returns the pid of that
// init.
func nsTarget(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "--kill-child", python, "-c", nsInit)
	if err := cmd.Start(); err != nil {
		testenv.Require(t, "unshare(1)", false, err.Error())
	}
	_ = ownStarted(cmd.Process.Pid)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		ownReaped(cmd.Process.Pid)
	})
	children := fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)
	for i := 0; i < 1000; i++ {
		b, _ := os.ReadFile(children)
		if f := strings.Fields(string(b)); len(f) == 1 {
			pid, _ := strconv.Atoi(f[0])
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(b)) == "python3" {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("unshare did not start its init")
	return 0
}

// tempCgroup makes a pids cgroup with pids.max and returns its directory.
func tempCgroup(t *testing.T, pidsMax int) string {
	t.Helper()
	base := "/sys/fs/cgroup/pids"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		base = "/sys/fs/cgroup"
	}
	dir := filepath.Join(base, fmt.Sprintf("pyengine-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		testenv.Require(t, "a writable pids cgroup", false, err.Error())
	}
	t.Cleanup(func() {
		// The engines are closed (cleanups run last-in first-out); their
		// zombies may take a moment to be reaped by init.
		for i := 0; i < 500 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(pidsMax)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openNS(t *testing.T, pid int, names ...string) map[string]*os.File {
	t.Helper()
	m := map[string]*os.File{}
	for _, n := range names {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, n))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		m[n] = f
	}
	return m
}

// TestForkEnter: as root, a forked engine enters another process's
// namespaces, a cgroup, a uid, no capabilities, rlimits, no_new_privs and a
// seccomp filter, checked from inside; a fork bomb and a memory hog in it
// leave the zygote and a sibling working; a failing step fails Fork. The
// target stands for a container whose init reaps orphans, as the agent does.
func TestForkEnter(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	target := nsTarget(t)
	cg := tempCgroup(t, 64)
	z := startZygote(t, ZygoteConfig{})
	sibling := fork(t, z, ForkConfig{})

	const nobody = 65534
	e := fork(t, z, ForkConfig{Dir: "/tmp", Enter: &Enter{
		CgroupProcs: []string{filepath.Join(cg, "cgroup.procs")},
		Namespaces:  openNS(t, target, "net", "mnt", "uts", "ipc", "pid"),
		Credential:  &Credential{UID: nobody, GID: nobody, Groups: []uint32{nobody}},
		Rlimits:     []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 256, Max: 256}},
		Seccomp:     denyGetppid(t),
	}})

	t.Run("confined", func(t *testing.T) {
		got := eval(t, e, `import os, resource
def st(k):
    return [l.split(':', 1)[1].strip() for l in open('/proc/self/status') if l.startswith(k + ':')][0]
print(' '.join(os.readlink('/proc/self/ns/' + n) for n in ('net', 'mnt', 'uts', 'ipc', 'pid')))
print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
print(st('CapEff'), st('CapPrm'), st('CapInh'), st('CapBnd'), st('CapAmb'), st('NoNewPrivs'), st('Seccomp'))
print(resource.getrlimit(resource.RLIMIT_NOFILE), os.getcwd())
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
print('getppid', libc.getppid())
print(os.getpid())`)
		lines := strings.Split(got, "\n")
		if len(lines) != 6 {
			t.Fatalf("output %q", got)
		}
		var want []string
		for _, n := range []string{"net", "mnt", "uts", "ipc", "pid"} {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", target, n))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, l)
		}
		if lines[0] != strings.Join(want, " ") {
			t.Errorf("namespaces %s, want %s", lines[0], strings.Join(want, " "))
		}
		if lines[1] != "65534 65534 65534 [65534]" {
			t.Errorf("credentials %s", lines[1])
		}
		const zero = "0000000000000000"
		if lines[2] != strings.Repeat(zero+" ", 5)+"1 2" {
			t.Errorf("CapEff CapPrm CapInh CapBnd CapAmb NoNewPrivs Seccomp = %s", lines[2])
		}
		if lines[3] != "(256, 256) /tmp" {
			t.Errorf("rlimit, cwd: %s", lines[3])
		}
		if lines[4] != "getppid -1" { // -EPERM from the filter (glibc does not set errno for getppid)
			t.Errorf("seccomp filter: %s", lines[4])
		}
		if lines[5] == strconv.Itoa(e.PID()) {
			t.Errorf("engine pid %s is the same inside the pid namespace as outside", lines[5])
		}
		procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil || !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(e.PID())+"\n") {
			t.Errorf("engine %d is not in the cgroup: %q %v", e.PID(), procs, err)
		}
	})
	t.Run("fork bomb", func(t *testing.T) {
		got := eval(t, e, `import os, time
if os.fork() == 0:
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
while int(open('`+cg+`/pids.current').read()) < 64:
    time.sleep(0.05)
print('limit reached')`)
		if got != "limit reached" {
			t.Fatalf("bomb: %q", got)
		}
		if got := eval(t, sibling, "print(1+1)"); got != "2" {
			t.Fatalf("sibling during the bomb: %q", got)
		}
		if got := eval(t, fork(t, z, ForkConfig{}), "print('forked')"); got != "forked" {
			t.Fatalf("fork during the bomb: %q", got)
		}
		if err := e.Close(); err != nil {
			t.Fatalf("Close the bomb: %v", err)
		}
		for i := 0; ; i++ {
			b, err := os.ReadFile(filepath.Join(cg, "pids.current"))
			if err == nil && strings.TrimSpace(string(b)) == "0" {
				break
			}
			if i == 1000 {
				t.Fatalf("the bomb's cgroup still has %s processes", b)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := eval(t, sibling, "print(2+2)"); got != "4" {
			t.Fatalf("sibling after the bomb: %q", got)
		}
	})
	t.Run("memory hog", func(t *testing.T) {
		// Room for the preloaded interpreter and 512 MiB more.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", z.PID()))
		if err != nil {
			t.Fatal(err)
		}
		var vmKB uint64
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
				vmKB, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
		limit := vmKB<<10 + 512<<20
		hog := fork(t, z, ForkConfig{Enter: &Enter{Rlimits: []Rlimit{{Resource: unix.RLIMIT_AS, Cur: limit, Max: limit}}}})
		r, _ := run(t, hog, "x = []\nwhile True:\n    x.append(b'x' * (64 << 20))")
		if r.Status != "error" || r.EName != "MemoryError" {
			t.Fatalf("hog reply %+v", r)
		}
		if got := eval(t, hog, "x.clear()\nprint('recovered')"); got != "recovered" {
			t.Fatalf("hog after MemoryError: %q", got)
		}
		if got := eval(t, sibling, "print(3+3)"); got != "6" {
			t.Fatalf("sibling after the hog: %q", got)
		}
	})
	t.Run("failing steps", func(t *testing.T) {
		notNS, err := os.Open("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		defer notNS.Close()
		tests := []struct {
			name  string
			enter *Enter
			want  string
		}{
			{name: "missing cgroup", enter: &Enter{CgroupProcs: []string{"/nonexistent/cgroup.procs"}}, want: "No such file"},
			{name: "not a namespace", enter: &Enter{Namespaces: map[string]*os.File{"net": notNS}}, want: "setns net"},
			{name: "unknown namespace", enter: &Enter{Namespaces: map[string]*os.File{"time": notNS}}, want: `unknown namespace "time"`},
			{name: "seccomp not whole instructions", enter: &Enter{Seccomp: []byte{1, 2, 3}}, want: "whole number of 8-byte instructions"},
			{name: "seccomp that kills", enter: &Enter{Seccomp: bpf([4]uint32{bpfRetK, 0, 0, seccompKill})}, want: "exited before it was ready"},
			{name: "bad rlimit", enter: &Enter{Rlimits: []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 10, Max: 5}}}, want: "ValueError"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e, err := z.Fork(context.Background(), ForkConfig{Enter: tt.enter})
				if err == nil {
					e.Close()
					t.Fatal("Fork succeeded")
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Fork: %v, want it to say %q", err, tt.want)
				}
			})
		}
		if got := eval(t, fork(t, z, ForkConfig{Enter: &Enter{Seccomp: allowAll}}), "print('allow-all')"); got != "allow-all" {
			t.Fatalf("allow-all filter: %q", got)
		}
	})
}
