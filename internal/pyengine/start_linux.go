package pyengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start runs a cold engine: Python with the runner, no zygote. It returns
// once the engine said hello; ctx bounds the start only (with
// cfg.StartTimeout), not the engine's life. On failure the process is
// killed and the error quotes the tail of its output; a start that took
// too long matches jupyter.ErrStartTimeout.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("pyengine: start: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pyengine: start: %w", err)
	}
	conn, child, err := socketpair()
	if err != nil {
		return nil, fmt.Errorf("pyengine: start: %w", err)
	}
	out := &tail{w: cfg.Stderr}
	cmd := exec.Command(cfg.Python, "-c", runnerSource, "engine")
	cmd.Dir = cfg.Dir
	cmd.Env = engineEnv(cfg.Env)
	cmd.ExtraFiles = []*os.File{child}
	attr := syscall.SysProcAttr{}
	if cfg.SysProcAttr != nil {
		attr = *cfg.SysProcAttr
	}
	attr.Setsid, attr.Setpgid, attr.Pgid = true, false, 0
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = &attr
	proc, err := startChild(cmd, out, cfg.Started, cfg.Reaped)
	child.Close()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("pyengine: start engine %s: %w", cfg.Python, err)
	}
	f, fds, rd, err := readFirst(ctx, conn, cfg.StartTimeout, proc.exited())
	for _, fd := range fds {
		unix.Close(fd) // the engine's pidfd: we are its parent, we wait for it
	}
	if err == nil {
		err = checkHello(f)
	}
	if err != nil {
		_ = proc.kill()
		<-proc.exited()
		conn.Close()
		return nil, startError("engine", cfg.Python, proc.pid, err, proc, out)
	}
	return newEngine(conn, rd, proc.pid, proc, cfg.MaxFrameBytes, cfg.InterruptGrace), nil
}

// startChild starts cmd with its stdout and stderr into out.
func startChild(cmd *exec.Cmd, out *tail, started func(int) error, reaped func(int)) (*childProc, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	proc := &childProc{cmd: cmd, reaped: reaped}
	err = proc.start(started)
	pw.Close()
	go func() {
		_, _ = io.Copy(out, pr)
		pr.Close()
	}()
	if err != nil {
		return nil, err
	}
	return proc, nil
}

// startError describes a failed start.
func startError(what, python string, pid int, err error, proc *childProc, out *tail) error {
	if errors.Is(err, errNotReady) {
		select {
		case <-proc.exited():
			err = fmt.Errorf("%w (%s)", err, proc.why)
		default:
		}
	}
	if t := out.String(); t != "" {
		err = fmt.Errorf("%w; output: %s", err, t)
	}
	return fmt.Errorf("pyengine: start %s %s (pid %d): %w", what, python, pid, err)
}

var _ net.Conn = (*net.UnixConn)(nil)
