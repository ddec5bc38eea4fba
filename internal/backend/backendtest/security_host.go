package backendtest

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostHomes: the host's /root and /home are not the sandbox's; the secrets
// planted there (one world-readable) cannot be read.
func (s *suite) hostHomes(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	out, errs, _ := sh(t, c, "ls -A /home; ls -A /root; cat "+s.rootSecret+" "+s.homeSecret+" /proc/1/root"+s.homeSecret+" /proc/1/root"+s.rootSecret)
	if strings.Contains(out, secret) || strings.Contains(out, s.marker) {
		t.Fatalf("host home directories visible: %q", out)
	}
	t.Logf("/home and /root in the sandbox: %q %q", out, errs)
	hostHomes, _ := os.ReadDir("/home")
	seen := strings.Fields(out)
	for _, h := range hostHomes {
		if h.Name() != "user" && contains(seen, h.Name()) {
			t.Errorf("host home /home/%s visible in the sandbox", h.Name())
		}
	}
}

// writeOutside: nothing outside the workspace, /tmp and /dev/shm can be
// written, and the host's directories of the same names (one of them
// world-writable) are unchanged.
func (s *suite) writeOutside(t *testing.T) {
	_, c, spec := s.sandbox(t, nil)
	name := s.marker + "-written"
	for _, dir := range []string{"/", "/usr", "/usr/local/bin", "/etc", "/var", "/var/tmp", "/home", "/root", s.homeDir, "/opt", "/run", "/bin", "/lib"} {
		p := filepath.Join(dir, name)
		out, errs, code := sh(t, c, "echo pwned > "+p+" && echo wrote")
		if code == 0 || strings.Contains(out, "wrote") {
			t.Errorf("wrote %s in the sandbox", p)
		}
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("the sandbox created %s on the host (%s)", p, errs)
		}
	}
	if _, errs, code := sh(t, c, "echo ok > "+name); code != 0 {
		t.Fatalf("cannot write the workspace: %s", errs)
	}
	if b, err := os.ReadFile(filepath.Join(spec.WorkspaceDir, name)); err != nil || string(b) != "ok\n" {
		t.Fatalf("the workspace write is not on the host: %q %v", b, err)
	}
}

// procAndSys: the classic /proc and /sys escapes (sysrq, core_pattern,
// uevent_helper, sysctls) are refused, PID 1 and /proc/1/root are the
// sandbox's own, and what /proc/self/mountinfo tells of the host is logged.
func (s *suite) procAndSys(t *testing.T) {
	_, c, _ := s.sandbox(t, nil)
	// Each write is harmless had it succeeded: the host's own value, sysrq
	// "h" (help), drop_caches.
	writes := map[string]string{"/proc/sysrq-trigger": "h", "/proc/sys/vm/drop_caches": "1"}
	for _, p := range []string{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/modprobe",
		"/sys/kernel/uevent_helper", "/proc/sys/kernel/hostname", "/sys/kernel/mm/transparent_hugepage/enabled"} {
		if b, err := os.ReadFile(p); err == nil {
			v := strings.TrimSpace(string(b))
			if i := strings.IndexByte(v, '['); i >= 0 { // "always [madvise] never"
				v = strings.Trim(strings.Fields(v[i:])[0], "[]")
			}
			writes[p] = v
		}
	}
	before := hostValues()
	for p, v := range writes {
		out, errs, code := sh(t, c, "printf '%s\\n' '"+v+"' > "+p+" && echo wrote")
		if code == 0 || strings.Contains(out, "wrote") {
			t.Errorf("wrote %s from the sandbox", p)
		}
		t.Logf("write %s: %s", p, strings.TrimSpace(errs))
	}
	if after := hostValues(); after != before {
		t.Errorf("host values changed:\n%s\n→\n%s", before, after)
	}
	// PID 1 and its root are the sandbox's (or, where PID 1 is the agent,
	// which is not dumpable, its root cannot be looked into at all).
	hostInit, _ := os.ReadFile("/proc/1/cmdline")
	out, _, _ := sh(t, c, "tr '\\0' ' ' </proc/1/cmdline; echo; ls -A /proc/1/root/ 2>&1 | tr '\\n' ' '; echo; ls -A / | tr '\\n' ' '")
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || lines[1] != lines[2] && !strings.Contains(lines[1], "Permission denied") {
		t.Errorf("/proc/1/root is not the sandbox's root: %q", out)
	}
	if strings.TrimSpace(lines[0]) == strings.TrimSpace(strings.ReplaceAll(string(hostInit), "\x00", " ")) {
		t.Errorf("the host's init is the sandbox's PID 1: %q", lines[0])
	}
	// mountinfo names the host paths of the sandbox's own mounts (its
	// workspace, the agent binary, the runtime's bundle); never the host's
	// secrets.
	out, _, _ = sh(t, c, "cat /proc/self/mountinfo")
	if strings.Contains(out, s.marker) {
		t.Errorf("mountinfo names the host's planted files: %q", out)
	}
	var roots []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[3] != "/" && !contains(roots, f[3]) {
			roots = append(roots, f[3])
		}
	}
	t.Logf("host paths in /proc/self/mountinfo: %v", roots)
}

// hostValues reads the host's settings the classic escapes write.
func hostValues() string {
	var sb strings.Builder
	for _, p := range []string{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/modprobe", "/sys/kernel/uevent_helper", "/proc/sys/kernel/hostname"} {
		b, _ := os.ReadFile(p)
		sb.WriteString(p + "=" + strings.TrimSpace(string(b)) + "\n")
	}
	return sb.String()
}

// filesAPITraversal: the files API runs inside the sandbox as its user, so
// symlinks the code makes (to /, /etc/shadow, the host's planted secrets)
// and ".." paths lead only into the sandbox's own view.
func (s *suite) filesAPITraversal(t *testing.T) {
	_, c, spec := s.sandbox(t, nil)
	hostShadow, _ := os.ReadFile("/etc/shadow")
	sh(t, c, "ln -s / rootlink; ln -s /etc/shadow shadowlink; ln -s /etc etclink; ln -s "+s.rootSecret+" rootsecret; ln -s "+s.homeDir+" homedir; ln -s /proc/1/root proc1root")
	ctx := t.Context()
	read := func(p string) (string, error) {
		rc, err := c.ReadFile(ctx, p)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	for _, p := range []string{"/home/user/shadowlink", "/home/user/../../etc/shadow", "/home/user/rootlink/etc/shadow",
		"/home/user/rootsecret", "/home/user/homedir/secret", "/home/user/../.." + s.homeSecret,
		"/home/user/proc1root" + s.rootSecret, "/home/user/rootlink/root/." + s.marker, s.homeSecret, "../../" + s.homeSecret} {
		got, err := read(p)
		t.Logf("read %s: %d bytes, %v", p, len(got), err)
		if got != "" && (strings.Contains(got, secret) || (len(hostShadow) > 0 && got == string(hostShadow))) {
			t.Errorf("read the host's file through %s", p)
		}
	}
	for _, p := range []string{"/home/user/rootlink/home", "/home/user/proc1root/home", "/home/user/../../home", "/home/user/rootlink/root"} {
		es, err := c.List(ctx, p, 1)
		var names []string
		for _, e := range es {
			names = append(names, e.Name)
		}
		t.Logf("list %s: %v %v", p, names, err)
		if contains(names, s.marker) || contains(names, "."+s.marker) {
			t.Errorf("listed the host's planted files through %s: %v", p, names)
		}
	}
	name := s.marker + "-api"
	for _, dir := range []string{"/home/user/etclink", "/home/user/rootlink/usr", "/home/user/../../etc", "/home/user/homedir", "/home/user/../../root", "/home/user/../.." + s.homeDir} {
		_, err := c.WriteFile(ctx, dir+"/"+name, strings.NewReader("pwned"))
		t.Logf("write %s/%s: %v", dir, name, err)
		if err == nil {
			t.Errorf("the files API wrote %s/%s", dir, name)
		}
	}
	for _, p := range []string{"/etc/" + name, "/usr/" + name, "/root/" + name, filepath.Join(s.homeDir, name)} {
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("the files API created %s on the host", p)
		}
	}
	if b, _ := os.ReadFile(s.rootSecret); string(b) != secret {
		t.Errorf("the host's secret changed: %q", b)
	}
	// Writing through the workspace still works, and lands on the host.
	if _, err := c.WriteFile(ctx, "/home/user/"+name, strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(spec.WorkspaceDir, name)); err != nil || string(b) != "ok" {
		t.Fatalf("workspace write through the API: %q %v", b, err)
	}
}
