package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/procgroup"
)

const (
	// drainGrace is how long output is still read after a process exited. A
	// descendant that inherited its stdout (`server &`) keeps the pipe open;
	// its later output is not the process's, and the end must not wait for it
	// (it is read and discarded; see pump).
	drainGrace = 250 * time.Millisecond
	// stdinWriteTimeout bounds one write to a process that does not read its
	// stdin.
	stdinWriteTimeout = time.Minute
)

// process is one command started through the API. Its waiter goroutine
// (processTable.run) owns the exec.Cmd and the output pipes.
//
// Locking: mu guards the fields below it; stdinMu guards stdin and is never
// held while taking mu.
type process struct {
	pid        int
	cmd        *exec.Cmd
	info       api.ProcessInfo
	background bool
	timeout    time.Duration // 0: none
	hasStdin   bool

	stdinMu sync.Mutex
	stdin   *os.File // nil once closed (or never opened)

	mu         sync.Mutex
	subs       map[*subscriber]struct{}
	backlog    outQueue // output produced while no stream was attached
	exited     bool     // reaped: its pid may be reused, no more signals
	timedOut   bool
	killed     bool // its group was sent SIGKILL
	end        *api.ProcessEvent
	finishedAt time.Time     // set before done is closed
	done       chan struct{} // closed once end is set
}

// subscriber is one stream of a process's output. Its queue is bounded: a slow
// reader loses the oldest output (and is told so), the process never waits.
type subscriber struct {
	q    outQueue // guarded by the process's mu
	wake chan struct{}
}

func (s *subscriber) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the waiter of p: it pumps its output, enforces its timeout, reaps it
// and delivers its end. It returns once p is reaped and its output drained.
func (t *processTable) run(p *process, outR, errR *os.File) {
	defer t.wg.Done()
	var pumps sync.WaitGroup
	pumps.Add(2)
	go t.pump(p, outR, api.ProcStdout, &pumps)
	go t.pump(p, errR, api.ProcStderr, &pumps)
	var timer *time.Timer
	if p.timeout > 0 {
		timer = time.AfterFunc(p.timeout, p.expire)
	}
	err := p.cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	p.mu.Lock()
	p.exited = true
	killed := p.killed
	p.mu.Unlock()
	if killed {
		// The end is delivered once the killed tree is gone: until its
		// zombies are reaped it counts against the sandbox's process
		// limits, and what the caller starts next (a kernel after a fork
		// bomb) would fail to fork.
		procgroup.WaitGone(p.pid, killAllWait)
	}
	deadline := time.Now().Add(drainGrace)
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline)
	pumps.Wait()
	p.closeStdin()
	end := p.endEvent(err)

	t.mu.Lock()
	defer t.mu.Unlock()
	p.mu.Lock()
	p.end = &end
	p.finishedAt = time.Now()
	for s := range p.subs {
		s.wakeUp()
	}
	p.mu.Unlock()
	close(p.done)
	t.finishedLocked(p)
}

// pump reads one output pipe until EOF (or the drain deadline) and publishes
// it chunk by chunk, as it comes. At the drain deadline p's output is
// complete (wg is released), but a descendant still holds the pipe: the pump
// goes on reading and discarding, so that descendant is not killed by SIGPIPE
// on its next write, until the pipe closes or killAll closes it.
func (t *processTable) pump(p *process, r *os.File, typ string, wg *sync.WaitGroup) {
	defer r.Close()
	buf := make([]byte, 32<<10)
	carry := 0 // bytes of a split UTF-8 character kept at buf[:carry]
	for {
		n, err := r.Read(buf[carry:])
		n += carry
		cut := n
		if err == nil {
			cut = completeUTF8(buf[:n])
		}
		if cut > 0 {
			p.publish(typ, buf[:cut])
		}
		carry = copy(buf, buf[cut:n])
		if err != nil {
			wg.Done()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.discard(r)
			}
			return
		}
	}
}

// discard reads r until EOF (or until killAll closes it), dropping the data.
func (t *processTable) discard(r *os.File) {
	if r.SetReadDeadline(time.Time{}) != nil {
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.lingering[r] = struct{}{}
	t.mu.Unlock()
	_, _ = io.Copy(io.Discard, r)
	t.mu.Lock()
	delete(t.lingering, r)
	t.mu.Unlock()
}

func (p *process) publish(typ string, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.subs) == 0 {
		p.backlog.push(typ, b)
		return
	}
	for s := range p.subs {
		s.q.push(typ, b)
		s.wakeUp()
	}
}

// attach adds a stream. The first stream attached takes the backlog: output
// nobody has read is delivered at least once.
func (p *process) attach() *subscriber {
	s := &subscriber{wake: make(chan struct{}, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.subs) == 0 {
		s.q, p.backlog = p.backlog, outQueue{}
	}
	p.subs[s] = struct{}{}
	return s
}

// detach removes a stream; when it was the last, what it had not delivered
// becomes the backlog again.
func (p *process) detach(s *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.subs, s)
	if len(p.subs) == 0 {
		s.q.appendQueue(&p.backlog)
		p.backlog, s.q = s.q, outQueue{}
	}
}

// next waits for output or the end: it returns the output queued for s, or
// (when there is none left) the end event, or ctx's error.
func (p *process) next(ctx context.Context, s *subscriber) ([]api.ProcessEvent, *api.ProcessEvent, error) {
	for {
		p.mu.Lock()
		evs := s.q.drain()
		end := p.end
		p.mu.Unlock()
		if len(evs) > 0 {
			return evs, nil, nil
		}
		if end != nil {
			return nil, end, nil
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// stream sends p's output for s and then its end, until send fails or ctx is
// done.
func (p *process) stream(ctx context.Context, s *subscriber, send func(api.ProcessEvent) error) error {
	for {
		evs, end, err := p.next(ctx, s)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return err
			}
		}
		if end != nil {
			return send(*end)
		}
	}
}

func (p *process) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// endEvent describes how p ended. Killed by a signal (the timeout's SIGKILL
// included) is exit code -1 with an error saying why.
func (p *process) endEvent(waitErr error) api.ProcessEvent {
	ev := api.ProcessEvent{Type: api.ProcEnd, PID: p.pid, ExitCode: -1}
	st := p.cmd.ProcessState
	if st == nil {
		ev.Error = fmt.Sprintf("waiting for the process failed: %v", waitErr)
		return ev
	}
	ev.ExitCode = st.ExitCode()
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		ev.ExitCode = -1
		p.mu.Lock()
		timedOut := p.timedOut
		p.mu.Unlock()
		if timedOut {
			ev.Error = fmt.Sprintf("timed out after %s", p.timeout)
		} else {
			ev.Error = fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
		}
	}
	return ev
}

// expire is the timeout: it kills p's whole tree.
func (p *process) expire() {
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		return
	}
	p.timedOut = true
	p.mu.Unlock()
	p.killTree()
}

// killTree SIGKILLs p's descendants (while their ancestry still leads to p)
// and then its process group.
func (p *process) killTree() {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		return
	}
	killDescendants(p.pid)
	_ = p.signal(syscall.SIGKILL)
}

// signal sends sig to p's process group. A process that has exited is
// api.ErrNotFound: its pid may belong to someone else by now.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return api.Errorf(api.ErrNotFound, "process %d has already exited", p.pid)
	}
	if err := syscall.Kill(-p.pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return api.Errorf(api.ErrNotFound, "process %d has already exited", p.pid)
		}
		return fmt.Errorf("process %d: signal %s: %w", p.pid, sig, err)
	}
	if sig == syscall.SIGKILL {
		p.killed = true
	}
	return nil
}

// writeStdin writes data to p's stdin and closes it when closeAfter. A write
// waits for the process to read at most until ctx is done or a minute passed.
func (p *process) writeStdin(ctx context.Context, data string, closeAfter bool) error {
	if !p.hasStdin {
		return api.Errorf(api.ErrInvalid, "process %d was started without stdin; start it with stdin: true", p.pid)
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	f := p.stdin
	if f == nil {
		if p.finished() {
			return api.Errorf(api.ErrNotFound, "process %d has already exited", p.pid)
		}
		return api.Errorf(api.ErrInvalid, "process %d: stdin is already closed", p.pid)
	}
	if data != "" {
		if err := writeWithin(ctx, f, data); err != nil {
			switch {
			case errors.Is(err, syscall.EPIPE):
				return api.Errorf(api.ErrInvalid, "process %d no longer reads its stdin (it exited or closed it)", p.pid)
			case ctx.Err() != nil:
				return fmt.Errorf("process %d: stdin: %w", p.pid, ctx.Err())
			case errors.Is(err, os.ErrDeadlineExceeded):
				return api.Errorf(api.ErrTimeout, "process %d did not read its stdin within %s", p.pid, stdinWriteTimeout)
			}
			return fmt.Errorf("process %d: stdin: %w", p.pid, err)
		}
	}
	if closeAfter {
		_ = f.Close()
		p.stdin = nil
	}
	return nil
}

// writeWithin writes data to the pipe f, giving up when ctx is done or after
// stdinWriteTimeout.
func writeWithin(ctx context.Context, f *os.File, data string) error {
	ctx, cancel := context.WithTimeout(ctx, stdinWriteTimeout)
	defer cancel()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = f.SetWriteDeadline(time.Now())
	})
	_, err := f.WriteString(data)
	if !stop() {
		<-fired
	}
	_ = f.SetWriteDeadline(time.Time{})
	return err
}

func (p *process) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		_ = p.stdin.Close()
		p.stdin = nil
	}
}
