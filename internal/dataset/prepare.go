package dataset

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// Strategies of Prepare.
const (
	// StrategyCopy copies the files (the default).
	StrategyCopy = "copy"
	// StrategyLink hard-links the files, falling back to a copy per file when a
	// link is impossible (another file system, no /proc, a non-Linux host). It
	// never makes symbolic links: inside a sandbox those would point at host paths.
	StrategyLink = "link"
)

const (
	prepPrefix  = ".prepare-"
	trashPrefix = ".replaced-"
)

// Prepare places dataset name into the workspace directory workspaceDir and
// returns the destination path:
//
//   - a file dataset goes to <workspaceDir>/data/<its original file name>;
//   - a directory dataset goes to <workspaceDir>/data/<name>/.
//
// An existing destination (an earlier copy, or another file dataset with the same
// file name) is replaced: the new copy is built beside it under a temporary name
// and renamed into place, so code never sees a half-written dataset.
//
// strategy is StrategyCopy (also for "") or StrategyLink. Linked files share the
// registry's read-only inode: use copy when sandbox code runs as the daemon's own
// user, since it could chmod and write through the link (Verify would tell).
//
// All writes into the workspace go through an os.Root, so symbolic links that
// sandbox code planted there (data -> /etc) are never followed out of it.
// Errors: api.ErrInvalid (bad name or strategy), api.ErrNotFound (no such
// dataset or workspace directory), api.ErrPermission (a symbolic link in the
// way), api.ErrNoSpace (the workspace's disk or quota is full).
func (r *Registry) Prepare(name, workspaceDir, strategy string) (string, error) {
	switch strategy {
	case "":
		strategy = StrategyCopy
	case StrategyCopy, StrategyLink:
	default:
		return "", api.Errorf(api.ErrInvalid, "dataset strategy %q: want %q or %q", strategy, StrategyCopy, StrategyLink)
	}
	if err := ValidateName(name); err != nil {
		return "", err
	}
	// Hold the read lock for the whole placement, so Remove cannot delete the
	// files being copied.
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, err := r.find(name)
	if err != nil {
		return "", err
	}
	ws, err := os.OpenRoot(workspaceDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", api.Errorf(api.ErrNotFound, "prepare dataset %s: workspace directory %s", name, workspaceDir)
	}
	if err != nil {
		return "", fmt.Errorf("prepare dataset %s: %w", name, err)
	}
	defer ws.Close()
	if err := ws.MkdirAll(workspace.Data, 0o755); err != nil {
		return "", placeError(ws, workspace.Data, fmt.Errorf("prepare dataset %s: %s/: %w", name, workspace.Data, err))
	}
	data, err := ws.OpenRoot(workspace.Data)
	if err != nil {
		return "", placeError(ws, workspace.Data, fmt.Errorf("prepare dataset %s: %s/: %w", name, workspace.Data, err))
	}
	defer data.Close()

	link := strategy == StrategyLink
	src := filepath.Join(r.dir, e.Name)
	dest := e.Name
	stage := prepPrefix + rand.Text()
	if e.IsDir {
		err = placeTree(data, src, stage, link)
	} else {
		dest = e.File
		err = placeFile(data, filepath.Join(src, e.File), stage, link)
	}
	if err == nil {
		err = swap(data, stage, dest)
	}
	if err != nil {
		data.RemoveAll(stage)
		return "", placeError(data, dest, fmt.Errorf("prepare dataset %s in %s: %w", name, workspaceDir, err))
	}
	return filepath.Join(workspaceDir, workspace.Data, dest), nil
}

// placeError classifies a failure to place a dataset at rel inside root: a
// symbolic link there (sandbox code may plant one; os.Root never follows it
// out of the workspace) is api.ErrPermission, a full disk or quota
// api.ErrNoSpace, a file where a directory belongs api.ErrInvalid. Anything
// else is a failure of ours.
func placeError(root *os.Root, rel string, err error) error {
	if fi, lerr := root.Lstat(rel); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%v: %s in the workspace is a symbolic link, and datasets are only placed inside the workspace; remove the link: %w", err, rel, api.ErrPermission)
	}
	switch {
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%v: the workspace's disk (or disk quota) is full: %w", err, api.ErrNoSpace)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%v: a file in the workspace is in the way of the dataset's directory: %w", err, api.ErrInvalid)
	}
	return err
}

// placeTree recreates the registry directory src as rel inside root.
func placeTree(root *os.Root, src, rel string, link bool) error {
	if err := root.Mkdir(rel, 0o755); err != nil {
		return err
	}
	return walkTree(src, func(sub string, isDir bool) error {
		if isDir {
			return root.Mkdir(filepath.Join(rel, sub), 0o755)
		}
		return placeFile(root, filepath.Join(src, sub), filepath.Join(rel, sub), link)
	})
}

// placeFile puts the registry file src at rel inside root: a hard link when link
// is set and linking works, otherwise a copy (mode 0644).
func placeFile(root *os.Root, src, rel string, link bool) error {
	if link && linkInto(root, src, rel) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(out, in, make([]byte, copyBufSize))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// linkInto hard-links src (outside root) to rel inside root. os.Root cannot link
// across roots, so the parent directory is opened through root (which refuses to
// leave it) and the link is made through its /proc/self/fd entry: the kernel
// resolves that to the directory already opened, whatever happens to the path
// meanwhile. Without /proc (or on another OS) this fails and the caller copies.
func linkInto(root *os.Root, src, rel string) error {
	dir, err := root.Open(filepath.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	return os.Link(src, fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(rel)))
}

// swap renames stage to dest inside root, moving an existing dest aside first
// (rename cannot replace a non-empty directory or change a file into one).
func swap(root *os.Root, stage, dest string) error {
	if _, err := root.Lstat(dest); errors.Is(err, fs.ErrNotExist) {
		return root.Rename(stage, dest)
	} else if err != nil {
		return err
	}
	trash := trashPrefix + rand.Text()
	if err := root.Rename(dest, trash); err != nil {
		return fmt.Errorf("move the old %s aside: %w", dest, err)
	}
	if err := root.Rename(stage, dest); err != nil {
		root.Rename(trash, dest) // put the old one back
		return err
	}
	root.RemoveAll(trash) // best effort: the new copy is in place
	return nil
}
