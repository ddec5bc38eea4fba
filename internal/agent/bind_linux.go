package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindWorkdir makes the host directory hostDir appear at workdir in this
// process's mount namespace, a private one the local backend started the
// agent in (CLONE_NEWNS, with CLONE_NEWUSER when not root), so code finds
// its workspace at the same absolute path (/home/user) as the files API and
// the isolating backends give it. Nothing changes on the host: every mount
// is made after the namespace's propagation was set to private.
//
// When workdir does not exist on the host, its deepest existing ancestor A
// (such as /home) gets a tmpfs holding a bind mount of each of A's entries,
// so A's contents stay visible, plus the missing directories down to
// workdir. A must not be "/".
func bindWorkdir(workdir, hostDir string) error {
	workdir, hostDir = filepath.Clean(workdir), filepath.Clean(hostDir)
	if !filepath.IsAbs(workdir) || !filepath.IsAbs(hostDir) {
		return fmt.Errorf("workdir %q and %q must be absolute", workdir, hostDir)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private (is this a private mount namespace?): %w", err)
	}
	releaseSiblings(hostDir)
	if st, err := os.Stat(workdir); err == nil && st.IsDir() {
		return bind(hostDir, workdir)
	} else if err == nil {
		return fmt.Errorf("%s exists on the host and is not a directory", workdir)
	}
	anc := filepath.Dir(workdir)
	for {
		if _, err := os.Lstat(anc); err == nil {
			break
		}
		anc = filepath.Dir(anc)
	}
	if anc == "/" {
		return fmt.Errorf("no directory on the path to %s exists on the host but /, which cannot be replaced", workdir)
	}
	if err := synthesize(anc); err != nil {
		return fmt.Errorf("make %s writable for %s: %w", anc, workdir, err)
	}
	if err := os.MkdirAll(workdir, 0o755); err != nil {
		return err
	}
	return bind(hostDir, workdir)
}

// releaseSiblings detaches, in this namespace only, the mounts below the
// workspace's parent directory other than the workspace itself: other
// sandboxes' workspace images (disk quotas). The namespace's copy would
// otherwise keep their file systems busy after the host unmounts them.
func releaseSiblings(hostDir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	base := filepath.Dir(hostDir) + "/"
	var points []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if strings.HasPrefix(mp, base) && mp != hostDir && !strings.HasPrefix(mp, hostDir+"/") {
			points = append(points, mp)
		}
	}
	// Deepest first.
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range points {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				out = append(out, v)
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}

func bind(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	return nil
}

// synthesize replaces dir with a tmpfs that shows dir's entries through
// bind mounts (symlinks are copied), so directories can be made in it.
func synthesize(dir string) error {
	keep, err := os.MkdirTemp("", "dss-orig-")
	if err != nil {
		return err
	}
	defer os.Remove(keep)
	if err := bind(dir, keep); err != nil {
		return err
	}
	defer unix.Unmount(keep, unix.MNT_DETACH)
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	mode := fmt.Sprintf("mode=%o", st.Mode().Perm())
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, mode); err != nil {
		return fmt.Errorf("tmpfs on %s: %w", dir, err)
	}
	entries, err := os.ReadDir(keep)
	if err != nil {
		return err
	}
	for _, e := range entries {
		src, dst := filepath.Join(keep, e.Name()), filepath.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
			continue
		case e.IsDir():
			err = os.Mkdir(dst, 0o755)
		default:
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return err
		}
		if err := bind(src, dst); err != nil {
			return err
		}
	}
	return nil
}

// dropPrivilegeAndReexec runs this agent again without its --bind-workdir
// flag and without the capabilities the user namespace gave it, keeping
// the mounts just made: an agent that is not root on the host must not
// leave its code CAP_SYS_ADMIN over the namespace (it could unmount the
// workspace or mount over what the files API confines). reexec is the
// marker environment value to restore ("" when none). It returns only on
// failure.
func dropPrivilegeAndReexec(reexec string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := slices.DeleteFunc(slices.Clone(os.Args), func(a string) bool { return strings.HasPrefix(a, "--bind-workdir=") })
	env := os.Environ()
	if reexec != "" {
		env = append(env, ReexecEnv+"="+reexec)
	}
	// The capabilities that execve keeps come from the calling thread's
	// ambient set: clear it on the thread that execs.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// And the inheritable set, so no program the code runs can regain one.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	return syscall.Exec(self, args, env)
}
