package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// newKernelAgent is newLocalAgent with its default code context started, as
// Serve does.
func newKernelAgent(t *testing.T) *testAgent {
	t.Helper()
	testenv.RequirePython(t)
	a := newLocalAgent(t)
	a.s.ctxs.startDefault()
	return a
}

func TestExecutionOutputIsBounded(t *testing.T) {
	t.Parallel()
	a := newKernelAgent(t)
	// 40 MiB of stdout in 1 MiB prints.
	e, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "for i in range(40): print('x' * (1 << 20))"}, nil)
	if err != nil || e.Error != nil {
		t.Fatalf("execute: %v %+v", err, e.Error)
	}
	total := 0
	for _, s := range e.Logs.Stdout {
		total += len(s)
	}
	if total > DefaultMaxOutputBytes || total < DefaultMaxOutputBytes/2 {
		t.Fatalf("kept %d bytes of stdout, want at most (and near) %d", total, DefaultMaxOutputBytes)
	}
	if !e.Truncated {
		t.Fatal("the Execution does not say it was truncated")
	}
	if len(e.Notices) == 0 || !strings.Contains(e.Notices[len(e.Notices)-1], "output truncated") {
		t.Fatalf("no truncation notice: %q", e.Notices)
	}
	// The context is fine afterwards.
	if e, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "6*7"}, nil); err != nil || e.Text() != "42" {
		t.Fatalf("after the flood: %v %+v", err, e)
	}
}

// TestStalledClientDoesNotStallTheCell: a client that sends an execution and
// never reads the response must not keep the cell running past its timeout
// nor lock the context for the next client.
func TestStalledClientDoesNotStallTheCell(t *testing.T) {
	t.Parallel()
	a := newKernelAgent(t)
	if _, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "1"}, nil); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"code": "import time\nwhile True:\n    print('y' * 65536)\n    time.sleep(0.01)", "timeout_ms": 2000}`
	fmt.Fprintf(conn, "POST /execute HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// Never read. The next cell must get the context once the stalled cell's
	// 2 s timeout has interrupted it.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e, err := a.c.Execute(ctx, api.ExecuteRequest{Code: "'free'"}, nil)
	if err != nil || e.Text() != "'free'" {
		t.Fatalf("next cell after a stalled client: %v %+v", err, e)
	}
}

func TestRestartEndsARunningCell(t *testing.T) {
	t.Parallel()
	a := newKernelAgent(t)
	c, err := a.c.CreateContext(t.Context(), api.CreateContextRequest{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *api.Execution, 1)
	go func() {
		e, _ := a.c.Execute(context.Background(), api.ExecuteRequest{ContextID: c.ID,
			Code: "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('started', flush=True)\nwhile True: time.sleep(0.1)"}, nil)
		done <- e
	}()
	time.Sleep(1500 * time.Millisecond) // let the cell start
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := a.c.RestartContext(ctx, c.ID); err != nil {
		t.Fatalf("restart during a running cell: %v", err)
	}
	e := <-done
	if e == nil || e.Error == nil || e.Error.Name != api.ErrNameDeadKernel || !strings.Contains(e.Error.Value, "restarted") {
		t.Fatalf("the running cell ended with %+v", e)
	}
	if e, err := a.c.Execute(t.Context(), api.ExecuteRequest{ContextID: c.ID, Code: "2+2"}, nil); err != nil || e.Text() != "4" || len(e.Notices) != 0 {
		t.Fatalf("after restart: %v %+v", err, e)
	}
	if err := a.c.DeleteContext(t.Context(), c.ID); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.Execute(t.Context(), api.ExecuteRequest{ContextID: c.ID, Code: "1"}, nil)
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("execute in a deleted context: %v", err)
	}
}

func TestKernelStartFailureIsOurs(t *testing.T) {
	t.Parallel()
	a := startAgent(t, Config{Workdir: "/home/user", Python: "/nonexistent/python3",
		Mounts: []Mount{{Path: "/home/user", HostPath: t.TempDir()}}})
	a.s.ctxs.startDefault()
	_, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "1"}, nil)
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("err = %v", err)
	}
	for _, bad := range []api.ExecuteRequest{{Code: "1", TimeoutMs: -1}, {Code: "1", TimeoutMs: 1e13}, {Code: ""}} {
		if _, err := a.c.Execute(t.Context(), bad, nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}

// TestKernelStartTimeoutSaysWhatToDo: a kernel that never becomes ready
// fails the cell with a message naming the setting and the remedy.
func TestKernelStartTimeoutSaysWhatToDo(t *testing.T) {
	t.Parallel()
	// An "interpreter" that ignores its arguments and never opens a socket.
	python := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(python, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Config{Workdir: "/home/user", Python: python, KernelStartTimeout: 2 * time.Second,
		Mounts: []Mount{{Path: "/home/user", HostPath: t.TempDir()}}})
	a.s.ctxs.startDefault()
	_, err := a.c.Execute(t.Context(), api.ExecuteRequest{Code: "1"}, nil)
	want := "the kernel did not start within 2s (kernel_start_timeout_sec); the machine may be overloaded: retry, or raise kernel_start_timeout_sec"
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}
