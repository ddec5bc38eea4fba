package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fsnotify/fsnotify"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// dirWatch is one client's watch of a directory (and, when recursive, of every
// directory below it, including ones created later). It is used by one
// goroutine: the handler that runs it.
type dirWatch struct {
	fs        *FS
	w         *fsnotify.Watcher
	m         *mount
	base      string            // sandbox path of the watched directory
	baseHost  string            // its host path
	dirs      map[string]string // watched host directory → its sandbox path
	recursive bool
	log       *slog.Logger
}

// watch starts watching the directory at sandbox path p. Synthesized
// directories never change and cannot be watched (api.ErrUnsupported).
//
// The watches are placed on host paths after the root checked them, so a
// symlink swapped in between could point a watch outside the mount; that
// leaks at most the names of changed files, never their content.
func (f *FS) watch(p string, recursive bool, log *slog.Logger) (*dirWatch, error) {
	loc, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	if loc.synthetic() {
		return nil, api.Errorf(api.ErrUnsupported, "watch %s: a directory of the sandbox's filesystem view never changes; watch a directory inside the workspace", loc.path)
	}
	fi, err := loc.m.root.Stat(loc.rel)
	if err != nil {
		return nil, fileError(loc.path, err)
	}
	if !fi.IsDir() {
		return nil, api.Errorf(api.ErrInvalid, "watch %s: not a directory", loc.path)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, watchError(loc.path, err)
	}
	d := &dirWatch{fs: f, w: fw, m: loc.m, base: loc.path, baseHost: loc.host(), dirs: map[string]string{}, recursive: recursive, log: log}
	if err := d.add(loc.rel, loc.path); err != nil {
		fw.Close()
		return nil, err
	}
	if recursive {
		if err := d.addTree(loc.rel, loc.path, nil); err != nil {
			fw.Close()
			return nil, err
		}
	}
	return d, nil
}

func watchError(p string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
		return api.Errorf(api.ErrLimit, "watch %s: too many watches (fs.inotify.max_user_watches / max_user_instances): %v", p, err)
	}
	return fileError(p, err)
}

// add watches one directory.
func (d *dirWatch) add(rel, sandbox string) error {
	host := filepath.Join(d.m.host, filepath.FromSlash(rel))
	if err := d.w.Add(host); err != nil {
		return watchError(sandbox, err)
	}
	d.dirs[host] = sandbox
	return nil
}

// addTree watches every directory below rel (not rel itself). When emit is
// non-nil it also reports every entry found as created: they appeared in a new
// directory before its watch was in place, and would be missed otherwise (an
// entry created while the walk runs may thus be reported twice).
func (d *dirWatch) addTree(rel, sandbox string, emit func(api.FilesystemEvent)) error {
	return fs.WalkDir(d.m.root.FS(), rel, func(p string, de fs.DirEntry, err error) error {
		if p == rel {
			return err
		}
		if err != nil {
			return nil // unreadable or gone: not watched, as nothing can change inside unseen
		}
		sp := path.Join(sandbox, strings.TrimPrefix(p, rel+"/"))
		if rel == "." {
			sp = path.Join(sandbox, p)
		}
		if emit != nil {
			emit(d.event(sp, api.FsCreate))
		}
		if de.IsDir() {
			if err := d.add(p, sp); err != nil {
				if errors.Is(err, api.ErrLimit) {
					return err
				}
				return fs.SkipDir
			}
		}
		return nil
	})
}

func (d *dirWatch) event(sandbox, op string) api.FilesystemEvent {
	name := "."
	switch {
	case sandbox == d.base:
	case d.base == "/":
		name = sandbox[1:]
	default:
		name = strings.TrimPrefix(sandbox, d.base+"/")
	}
	return api.FilesystemEvent{Name: name, Path: sandbox, Op: op}
}

func (d *dirWatch) close() { _ = d.w.Close() }

// run sends events until ctx is done (the client hung up), send fails, the
// watched directory itself is removed or moved away, or the watcher stops.
// Watcher errors (a kernel queue overflow) are logged: the wire
// format has no place for them.
func (d *dirWatch) run(ctx context.Context, send func(api.FilesystemEvent) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.w.Events:
			if !ok {
				return
			}
			for _, e := range d.translate(ev) {
				if send(e) != nil {
					return
				}
			}
			if _, ok := d.dirs[d.baseHost]; !ok {
				return
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return
			}
			d.log.Warn("file watch error", "path", d.base, "err", err)
		}
	}
}

var watchOps = []struct {
	op   fsnotify.Op
	name string
}{
	{fsnotify.Create, api.FsCreate},
	{fsnotify.Write, api.FsWrite},
	{fsnotify.Remove, api.FsRemove},
	{fsnotify.Rename, api.FsRename},
	{fsnotify.Chmod, api.FsChmod},
}

// translate turns an fsnotify event (host paths) into sandbox events, and
// keeps the set of watched directories up to date when recursive.
func (d *dirWatch) translate(ev fsnotify.Event) []api.FilesystemEvent {
	var sp string
	if dir, ok := d.dirs[filepath.Dir(ev.Name)]; ok {
		sp = path.Join(dir, filepath.Base(ev.Name))
	} else if self, ok := d.dirs[ev.Name]; ok {
		sp = self
	} else {
		return nil
	}
	var out []api.FilesystemEvent
	for _, o := range watchOps {
		if ev.Has(o.op) {
			out = append(out, d.event(sp, o.name))
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		d.forget(ev.Name)
	}
	if d.recursive && ev.Has(fsnotify.Create) {
		out = d.addNew(sp, out)
	}
	return out
}

// addNew watches a directory created at sandbox path sp, and everything in it.
func (d *dirWatch) addNew(sp string, out []api.FilesystemEvent) []api.FilesystemEvent {
	loc, err := d.fs.resolve(sp)
	if err != nil || loc.m != d.m {
		return out
	}
	fi, err := d.m.root.Lstat(loc.rel)
	if err != nil || !fi.IsDir() {
		return out
	}
	if err := d.add(loc.rel, sp); err != nil {
		d.log.Warn("file watch: cannot watch new directory", "path", sp, "err", err)
		return out
	}
	err = d.addTree(loc.rel, sp, func(e api.FilesystemEvent) { out = append(out, e) })
	if err != nil {
		d.log.Warn("file watch: cannot watch new directory", "path", sp, "err", err)
	}
	return out
}

// forget drops a removed or moved-away directory and everything below it; a
// directory moved within the tree is watched again through its create event.
func (d *dirWatch) forget(host string) {
	if _, ok := d.dirs[host]; !ok {
		return
	}
	for h := range d.dirs {
		if h == host || strings.HasPrefix(h, host+string(filepath.Separator)) {
			_ = d.w.Remove(h)
			delete(d.dirs, h)
		}
	}
}
