package backend_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

func TestEnviron(t *testing.T) {
	t.Parallel()
	base := map[string]string{"HOME": "/home/user", "TMPDIR": "/tmp", "USER": "base"}
	spec := backend.Spec{User: "user", Env: map[string]string{"A": "1", "HOME": "/spec", "WORKSPACE": "/spec"}}
	got := backend.Environ(spec, base, "/ws")
	want := []string{
		"A=1",
		"HOME=/spec",         // spec.Env over base
		"LANG=C.UTF-8",       // common
		"PYTHONUNBUFFERED=1", // common
		"TMPDIR=/tmp",        // base
		"USER=base",          // base over common
		"WORKSPACE=/ws",      // the workspace over spec.Env
		"WORKSPACE_DATA=/ws/data",
		"WORKSPACE_MODELS=/ws/models",
		"WORKSPACE_OUTPUTS=/ws/outputs",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Environ:\n got %q\nwant %q", got, want)
	}
	if len(base) != 3 || base["HOME"] != "/home/user" {
		t.Errorf("Environ modified base: %v", base)
	}
}

func TestTmpSize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		memoryMB int
		want     string
	}{
		{name: "no limit", memoryMB: 0, want: "size=1024m"},
		{name: "half the limit", memoryMB: 512, want: "size=256m"},
		{name: "at least 16 MiB", memoryMB: 20, want: "size=16m"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := backend.TmpSize(c.memoryMB); got != c.want {
				t.Errorf("TmpSize(%d) = %q, want %q", c.memoryMB, got, c.want)
			}
		})
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	if err := os.WriteFile(p, []byte(strings.Repeat("x", 100)+"the end\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := backend.Tail(p, 10); got != "xxthe end" {
		t.Errorf("Tail(10) = %q, want %q", got, "xxthe end")
	}
	if got := backend.Tail(p, 1000); got != strings.Repeat("x", 100)+"the end" {
		t.Errorf("Tail(1000) = %q", got)
	}
	if got := backend.Tail(filepath.Join(dir, "missing"), 10); got != "" {
		t.Errorf("Tail of a missing file = %q, want \"\"", got)
	}
}
