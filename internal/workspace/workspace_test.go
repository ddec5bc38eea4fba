package workspace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "workspaces"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestValidateID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, id string
		want     string // substring of the error; "" means valid
	}{
		{"simple", "proj1", ""},
		{"all classes", "A.b_c-9", ""},
		{"max length", strings.Repeat("a", 64), ""},
		{"empty", "", "empty"},
		{"too long", strings.Repeat("a", 65), "longer than 64"},
		{"traversal", "../x", "must not start"},
		{"slash", "a/b", "only letters"},
		{"backslash", `a\b`, "only letters"},
		{"dot", ".", "must not start"},
		{"dotdot", "..", "must not start"},
		{"leading dash", "-rf", "must not start"},
		{"space", "a b", "only letters"},
		{"unicode", "café", "only letters"},
		{"nul", "a\x00", "only letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateID(tt.id)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalid containing %q", tt.id, err, tt.want)
			}
		})
	}
}

func TestNewCreatesPrivateRoot(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	fi, err := os.Stat(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("root mode = %o, want 700", got)
	}
	if _, err := New(""); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("New(\"\") = %v, want ErrInvalid", err)
	}
}

func TestCreateGetList(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ws, err := s.Create("proj", "")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if ws.ID != "proj" || ws.Anonymous || ws.Path != filepath.Join(s.Root(), "proj") || ws.CreatedAt.IsZero() {
		t.Fatalf("Create = %+v", ws)
	}
	for _, sub := range []string{Data, Models, Outputs} {
		fi, err := os.Stat(filepath.Join(ws.Path, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("subdir %s: %v %v", sub, fi, err)
		}
	}

	// Attach: same record, missing subdirs re-created, contents kept.
	if err := os.WriteFile(filepath.Join(ws.Path, Data, "keep.csv"), []byte("a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ws.Path, Outputs)); err != nil {
		t.Fatal(err)
	}
	again, err := s.Create("proj", "")
	if err != nil {
		t.Fatalf("Create again: %v", err)
	}
	if !again.CreatedAt.Equal(ws.CreatedAt) || again.ID != ws.ID {
		t.Errorf("attach returned %+v, want %+v", again, ws)
	}
	if _, err := os.Stat(filepath.Join(ws.Path, Outputs)); err != nil {
		t.Errorf("outputs not re-created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ws.Path, Data, "keep.csv")); err != nil {
		t.Errorf("attach lost a file: %v", err)
	}

	got, err := s.Get("proj")
	if err != nil || !got.CreatedAt.Equal(ws.CreatedAt) {
		t.Fatalf("Get = %+v, %v", got, err)
	}

	anon, err := s.CreateAnonymous("")
	if err != nil {
		t.Fatalf("CreateAnonymous: %v", err)
	}
	if !anon.Anonymous || !strings.HasPrefix(anon.ID, AnonymousPrefix) || len(anon.ID) != len(AnonymousPrefix)+12 {
		t.Errorf("CreateAnonymous = %+v", anon)
	}
	// A bare directory (no metadata) is not a workspace.
	if err := os.Mkdir(filepath.Join(s.Root(), "stray"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var ids []string
	for _, w := range list {
		ids = append(ids, w.ID)
	}
	if want := []string{anon.ID, "proj"}; strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("List ids = %v, want %v", ids, want)
	}
	// Create adopts the stray directory.
	if _, err := s.Create("stray", ""); err != nil {
		t.Errorf("Create(stray): %v", err)
	}
	// But not one that holds files without metadata (what a failed Remove
	// leaves: its metadata goes first): they were another owner's.
	if err := os.MkdirAll(filepath.Join(s.Root(), "leftover", "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "leftover", "data", "secret.csv"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("leftover", "bob"); !errors.Is(err, api.ErrExists) {
		t.Errorf("Create(leftover) with files and no metadata: %v, want ErrExists", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if _, err := s.Create("dup", ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create bad id", func() error { _, err := s.Create("../x", ""); return err }, api.ErrInvalid},
		{"create reserved prefix", func() error { _, err := s.Create("anon-123", ""); return err }, api.ErrInvalid},
		{"create 65 chars", func() error { _, err := s.Create(strings.Repeat("x", 65), ""); return err }, api.ErrInvalid},
		{"get missing", func() error { _, err := s.Get("nope"); return err }, api.ErrNotFound},
		{"get bad id", func() error { _, err := s.Get("a/b"); return err }, api.ErrInvalid},
		{"get empty", func() error { _, err := s.Get(""); return err }, api.ErrInvalid},
		{"remove missing", func() error { return s.Remove("nope") }, api.ErrNotFound},
		{"remove bad id", func() error { return s.Remove("..") }, api.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ws, err := s.Create("gone", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("gone"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(ws.Path); !os.IsNotExist(err) {
		t.Errorf("directory still there: %v", err)
	}
	if _, err := s.Get("gone"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Get after Remove = %v, want ErrNotFound", err)
	}
}

func TestDamagedMetadata(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if _, err := s.Create("bad", ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.metaPath("bad"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get("bad")
	if err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), s.metaPath("bad")) {
		t.Errorf("Get = %v, want an error naming the damaged file", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v; want empty and no error", list, err)
	}
}

func TestSymlinkedSubdirNotFollowed(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ws, err := s.Create("sym", "")
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.Remove(filepath.Join(ws.Path, Data)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(ws.Path, Data)); err != nil {
		t.Fatal(err)
	}
	_, _ = s.Create("sym", "") // may fail; must not create anything outside
	if _, err := os.Stat(filepath.Join(outside, "target")); !os.IsNotExist(err) {
		t.Errorf("Create followed a symlink out of the workspace: %v", err)
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if got, want := s.Path("x"), filepath.Join(s.Root(), "x"); got != want {
		t.Errorf("Path(x) = %q, want %q", got, want)
	}
	if got := s.Path("../etc"); got != "" {
		t.Errorf("Path(../etc) = %q, want \"\"", got)
	}
}

func TestConcurrentCreate(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 16 {
		wg.Go(func() {
			if _, err := s.Create("shared", ""); err != nil {
				errs <- err
			}
			if _, err := s.CreateAnonymous(""); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 17 {
		t.Errorf("List = %d workspaces, %v; want 17", len(list), err)
	}
}
