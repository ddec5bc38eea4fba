package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// preparedRegistry has a file dataset "iris" (iris.csv) and a directory dataset
// "images" (a/1.txt, b.txt).
func preparedRegistry(t *testing.T) *Registry {
	t.Helper()
	r := openRegistry(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"iris.csv": "a,b\n", "images/a/1.txt": "one", "images/b.txt": "two"})
	if _, err := r.Register(filepath.Join(src, "iris.csv"), "iris", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(filepath.Join(src, "images"), "images", "", nil); err != nil {
		t.Fatal(err)
	}
	return r
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPrepare(t *testing.T) {
	t.Parallel()
	r := preparedRegistry(t)
	tests := []struct {
		name, dataset, strategy string
		wantRel                 string            // destination, relative to the workspace
		files                   map[string]string // slash path under the destination ("" for a file) -> registry path
		linked                  bool
	}{
		{"file copy default", "iris", "", "data/iris.csv", map[string]string{"": "iris/iris.csv"}, false},
		{"file copy", "iris", "copy", "data/iris.csv", map[string]string{"": "iris/iris.csv"}, false},
		{"file link", "iris", "link", "data/iris.csv", map[string]string{"": "iris/iris.csv"}, true},
		{"dir copy", "images", "copy", "data/images", map[string]string{"a/1.txt": "images/a/1.txt", "b.txt": "images/b.txt"}, false},
		{"dir link", "images", "link", "data/images", map[string]string{"a/1.txt": "images/a/1.txt", "b.txt": "images/b.txt"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			dest, err := r.Prepare(tt.dataset, ws, tt.strategy)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if want := filepath.Join(ws, filepath.FromSlash(tt.wantRel)); dest != want {
				t.Errorf("Prepare = %s, want %s", dest, want)
			}
			for sub, reg := range tt.files {
				got := filepath.Join(dest, filepath.FromSlash(sub))
				stored := filepath.Join(r.Dir(), filepath.FromSlash(reg))
				if readFile(t, got) != readFile(t, stored) {
					t.Errorf("%s: content differs from %s", got, stored)
				}
				if linked := sameFile(t, got, stored); linked != tt.linked {
					t.Errorf("%s: hard-linked = %v, want %v", got, linked, tt.linked)
				}
			}
			entries, _ := os.ReadDir(filepath.Join(ws, "data"))
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("temporary %s left in data/", e.Name())
				}
			}
		})
	}
}

func TestPrepareReplaces(t *testing.T) {
	t.Parallel()
	r := preparedRegistry(t)
	ws := t.TempDir()
	// An older copy with an extra file, and a file where the file dataset goes.
	writeTree(t, ws, map[string]string{"data/images/stale.txt": "old", "data/iris.csv": "old"})
	for _, name := range []string{"images", "iris"} {
		if _, err := r.Prepare(name, ws, "copy"); err != nil {
			t.Fatalf("Prepare(%s): %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ws, "data", "images", "stale.txt")); !os.IsNotExist(err) {
		t.Errorf("stale file survived replacement: %v", err)
	}
	if got := readFile(t, filepath.Join(ws, "data", "iris.csv")); got != "a,b\n" {
		t.Errorf("iris.csv = %q after replacement", got)
	}
	// A directory in the way of a file dataset is replaced too; linking again is idempotent.
	if err := os.Remove(filepath.Join(ws, "data", "iris.csv")); err != nil {
		t.Fatal(err)
	}
	writeTree(t, ws, map[string]string{"data/iris.csv/inner": "x"})
	for range 2 {
		if _, err := r.Prepare("iris", ws, "link"); err != nil {
			t.Fatalf("Prepare over a directory: %v", err)
		}
	}
	if err := r.Verify("iris"); err != nil {
		t.Errorf("registry copy changed: %v", err)
	}
}

func TestPrepareErrors(t *testing.T) {
	t.Parallel()
	r := preparedRegistry(t)
	ws := t.TempDir()
	tests := []struct {
		name, dataset, dir, strategy string
		want                         error
		msg                          string
	}{
		{"unknown strategy", "iris", ws, "symlink", api.ErrInvalid, `strategy "symlink"`},
		{"missing dataset", "nope", ws, "copy", api.ErrNotFound, "nope"},
		{"bad name", "../iris", ws, "copy", api.ErrInvalid, "must not start"},
		{"missing workspace", "iris", filepath.Join(ws, "missing"), "copy", api.ErrNotFound, "workspace directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.Prepare(tt.dataset, tt.dir, tt.strategy)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Prepare = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestPrepareDoesNotFollowPlantedLinks(t *testing.T) {
	t.Parallel()
	r := preparedRegistry(t)
	tests := []struct {
		name, link, target string // link is relative to the workspace
	}{
		{"data dir", "data", "outside"},
		{"destination dir", "data/images", "outside"},
		{"destination file", "data/iris.csv", "outside/iris.csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws, outside := t.TempDir(), t.TempDir()
			link := filepath.Join(ws, filepath.FromSlash(tt.link))
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(outside, strings.TrimPrefix(tt.target, "outside"))
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			for _, ds := range []string{"iris", "images"} {
				for _, s := range []string{"copy", "link"} {
					_, err := r.Prepare(ds, ws, s) // an error is fine; escaping is not
					if tt.link == "data" && !errors.Is(err, api.ErrPermission) {
						t.Errorf("Prepare(%s, %s) with data/ a link out of the workspace: %v, want ErrPermission", ds, s, err)
					}
				}
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("Prepare wrote outside the workspace: %v", entries)
			}
		})
	}
}

func TestPrepareLinkFallsBackAcrossFilesystems(t *testing.T) {
	t.Parallel()
	r := preparedRegistry(t)
	ws, err := os.MkdirTemp("/dev/shm", "ws-")
	if err != nil {
		t.Skipf("no /dev/shm for a second file system: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(ws) })
	var a, b syscall.Stat_t
	if syscall.Stat(ws, &a) != nil || syscall.Stat(r.Dir(), &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the registry's file system")
	}
	dest, err := r.Prepare("images", ws, "link")
	if err != nil {
		t.Fatalf("Prepare across file systems: %v", err)
	}
	got := filepath.Join(dest, "a", "1.txt")
	if readFile(t, got) != "one" || sameFile(t, got, filepath.Join(r.Dir(), "images", "a", "1.txt")) {
		t.Errorf("%s: want a copy with the same content", got)
	}
}
