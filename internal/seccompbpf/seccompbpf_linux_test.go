package seccompbpf_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ds-sandbox/ds-sandbox/internal/seccompbpf"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// probe loads the BPF program given as argv[1] with no_new_privs (as an
// engine entering a sandbox does) and prints the errno of each probe, 0 for
// success; without argv[1] it probes unfiltered.
const probe = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if len(sys.argv) > 1:
    bpf = open(sys.argv[1], 'rb').read()
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    class Prog(ctypes.Structure):
        _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
    prog = Prog(len(bpf) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0                   # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
def e(r):
    return 0 if r >= 0 else ctypes.get_errno()
res = {}
res['getpid'] = e(libc.syscall(39))
res['keyctl'] = e(libc.syscall(250, 0, -3, 0, 0))            # KEYCTL_GET_KEYRING_ID
res['personality_query'] = e(libc.syscall(135, ctypes.c_ulong(0xffffffff)))
res['personality_norandom'] = e(libc.syscall(135, ctypes.c_ulong(0x0040000))) # ADDR_NO_RANDOMIZE
pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)          # clone(CLONE_NEWUSER|SIGCHLD)
if pid == 0:
    os._exit(0)
res['clone_newuser'] = e(pid)
if pid > 0:
    os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
res['fork'] = 0
res['unshare_user'] = e(libc.syscall(272, 0x10000000))       # unshare(CLONE_NEWUSER), last: it changes the process
for k in sorted(res):
    print(k, res[k])
`

func TestDockerDefaultProfileBehavesAsUnderRunc(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probes use amd64 syscall numbers")
	}
	requireSeccomp(t)
	if os.Geteuid() != 0 {
		// unshare(CLONE_NEWUSER) without the filter needs nothing, but the
		// comparison below is only meaningful where it succeeds.
		t.Log("not root: unfiltered probes may differ")
	}
	sp := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}, Linux: &specs.Linux{}}
	prof, err := seccomp.GetDefaultProfile(sp)
	if err != nil {
		t.Fatal(err)
	}
	bpf, err := seccompbpf.Compile(context.Background(), "", prof)
	if err != nil {
		t.Fatal(err)
	}
	if len(bpf)%seccompbpf.InstructionSize != 0 {
		t.Fatalf("%d bytes", len(bpf))
	}
	file := filepath.Join(t.TempDir(), "filter.bpf")
	if err := os.WriteFile(file, bpf, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) map[string]string {
		t.Helper()
		out, err := exec.Command("/usr/bin/python3", append([]string{"-I", "-c", probe}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("probe: %v\n%s", err, out)
		}
		res := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(l, " ")
			res[k] = v
		}
		return res
	}
	free, filtered := run(), run(file)
	t.Logf("unfiltered %v; filtered %v", free, filtered)
	const eperm = "1"
	want := map[string]string{
		"getpid": "0", "fork": "0", "personality_query": "0",
		"keyctl": eperm, "unshare_user": eperm, "personality_norandom": eperm, "clone_newuser": eperm,
	}
	for k, v := range want {
		if filtered[k] != v {
			t.Errorf("under the filter %s gave errno %s, want %s", k, filtered[k], v)
		}
	}
	// The refusals must come from the filter, not from the machine.
	if os.Geteuid() == 0 {
		for _, k := range []string{"unshare_user", "clone_newuser", "personality_norandom"} {
			if free[k] == eperm {
				t.Errorf("%s is refused even without the filter: the probe proves nothing", k)
			}
		}
	}
}

func TestCompileRefusesWhatItCannotRead(t *testing.T) {
	requireSeccomp(t)
	ctx := context.Background()
	if _, err := seccompbpf.Compile(ctx, "", nil); err == nil {
		t.Error("nil profile compiled")
	}
	bad := []*specs.LinuxSeccomp{
		{DefaultAction: "SCMP_ACT_NOPE"},
		{DefaultAction: specs.ActErrno, Architectures: []specs.Arch{"SCMP_ARCH_PDP11"}},
		{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_SOMETIMES"}}}}},
	}
	for _, p := range bad {
		if _, err := seccompbpf.Compile(ctx, "", p); err == nil {
			t.Errorf("%+v compiled", p)
		}
	}
	if _, err := seccompbpf.Compile(ctx, "/nonexistent/python3", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}); err == nil || errors.Is(err, seccompbpf.ErrUnavailable) {
		t.Errorf("missing interpreter: %v", err)
	}
}

func requireSeccomp(t *testing.T) {
	t.Helper()
	err := exec.Command("/usr/bin/python3", "-I", "-c", "import seccomp").Run()
	testenv.RequireNoError(t, "Debian's python3-seccomp", err)
}
