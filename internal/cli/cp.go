package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
)

const cpUsage = `usage: ds-sandbox cp SRC DST

Copies a file or a directory tree between this host and a running sandbox.
One side is ID:PATH (a path inside the sandbox; relative paths are against its
workdir, ID: alone is the workdir), the other a local path, or - for stdin or
stdout (a single file). Contents are streamed, never held in memory whole.

When DST is an existing directory (or ends with /), SRC is copied into it under
its own name; otherwise SRC is copied to DST. Symbolic links and special files
inside a copied directory are skipped with a warning. A local path that
contains a colon is written ./a:b.

Examples:
  ds-sandbox cp data.csv 3fj2k…:data/          upload into the sandbox's data/
  ds-sandbox cp 3fj2k…:outputs ./results       download a directory
  ds-sandbox cp 3fj2k…:outputs/report.txt -    print a file
`

func cpCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := newCommand("cp", cpUsage, stdout, stderr)
	if st, ok := c.parse(args); !ok {
		return st
	}
	if st, ok := c.wantArgs(2, 2); !ok {
		return st
	}
	srcID, src, srcRemote := splitRemote(c.Arg(0))
	dstID, dst, dstRemote := splitRemote(c.Arg(1))
	switch {
	case srcRemote && dstRemote:
		return c.usageError("both sides are in sandboxes; copy through this host")
	case !srcRemote && !dstRemote:
		return c.usageError("neither side is in a sandbox; write one as ID:PATH")
	}
	id := srcID
	if dstRemote {
		id = dstID
	}
	d, err := dialDaemon()
	if err != nil {
		return c.fail(err)
	}
	sbx, err := d.Connect(ctx, id)
	if err != nil {
		return c.fail(d.explain(err))
	}
	files := sdkFiles{sbx.Files}
	switch {
	case dstRemote && src == "-":
		if dst == "" || strings.HasSuffix(dst, "/") {
			return c.usageError("name the file to write stdin to (not a directory)")
		}
		_, err = files.WriteFile(ctx, dst, stdin)
	case dstRemote:
		err = upload(ctx, files, src, dst, stderr)
	case dst == "-":
		err = catFile(ctx, files, src, stdout)
	default:
		err = download(ctx, files, src, dst, stderr)
	}
	if err != nil {
		return c.fail(d.explain(err))
	}
	return 0
}

// remoteRef is ID:PATH; the id is what sandbox ids (and E2B's) are made of.
var remoteRef = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_-]*):(.*)$`)

// splitRemote parses ID:PATH. Anything else, including a path that starts
// with / or ., is local.
func splitRemote(arg string) (id, p string, remote bool) {
	m := remoteRef.FindStringSubmatch(arg)
	if m == nil {
		return "", arg, false
	}
	return m[1], m[2], true
}

// sandboxFiles is what copying needs of a sandbox's filesystem: the agent
// client (embedded run) and the SDK's Files (against the daemon) both do.
type sandboxFiles interface {
	ReadFile(ctx context.Context, path string) (io.ReadCloser, error)
	WriteFile(ctx context.Context, path string, r io.Reader) (api.EntryInfo, error)
	Stat(ctx context.Context, path string) (api.EntryInfo, error)
	List(ctx context.Context, path string, depth int) ([]api.EntryInfo, error)
	MakeDir(ctx context.Context, path string) (api.EntryInfo, error)
}

// sdkFiles gives the SDK's Files the agent client's names.
type sdkFiles struct{ *dssandbox.Files }

func (f sdkFiles) ReadFile(ctx context.Context, p string) (io.ReadCloser, error) {
	return f.ReadStream(ctx, p)
}

func (f sdkFiles) WriteFile(ctx context.Context, p string, r io.Reader) (api.EntryInfo, error) {
	return f.WriteStream(ctx, p, r)
}

func (f sdkFiles) Stat(ctx context.Context, p string) (api.EntryInfo, error) {
	return f.GetInfo(ctx, p)
}

// sandboxPath makes "" (ID: alone) the workdir.
func sandboxPath(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// upload copies the local file or directory src to dst in the sandbox: into
// dst under src's name when dst is a directory there or ends with /, else
// to dst itself.
func upload(ctx context.Context, files sandboxFiles, src, dst string, warn io.Writer) error {
	st, err := os.Stat(src) // follows a link named on the command line, as cp does
	if err != nil {
		return err
	}
	target := sandboxPath(dst)
	into := strings.HasSuffix(dst, "/")
	if !into {
		e, err := files.Stat(ctx, target)
		switch {
		case err == nil:
			into = e.IsDir()
		case !errors.Is(err, api.ErrNotFound):
			return err
		}
	}
	if into {
		abs, err := filepath.Abs(src)
		if err != nil {
			return err
		}
		target = path.Join(target, filepath.Base(abs))
	}
	if !st.IsDir() {
		return uploadFile(ctx, files, src, target)
	}
	return filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := path.Join(target, filepath.ToSlash(rel))
		switch {
		case de.IsDir():
			_, err = files.MakeDir(ctx, to)
		case de.Type().IsRegular():
			err = uploadFile(ctx, files, p, to)
		default:
			fmt.Fprintf(warn, "ds-sandbox: skipped %s: not a regular file or directory\n", p)
		}
		return err
	})
}

func uploadFile(ctx context.Context, files sandboxFiles, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := files.WriteFile(ctx, dst, f); err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return nil
}

// catFile streams a sandbox file to w.
func catFile(ctx context.Context, files sandboxFiles, src string, w io.Writer) error {
	e, err := files.Stat(ctx, sandboxPath(src))
	if err != nil {
		return err
	}
	if e.IsDir() {
		return api.Errorf(api.ErrInvalid, "%s is a directory; only a file can go to stdout", e.Path)
	}
	rc, err := files.ReadFile(ctx, e.Path)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// download copies the sandbox file or directory src to the local dst: into
// dst under src's name when dst is an existing directory or ends with a
// separator, else to dst itself.
func download(ctx context.Context, files sandboxFiles, src, dst string, warn io.Writer) error {
	e, err := files.Stat(ctx, sandboxPath(src))
	if err != nil {
		return err
	}
	target := dst
	if st, err := os.Stat(dst); err == nil && st.IsDir() || strings.HasSuffix(dst, string(filepath.Separator)) {
		target = filepath.Join(dst, e.Name)
	}
	switch e.Type {
	case api.FileTypeDir:
		return downloadTree(ctx, files, e.Path, target, warn)
	case api.FileTypeFile:
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		root, err := os.OpenRoot(filepath.Dir(target))
		if err != nil {
			return err
		}
		defer root.Close()
		return saveFile(ctx, files, e, root, filepath.Base(target))
	}
	return api.Errorf(api.ErrInvalid, "%s is a %s; only files and directories are copied", e.Path, e.Type)
}

// downloadTree copies what is in the sandbox directory src into the local
// directory dst, creating it. Files are written through an os.Root at dst,
// so no name the sandbox chose (nor a link already in dst) can put one
// outside it.
func downloadTree(ctx context.Context, files sandboxFiles, src, dst string, warn io.Writer) error {
	base, err := files.Stat(ctx, src)
	if err != nil {
		return err
	}
	if !base.IsDir() {
		return api.Errorf(api.ErrInvalid, "%s is not a directory", base.Path)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	// One listing per directory: trees of any depth, and a link to a
	// directory is listed as a link, never followed.
	dirs := []string{base.Path}
	for len(dirs) > 0 {
		dir := dirs[0]
		dirs = dirs[1:]
		entries, err := files.List(ctx, dir, 1)
		if err != nil {
			return err
		}
		for _, e := range entries {
			rel, ok := strings.CutPrefix(e.Path, strings.TrimSuffix(base.Path, "/")+"/")
			if !ok || !filepath.IsLocal(filepath.FromSlash(rel)) {
				return fmt.Errorf("the sandbox listed %q under %s", e.Path, base.Path)
			}
			rel = filepath.FromSlash(rel)
			switch e.Type {
			case api.FileTypeDir:
				if err := root.MkdirAll(rel, 0o755); err != nil {
					return err
				}
				dirs = append(dirs, e.Path)
			case api.FileTypeFile:
				if err := saveFile(ctx, files, e, root, rel); err != nil {
					return err
				}
			default:
				fmt.Fprintf(warn, "ds-sandbox: skipped %s: a %s, not a regular file or directory\n", e.Path, e.Type)
			}
		}
	}
	return nil
}

// saveFile streams the sandbox file e into name under root, through a
// temporary file renamed into place, so a failed copy leaves nothing behind.
func saveFile(ctx context.Context, files sandboxFiles, e api.EntryInfo, root *os.Root, name string) error {
	rc, err := files.ReadFile(ctx, e.Path)
	if err != nil {
		return err
	}
	defer rc.Close()
	if dir := filepath.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	perm := fs.FileMode(e.Mode) & 0o777
	if perm == 0 {
		perm = 0o644
	}
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".part-"+rand.Text()[:8])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm|0o200)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && perm&0o200 == 0 {
		err = root.Chmod(tmp, perm)
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	return nil
}
