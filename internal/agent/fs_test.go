package agent

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func readAll(t *testing.T, a *testAgent, p string) ([]byte, error) {
	t.Helper()
	rc, err := a.c.ReadFile(t.Context(), p)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func writeString(t *testing.T, a *testAgent, p, s string) api.EntryInfo {
	t.Helper()
	e, err := a.c.WriteFile(t.Context(), p, strings.NewReader(s))
	if err != nil {
		t.Fatalf("WriteFile %s: %v", p, err)
	}
	return e
}

func TestFilesRoundTrip(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"binary 1MiB+3", 1<<20 + 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := make([]byte, tc.size)
			_, _ = crand.Read(data)
			p := "/home/user/rt/" + strings.ReplaceAll(tc.name, " ", "_") + ".bin"
			e, err := a.c.WriteFile(t.Context(), p, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			if e.Path != p || e.Size != int64(tc.size) || e.Type != api.FileTypeFile || e.Permissions != "-rw-r--r--" {
				t.Errorf("entry = %+v", e)
			}
			got, err := readAll(t, a, p)
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, differ from the %d written", len(got), len(data))
			}
			host, err := os.ReadFile(filepath.Join(a.workspace, "rt", filepath.Base(p)))
			if err != nil || !bytes.Equal(host, data) {
				t.Fatalf("host file differs (err %v)", err)
			}
		})
	}
}

// TestFilesLargeStreamed moves 200 MB in and out and checks the agent (this
// process) never holds it: the heap must not grow anywhere near the size.
// Not parallel, so other tests do not disturb the heap measure.
func TestFilesLargeStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MB")
	}
	a := newLocalAgent(t)
	const size = 200 << 20
	const maxGrowth = 64 << 20

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	in := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), in)
	e, err := a.c.WriteFile(t.Context(), "big/data.bin", src)
	if err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if e.Size != size {
		t.Fatalf("size = %d, want %d", e.Size, size)
	}
	rc, err := a.c.ReadFile(t.Context(), "/home/user/big/data.bin")
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	out := sha256.New()
	n, err := io.Copy(out, rc)
	rc.Close()
	close(stop)
	wg.Wait()
	if err != nil || n != size {
		t.Fatalf("read %d bytes, err %v", n, err)
	}
	if !bytes.Equal(in.Sum(nil), out.Sum(nil)) {
		t.Fatal("content read back differs from content written")
	}
	if peak > base && peak-base > maxGrowth {
		t.Errorf("heap grew by %d MiB while streaming %d MiB; want < %d MiB", (peak-base)>>20, size>>20, maxGrowth>>20)
	}
	t.Logf("heap in use: base %d MiB, peak %d MiB", base>>20, peak>>20)
}

func TestFilesPathsResolveAlike(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	writeString(t, a, "d/x.txt", "same")
	for _, p := range []string{"d/x.txt", "./d/../d/x.txt", "/home/user/d/x.txt", filepath.Join(a.workspace, "d/x.txt")} {
		got, err := readAll(t, a, p)
		if err != nil || string(got) != "same" {
			t.Errorf("read %q = %q, %v; want \"same\"", p, got, err)
		}
	}
}

func TestFilesEscapesRefused(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"etc": "/etc", "other": outside, "rel": "../../../../../../etc", "passwd": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(a.workspace, name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	tests := []struct {
		name string
		op   func(p string) error
	}{
		{"read", func(p string) error { _, err := readAll(t, a, p); return err }},
		{"write", func(p string) error { _, err := a.c.WriteFile(ctx, p, strings.NewReader("x")); return err }},
		{"list", func(p string) error { _, err := a.c.List(ctx, p, 1); return err }},
		{"mkdir", func(p string) error { _, err := a.c.MakeDir(ctx, p+"/d"); return err }},
		{"remove", func(p string) error { return a.c.Remove(ctx, p+"/x") }},
	}
	paths := []string{"/etc/passwd", "../../etc/passwd", "/home/user/../../etc/passwd", "etc/passwd", "other/secret", "rel/passwd"}
	for _, tc := range tests {
		for _, p := range paths {
			t.Run(tc.name+" "+p, func(t *testing.T) {
				t.Parallel()
				wantErr(t, tc.name+" "+p, tc.op(p), api.ErrPermission)
			})
		}
	}
	t.Run("read through a file symlink", func(t *testing.T) {
		t.Parallel()
		_, err := readAll(t, a, "passwd")
		wantErr(t, "read passwd", err, api.ErrPermission)
		_, err = a.c.WriteFile(ctx, "passwd", strings.NewReader("x"))
		wantErr(t, "write passwd", err, api.ErrPermission)
	})
	t.Run("message names the path", func(t *testing.T) {
		t.Parallel()
		_, err := a.c.Stat(ctx, "/etc/passwd")
		if err == nil || !strings.Contains(err.Error(), "path /etc/passwd is outside the sandbox's filesystem") {
			t.Errorf("err = %v", err)
		}
	})
	if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != "s" {
		t.Errorf("the outside file changed: %q %v", b, err)
	}
}

func TestFilesSynthesizedView(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	writeString(t, a, "f.txt", "x")
	if _, err := a.c.MakeDir(ctx, "sub"); err != nil {
		t.Fatal(err)
	}
	root, err := a.c.List(ctx, "/", 1)
	if err != nil {
		t.Fatalf("List /: %v", err)
	}
	i := slices.IndexFunc(root, func(e api.EntryInfo) bool { return e.Path == "/home" })
	if i < 0 || root[i].Type != api.FileTypeDir || root[i].Permissions != "dr-xr-xr-x" {
		t.Fatalf("List / = %+v; want a synthesized /home dir", root)
	}
	home, err := a.c.List(ctx, "/home", 1)
	if err != nil || len(home) != 1 || home[0].Path != "/home/user" || home[0].Type != api.FileTypeDir {
		t.Fatalf("List /home = %+v, %v", home, err)
	}
	user, err := a.c.List(ctx, "/home/user", 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/home/user/f.txt", "/home/user/sub"}, paths(user)); diff != "" {
		t.Errorf("List /home/user (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"write into /home", func() error { _, err := a.c.WriteFile(ctx, "/home/x", strings.NewReader("")); return err }()},
		{"remove /home", a.c.Remove(ctx, "/home")},
		{"remove the workdir mount", a.c.Remove(ctx, "/home/user")},
		{"rename /home", func() error { _, err := a.c.Rename(ctx, "/home", "/home2"); return err }()},
		{"mkdir under /", func() error { _, err := a.c.MakeDir(ctx, "/newdir"); return err }()},
	} {
		wantErr(t, tc.name, tc.err, api.ErrPermission)
	}
	if e, err := a.c.MakeDir(ctx, "/home"); err != nil || !e.IsDir() {
		t.Errorf("MakeDir of an existing synthesized dir = %+v, %v", e, err)
	}
	_, err = readAll(t, a, "/home")
	wantErr(t, "read /home", err, api.ErrInvalid)
}

func paths(es []api.EntryInfo) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Path
	}
	return out
}

func TestFilesOperations(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	writeString(t, a, "a/b/c.txt", "c")
	writeString(t, a, "a/top.txt", "t")

	t.Run("list depth", func(t *testing.T) {
		for _, tc := range []struct {
			depth int
			want  []string
		}{
			{1, []string{"/home/user/a/b", "/home/user/a/top.txt"}},
			{2, []string{"/home/user/a/b", "/home/user/a/b/c.txt", "/home/user/a/top.txt"}},
		} {
			got, err := a.c.List(ctx, "a", tc.depth)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, paths(got)); diff != "" {
				t.Errorf("depth %d (-want +got):\n%s", tc.depth, diff)
			}
		}
		_, err := a.c.List(ctx, "a/top.txt", 1)
		wantErr(t, "list a file", err, api.ErrInvalid)
		_, err = a.c.List(ctx, "a", 33)
		wantErr(t, "list depth 33", err, api.ErrInvalid)
	})
	t.Run("stat and exists", func(t *testing.T) {
		e, err := a.c.Stat(ctx, "a/b/c.txt")
		if err != nil || e.Name != "c.txt" || e.Path != "/home/user/a/b/c.txt" || e.Size != 1 || e.Mode != 0o644 {
			t.Errorf("Stat = %+v, %v", e, err)
		}
		if ok, err := a.c.Exists(ctx, "a/top.txt"); !ok || err != nil {
			t.Errorf("Exists(a/top.txt) = %v, %v", ok, err)
		}
		if ok, err := a.c.Exists(ctx, "a/nope"); ok || err != nil {
			t.Errorf("Exists(a/nope) = %v, %v", ok, err)
		}
		_, err = readAll(t, a, "missing.txt")
		wantErr(t, "read missing", err, api.ErrNotFound)
		if err == nil || !strings.Contains(err.Error(), "file /home/user/missing.txt: not found") {
			t.Errorf("message = %v", err)
		}
		_, err = readAll(t, a, "a")
		wantErr(t, "read a dir", err, api.ErrInvalid)
	})
	t.Run("mkdir", func(t *testing.T) {
		e, err := a.c.MakeDir(ctx, "m/n/o")
		if err != nil || !e.IsDir() || e.Path != "/home/user/m/n/o" {
			t.Fatalf("MakeDir = %+v, %v", e, err)
		}
		if _, err := a.c.MakeDir(ctx, "m/n/o"); err != nil {
			t.Errorf("MakeDir of an existing dir: %v", err)
		}
		_, err = a.c.MakeDir(ctx, "a/top.txt")
		wantErr(t, "MakeDir over a file", err, api.ErrExists)
	})
	t.Run("rename", func(t *testing.T) {
		writeString(t, a, "r1.txt", "r")
		e, err := a.c.Rename(ctx, "r1.txt", "/home/user/m/r2.txt")
		if err != nil || e.Path != "/home/user/m/r2.txt" || e.Size != 1 {
			t.Fatalf("Rename = %+v, %v", e, err)
		}
		if ok, _ := a.c.Exists(ctx, "r1.txt"); ok {
			t.Error("source still exists")
		}
		_, err = a.c.Rename(ctx, "m/r2.txt", "nodir/r3.txt")
		wantErr(t, "rename into a missing dir", err, api.ErrNotFound)
		_, err = a.c.Rename(ctx, "m/r2.txt", "a/top.txt")
		wantErr(t, "rename onto an existing file", err, api.ErrExists)
		_, err = a.c.Rename(ctx, "nothere", "x")
		wantErr(t, "rename a missing file", err, api.ErrNotFound)
		// Both mounts are the same host directory: a rename between them works.
		if _, err := a.c.Rename(ctx, "m/r2.txt", filepath.Join(a.workspace, "r4.txt")); err != nil {
			t.Errorf("rename across mounts of one directory: %v", err)
		}
	})
	t.Run("remove", func(t *testing.T) {
		writeString(t, a, "gone/x/y.txt", "y")
		writeString(t, a, "gone.txt", "g")
		for _, p := range []string{"gone.txt", "gone"} {
			if err := a.c.Remove(ctx, p); err != nil {
				t.Fatalf("Remove %s: %v", p, err)
			}
			if ok, _ := a.c.Exists(ctx, p); ok {
				t.Errorf("%s still exists", p)
			}
		}
		wantErr(t, "remove missing", a.c.Remove(ctx, "gone"), api.ErrNotFound)
		wantErr(t, "remove without a path", a.c.Remove(ctx, ""), api.ErrInvalid)
	})
	t.Run("overwrite keeps mode", func(t *testing.T) {
		writeString(t, a, "exe.sh", "#!/bin/sh\n")
		if err := os.Chmod(filepath.Join(a.workspace, "exe.sh"), 0o755); err != nil {
			t.Fatal(err)
		}
		e := writeString(t, a, "exe.sh", "#!/bin/sh\necho\n")
		if e.Permissions != "-rwxr-xr-x" || e.Size != 15 {
			t.Errorf("entry = %+v", e)
		}
	})
}

func TestFilesRenameAcrossMounts(t *testing.T) {
	t.Parallel()
	ws, data := t.TempDir(), t.TempDir()
	a := startAgent(t, Config{Workdir: "/home/user", Mounts: []Mount{{Path: "/home/user", HostPath: ws}, {Path: "/data", HostPath: data}}})
	writeString(t, a, "x.txt", "x")
	_, err := a.c.Rename(t.Context(), "x.txt", "/data/x.txt")
	wantErr(t, "rename across mounts", err, api.ErrUnsupported)
	root, err := a.c.List(t.Context(), "/", 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/data", "/home", "/home/user", "/home/user/x.txt"}, paths(root)); diff != "" {
		t.Errorf("List / depth 3 (-want +got):\n%s", diff)
	}
}

// TestFilesIdentityMode: without mounts the view is the real filesystem, and
// absolute symlinks (which os.Root would refuse) work.
func TestFilesIdentityMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := startAgent(t, Config{Workdir: dir})
	writeString(t, a, "rel.txt", "identity")
	if err := os.Symlink(filepath.Join(dir, "rel.txt"), filepath.Join(dir, "abs-link")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "rel.txt"), "abs-link"} {
		if got, err := readAll(t, a, p); err != nil || string(got) != "identity" {
			t.Errorf("read %s = %q, %v", p, got, err)
		}
	}
	es, err := a.c.List(t.Context(), dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{filepath.Join(dir, "abs-link"), filepath.Join(dir, "rel.txt")}, paths(es)); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if es[0].Type != api.FileTypeSymlink || es[0].SymlinkTarget != filepath.Join(dir, "rel.txt") {
		t.Errorf("symlink entry = %+v", es[0])
	}
	wantErr(t, "remove /", a.c.Remove(t.Context(), "/"), api.ErrPermission)
}

func TestFilesBadMounts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mounts []Mount
	}{
		{"relative path", []Mount{{Path: "home", HostPath: t.TempDir()}}},
		{"relative host", []Mount{{Path: "/home", HostPath: "tmp"}}},
		{"missing host", []Mount{{Path: "/home", HostPath: "/nonexistent/ds-sandbox"}}},
		{"twice", []Mount{{Path: "/a", HostPath: t.TempDir()}, {Path: "/a/", HostPath: t.TempDir()}}},
		{"workdir outside", []Mount{{Path: "/b", HostPath: t.TempDir()}}},
		{"no mounts at all", []Mount{}},
	} {
		if _, err := New(Config{Workdir: "/a", Mounts: tc.mounts}); !errorsIsInvalid(err) {
			t.Errorf("%s: New = %v, want ErrInvalid", tc.name, err)
		}
	}
}

func errorsIsInvalid(err error) bool { return err != nil && api.CodeOf(err) == api.CodeInvalid }

func TestPermString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o644, "-rw-r--r--"},
		{os.ModeDir | 0o755, "drwxr-xr-x"},
		{os.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{os.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{os.ModeDir | os.ModeSticky | 0o777, "drwxrwxrwt"},
		{os.ModeNamedPipe | 0o600, "prw-------"},
	} {
		if got := permString(tc.mode); got != tc.want {
			t.Errorf("permString(%v) = %q, want %q", tc.mode, got, tc.want)
		}
	}
}

// FuzzResolvePath: any path either fails or resolves inside a mount's host
// directory.
func FuzzResolvePath(f *testing.F) {
	ws, data := f.TempDir(), f.TempDir()
	fsys, err := newFS([]Mount{{Path: "/home/user", HostPath: ws}, {Path: "/data", HostPath: data}, {Path: ws, HostPath: ws}}, "/home/user")
	if err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(ws, "etc")); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", ".", "..", "../../etc/passwd", "/home/user/../..", "a/../../b", "/\x00", "//x", "/home", "etc/passwd", "/data/../home/user/x", ws + "/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		host, err := fsys.HostPath(p)
		if err != nil {
			return
		}
		for _, root := range []string{ws, data} {
			if rel, err := filepath.Rel(root, host); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				return
			}
		}
		t.Fatalf("HostPath(%q) = %q, outside every mount", p, host)
	})
}
