package jupyter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/ds-sandbox/ds-sandbox/internal/procgroup"
)

const (
	// readyNudge is how often Start re-sends kernel_info_request until
	// iopub delivers something (the PUB/SUB slow-joiner problem).
	readyNudge = 50 * time.Millisecond
	// pipeGrace bounds how long Wait waits for the output pipe after the
	// kernel exited (a grandchild may hold it open).
	pipeGrace = time.Second
	// eofGrace bounds how long we wait for the sockets to report EOF after
	// the kernel process exited, so that outputs already sent are delivered.
	eofGrace = time.Second
	// reapTimeout bounds how long Close waits for a SIGKILLed kernel.
	reapTimeout = 10 * time.Second
	// groupTimeout bounds how long, once the kernel is reaped, the rest of
	// its killed process group is waited for (within reapTimeout).
	groupTimeout = 5 * time.Second
	// tailBytes is how much kernel output start errors quote.
	tailBytes = 2048
)

// Kernel is a running ipykernel process and our connection to it. It is safe
// for concurrent use. Close it when done, also after it died.
type Kernel struct {
	cfg      Config
	cmd      *exec.Cmd
	pid      int
	dir      string
	identity string
	signer   signer
	output   *tailWriter

	// ctx is the kernel's lifetime, parent of every socket; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	// The sockets are set by Start before the Kernel is returned.
	shell, control, stdin, iopub zmq4.Socket

	execSem chan struct{} // capacity 1: serializes Execute

	iopubSeen chan struct{} // closed on the first iopub message
	iopubOnce sync.Once

	procMu sync.Mutex // guards reaped against the group kill in Close
	reaped bool       // the group was killed at exit or the pid reaped: never signal it again

	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error         // cmd.Wait's result, readable after exited

	done       chan struct{} // closed when the kernel died or was closed
	deadOnce   sync.Once
	deadReason string // set before done is closed

	dialers   sync.WaitGroup // dial goroutines
	pumps     sync.WaitGroup // pump goroutines
	pumpsDone chan struct{}  // closed when all pumps exited
	pumping   bool           // pumps were started (set by Start only)

	mu      sync.Mutex
	inboxes map[string]*inbox // parent msg_id → inbox
	sockets []socket          // every connected socket, for Close

	closeOnce sync.Once
	closeErr  error
}

// Start launches a kernel and waits until it is ready: it answered a
// kernel_info_request and its iopub socket delivers messages. ctx bounds the
// start only (together with cfg.StartTimeout), not the kernel's life.
//
// On failure Start kills the process, removes the socket directory and returns
// an error quoting the tail of the kernel's output.
func Start(ctx context.Context, cfg Config) (*Kernel, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jupyter: start kernel: %w", err)
	}
	if err := supported(); err != nil {
		return nil, fmt.Errorf("jupyter: start kernel: %w", err)
	}
	cfg = cfg.withDefaults()
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("jupyter: start kernel: generate key: %w", err)
	}
	hexKey := hex.EncodeToString(key[:])
	dir, connFile, ci, err := cfg.prepareDir(hexKey)
	if err != nil {
		return nil, fmt.Errorf("jupyter: start kernel: %w", err)
	}

	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k := &Kernel{
		cfg:       cfg,
		dir:       dir,
		identity:  newID(),
		signer:    signer{key: []byte(hexKey), session: newID()},
		output:    &tailWriter{w: cfg.Stderr, max: tailBytes},
		ctx:       kctx,
		cancel:    cancel,
		execSem:   make(chan struct{}, 1),
		iopubSeen: make(chan struct{}),
		exited:    make(chan struct{}),
		done:      make(chan struct{}),
		pumpsDone: make(chan struct{}),
		inboxes:   make(map[string]*inbox),
	}
	cmd := exec.Command(cfg.Python, "-m", "ipykernel_launcher", "-f", connFile)
	cmd.Dir = cfg.Dir
	cmd.Env = cfg.kernelEnv()
	cmd.Stdout = k.output
	cmd.Stderr = k.output
	cmd.SysProcAttr = cfg.sysProcAttr()
	cmd.WaitDelay = pipeGrace
	k.cmd = cmd

	started := make(chan error)
	go k.run(started)
	if err := <-started; err != nil {
		k.Close()
		return nil, fmt.Errorf("jupyter: start kernel %s: %w", cfg.Python, err)
	}
	k.pid = cmd.Process.Pid

	if err := k.connect(ctx, ci); err != nil {
		k.Close()
		detail := ""
		select {
		case <-k.exited:
			if errors.Is(err, errExited) && k.waitErr != nil {
				detail = fmt.Sprintf(" (%v)", k.waitErr)
			}
		default:
		}
		if tail := k.output.tail(); tail != "" {
			detail += "; kernel output: " + tail
		}
		return nil, fmt.Errorf("jupyter: start kernel %s (pid %d): %w%s", cfg.Python, k.pid, err, detail)
	}
	return k, nil
}

// run starts the process, reports the result on started and, if it started,
// waits for it and records why the kernel is gone.
//
// The goroutine stays locked to its OS thread for the kernel's whole life:
// Pdeathsig fires when the thread that forked exits, not the process, and Go
// retires a thread when a goroutine exits while locked to it.
func (k *Kernel) run(started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := k.cmd.Start(); err != nil {
		started <- err
		return
	}
	if k.cfg.Started != nil {
		if err := k.cfg.Started(k.cmd.Process.Pid); err != nil {
			_ = procgroup.Kill(k.cmd.Process.Pid)
			_ = k.cmd.Process.Kill()
			_ = k.cmd.Wait()
			k.notifyReaped(k.cmd.Process.Pid)
			procgroup.WaitGone(k.cmd.Process.Pid, groupTimeout)
			started <- err
			return
		}
	}
	started <- nil
	// Observe the exit without reaping: while the kernel is a zombie its
	// pid, and so its process group id, cannot be reused, so killing the
	// group is safe. That also ends whatever the kernel left running.
	zombie := waitZombie(k.cmd.Process.Pid) == nil
	if zombie {
		k.procMu.Lock()
		_ = procgroup.Kill(k.cmd.Process.Pid)
		k.reaped = true
		k.procMu.Unlock()
	}
	err := k.cmd.Wait()
	k.notifyReaped(k.cmd.Process.Pid)
	if !zombie {
		k.procMu.Lock()
		k.reaped = true
		k.procMu.Unlock()
	} else {
		// Until the killed group is gone (its zombies reaped by the
		// agent), it counts against the process limits a next kernel
		// starts under: a kernel started right after a fork bomb would
		// fail to create its threads.
		procgroup.WaitGone(k.cmd.Process.Pid, groupTimeout)
	}
	k.waitErr = err
	close(k.exited)
	reason := "kernel process exited"
	if err != nil {
		reason = fmt.Sprintf("kernel process exited: %v", err)
	}
	k.markDead(reason)
}

// notifyReaped reports a waited-for process to cfg.Reaped.
func (k *Kernel) notifyReaped(pid int) {
	if k.cfg.Reaped != nil {
		k.cfg.Reaped(pid)
	}
}

// markDead closes Done once, remembering the first reason.
func (k *Kernel) markDead(reason string) {
	k.deadOnce.Do(func() {
		k.deadReason = reason
		close(k.done)
	})
}

// closedReason is the death reason of a Kernel that was closed.
const closedReason = "kernel closed"

// errExited is the start failure when the process exits before it is ready.
var errExited = errors.New("kernel process exited before it was ready")

// connect dials the kernel's sockets and waits until it is ready.
func (k *Kernel) connect(ctx context.Context, ci connectionInfo) error {
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, k.cfg.StartTimeout,
		fmt.Errorf("kernel not ready after %v: %w", k.cfg.StartTimeout, ErrStartTimeout))
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Stop waiting as soon as the process exits. The goroutine ends with
	// connect (deferred cancel).
	go func() {
		select {
		case <-k.exited:
			cancel(errExited)
		case <-ctx.Done():
		}
	}()

	type dialed struct {
		channel string
		s       zmq4.Socket
		err     error
	}
	ports := map[string]int{chanShell: ci.ShellPort, chanControl: ci.ControlPort, chanStdin: ci.StdinPort, chanIOPub: ci.IOPubPort}
	results := make(chan dialed, len(ports)) // buffered: dialers never block
	for ch, port := range ports {
		k.dialers.Add(1)
		go func() {
			defer k.dialers.Done()
			s, err := k.dial(ctx, ch, ci.endpoint(port))
			results <- dialed{ch, s, err}
		}()
	}
	for range ports {
		var r dialed
		select {
		case r = <-results:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if r.err != nil {
			return r.err
		}
		switch r.channel {
		case chanShell:
			k.shell = r.s
		case chanControl:
			k.control = r.s
		case chanStdin:
			k.stdin = r.s
		case chanIOPub:
			k.iopub = r.s
		}
	}
	k.startPumps()
	k.pumping = true
	return k.waitReady(ctx)
}

// waitReady sends kernel_info_request, re-sending it every readyNudge until
// iopub delivered a message, and returns once that happened and a
// kernel_info_reply arrived.
func (k *Kernel) waitReady(ctx context.Context) error {
	in := newInbox()
	var ids []string
	defer func() { k.unregister(ids...) }()
	nudge := func() error {
		id, err := k.send(k.shell, "kernel_info_request", struct{}{}, nil, in)
		if err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	}
	if err := nudge(); err != nil {
		return err
	}
	ticker := time.NewTicker(readyNudge)
	defer ticker.Stop()
	iopubSeen, replied := k.iopubSeen, false
	for iopubSeen != nil || !replied {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-k.done:
			// Usually the process exited and a socket noticed first.
			k.settle()
			select {
			case <-k.exited:
				return errExited
			default:
				return fmt.Errorf("%s before the kernel was ready", k.deadReason)
			}
		case <-iopubSeen:
			iopubSeen = nil
			ticker.Stop()
		case <-ticker.C:
			if err := nudge(); err != nil {
				return err
			}
		case <-in.notify:
			for _, m := range in.take() {
				if m.Header.MsgType == "kernel_info_reply" {
					replied = true
				}
			}
		}
	}
	return nil
}

// PID returns the kernel's process id (also its process group id).
func (k *Kernel) PID() int { return k.pid }

// Done returns a channel that is closed when the kernel process exited, its
// connection was lost, or it was closed. After that the Kernel is unusable.
func (k *Kernel) Done() <-chan struct{} { return k.done }

// Close kills the kernel's process group with SIGKILL, closes the sockets,
// waits for the process and removes the socket directory. It is idempotent and
// safe to call concurrently; every call returns the first call's result.
func (k *Kernel) Close() error {
	k.closeOnce.Do(func() { k.closeErr = k.close() })
	return k.closeErr
}

func (k *Kernel) close() error {
	k.markDead(closedReason)
	var errs []error
	if k.pid > 0 {
		// The kernel leads its own process group (Setpgid/Setsid), so
		// this also kills whatever it started. Once the kernel is reaped
		// its pid may be reused; run already killed the group then.
		k.procMu.Lock()
		if !k.reaped {
			if err := procgroup.Kill(k.pid); err != nil {
				errs = append(errs, fmt.Errorf("kill kernel process group %d: %w", k.pid, err))
			}
		}
		k.procMu.Unlock()
		select {
		case <-k.exited:
		case <-time.After(reapTimeout):
			errs = append(errs, fmt.Errorf("kernel pid %d did not exit %v after SIGKILL", k.pid, reapTimeout))
		}
	}
	if k.pumping {
		// Let the pumps see EOF before we cancel: cancelling go-zeromq
		// while it hands over a message can strand its reader goroutine.
		select {
		case <-k.pumpsDone:
		case <-time.After(eofGrace):
		}
	}
	k.cancel()
	k.dialers.Wait()
	k.mu.Lock()
	sockets := k.sockets
	k.sockets = nil
	k.mu.Unlock()
	for _, s := range sockets {
		s.Close()
		s.cancel()
	}
	k.pumps.Wait()
	if err := os.RemoveAll(k.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove socket dir: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jupyter: close kernel: %w", err)
	}
	return nil
}
