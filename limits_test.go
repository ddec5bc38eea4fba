package dssandbox_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

// TestDiskQuota: a workspace with disk_quota_mb is a file system of that
// size: filling it is ENOSPC in the cell, the host's disk holds no more than
// the quota, deleting the file makes room again, and a named workspace keeps
// its files and its quota for the next sandbox.
func TestDiskQuota(t *testing.T) {
	if err := workspace.QuotaSupported(); err != nil {
		if errors.Is(err, dssandbox.ErrUnsupported) {
			_, cerr := dssandbox.Create(t.Context(), dssandbox.Options{Limits: dssandbox.Limits{DiskQuotaMB: 32}})
			if !errors.Is(cerr, dssandbox.ErrUnsupported) || !strings.Contains(cerr.Error(), "disk quota") {
				t.Fatalf("quota where none can be enforced: %v, want unsupported", cerr)
			}
		}
		testenv.RequireNoError(t, "workspace disk quotas", err)
	}
	t.Parallel()
	ws := "quota-" + strings.ToLower(filepath.Base(t.Name()))
	sbx := newSandbox(t, dssandbox.Options{WorkspaceID: ws, Limits: dssandbox.Limits{DiskQuotaMB: 32}})
	info, err := sbx.GetInfo(t.Context())
	if err != nil || info.Limits.DiskQuotaMB != 32 {
		t.Fatalf("info: %v %+v", err, info.Limits)
	}
	e := run(t, sbx, `
import errno
f = open('fill', 'wb')
n = 0
try:
    while True:
        f.write(b'\x01' * (1 << 20)); f.flush(); n += 1
except OSError as e:
    print(e.errno == errno.ENOSPC, n)
finally:
    try: f.close()
    except OSError: pass
`)
	out := strings.Fields(strings.Join(e.Logs.Stdout, ""))
	if e.Error != nil || len(out) != 2 || out[0] != "True" {
		t.Fatalf("filling the workspace: %+v %q", e.Error, e.Logs)
	}
	t.Logf("wrote %s MiB before ENOSPC", out[1])
	// The host's disk: the data is in the image, which holds at most its
	// size (a sparse file: blocks are allocated as the sandbox writes).
	img := filepath.Join(stateDir, "workspaces", ".meta", ws+".img")
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 32<<20 {
		t.Fatalf("the image uses %d bytes of the host's disk, over the 32 MiB quota", used)
	}
	// Room again after deleting the file.
	e = run(t, sbx, "import os; os.remove('fill'); open('ok', 'w').write('x' * 1000); os.path.getsize('ok')")
	if e.Error != nil || e.Text() != "1000" {
		t.Fatalf("after deleting the file: %+v %q", e.Error, e.Text())
	}
	if err := sbx.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The named workspace keeps its files and its quota.
	sbx = newSandbox(t, dssandbox.Options{WorkspaceID: ws})
	if info, _ := sbx.GetInfo(t.Context()); info.Limits.DiskQuotaMB != 32 {
		t.Fatalf("re-attached quota: %+v", info.Limits)
	}
	if e := run(t, sbx, "open('ok').read(3)"); e.Text() != "'xxx'" {
		t.Fatalf("files of the named workspace: %+v %q", e.Error, e.Text())
	}
	if _, err := dssandbox.Create(t.Context(), dssandbox.Options{WorkspaceID: ws, Limits: dssandbox.Limits{DiskQuotaMB: 64}}); !errors.Is(err, dssandbox.ErrInvalid) {
		t.Fatalf("another quota for the same workspace: %v, want invalid", err)
	}
}

// TestLifetimeKillsAnIsolatedSandbox: when an oci sandbox's timeout passes,
// the sandbox is killed with everything in it (a background process too),
// not just forgotten.
func TestLifetimeKillsAnIsolatedSandbox(t *testing.T) {
	t.Parallel()
	sbx, err := dssandbox.Create(t.Context(), dssandbox.Options{Backend: "oci", Network: &dssandbox.NetworkPolicy{Policy: "deny"}, Timeout: 3 * time.Second})
	if err != nil {
		testenv.RequireNoError(t, "the oci backend", err)
	}
	marker := fmt.Sprintf("%d.%d", 900+rand.IntN(99), rand.IntN(1000000))
	if _, err := sbx.Commands.Start(t.Context(), "sleep "+marker); err != nil {
		t.Fatal(err)
	}
	// Start returns once the agent started the process; give a busy
	// machine time to show it (a bound far from the kill it waits for).
	for wait := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := exec.Command("pgrep", "-f", "sleep "+marker).Run()
		if err == nil {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("the background process is not running on the host: %v", err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for sbx.IsRunning(t.Context()) {
		if time.Now().After(deadline) {
			t.Fatal("sandbox still running long after its timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Destroy has finished once the sandbox is gone from the manager.
	for exec.Command("pgrep", "-f", "sleep "+marker).Run() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the sandbox's process outlived its timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
