//go:build linux

package pyengine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// startZygote starts a zygote closed at the end of the test.
func startZygote(t testing.TB, cfg ZygoteConfig) *Zygote {
	t.Helper()
	if cfg.Env == nil {
		cfg.Env = testEnv(t)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 3 * time.Minute // a loaded machine
	}
	cfg.Started, cfg.Reaped = ownStarted, ownReaped
	z, err := StartZygote(context.Background(), cfg)
	if err != nil {
		t.Fatalf("StartZygote: %v", err)
	}
	t.Cleanup(func() { z.Close() })
	return z
}

// fork forks an engine closed at the end of the test.
func fork(t testing.TB, z *Zygote, fc ForkConfig) *Engine {
	t.Helper()
	if fc.Env == nil {
		fc.Env = testEnv(t)
	}
	e, err := z.Fork(context.Background(), fc)
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// writeModule writes a Python module into dir.
func writeModule(t testing.TB, dir, name, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+".py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestZygote: forked engines have the cold engine's semantics, share no
// state with each other, and survive each other and the zygote.
func TestZygote(t *testing.T) {
	t.Parallel()
	mods := t.TempDir()
	marker := filepath.Join(t.TempDir(), "opened-by-the-zygote")
	// A preloaded module that keeps a descriptor open in the zygote.
	writeModule(t, mods, "holdfd", "import os\nFD = os.open("+strconv.Quote(marker)+", os.O_CREAT | os.O_RDWR, 0o600)\n")
	env := testEnv(t, "PYTHONPATH="+mods)
	z := startZygote(t, ZygoteConfig{Env: env, Preload: append(append([]string{}, DefaultPreload...), "holdfd")})

	a := fork(t, z, ForkConfig{Env: testEnv(t, "WHO=a"), Dir: t.TempDir()})
	b := fork(t, z, ForkConfig{Env: testEnv(t, "WHO=b")})

	t.Run("cell semantics", func(t *testing.T) {
		checkCellSemantics(t, a)
	})
	t.Run("env and dir", func(t *testing.T) {
		if got := eval(t, b, "import os\nprint(os.environ['WHO'], os.environ['MPLBACKEND'])"); got != "b "+inlineBackend {
			t.Fatalf("env: %q", got)
		}
		if got := eval(t, b, "import os\nprint(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"); got != "True True" {
			t.Fatalf("own session and group: %q", got)
		}
	})
	t.Run("no shared state", func(t *testing.T) {
		c := fork(t, z, ForkConfig{})
		d := fork(t, z, ForkConfig{})
		draw := "import random, numpy as np\nprint(random.random(), np.random.rand())"
		rc, rd := eval(t, c, draw), eval(t, d, draw)
		if rc == rd {
			t.Fatalf("two forks drew the same numbers first: %s", rc)
		}
		for i, num := range append(strings.Fields(rc), strings.Fields(rd)...) {
			if _, err := strconv.ParseFloat(num, 64); err != nil {
				t.Fatalf("draw %d: %q", i, num)
			}
		}
		eval(t, c, "secret = 1\nimport json\njson.dumps = None")
		if got := eval(t, d, "import json\nprint('secret' in globals(), json.dumps is None, json.dumps([1]))"); got != "False False [1]" {
			t.Fatalf("state leaked between forks: %q", got)
		}
	})
	t.Run("concurrent forks", func(t *testing.T) {
		const n = 3
		engines := make([]*Engine, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				engines[i], errs[i] = z.Fork(context.Background(), ForkConfig{Env: testEnv(t, "N="+strconv.Itoa(i))})
			})
		}
		wg.Wait()
		for i, e := range engines {
			if errs[i] != nil {
				t.Fatalf("fork %d: %v", i, errs[i])
			}
			t.Cleanup(func() { e.Close() })
		}
		for i, e := range engines {
			if got := eval(t, e, "import os\nprint(os.environ['N'])"); got != strconv.Itoa(i) {
				t.Fatalf("engine %d says %q", i, got)
			}
		}
	})
	t.Run("no inherited descriptors", func(t *testing.T) {
		zfd, err := os.Readlink("/proc/" + strconv.Itoa(z.PID()) + "/fd/3")
		if err != nil {
			t.Fatal(err)
		}
		got := eval(t, b, `import os
links = []
for fd in os.listdir('/proc/self/fd'):
    try:
        links.append(os.readlink('/proc/self/fd/' + fd))
    except OSError:
        pass
print(repr(links))`)
		if strings.Contains(got, marker) || strings.Contains(got, zfd) {
			t.Fatalf("a fork holds the zygote's descriptors (%s, %s): %s", marker, zfd, got)
		}
	})
	t.Run("a killed engine leaves the zygote and its sibling", func(t *testing.T) {
		c := fork(t, z, ForkConfig{})
		pid := c.PID()
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("engine %d still exists after Close: %v", pid, err)
		}
		if got := eval(t, b, "print(6*7)"); got != "42" {
			t.Fatalf("sibling: %q", got)
		}
		if got := eval(t, fork(t, z, ForkConfig{}), "print('new')"); got != "new" {
			t.Fatalf("fork after a kill: %q", got)
		}
	})
	t.Run("a crash leaves the zygote and its sibling", func(t *testing.T) {
		c := fork(t, z, ForkConfig{})
		_, err := c.Execute(context.Background(), jupyter.ExecuteRequest{Code: "import ctypes\nctypes.string_at(0)"}, nil)
		if !errors.Is(err, jupyter.ErrDead) {
			t.Fatalf("segfault: %v", err)
		}
		if got := eval(t, b, "print('alive')"); got != "alive" {
			t.Fatalf("sibling: %q", got)
		}
	})
	t.Run("a dead zygote", func(t *testing.T) {
		z2 := startZygote(t, ZygoteConfig{Preload: []string{}})
		e := fork(t, z2, ForkConfig{})
		if err := syscall.Kill(z2.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-z2.Done()
		if _, err := z2.Fork(context.Background(), ForkConfig{}); !errors.Is(err, jupyter.ErrDead) {
			t.Fatalf("Fork on a dead zygote: %v", err)
		}
		if got := eval(t, e, "print('orphan works')"); got != "orphan works" {
			t.Fatalf("an engine of a dead zygote: %q", got)
		}
	})
}

// TestZygoteBadPreload: a module that is missing, one that starts a thread
// and one that hangs give clear errors within the start timeout.
func TestZygoteBadPreload(t *testing.T) {
	t.Parallel()
	mods := t.TempDir()
	writeModule(t, mods, "threader", "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
	writeModule(t, mods, "hanger", "import time\ntime.sleep(600)\n")
	tests := []struct {
		name    string
		preload []string
		timeout time.Duration
		wantIs  error
		want    string
	}{
		{name: "missing module", preload: []string{"json", "no_such_module_xyz"}, want: "preload module no_such_module_xyz failed to import: ModuleNotFoundError"},
		{name: "thread at import", preload: []string{"json", "threader"}, want: "preload module threader started threads at import"},
		{name: "hangs at import", preload: []string{"hanger"}, timeout: 2 * time.Second, wantIs: jupyter.ErrStartTimeout},
		{name: "not a module name", preload: []string{"a b"}, want: "not a module name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 3 * time.Minute
			}
			z, err := StartZygote(context.Background(), ZygoteConfig{Env: testEnv(t, "PYTHONPATH="+mods), Preload: tt.preload,
				StartTimeout: timeout, Started: ownStarted, Reaped: ownReaped})
			if err == nil {
				z.Close()
				t.Fatal("StartZygote succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("StartZygote: %v, want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("StartZygote: %v, want it to say %q", err, tt.want)
			}
		})
	}
}
