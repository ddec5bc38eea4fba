package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// workspaceOwner decides the uid and gid the container runs as: the owner of
// the workspace, so it stays writable; a root-owned workspace is chowned to
// the sandbox uid first, since sandboxes never run as root.
func (b *Backend) workspaceOwner(ws string) (int, int, error) {
	st, err := os.Stat(ws)
	if err != nil {
		return 0, 0, fmt.Errorf("docker backend: workspace: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, api.Errorf(api.ErrUnsupported, "docker backend: cannot read the owner of %s", ws)
	}
	if sys.Uid != 0 {
		return int(sys.Uid), int(sys.Gid), nil
	}
	uid, gid := b.cfg.SandboxUID, b.cfg.SandboxGID
	err = filepath.WalkDir(ws, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		// A file with other hard links is shared with something outside the
		// workspace (a dataset linked from the registry): giving it to the
		// sandbox would let it rewrite the registry's copy.
		if st, ok := info.Sys().(*syscall.Stat_t); ok && !d.IsDir() && st.Nlink > 1 {
			return nil
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("docker backend: give the workspace to the sandbox user %d: %w", uid, err)
	}
	return uid, gid, nil
}

// containerName is the container's name for sandbox id: Docker allows only
// [a-zA-Z0-9][a-zA-Z0-9_.-]; other bytes become '_'.
func containerName(id string) string {
	b := []byte("ds-sandbox-" + id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// environ is the container's environment on top of the image's (whose PATH
// it keeps).
func environ(spec backend.Spec) []string {
	return backend.Environ(spec, map[string]string{
		"HOME":   spec.Workdir,
		"TMPDIR": "/tmp",
		// The root filesystem is read-only and HOME is the workspace.
		"MPLCONFIGDIR": "/tmp/.matplotlib",
	}, spec.Workdir)
}
