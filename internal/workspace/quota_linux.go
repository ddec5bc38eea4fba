package workspace

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// QuotaSupported returns nil when this host can give workspaces a disk quota
// (root, loop devices, mkfs.ext4 and mount), or an api.ErrUnsupported error
// saying what is missing.
func QuotaSupported() error { return quotaSupported() }

func quotaSupported() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "the daemon must run as root to mount a workspace image")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "no loop devices (/dev/loop-control; modprobe loop)")
	}
	for _, bin := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := lookSbin(bin); err != nil {
			missing = append(missing, bin+" is not installed (apt-get install e2fsprogs mount)")
		}
	}
	if len(missing) > 0 {
		return api.Errorf(api.ErrUnsupported, "disk quotas for workspaces are not available on this host: %s", strings.Join(missing, "; "))
	}
	return nil
}

// lookSbin finds a system binary in PATH or the sbin directories an ordinary
// PATH may lack.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// makeImage creates a sparse file of mb MiB holding an empty ext4 file
// system with no blocks reserved for root (the quota is all the sandbox's).
func makeImage(img string, mb int) error {
	f, err := os.OpenFile(img, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(mb) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", "dss-workspace", img)
}

// mountImage loop-mounts img at dir; the loop device goes away with the
// unmount (mount sets autoclear).
func mountImage(img, dir string) error {
	return run("mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, dir)
}

// unmount unmounts dir when something is mounted there.
func unmount(dir string) error {
	mounted, err := isMountPoint(dir)
	if err != nil || !mounted {
		return err
	}
	return run("umount", dir)
}

// isMountPoint reports whether dir is the root of a mount: its device
// differs from its parent's (the image is a file system of its own).
func isMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}

func run(name string, args ...string) error {
	bin, err := lookSbin(name)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
