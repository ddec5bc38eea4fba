package workspace

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestQuotaLifecycle(t *testing.T) {
	if err := QuotaSupported(); err != nil {
		if !errors.Is(err, api.ErrUnsupported) {
			t.Fatalf("QuotaSupported: %v, want an unsupported error", err)
		}
		testenv.RequireNoError(t, "workspace disk quotas", err)
	}
	t.Parallel()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A workspace that already holds files gets no quota (they would vanish
	// under the image).
	full, _ := s.Create("full", "")
	os.WriteFile(filepath.Join(full.Path, "x"), []byte("x"), 0o644)
	if err := s.SetQuota("full", 32); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("quota on a workspace with files: %v, want invalid", err)
	}
	ws, _ := s.Create("q", "")
	if err := s.SetQuota("q", 32); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Remove("q") })
	if err := os.WriteFile(filepath.Join(ws.Path, "data", "kept"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m, _ := isMountPoint(ws.Path); !m {
		t.Fatal("not mounted")
	}
	if err := s.SetQuota("q", 64); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("another size: %v, want invalid", err)
	}
	// Unmount keeps the files in the image; the next attach (no quota asked)
	// mounts it again.
	if err := s.Unmount("q"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ws.Path, "data", "kept")); err == nil {
		t.Fatal("the file is visible with the image unmounted")
	}
	if err := s.SetQuota("q", 0); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ws.Path, "data", "kept")); err != nil || string(b) != "k" {
		t.Fatalf("after re-mount: %q %v", b, err)
	}
	if err := s.Remove("q"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.imagePath("q")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image left after Remove: %v", err)
	}
}
