package pyengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
	"github.com/ds-sandbox/ds-sandbox/internal/procgroup"
)

// socketpair returns our end as a connection and the child's end as a file
// (close-on-exec; ExtraFiles or SCM_RIGHTS hand it over).
func socketpair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "pyengine")
	defer ours.Close()
	c, err := net.FileConn(ours)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "pyengine-child"), nil
}

// childProc is a process we started (a cold engine or a zygote), leading its
// own process group.
type childProc struct {
	cmd    *exec.Cmd
	pid    int
	reaped func(int)

	mu   sync.Mutex // guards gone against group signals
	gone bool       // the group was killed at exit: never signal it again

	exitedCh chan struct{}
	why      string
}

// start starts cmd on a goroutine locked to its OS thread for the process's
// whole life (Pdeathsig fires when the thread that forked exits) and waits
// for it there. started is called with the pid first; its error kills the
// process and is returned.
func (p *childProc) start(started func(int) error) error {
	p.exitedCh = make(chan struct{})
	res := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			res <- err
			return
		}
		p.pid = p.cmd.Process.Pid
		if started != nil {
			if err := started(p.pid); err != nil {
				_ = procgroup.Kill(p.pid)
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
				if p.reaped != nil {
					p.reaped(p.pid)
				}
				procgroup.WaitGone(p.pid, groupTimeout)
				res <- err
				return
			}
		}
		res <- nil
		p.wait()
	}()
	return <-res
}

// wait observes the exit without reaping, so that the group id cannot be
// reused while the group is killed, then reaps.
func (p *childProc) wait() {
	zombie := waitZombie(p.pid) == nil
	p.mu.Lock()
	if zombie {
		_ = procgroup.Kill(p.pid)
	}
	p.gone = true
	p.mu.Unlock()
	err := p.cmd.Wait()
	if p.reaped != nil {
		p.reaped(p.pid)
	}
	if zombie {
		procgroup.WaitGone(p.pid, groupTimeout)
	}
	p.why = "process exited"
	if err != nil {
		p.why = "process exited: " + err.Error()
	}
	close(p.exitedCh)
}

func (p *childProc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone || p.pid == 0 {
		return nil
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func (p *childProc) kill() error             { return p.signal(syscall.SIGKILL) }
func (p *childProc) interrupt() error        { return p.signal(syscall.SIGINT) }
func (p *childProc) exited() <-chan struct{} { return p.exitedCh }
func (p *childProc) reason() string          { return "engine " + p.why }

// waitZombie blocks until the child pid exits, leaving it unreaped.
func waitZombie(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// pidfdProc is a forked engine, known by the pidfd it sent in its hello. It
// is not our child unless we are its subreaper.
type pidfdProc struct {
	pid    int
	pidfd  *os.File // non-blocking, in the runtime's poller
	reaped func(int)

	mu   sync.Mutex
	gone bool

	exitedCh chan struct{}
	why      string
}

func newPidfdProc(pidfd *os.File, pid int, reaped func(int)) *pidfdProc {
	p := &pidfdProc{pid: pid, pidfd: pidfd, reaped: reaped, exitedCh: make(chan struct{})}
	go p.watch()
	return p
}

// watch waits (in the poller, no thread blocked) for the exit, kills the
// rest of the group, reaps the engine if it is our child, and waits for
// the group to be gone.
func (p *pidfdProc) watch() {
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			return err != nil || n > 0
		})
	}
	if err != nil {
		// Cannot watch: fall back to polling for the pid's existence.
		for unix.Kill(p.pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	p.mu.Lock()
	_ = procgroup.Kill(p.pid)
	p.gone = true
	p.mu.Unlock()
	p.why = "engine process exited"
	if rc != nil {
		// Reap it if we adopted it as its subreaper; ECHILD otherwise.
		_ = rc.Control(func(fd uintptr) {
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED, nil)
		})
	}
	if p.reaped != nil {
		p.reaped(p.pid)
	}
	procgroup.WaitGone(p.pid, groupTimeout)
	p.pidfd.Close()
	close(p.exitedCh)
}

// signal sends sig to the engine's process group; with toEngine, first to
// the engine itself through its pidfd (a kill that must reach it even if
// it left its group).
func (p *pidfdProc) signal(sig unix.Signal, toEngine bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return nil
	}
	if !toEngine {
		if err := unix.Kill(-p.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
		return nil
	}
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return err
	}
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return serr
	}
	// The engine is alive (or an unreaped zombie), so its session's
	// group id is still its own: the group gets the signal too.
	if err := unix.Kill(-p.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

func (p *pidfdProc) kill() error             { return p.signal(unix.SIGKILL, true) }
func (p *pidfdProc) interrupt() error        { return p.signal(unix.SIGINT, false) }
func (p *pidfdProc) exited() <-chan struct{} { return p.exitedCh }
func (p *pidfdProc) reason() string          { return p.why }

// pidOfPidfd reads the pid (in our namespace) a pidfd refers to.
func pidOfPidfd(fd int) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || pid <= 0 {
				return 0, fmt.Errorf("pidfd %d: pid %q is not visible here (gone, or in no namespace of ours)", fd, strings.TrimSpace(v))
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("pidfd %d: no Pid line in fdinfo (is it a pidfd?)", fd)
}

// errNotReady is the start failure when the process or the socket ended
// before the first frame.
var errNotReady = errors.New("exited before it was ready")

// readFirst reads the first frame of conn (an engine's hello or a zygote's
// ready) and the descriptors sent with it, until ctx ends, timeout passes
// or gone is closed. It returns a reader for the frames that follow.
func readFirst(ctx context.Context, conn *net.UnixConn, timeout time.Duration, gone <-chan struct{}) (*inFrame, []int, *bufio.Reader, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("not ready after %v: %w", timeout, jupyter.ErrStartTimeout))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	stopGone := make(chan struct{})
	defer close(stopGone)
	goneFired := make(chan struct{})
	go func() {
		select {
		case <-gone:
			// Let the last frame (a fatal error) arrive first.
			time.Sleep(100 * time.Millisecond)
			close(goneFired)
			_ = conn.SetReadDeadline(time.Now())
		case <-stopGone:
		}
	}()
	fail := func(err error) (*inFrame, []int, *bufio.Reader, error) {
		select {
		case <-goneFired:
			return nil, nil, nil, errNotReady
		default:
		}
		if ctx.Err() != nil {
			return nil, nil, nil, context.Cause(ctx)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, nil, errNotReady
		}
		return nil, nil, nil, err
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	var fds []int
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if r, perr := unix.ParseUnixRights(&m); perr == nil {
					fds = append(fds, r...)
				}
			}
		}
	}
	closeFDs := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		closeFDs()
		return fail(err)
	}
	rd := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buf[:n]), conn), 64<<10)
	f, err := decodeFrame(rd, 64<<10)
	if err != nil {
		closeFDs()
		return fail(err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		closeFDs()
		return nil, nil, nil, err
	}
	return f, fds, rd, nil
}
