package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCgroupProcsRefusesWhatItCannotMap: a cgroup of the container that is
// not found on this host fails Entry rather than leaving an entering engine
// outside it; hierarchies where the container sits at the root are skipped.
func TestCgroupProcsRefusesWhatItCannotMap(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "cgroup")
	for _, tc := range []struct{ content, want string }{
		{"12:nosuchcontroller:/ds-sandbox/x\n", "is not mounted where this host is searched"},
		{"0::/ds-sandbox/../../etc\n", "cgroup path"},
		{"garbage\n", "unreadable line"},
		{"1:name=systemd:/\n0::/\n", "no cgroup of its own"},
	} {
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := cgroupProcs(file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, %v; want an error saying %q", tc.content, got, err, tc.want)
		}
	}
}
