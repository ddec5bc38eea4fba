package pyengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

const (
	// defaultInterruptGrace is how long Execute waits for an interrupted
	// cell before it kills the engine.
	defaultInterruptGrace = 5 * time.Second
	// eofGrace bounds how long a dead engine's last frames are waited for.
	eofGrace = time.Second
	// reapTimeout bounds how long Close waits for a SIGKILLed engine.
	reapTimeout = 10 * time.Second
	// groupTimeout bounds how long the rest of a killed engine's process
	// group is waited for.
	groupTimeout = 5 * time.Second
	// inboxFrames bounds the frames read ahead of Execute: with the frame
	// limit it bounds the memory one engine's output can take.
	inboxFrames = 8
)

// Engine is one Python interpreter running cells for one code context. It is
// safe for concurrent use: Executes are serialized; Close may be called at
// any time.
type Engine struct {
	pid            int
	conn           *net.UnixConn
	rd             *bufio.Reader
	maxFrame       int
	interruptGrace time.Duration

	proc process // the engine's process: kill, exit

	wmu     sync.Mutex // serializes writes to conn
	execSem chan struct{}
	seq     atomic.Uint64 // the running cell's seq; frames of others are dropped

	frames     chan *inFrame // from the reader, closed when it ends
	readerDone chan struct{}
	stop       chan struct{} // closed by Close: the reader stops delivering

	done       chan struct{} // closed when the engine died or was closed
	deadOnce   sync.Once
	deadReason string // set before done is closed

	closeOnce sync.Once
	closeErr  error
}

// process is how an Engine controls and observes its process: a cold
// engine is our child (exec), a forked one is watched through its pidfd.
type process interface {
	// kill SIGKILLs the engine's process group unless it was reaped.
	kill() error
	// interrupt sends SIGINT to the engine's process group.
	interrupt() error
	// exited is closed once the process exited and its group was killed.
	exited() <-chan struct{}
	// reason says how it exited; valid after exited.
	reason() string
}

// newEngine starts serving a connected engine whose hello was read.
func newEngine(conn *net.UnixConn, rd *bufio.Reader, pid int, proc process, maxFrame int, grace time.Duration) *Engine {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrameBytes
	}
	if grace <= 0 {
		grace = defaultInterruptGrace
	}
	e := &Engine{
		pid: pid, conn: conn, rd: rd, maxFrame: maxFrame, interruptGrace: grace, proc: proc,
		execSem:    make(chan struct{}, 1),
		frames:     make(chan *inFrame, inboxFrames),
		readerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go e.read()
	go e.watch()
	return e
}

// read passes the frames of the running cell to Execute until the socket
// ends or breaks the protocol; then the engine is killed.
func (e *Engine) read() {
	defer close(e.readerDone)
	defer close(e.frames)
	for {
		f, err := decodeFrame(e.rd, e.maxFrame)
		if err != nil {
			reason := "engine closed its socket"
			if !errors.Is(err, io.EOF) {
				reason = fmt.Sprintf("engine protocol error: %v", err)
			}
			e.markDead(reason)
			_ = e.proc.kill()
			return
		}
		switch f.T {
		case "fatal":
			e.markDead("engine failed: " + f.Error)
			_ = e.proc.kill()
			return
		case "out", "reply", "input_request":
			if f.Seq != e.seq.Load() {
				continue // a previous cell's late output
			}
			select {
			case e.frames <- f:
			case <-e.stop:
				return
			}
		}
	}
}

// watch marks the engine dead when its process exited, and ends the reader
// soon after if a descendant still holds the engine's socket.
func (e *Engine) watch() {
	<-e.proc.exited()
	e.markDead(e.proc.reason())
	select {
	case <-e.readerDone:
	case <-time.After(eofGrace):
		e.conn.Close()
	}
}

// markDead closes Done once, remembering the first reason.
func (e *Engine) markDead(reason string) {
	e.deadOnce.Do(func() {
		e.deadReason = reason
		close(e.done)
	})
}

// PID returns the engine's process id (in the pid namespace of the process
// using the Engine), which also leads its process group and session.
func (e *Engine) PID() int { return e.pid }

// Done is closed when the engine died, broke the protocol or was closed.
func (e *Engine) Done() <-chan struct{} { return e.done }

// closedReason is the death reason of an Engine that was closed.
const closedReason = "engine closed"

// Close kills the engine's process group with SIGKILL, waits until the
// engine is gone (bounded) and closes the socket. It is idempotent and safe
// to call concurrently and after the engine died; every call returns the
// first call's result.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Engine) close() error {
	e.markDead(closedReason)
	var errs []error
	if err := e.proc.kill(); err != nil {
		errs = append(errs, fmt.Errorf("kill engine process group %d: %w", e.pid, err))
	}
	select {
	case <-e.proc.exited():
	case <-time.After(reapTimeout):
		errs = append(errs, fmt.Errorf("engine pid %d did not exit %v after SIGKILL", e.pid, reapTimeout))
	}
	close(e.stop)
	e.conn.Close()
	<-e.readerDone
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pyengine: close engine: %w", err)
	}
	return nil
}

// send writes one frame to the engine.
func (e *Engine) send(v any) error {
	b, err := encodeFrame(v)
	if err != nil {
		return err
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	_, err = e.conn.Write(b)
	return err
}

// deadError describes why the engine is dead; it matches jupyter.ErrDead.
// Call it only after Done is closed.
func (e *Engine) deadError(op string) error {
	reason := e.deadReason
	if reason != closedReason {
		select {
		case <-e.proc.exited():
			reason = e.proc.reason()
			if e.deadReason != reason && e.deadReason != "engine closed its socket" {
				reason = e.deadReason + "; " + reason
			}
		default:
		}
	}
	return fmt.Errorf("pyengine: %s: engine pid %d: %w (%s)", op, e.pid, jupyter.ErrDead, reason)
}

type executeFrame struct {
	T            string `json:"t"`
	Seq          uint64 `json:"seq"`
	Code         string `json:"code"`
	Silent       bool   `json:"silent"`
	StoreHistory bool   `json:"store_history"`
	AllowStdin   bool   `json:"allow_stdin"`
}

type inputReplyFrame struct {
	T     string `json:"t"`
	Seq   uint64 `json:"seq"`
	N     uint64 `json:"n"`
	Value string `json:"value"`
}

// Execute runs one cell, with jupyter.Kernel.Execute's contract: onOutput
// (which may be nil) gets each output of the cell in order on the calling
// goroutine; a failing cell is a Reply with Status "error", not an error.
//
// Executes are serialized; a second caller waits, honouring its ctx. If ctx
// ends while the cell runs, Execute interrupts the engine (SIGINT:
// KeyboardInterrupt in the cell, the state is kept), keeps delivering
// outputs and waits up to the interrupt grace for the reply; it then returns
// the reply (possibly nil) and an error matching jupyter.ErrInterrupted and
// ctx.Err(). If the cell does not end within the grace, the engine is
// closed and the error also matches jupyter.ErrDead. If the engine dies
// during the cell, Execute returns promptly with an error matching
// jupyter.ErrDead after delivering the outputs received so far.
func (e *Engine) Execute(ctx context.Context, req jupyter.ExecuteRequest, onOutput func(jupyter.Output)) (*jupyter.Reply, error) {
	select {
	case e.execSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("pyengine: execute: waiting for the running cell: %w", ctx.Err())
	case <-e.done:
		return nil, e.deadError("execute")
	}
	defer func() { <-e.execSem }()
	select {
	case <-e.done:
		return nil, e.deadError("execute")
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pyengine: execute: %w", err)
	}
	seq := e.seq.Add(1)
	if err := e.send(executeFrame{T: "execute", Seq: seq, Code: req.Code, Silent: req.Silent,
		StoreHistory: req.StoreHistory, AllowStdin: req.AllowStdin && req.Input != nil}); err != nil {
		select {
		case <-e.done:
			return nil, e.deadError("execute")
		default:
			return nil, fmt.Errorf("pyengine: execute: %w", err)
		}
	}
	var (
		reply       *jupyter.Reply
		interrupted bool
		grace       <-chan time.Time
		ctxDone                     = ctx.Done()
		dead        <-chan struct{} = e.done
	)
	handle := func(f *inFrame) {
		switch f.T {
		case "out":
			if onOutput != nil {
				onOutput(jupyter.Output{
					Type: f.Type, Name: f.Name, Text: f.Text, Data: f.Data, Metadata: f.Metadata,
					DisplayID: f.Transient.DisplayID, ExecutionCount: f.ExecutionCount,
					EName: f.EName, EValue: f.EValue, Traceback: f.Traceback, Wait: f.Wait,
				})
			}
		case "input_request":
			var value string
			if req.Input != nil {
				if v, err := req.Input(f.Prompt, f.Password); err == nil {
					value = v
				}
			}
			// If this fails the engine is dying; Execute sees Done.
			_ = e.send(inputReplyFrame{T: "input_reply", Seq: seq, N: f.N, Value: value})
		case "reply":
			reply = &jupyter.Reply{Status: f.Status, ExecutionCount: f.ExecutionCount,
				EName: f.EName, EValue: f.EValue, Traceback: f.Traceback}
		}
	}
	for reply == nil {
		select {
		case f, ok := <-e.frames:
			if !ok {
				<-e.done // the reader marks the engine dead before it ends
				err := e.deadError("execute")
				if interrupted {
					err = fmt.Errorf("%w (after an interrupt: %w: %w)", err, jupyter.ErrInterrupted, ctx.Err())
				}
				return nil, err
			}
			handle(f)
		case <-ctxDone:
			ctxDone = nil
			t := time.NewTimer(e.interruptGrace)
			defer t.Stop()
			grace = t.C
			interrupted = true
			// A failed signal leaves the grace timer to kill the engine.
			_ = e.proc.interrupt()
		case <-grace:
			e.Close()
			return nil, fmt.Errorf("pyengine: execute: engine pid %d did not stop within %v of an interrupt and was killed: %w (%w: %w)",
				e.pid, e.interruptGrace, jupyter.ErrDead, jupyter.ErrInterrupted, ctx.Err())
		case <-dead:
			// Deliver what the engine sent before it died: the reader
			// ends at EOF, or watch closes the socket after eofGrace.
			dead = nil
		}
	}
	if interrupted {
		return reply, fmt.Errorf("pyengine: execute: %w: %w", jupyter.ErrInterrupted, ctx.Err())
	}
	return reply, nil
}

// checkHello checks that an engine's first frame is its hello.
func checkHello(f *inFrame) error {
	switch f.T {
	case "hello":
		return nil
	case "fatal":
		return errors.New(f.Error)
	default:
		return fmt.Errorf("engine sent %q before its hello", f.T)
	}
}
