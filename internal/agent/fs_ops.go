package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
)

const (
	// maxListDepth bounds List's depth; deeper requests are clamped.
	maxListDepth = 32
	// maxListEntries bounds one listing, so a huge tree cannot exhaust memory.
	maxListEntries = 100_000
)

// openRead opens the regular file at sandbox path p for reading. Directories
// and other non-regular files fail with api.ErrInvalid (opening is
// non-blocking so a FIFO cannot hang the agent).
func (f *FS) openRead(p string) (*os.File, fs.FileInfo, string, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return nil, nil, "", err
	}
	if loc.synthetic() {
		return nil, nil, "", api.Errorf(api.ErrInvalid, "file %s is a directory", loc.path)
	}
	file, err := loc.m.root.OpenFile(loc.rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, "", fileError(loc.path, err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, nil, "", fileError(loc.path, err)
	}
	if fi.IsDir() {
		file.Close()
		return nil, nil, "", api.Errorf(api.ErrInvalid, "file %s is a directory", loc.path)
	}
	if !fi.Mode().IsRegular() {
		file.Close()
		return nil, nil, "", api.Errorf(api.ErrInvalid, "file %s is not a regular file but a %s", loc.path, kindOf(fi.Mode()))
	}
	return file, fi, loc.path, nil
}

// writeFile streams r into the file at sandbox path p and returns its entry.
// Parents are created. The data goes to a temporary file in the same directory
// that is renamed into place, so readers see the old or the new content, never
// a half-written file. When p is a symlink (inside the mount) its target is
// truncated and written in place instead, so the link survives.
func (f *FS) writeFile(p string, r io.Reader) (api.EntryInfo, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return api.EntryInfo{}, err
	}
	if loc.synthetic() || loc.rel == "." {
		return api.EntryInfo{}, api.Errorf(api.ErrInvalid, "file %s is a directory", loc.path)
	}
	root := loc.m.root
	dir := path.Dir(loc.rel)
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return api.EntryInfo{}, fileError(path.Dir(loc.path), err)
	}
	perm := os.FileMode(0o644)
	if fi, err := root.Lstat(loc.rel); err == nil {
		switch {
		case fi.IsDir():
			return api.EntryInfo{}, api.Errorf(api.ErrInvalid, "file %s is a directory", loc.path)
		case fi.Mode()&fs.ModeSymlink != 0:
			return f.writeThroughLink(loc, r)
		}
		perm = fi.Mode().Perm()
	}
	tmp, tmpName, err := createTemp(root, dir, path.Base(loc.rel), perm)
	if err != nil {
		return api.EntryInfo{}, fileError(loc.path, err)
	}
	_, err = io.Copy(tmp, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmpName, loc.rel)
	}
	if err != nil {
		_ = root.Remove(tmpName)
		return api.EntryInfo{}, uploadError(loc.path, err)
	}
	return f.stat(loc.path)
}

// writeThroughLink writes r over the target of the symlink at loc; the root
// refuses targets outside the mount.
func (f *FS) writeThroughLink(loc location, r io.Reader) (api.EntryInfo, error) {
	file, err := loc.m.root.OpenFile(loc.rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return api.EntryInfo{}, fileError(loc.path, err)
	}
	_, err = io.Copy(file, r)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return api.EntryInfo{}, uploadError(loc.path, err)
	}
	return f.stat(loc.path)
}

// uploadError maps a failure while copying an upload: a file-system error is
// the file's fault, anything else the body's (the client went away).
func uploadError(p string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	if errors.As(err, &pe) || errors.As(err, &le) {
		return fileError(p, err)
	}
	return api.Errorf(api.ErrInvalid, "file %s: reading the upload: %v", p, err)
}

// createTemp creates a fresh hidden file next to base in dir.
func createTemp(root dirRoot, dir, base string, perm os.FileMode) (*os.File, string, error) {
	if len(base) > 100 {
		base = base[:100]
	}
	for i := 0; ; i++ {
		var b [8]byte
		_, _ = rand.Read(b[:])
		name := path.Join(dir, "."+base+".upload-"+hex.EncodeToString(b[:]))
		file, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil || !errors.Is(err, fs.ErrExist) || i == 10 {
			return file, name, err
		}
	}
}

// remove deletes the file or directory (recursively) at sandbox path p.
func (f *FS) remove(p string) error {
	loc, err := f.resolve(p)
	if err != nil {
		return err
	}
	if loc.synthetic() || loc.rel == "." {
		return api.Errorf(api.ErrPermission, "%s is a mount point of the sandbox's filesystem and cannot be removed", loc.path)
	}
	if _, err := loc.m.root.Lstat(loc.rel); err != nil {
		return fileError(loc.path, err)
	}
	if err := loc.m.root.RemoveAll(loc.rel); err != nil {
		return fileError(loc.path, err)
	}
	return nil
}

// stat describes the entry at sandbox path p without following a final
// symlink (the entry says where it points).
func (f *FS) stat(p string) (api.EntryInfo, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return api.EntryInfo{}, err
	}
	return f.statLoc(loc)
}

func (f *FS) statLoc(loc location) (api.EntryInfo, error) {
	if loc.synthetic() {
		return f.syntheticEntry(loc.path), nil
	}
	fi, err := loc.m.root.Lstat(loc.rel)
	if err != nil {
		return api.EntryInfo{}, fileError(loc.path, err)
	}
	e := entryInfo(loc.path, fi)
	if e.Type == api.FileTypeSymlink {
		e.SymlinkTarget, _ = loc.m.root.Readlink(loc.rel)
	}
	return e, nil
}

// makeDir creates the directory at sandbox path p and its parents (mkdir -p).
// An existing directory is fine; an existing non-directory is api.ErrExists.
func (f *FS) makeDir(p string) (api.EntryInfo, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return api.EntryInfo{}, err
	}
	if loc.synthetic() {
		return f.syntheticEntry(loc.path), nil
	}
	if fi, err := loc.m.root.Stat(loc.rel); err == nil && !fi.IsDir() {
		return api.EntryInfo{}, api.Errorf(api.ErrExists, "file %s exists and is not a directory", loc.path)
	}
	if err := loc.m.root.MkdirAll(loc.rel, 0o755); err != nil {
		return api.EntryInfo{}, fileError(loc.path, err)
	}
	return f.statLoc(loc)
}

// rename moves from to to. It creates no parents and replaces nothing: an
// existing destination is api.ErrExists. Both paths must be on the same mount
// (or on mounts of the same host directory).
func (f *FS) rename(from, to string) (api.EntryInfo, error) {
	if from == "" || to == "" {
		return api.EntryInfo{}, api.Errorf(api.ErrInvalid, "rename needs both from and to")
	}
	src, err := f.resolve(from)
	if err != nil {
		return api.EntryInfo{}, err
	}
	dst, err := f.resolve(to)
	if err != nil {
		return api.EntryInfo{}, err
	}
	for _, l := range []location{src, dst} {
		if l.synthetic() || l.rel == "." {
			return api.EntryInfo{}, api.Errorf(api.ErrPermission, "%s is a mount point of the sandbox's filesystem and cannot be renamed or replaced", l.path)
		}
	}
	if src.m.root != dst.m.root {
		return api.EntryInfo{}, api.Errorf(api.ErrUnsupported, "rename %s → %s crosses mounts (%s and %s); copy and remove instead", src.path, dst.path, src.m.path, dst.m.path)
	}
	root := src.m.root
	if _, err := root.Lstat(src.rel); err != nil {
		return api.EntryInfo{}, fileError(src.path, err)
	}
	if _, err := root.Lstat(dst.rel); err == nil {
		return api.EntryInfo{}, api.Errorf(api.ErrExists, "rename %s → %s: destination exists; remove it first", src.path, dst.path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return api.EntryInfo{}, fileError(dst.path, err)
	}
	if fi, err := root.Stat(path.Dir(dst.rel)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return api.EntryInfo{}, api.Errorf(api.ErrNotFound, "rename %s → %s: directory %s", src.path, dst.path, path.Dir(dst.path))
		}
		return api.EntryInfo{}, fileError(path.Dir(dst.path), err)
	} else if !fi.IsDir() {
		return api.EntryInfo{}, api.Errorf(api.ErrInvalid, "rename %s → %s: %s is not a directory", src.path, dst.path, path.Dir(dst.path))
	}
	if err := root.Rename(src.rel, dst.rel); err != nil {
		return api.EntryInfo{}, fileError(src.path, err)
	}
	return f.statLoc(dst)
}

// list returns the entries below the directory at sandbox path p, down to depth
// levels (1: its children), sorted by path. Symlinks to directories are not
// followed below the top. Listing a file is api.ErrInvalid.
func (f *FS) list(p string, depth int) ([]api.EntryInfo, error) {
	if depth <= 0 {
		depth = 1
	}
	depth = min(depth, maxListDepth)
	loc, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	if !loc.synthetic() {
		fi, err := loc.m.root.Stat(loc.rel)
		if err != nil {
			return nil, fileError(loc.path, err)
		}
		if !fi.IsDir() {
			return nil, api.Errorf(api.ErrInvalid, "file %s is not a directory; stat it instead", loc.path)
		}
	}
	out := []api.EntryInfo{}
	if err := f.listInto(loc, depth, &out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// listInto appends the children of the directory loc (and theirs, to depth).
func (f *FS) listInto(loc location, depth int, out *[]api.EntryInfo) error {
	children := map[string]api.EntryInfo{}
	if !loc.synthetic() {
		dir, err := loc.m.root.Open(loc.rel)
		if err != nil {
			return fileError(loc.path, err)
		}
		des, err := dir.ReadDir(-1)
		dir.Close()
		if err != nil {
			return fileError(loc.path, err)
		}
		for _, de := range des {
			fi, err := de.Info()
			if err != nil {
				continue // removed meanwhile
			}
			child := path.Join(loc.path, de.Name())
			e := entryInfo(child, fi)
			if e.Type == api.FileTypeSymlink {
				e.SymlinkTarget, _ = loc.m.root.Readlink(path.Join(loc.rel, de.Name()))
			}
			children[de.Name()] = e
		}
	}
	// Mount points below loc show up as its entries, replacing whatever the
	// host directory has at that name.
	for name, child := range f.childMounts(loc.path) {
		cl, err := f.resolve(child)
		if err != nil {
			continue
		}
		if e, err := f.statLoc(cl); err == nil {
			children[name] = e
		}
	}
	if len(*out)+len(children) > maxListEntries {
		return api.Errorf(api.ErrTooLarge, "listing %s has more than %d entries; list a subdirectory or with a smaller depth", loc.path, maxListEntries)
	}
	for _, e := range children {
		*out = append(*out, e)
		if depth <= 1 || e.Type != api.FileTypeDir {
			continue
		}
		cl, err := f.resolve(e.Path)
		if err != nil {
			continue
		}
		// An unreadable subdirectory is listed but not entered (as ls -R
		// goes on); only the size bound stops the walk.
		if err := f.listInto(cl, depth-1, out); errors.Is(err, api.ErrLimit) {
			return err
		}
	}
	return nil
}

// kindOf names the type of a non-regular file for messages.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
