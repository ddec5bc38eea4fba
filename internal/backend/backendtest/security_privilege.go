package backendtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// ptraceProg attaches to each pid of $PIDS and detaches again; it prints
// {pid: "OK" | errno name} and every visible process's command line.
const ptraceProg = `import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
res = {}
for pid in [int(a) for a in os.environ["PIDS"].split()]:
    if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
        os.waitpid(pid, 0x40000000)  # __WALL
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
        res[pid] = "OK"
    else:
        res[pid] = errno.errorcode[ctypes.get_errno()]
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            procs[p] = open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            pass
print(json.dumps({"ptrace": res, "procs": procs}))`

// ptrace: the sandbox user may trace its own processes (another of its
// processes, docker's init), never its agent — same user, but the agent is
// not dumpable, so tracing it (and taking over its connection to the
// daemon) needs CAP_SYS_PTRACE, which no sandbox has; the host's processes
// and another sandbox's are not even visible.
func (s *suite) ptrace(t *testing.T) {
	host := exec.Command("bash", "-c", "exec -a "+s.marker+"-host sleep 600")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { host.Process.Kill(); host.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); len(hostProcesses(s.marker+"-host")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the host's marked process never ran")
		}
	}
	_, other, _ := s.sandbox(t, func(sp *backend.Spec) { sp.ID += "-other" })
	startMarked(t, other, s.marker+"-other")
	_, c, _ := s.sandbox(t, nil)
	startMarked(t, c, s.marker+"-sibling")
	// The agent starts commands (through prlimit, which execs): it is the
	// shell's parent. (On docker, PID 1 is docker-init.)
	out, _, _ := sh(t, c, "pgrep -f '^"+s.marker+"-sibling'; echo $PPID")
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("sibling and agent pids: %q", out)
	}
	sibling, agentPID, hostPID := f[0], f[1], strconv.Itoa(host.Process.Pid)
	var got struct {
		Ptrace map[string]string
		Procs  map[string]string
	}
	python(t, c, "import os; os.environ['PIDS'] = '"+strings.Join([]string{sibling, "1", agentPID, hostPID}, " ")+"'\n"+ptraceProg, &got)
	t.Logf("ptrace from the sandbox: sibling %s, PID 1 %s, agent %s, host pid %s", got.Ptrace[sibling], got.Ptrace["1"], got.Ptrace[agentPID], got.Ptrace[hostPID])
	for pid, cmd := range got.Procs {
		if strings.Contains(cmd, s.marker+"-host") || strings.Contains(cmd, s.marker+"-other") {
			t.Errorf("a process outside the sandbox is visible as pid %s: %q", pid, cmd)
		}
	}
	if _, visible := got.Procs[hostPID]; !visible && got.Ptrace[hostPID] != "ESRCH" {
		t.Errorf("ptrace of the host's pid %s: %s, want ESRCH", hostPID, got.Ptrace[hostPID])
	}
	if got.Ptrace[agentPID] != "EPERM" {
		t.Errorf("ptrace of the agent (pid %s): %s, want EPERM", agentPID, got.Ptrace[agentPID])
	}
	if mem, _, _ := sh(t, c, "head -c 16 /proc/"+agentPID+"/mem 2>&1; head -c 64 /proc/"+agentPID+"/environ 2>&1"); !strings.Contains(mem, "Permission denied") || strings.Contains(mem, "PATH=") {
		t.Errorf("the agent's memory or environment is readable from the sandbox: %q", mem)
	}
	for _, pid := range []string{sibling, "1", agentPID} {
		switch got.Ptrace[pid] {
		case "EPERM":
		case "OK":
			// Only a process with nothing more than the tracer has.
			st, _, _ := sh(t, c, "grep -E '^(Uid|CapEff|CapPrm):' /proc/"+pid+"/status")
			for _, want := range []string{"Uid:\t1000\t1000\t1000\t1000", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000"} {
				if !strings.Contains(st, want) {
					t.Errorf("traced pid %s, which has more than the sandbox user: want %q in %q", pid, want, st)
				}
			}
		default:
			t.Errorf("ptrace of pid %s: %s, want OK or EPERM", pid, got.Ptrace[pid])
		}
	}
	// Attach and detach left the agent working.
	if e, err := c.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil); err != nil || e.Text() != "2" {
		t.Fatalf("the sandbox after the ptrace attempts: %v %+v", err, e)
	}
}

// rawSockets: packet and raw IP sockets need CAP_NET_RAW, which no sandbox
// has. An ICMP datagram ("ping") socket needs no capability where
// net.ipv4.ping_group_range admits the user's group; its outcome is logged.
func (s *suite) rawSockets(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	var got map[string]string
	python(t, c, `import errno, json, socket
res = {}
for name, args in [("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0)),
                   ("raw4", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
                   ("raw4-tcp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                   ("raw6", (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
                   ("ping", (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))]:
    try:
        socket.socket(*args).close()
        res[name] = "OK"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))`, &got)
	for _, k := range []string{"packet", "raw4", "raw4-tcp", "raw6"} {
		if got[k] != "EPERM" {
			t.Errorf("%s socket: %s, want EPERM", k, got[k])
		}
	}
	t.Logf("ICMP datagram (ping) socket: %s", got["ping"])
	if got["ping"] != "OK" && got["ping"] != "EACCES" {
		t.Errorf("ping socket: %s, want OK or EACCES", got["ping"])
	}
}

// setuid: the host's setuid-root programs give no privilege (no_new_privs,
// nosuid mounts, no mapped root), a setuid file the sandbox makes in its
// workspace is never root's on the host, and it cannot hard-link a setuid-root
// program into the workspace.
func (s *suite) setuid(t *testing.T) {
	_, c, spec := s.sandbox(t, nil)
	out, _, _ := sh(t, c, "find /usr/bin /usr/sbin /usr/lib -xdev -perm -4000 -type f 2>/dev/null | sort")
	suid := strings.Fields(out)
	t.Logf("setuid programs in the sandbox: %v", suid)
	for _, cmd := range []string{
		"su -c 'id -u' root </dev/null",
		"mount -t tmpfs none /tmp",
		"passwd -S root",
		"chsh -s /bin/sh root </dev/null",
	} {
		prog := "/usr/bin/" + strings.Fields(cmd)[0]
		if !contains(suid, prog) {
			continue
		}
		out, errs, _ := sh(t, c, cmd+"; echo euid=$(id -u)")
		t.Logf("%s: %q %q", cmd, out, strings.TrimSpace(errs))
		if strings.HasPrefix(out, "0\n") || strings.Contains(out, "\n0\n") || !strings.Contains(out, "euid=1000") {
			t.Errorf("%s gave root: %q %q", cmd, out, errs)
		}
		if strings.Contains(cmd, "mount") && !strings.Contains(errs, "must be superuser") {
			t.Errorf("setuid mount ran with privilege: %q", errs)
		}
		if strings.Contains(cmd, "passwd") && !strings.Contains(errs, "may not view") {
			t.Errorf("setuid passwd ran with privilege: %q", errs)
		}
	}
	// A setuid copy made inside: runs as its owner, the sandbox user.
	out, errs, _ := sh(t, c, "cp /usr/bin/id suid-id && chmod 6755 suid-id && ./suid-id -u; chown 0:0 suid-id; ln /usr/bin/su su-link; ls -l suid-id")
	t.Logf("setuid file in the workspace: %q %q", out, errs)
	if !strings.HasPrefix(out, "1000\n") {
		t.Errorf("setuid copy ran as %q", out)
	}
	if !strings.Contains(errs, "Operation not permitted") {
		t.Errorf("chown to root or the hard link did not fail with EPERM/EXDEV: %q", errs)
	}
	if _, err := os.Lstat(filepath.Join(spec.WorkspaceDir, "su-link")); err == nil {
		t.Error("hard-linked a setuid-root program into the workspace")
	}
	// On the host no file of the workspace is a setuid or setgid file of root.
	err := filepath.WalkDir(spec.WorkspaceDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 && (st.Uid == 0 || st.Gid == 0 || st.Uid != s.opts.HostUID) {
			t.Errorf("%s on the host: mode %v owner %d:%d", p, fi.Mode(), st.Uid, st.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(spec.WorkspaceDir, "suid-id"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	t.Logf("host view of the sandbox's setuid file: %v owned by %d:%d", fi.Mode(), st.Uid, st.Gid)
	if st.Uid != s.opts.HostUID {
		t.Errorf("the setuid file is owned on the host by %d, want the sandbox's %d", st.Uid, s.opts.HostUID)
	}
}

// mountAndModules: mounting, new mount or user namespaces (which would give
// capabilities back) and loading a kernel module fail. Under a user-space
// kernel a new user namespace is the Sentry's own, not the host's.
func (s *suite) mountAndModules(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	var got map[string]string
	python(t, c, `import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
res = {}
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    res[name] = "OK" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, None)
call("unshare-mount", 272, 0x00020000)  # CLONE_NEWNS
call("unshare-user", 272, 0x10000000)  # CLONE_NEWUSER (last: it may succeed in gVisor)
call("init_module", 175, None, 0, b"")
call("finit_module", 313, 0, b"", 0)
call("delete_module", 176, b"ext4", 0)
print(json.dumps(res))`, &got)
	t.Logf("mount, namespaces, modules: %v", got)
	for k, v := range got {
		if k == "unshare-user" && s.opts.UserSpaceKernel && v == "OK" {
			continue
		}
		if v == "OK" {
			t.Errorf("%s succeeded", k)
		}
	}
}
