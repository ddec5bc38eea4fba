package pyengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// Zygote is one Python that has imported the preload list and
// gc.freeze()d, with no threads, forking engines on request. It is safe for
// concurrent use; forks are serialized.
type Zygote struct {
	cfg  ZygoteConfig
	proc *childProc
	conn *net.UnixConn
	rd   *bufio.Reader

	sem chan struct{} // capacity 1: one fork request at a time

	done      chan struct{}
	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
}

// StartZygote starts a zygote and waits until its preload is done (within
// cfg.StartTimeout and ctx). A preload module that does not import or that
// starts a thread fails it with an error naming the module; a zygote that
// is not ready in time is killed and the error matches
// jupyter.ErrStartTimeout.
func StartZygote(ctx context.Context, cfg ZygoteConfig) (*Zygote, error) {
	if cfg.Python == "" {
		cfg.Python = defaultPython
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = discard{}
	}
	preload, err := preloadArg(cfg.Preload)
	if err != nil {
		return nil, fmt.Errorf("pyengine: start zygote: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pyengine: start zygote: %w", err)
	}
	conn, child, err := socketpair()
	if err != nil {
		return nil, fmt.Errorf("pyengine: start zygote: %w", err)
	}
	out := &tail{w: cfg.Stderr}
	cmd := exec.Command(cfg.Python, "-c", runnerSource, "zygote", preload)
	cmd.Dir = cfg.Dir
	cmd.Env = zygoteEnv(cfg.Env)
	cmd.ExtraFiles = []*os.File{child}
	attr := syscall.SysProcAttr{}
	if cfg.SysProcAttr != nil {
		attr = *cfg.SysProcAttr
	}
	if !attr.Setsid {
		attr.Setpgid, attr.Pgid = true, 0
	}
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = &attr
	proc, err := startChild(cmd, out, cfg.Started, cfg.Reaped)
	child.Close()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("pyengine: start zygote %s: %w", cfg.Python, err)
	}
	f, fds, rd, err := readFirst(ctx, conn, cfg.StartTimeout, proc.exited())
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err == nil {
		switch f.T {
		case "ready":
		case "fatal":
			err = errors.New(f.Error)
		default:
			err = fmt.Errorf("zygote sent %q before ready", f.T)
		}
	}
	if err != nil {
		_ = proc.kill()
		<-proc.exited()
		conn.Close()
		return nil, startError("zygote", cfg.Python, proc.pid, err, proc, out)
	}
	z := &Zygote{cfg: cfg, proc: proc, conn: conn, rd: rd, sem: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		<-proc.exited()
		z.markDone()
	}()
	return z, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (z *Zygote) markDone() { z.doneOnce.Do(func() { close(z.done) }) }

// PID returns the zygote's process id (it leads its process group).
func (z *Zygote) PID() int { return z.proc.pid }

// Done is closed when the zygote exited, broke the protocol or was closed.
// Engines forked from it live on.
func (z *Zygote) Done() <-chan struct{} { return z.done }

// Close kills the zygote's process group and waits for it (bounded).
// Engines already forked are not affected (they lead their own sessions).
// It is idempotent.
func (z *Zygote) Close() error {
	z.closeOnce.Do(func() {
		z.markDone()
		if err := z.proc.kill(); err != nil {
			z.closeErr = fmt.Errorf("pyengine: close zygote: kill %d: %w", z.proc.pid, err)
		}
		select {
		case <-z.proc.exited():
		case <-time.After(reapTimeout):
			z.closeErr = errors.Join(z.closeErr, fmt.Errorf("pyengine: close zygote: pid %d did not exit %v after SIGKILL", z.proc.pid, reapTimeout))
		}
		z.conn.Close()
	})
	return z.closeErr
}

// deadError reports a zygote that cannot fork any more; it matches
// jupyter.ErrDead.
func (z *Zygote) deadError(detail string) error {
	reason := "zygote closed"
	select {
	case <-z.proc.exited():
		reason = "zygote " + z.proc.why
	default:
	}
	if detail != "" {
		reason += ": " + detail
	}
	return fmt.Errorf("pyengine: fork: zygote pid %d: %w (%s)", z.proc.pid, jupyter.ErrDead, reason)
}

// Fork makes a new engine from the zygote: fresh random state, its own
// session, no descriptor of the zygote's, fc.Dir and fc.Env, confined by
// fc.Enter if set. ctx bounds the fork (and the zygote's StartTimeout
// bounds the engine's hello). A zygote that died makes it fail with an error
// matching jupyter.ErrDead; an Enter step that fails makes it fail naming
// the step, and no engine is left running. A ctx that ends while the
// zygote handles the request does not cut it; it ends the wait for the
// engine's hello (the engine then exits at EOF).
func (z *Zygote) Fork(ctx context.Context, fc ForkConfig) (*Engine, error) {
	maxFrame, err := checkMaxFrame(fc.MaxFrameBytes)
	if err != nil {
		return nil, fmt.Errorf("pyengine: fork: %w", err)
	}
	conn, pid, err := z.fork(ctx, fc)
	if err != nil {
		return nil, err
	}
	return attach(ctx, conn, fc, z.cfg.StartTimeout, maxFrame, fmt.Sprintf("child %d", pid))
}

// ForkConn is Fork without the engine's Go side: it returns our end of the
// new engine's socket, before the engine's hello, for another process to
// Attach (an agent inside the sandbox the engine entered), and the pid of
// the zygote's child that made it (in the zygote's pid namespace).
func (z *Zygote) ForkConn(ctx context.Context, fc ForkConfig) (*os.File, int, error) {
	conn, pid, err := z.fork(ctx, fc)
	if err != nil {
		return nil, 0, err
	}
	f, err := conn.File()
	conn.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("pyengine: fork: %w", err)
	}
	return f, pid, nil
}

// fork sends fc's fork request with a new socketpair and returns our end.
func (z *Zygote) fork(ctx context.Context, fc ForkConfig) (*net.UnixConn, int, error) {
	req := forkFrame{T: "fork", Dir: fc.Dir, Env: map[string]string{}, FDs: []string{}}
	var nsFiles []*os.File
	if fc.Enter != nil {
		ef, names, files, err := fc.Enter.frame()
		if err != nil {
			return nil, 0, fmt.Errorf("pyengine: fork: %w", err)
		}
		req.Enter, req.FDs, nsFiles = ef, names, files
	}
	for _, kv := range engineEnv(fc.Env) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, 0, fmt.Errorf("pyengine: fork: Env entry %q is not KEY=VALUE", kv)
		}
		req.Env[k] = v
	}
	frame, err := encodeFrame(req)
	if err != nil {
		return nil, 0, fmt.Errorf("pyengine: fork: %w", err)
	}
	conn, child, err := socketpair()
	if err != nil {
		return nil, 0, fmt.Errorf("pyengine: fork: %w", err)
	}
	pid, err := z.requestOne(ctx, frame, child, nsFiles)
	child.Close()
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return conn, pid, nil
}

// Attach makes an Engine of an engine's socket end returned by ForkConn
// (possibly in another process, received over a unix socket): it reads the
// engine's hello and its pidfd. It takes f, also on error. fc's Dir, Env and
// Enter are ignored (the fork applied them); its hooks and bounds apply.
func Attach(ctx context.Context, f *os.File, fc ForkConfig) (*Engine, error) {
	maxFrame, err := checkMaxFrame(fc.MaxFrameBytes)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pyengine: attach: %w", err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("pyengine: attach: %w", err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("pyengine: attach: not a unix socket")
	}
	return attach(ctx, conn, fc, defaultStartTimeout, maxFrame, "handed-over engine")
}

// attach reads a forked engine's hello on conn (which it owns) and returns
// the Engine.
func attach(ctx context.Context, conn *net.UnixConn, fc ForkConfig, timeout time.Duration, maxFrame int, what string) (*Engine, error) {
	f, fds, rd, err := readFirst(ctx, conn, timeout, nil)
	if err == nil {
		err = checkHello(f)
	}
	if err == nil && len(fds) != 1 {
		err = fmt.Errorf("engine sent %d descriptors with its hello, want its pidfd", len(fds))
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		conn.Close() // an engine that got this far exits at EOF
		if errors.Is(err, errNotReady) {
			err = errors.New("the new engine exited before it was ready")
		}
		return nil, fmt.Errorf("pyengine: fork (%s): %w", what, err)
	}
	proc, epid, err := adoptPidfd(fds[0], fc.Reaped)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("pyengine: fork: %w", err)
	}
	if fc.Started != nil {
		if err := fc.Started(epid); err != nil {
			_ = proc.kill()
			<-proc.exited()
			conn.Close()
			return nil, fmt.Errorf("pyengine: fork: %w", err)
		}
	}
	return newEngine(conn, rd, epid, proc, maxFrame, fc.InterruptGrace), nil
}

// adoptPidfd wraps a received pidfd for the runtime's poller.
func adoptPidfd(fd int, reaped func(int)) (*pidfdProc, int, error) {
	pid, err := pidOfPidfd(fd)
	if err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	unix.CloseOnExec(fd)
	return newPidfdProc(os.NewFile(uintptr(fd), "pidfd"), pid, reaped), pid, nil
}

// requestOne makes one fork request at a time; engines then start in
// parallel.
func (z *Zygote) requestOne(ctx context.Context, frame []byte, child *os.File, ns []*os.File) (int, error) {
	select {
	case z.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("pyengine: fork: waiting for another fork: %w", ctx.Err())
	case <-z.done:
		return 0, z.deadError("")
	}
	defer func() { <-z.sem }()
	select {
	case <-z.done:
		return 0, z.deadError("")
	default:
	}
	return z.request(frame, child, ns)
}

// request sends one fork request with the engine's socket end and the
// namespace files, and reads the zygote's answer. It does not watch ctx: a
// request cut midway would leave the control socket unusable, and the
// zygote answers within milliseconds (its first child only applies the
// cgroup and namespaces and forks); StartTimeout bounds it, after which the
// zygote is closed.
func (z *Zygote) request(frame []byte, child *os.File, ns []*os.File) (int, error) {
	fds := []int{int(child.Fd())}
	for _, f := range ns {
		fds = append(fds, int(f.Fd()))
	}
	if err := z.conn.SetDeadline(time.Now().Add(z.cfg.StartTimeout)); err != nil {
		return 0, z.deadError(err.Error())
	}
	broken := func(err error) (int, error) {
		z.Close()
		return 0, z.deadError(err.Error())
	}
	n, _, err := z.conn.WriteMsgUnix(frame, unix.UnixRights(fds...), nil)
	if err == nil && n < len(frame) {
		_, err = z.conn.Write(frame[n:])
	}
	if err != nil {
		return broken(err)
	}
	f, err := decodeFrame(z.rd, 1<<20)
	if err != nil {
		return broken(err)
	}
	if f.T != "forked" {
		return broken(fmt.Errorf("zygote answered %q to a fork request", f.T))
	}
	if f.Error != "" {
		return 0, fmt.Errorf("pyengine: fork: zygote: %s", f.Error)
	}
	return f.PID, nil
}
