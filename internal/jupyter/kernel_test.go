//go:build linux

package jupyter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// fakeLauncher is a PYTHONPATH directory whose ipykernel_launcher.py runs src.
func fakeLauncher(t *testing.T, src string) []string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ipykernel_launcher.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(kernelEnv(dir), "PYTHONPATH="+dir)
}

// bindAndExit binds the kernel's sockets like a kernel would, then dies
// before answering anything.
const bindAndExit = `
import json, sys, time, zmq
ci = json.load(open(sys.argv[sys.argv.index("-f") + 1]))
ctx = zmq.Context()
for name, typ in [("shell", zmq.ROUTER), ("control", zmq.ROUTER), ("stdin", zmq.ROUTER), ("iopub", zmq.PUB)]:
    ctx.socket(typ).bind("ipc://%s-%d" % (ci["ip"], ci[name + "_port"]))
time.sleep(0.5)
sys.stderr.write("fake kernel gives up\n")
sys.exit(5)
`

// TestStartErrors checks that every way a start can fail returns a clear
// error promptly and leaves nothing behind.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	noSite := filepath.Join(t.TempDir(), "python-no-site")
	if err := os.WriteFile(noSite, []byte("#!/bin/sh\nexec "+python+" -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	longDir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	if err := os.Mkdir(longDir, 0o700); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cfg      func(t *testing.T) Config
		ctx      time.Duration // start context timeout, 0 for none
		want     []string      // substrings of the error
		wantIs   error
		maxDelay time.Duration
	}{
		{
			name: "bogus python",
			cfg:  func(t *testing.T) Config { return Config{Python: "/nonexistent/python3"} },
			want: []string{"/nonexistent/python3", "no such file"},
		},
		{
			name: "python without ipykernel",
			cfg:  func(t *testing.T) Config { return Config{Python: noSite, Env: kernelEnv(t.TempDir())} },
			want: []string{"exited before it was ready", "No module named ipykernel", "exit status 1"},
		},
		{
			name: "launcher crashes",
			cfg: func(t *testing.T) Config {
				return Config{Env: fakeLauncher(t, "import sys\nsys.stderr.write('launcher broke\\n')\nsys.exit(3)\n")}
			},
			want:   []string{"launcher broke", "exit status 3"},
			wantIs: errExited,
		},
		{
			name:   "exits after binding its sockets",
			cfg:    func(t *testing.T) Config { return Config{Env: fakeLauncher(t, bindAndExit)} },
			want:   []string{"fake kernel gives up"},
			wantIs: errExited,
		},
		{
			name: "never ready",
			cfg: func(t *testing.T) Config {
				return Config{Env: fakeLauncher(t, "import time\ntime.sleep(600)\n"), StartTimeout: time.Second}
			},
			want:     []string{"not ready after 1s", "StartTimeout"},
			wantIs:   ErrStartTimeout,
			maxDelay: 12 * time.Second,
		},
		{
			name:     "context ends",
			cfg:      func(t *testing.T) Config { return Config{Env: fakeLauncher(t, "import time\ntime.sleep(600)\n")} },
			ctx:      500 * time.Millisecond,
			wantIs:   context.DeadlineExceeded,
			maxDelay: 12 * time.Second,
		},
		{
			name: "socket dir too long",
			cfg:  func(t *testing.T) Config { return Config{SocketDir: longDir} },
			want: []string{"Config.SocketDir", "limit"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg(t)
			if cfg.Python == "" {
				cfg.Python = python
			}
			if cfg.SocketDir == "" {
				cfg.SocketDir = t.TempDir()
			}
			ctx := t.Context()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			start := time.Now()
			k, err := Start(ctx, cfg)
			if err == nil {
				k.Close()
				t.Fatal("Start succeeded")
			}
			if d, max := time.Since(start), cmpOr(tt.maxDelay, 15*time.Second); d > max {
				t.Errorf("Start took %v to fail, want < %v", d, max)
			}
			t.Logf("error: %v", err)
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not match %v", err, tt.wantIs)
			}
			if ents, _ := os.ReadDir(cfg.SocketDir); len(ents) != 0 {
				t.Errorf("socket dir %s left behind %d entries", cfg.SocketDir, len(ents))
			}
		})
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// TestClose checks that Close kills the process, removes the socket
// directory, is idempotent and safe concurrently, and leaves a dead Kernel.
func TestClose(t *testing.T) {
	t.Parallel()
	k := startKernel(t, Config{})
	pid, dir := k.PID(), k.dir
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("kernel pid %d not running: %v", pid, err)
	}
	// A child of the kernel dies with it (process group kill).
	outs, _ := run(t, k, ExecuteRequest{Code: "import subprocess\np = subprocess.Popen(['sleep', '600'])\nprint(p.pid)"})
	var child int
	if _, err := fmt.Sscan(streams(outs, "stdout"), &child); err != nil {
		t.Fatalf("child pid: %v", err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = k.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close #%d: %v", i, err)
		}
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kernel pid %d after Close: kill(0) = %v, want ESRCH", pid, err)
	}
	if !waitGone(child, 5*time.Second) {
		t.Errorf("kernel child pid %d survived Close", child)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s after Close: %v", dir, err)
	}
	select {
	case <-k.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if _, err := k.Execute(t.Context(), ExecuteRequest{Code: "1"}, nil); !errors.Is(err, ErrDead) {
		t.Errorf("Execute after Close: %v, want ErrDead", err)
	}
	if err := k.Interrupt(t.Context()); !errors.Is(err, ErrDead) {
		t.Errorf("Interrupt after Close: %v, want ErrDead", err)
	}
}

// waitGone waits until pid no longer exists (a zombie still counts as alive,
// but the orphan is reaped by init or a subreaper).
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestKernelDeath checks that a kernel dying mid-cell ends Execute promptly
// with ErrDead, after delivering the outputs sent before.
func TestKernelDeath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
	}{
		{"os._exit", "import os\nos._exit(1)"},
		{"segfault", "import ctypes\nctypes.string_at(0)"},
		{"SIGKILL", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k := startKernel(t, Config{})
			var outs []Output
			start := time.Now()
			// The cell leaves a child behind, which must die with the kernel.
			code := "import subprocess, time\np = subprocess.Popen(['sleep', '600'])\n" +
				"print('before', p.pid, flush=True)\ntime.sleep(0.3)\n" + tt.code
			_, err := k.Execute(t.Context(), ExecuteRequest{Code: code}, func(o Output) { outs = append(outs, o) })
			if !errors.Is(err, ErrDead) {
				t.Fatalf("Execute err = %v, want ErrDead", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("Execute took %v to notice the death", d)
			}
			var child int
			if _, err := fmt.Sscanf(streams(outs, "stdout"), "before %d\n", &child); err != nil {
				t.Fatalf("stdout = %q, want the output sent before dying (%v)", streams(outs, "stdout"), err)
			}
			if !waitGone(child, 5*time.Second) {
				t.Errorf("the kernel's child pid %d survived the kernel", child)
			}
			select {
			case <-k.Done():
			case <-time.After(10 * time.Second):
				t.Error("Done not closed")
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestNoGoroutineLeak runs start/execute/close cycles and checks that every
// goroutine they started has exited. It is not parallel, so other tests'
// goroutines are paused and stable.
func TestNoGoroutineLeak(t *testing.T) {
	testenv.RequirePython(t)
	before := runtime.NumGoroutine()
	for range 2 {
		k, err := Start(t.Context(), Config{Python: python, Env: kernelEnv(t.TempDir())})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Execute(t.Context(), ExecuteRequest{Code: "for i in range(100): print(i)"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestParentDeathKillsKernel re-runs the test binary as a parent that starts
// a kernel and exits without closing it: Pdeathsig must kill the kernel.
func TestParentDeathKillsKernel(t *testing.T) {
	if os.Getenv("JUPYTER_TEST_PARENT") == "1" {
		dir := os.Getenv("JUPYTER_TEST_DIR")
		k, err := Start(context.Background(), Config{Python: python, Env: kernelEnv(dir), SocketDir: dir})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println(k.PID())
		os.Exit(0) // no Close
	}
	t.Parallel()
	testenv.RequirePython(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestParentDeathKillsKernel$")
	cmd.Env = append(os.Environ(), "JUPYTER_TEST_PARENT=1", "JUPYTER_TEST_DIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parent: %v: %s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("parent output %q: %v", out, err)
	}
	if !waitGone(pid, 5*time.Second) {
		syscall.Kill(-pid, syscall.SIGKILL)
		t.Fatalf("kernel pid %d survived its parent", pid)
	}
}
