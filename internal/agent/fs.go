package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// FS is the sandbox's filesystem view: sandbox paths (what the sandbox's code
// sees) mapped onto host directories through mounts.
//
// With no mounts (the agent runs inside a real sandbox filesystem) the view is
// the real "/". With mounts (the local backend, no filesystem isolation) the
// view is only the mounts: a path resolves through the longest mount prefix,
// the ancestors of mount points ("/", "/home") are synthesized read-only
// directories, and every other path is refused with api.ErrPermission.
//
// Every operation under a mount goes through an os.Root opened on the mount's
// host directory, so ".." and symlinks cannot lead outside it. The identity
// mount of the no-mounts case is the exception: it uses the plain os functions,
// because there is nothing outside "/" to escape to, and os.Root refuses every
// absolute symlink, which a real root filesystem (and user code) is full of.
//
// FS is safe for concurrent use; it holds no mutable state.
type FS struct {
	workdir string
	mounts  []*mount // longest Path first
	started time.Time
}

// mount is one resolved Mount. Mounts with the same host directory share a root.
type mount struct {
	path string // clean absolute sandbox path
	host string // clean absolute host path
	root dirRoot
}

// dirRoot is the part of *os.Root the files service uses; hostRoot implements
// it without confinement for the identity mount.
type dirRoot interface {
	Open(name string) (*os.File, error)
	OpenFile(name string, flag int, perm os.FileMode) (*os.File, error)
	Stat(name string) (fs.FileInfo, error)
	Lstat(name string) (fs.FileInfo, error)
	Readlink(name string) (string, error)
	MkdirAll(name string, perm os.FileMode) error
	Remove(name string) error
	RemoveAll(name string) error
	Rename(oldname, newname string) error
	FS() fs.FS
}

var (
	_ dirRoot = (*os.Root)(nil)
	_ dirRoot = hostRoot("/")
)

// newFS builds the view. Mount paths must be absolute and distinct, host paths
// absolute existing directories, and the workdir inside a mount.
func newFS(mounts []Mount, workdir string) (*FS, error) {
	f := &FS{workdir: path.Clean(workdir), started: time.Now()}
	if mounts == nil {
		f.mounts = []*mount{{path: "/", host: "/", root: hostRoot("/")}}
		return f, nil
	}
	roots := map[string]*os.Root{}
	seen := map[string]bool{}
	for _, m := range mounts {
		if !path.IsAbs(m.Path) || !filepath.IsAbs(m.HostPath) {
			return nil, api.Errorf(api.ErrInvalid, "agent: mount %q → %q: both paths must be absolute", m.Path, m.HostPath)
		}
		p, host := path.Clean(m.Path), filepath.Clean(m.HostPath)
		if seen[p] {
			return nil, api.Errorf(api.ErrInvalid, "agent: mount path %s is given twice", p)
		}
		seen[p] = true
		r, ok := roots[host]
		if !ok {
			var err error
			if r, err = os.OpenRoot(host); err != nil {
				return nil, api.Errorf(api.ErrInvalid, "agent: mount %s: host directory: %v", p, err)
			}
			roots[host] = r
		}
		f.mounts = append(f.mounts, &mount{path: p, host: host, root: r})
	}
	sort.SliceStable(f.mounts, func(i, j int) bool { return len(f.mounts[i].path) > len(f.mounts[j].path) })
	if loc, err := f.resolve(f.workdir); err != nil || loc.synthetic() {
		return nil, api.Errorf(api.ErrInvalid, "agent: workdir %s is not inside any mount", f.workdir)
	}
	return f, nil
}

// location is a resolved sandbox path.
type location struct {
	path string // clean absolute sandbox path
	m    *mount // nil: a synthesized directory (an ancestor of mount points)
	rel  string // slash path relative to m.root: "." or "a/b"
}

// synthetic reports whether loc is a directory the agent makes up.
func (l location) synthetic() bool { return l.m == nil }

// host is the host path behind loc (only meaningful when !synthetic).
func (l location) host() string { return filepath.Join(l.m.host, filepath.FromSlash(l.rel)) }

// clean turns a sandbox path as given by a client into a clean absolute path:
// "" is the workdir, relative paths resolve against it.
func (f *FS) clean(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", api.Errorf(api.ErrInvalid, "path %q contains a NUL byte", p)
	}
	if p == "" {
		return f.workdir, nil
	}
	if !path.IsAbs(p) {
		return path.Join(f.workdir, p), nil
	}
	return path.Clean(p), nil
}

// resolve maps a sandbox path onto its mount, or onto a synthesized directory.
// Paths outside the view fail with api.ErrPermission. It does not touch the
// disk: symlinks and ".." inside the host directory are the root's business.
func (f *FS) resolve(p string) (location, error) {
	cp, err := f.clean(p)
	if err != nil {
		return location{}, err
	}
	for _, m := range f.mounts {
		switch {
		case cp == m.path:
			return location{path: cp, m: m, rel: "."}, nil
		case m.path == "/":
			return location{path: cp, m: m, rel: cp[1:]}, nil
		case strings.HasPrefix(cp, m.path+"/"):
			return location{path: cp, m: m, rel: cp[len(m.path)+1:]}, nil
		}
	}
	if len(f.childMounts(cp)) > 0 {
		return location{path: cp}, nil
	}
	return location{}, api.Errorf(api.ErrPermission, "path %s is outside the sandbox's filesystem", cp)
}

// childMounts returns, for the directory dir, the next path component of every
// mount point strictly below it, mapped to that child's sandbox path.
func (f *FS) childMounts(dir string) map[string]string {
	prefix := dir + "/"
	if dir == "/" {
		prefix = "/"
	}
	var out map[string]string
	for _, m := range f.mounts {
		if m.path == dir || !strings.HasPrefix(m.path, prefix) {
			continue
		}
		name, _, _ := strings.Cut(m.path[len(prefix):], "/")
		if out == nil {
			out = map[string]string{}
		}
		out[name] = prefix + name
	}
	return out
}

// HostPath resolves a sandbox path (relative paths against the workdir) to the
// host path that backs it. A path that does not exist yet is fine. It fails
// with api.ErrPermission when the path is outside the view, is a synthesized
// directory (no host directory backs it), or leads outside its mount through
// ".." or a symlink; with api.ErrInvalid for a malformed path.
func (f *FS) HostPath(p string) (string, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return "", err
	}
	if loc.synthetic() {
		return "", api.Errorf(api.ErrPermission, "path %s is a directory the agent synthesizes; only mounted directories have a host path", loc.path)
	}
	if _, err := loc.m.root.Stat(loc.rel); err != nil && isEscape(err) {
		return "", fileError(loc.path, err)
	}
	return loc.host(), nil
}

// isEscape reports whether err is os.Root refusing a path that leads outside
// it. The os package does not export that error, so it is matched by text,
// anywhere in the chain (MkdirAll nests it).
func isEscape(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == "path escapes from parent" {
			return true
		}
	}
	return false
}

// fileError maps an error of a file operation on sandbox path p to a domain
// error naming p (never the host path).
func fileError(p string, err error) error {
	var errno syscall.Errno
	switch {
	case isEscape(err):
		return api.Errorf(api.ErrPermission, "file %s: leads outside the sandbox's filesystem (through .. or a symlink)", p)
	case errors.Is(err, fs.ErrNotExist):
		return api.Errorf(api.ErrNotFound, "file %s", p)
	case errors.Is(err, fs.ErrExist):
		return api.Errorf(api.ErrExists, "file %s", p)
	case errors.Is(err, fs.ErrPermission):
		return api.Errorf(api.ErrPermission, "file %s: the agent may not access it", p)
	case errors.As(err, &errno):
		switch errno {
		case syscall.ENOTDIR:
			return api.Errorf(api.ErrInvalid, "file %s: a parent is not a directory", p)
		case syscall.EISDIR:
			return api.Errorf(api.ErrInvalid, "file %s is a directory", p)
		case syscall.ENOTEMPTY:
			return api.Errorf(api.ErrExists, "file %s is a non-empty directory", p)
		case syscall.ENAMETOOLONG:
			return api.Errorf(api.ErrInvalid, "file %s: name too long", p)
		case syscall.ELOOP:
			return api.Errorf(api.ErrInvalid, "file %s: too many levels of symlinks", p)
		case syscall.EROFS:
			return api.Errorf(api.ErrPermission, "file %s: read-only filesystem", p)
		case syscall.ENOSPC, syscall.EDQUOT:
			return api.Errorf(api.ErrNoSpace, "file %s: no space left (disk or the workspace's disk quota is full); remove files or ask for a larger disk_quota_mb", p)
		case syscall.EXDEV:
			return api.Errorf(api.ErrUnsupported, "file %s: cannot move across filesystems", p)
		case syscall.EINVAL:
			return api.Errorf(api.ErrInvalid, "file %s: invalid operation (moving a directory into itself?)", p)
		}
	}
	return fmt.Errorf("file %s: %v", p, bareError(err))
}

// bareError strips the path (a host path for the identity mount) from err.
func bareError(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	case errors.As(err, &le):
		return fmt.Errorf("%s: %w", le.Op, le.Err)
	}
	return err
}

// entryInfo describes fi as the sandbox sees it at sandbox path p.
func entryInfo(p string, fi fs.FileInfo) api.EntryInfo {
	m := fi.Mode()
	typ := api.FileTypeOther
	switch {
	case m.IsDir():
		typ = api.FileTypeDir
	case m&fs.ModeSymlink != 0:
		typ = api.FileTypeSymlink
	case m.IsRegular():
		typ = api.FileTypeFile
	}
	return api.EntryInfo{
		Name:         baseName(p),
		Path:         p,
		Type:         typ,
		Size:         fi.Size(),
		Mode:         unixMode(m),
		Permissions:  permString(m),
		ModifiedTime: fi.ModTime().UTC(),
	}
}

// syntheticEntry describes a directory the agent makes up.
func (f *FS) syntheticEntry(p string) api.EntryInfo {
	return api.EntryInfo{
		Name: baseName(p), Path: p, Type: api.FileTypeDir,
		Mode: 0o555, Permissions: "dr-xr-xr-x", ModifiedTime: f.started.UTC(),
	}
}

func baseName(p string) string {
	if p == "/" {
		return "/"
	}
	return path.Base(p)
}

// unixMode returns the Unix permission bits of m (0644, 04755 …).
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// permString formats m as ls -l does: "-rw-r--r--", "drwxr-xr-x", "lrwxrwxrwx".
func permString(m fs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			b[i+1] = rwx[i]
		}
	}
	special := func(i int, set bool, lower, upper byte) {
		if !set {
			return
		}
		if b[i] == 'x' {
			b[i] = lower
		} else {
			b[i] = upper
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

// hostRoot is the unconfined dirRoot of the identity mount: names are joined
// onto the base directory and handed to the os package.
type hostRoot string

func (h hostRoot) join(name string) string { return filepath.Join(string(h), filepath.FromSlash(name)) }

func (h hostRoot) Open(name string) (*os.File, error) { return os.Open(h.join(name)) }
func (h hostRoot) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(h.join(name), flag, perm)
}
func (h hostRoot) Stat(name string) (fs.FileInfo, error)  { return os.Stat(h.join(name)) }
func (h hostRoot) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(h.join(name)) }
func (h hostRoot) Readlink(name string) (string, error)   { return os.Readlink(h.join(name)) }
func (h hostRoot) MkdirAll(name string, perm os.FileMode) error {
	return os.MkdirAll(h.join(name), perm)
}
func (h hostRoot) Remove(name string) error    { return os.Remove(h.join(name)) }
func (h hostRoot) RemoveAll(name string) error { return os.RemoveAll(h.join(name)) }
func (h hostRoot) Rename(oldname, newname string) error {
	return os.Rename(h.join(oldname), h.join(newname))
}
func (h hostRoot) FS() fs.FS { return os.DirFS(string(h)) }
