package manager

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
)

// Start admission. Starting a sandbox is the expensive part of its life: the
// backend makes the environment, the agent boots a Python kernel that imports
// its stack. On a small machine 40 of them at once compete for two CPUs until
// every one misses its deadline; retries add more. So starts go through a
// gate of max_concurrent_starts slots: a create waits its turn (at most
// start_queue_timeout_sec, or less when its own context ends) and then has
// the backend's and the kernel's whole deadlines to itself, counted from when
// it was admitted. Past start_queue_max waiting creates, or when its wait
// runs out, a create is refused at once with a BusyError (HTTP 429 with
// Retry-After), never left to time out after minutes of thrashing. A slot is
// held until the sandbox's default kernel is ready (see warm), so a burst of
// creates cannot boot more kernels at once than the gate allows.

// BusyError is a refusal for load: the caller should retry after RetryAfter.
// It wraps api.ErrLimit (HTTP 429).
type BusyError struct {
	Msg   string
	After time.Duration
}

func (e *BusyError) Error() string { return e.Msg }

// Unwrap makes a BusyError an api.ErrLimit.
func (e *BusyError) Unwrap() error { return api.ErrLimit }

// RetryAfter is how long the caller should wait before trying again.
func (e *BusyError) RetryAfter() time.Duration { return e.After }

// StartStats describes the start gate, for metrics.
type StartStats struct {
	Slots, Running, Waiting int
	// Admitted counts starts let through; WaitSeconds is their total wait;
	// Refused counts creates refused for load.
	Admitted, Refused uint64
	WaitSeconds       float64
}

type startGate struct {
	slots    chan struct{}
	maxQueue int
	maxWait  time.Duration

	mu       sync.Mutex
	waiting  int
	admitted uint64
	refused  uint64
	waited   time.Duration
}

func newStartGate(slots, maxQueue int, maxWait time.Duration) *startGate {
	if slots <= 0 {
		slots = max(2, runtime.NumCPU())
	}
	return &startGate{slots: make(chan struct{}, slots), maxQueue: maxQueue, maxWait: maxWait}
}

// acquire waits for a start slot; release gives it back (once).
func (g *startGate) acquire(ctx context.Context) (release func(), err error) {
	g.mu.Lock()
	select {
	case g.slots <- struct{}{}:
		g.admitted++
		g.mu.Unlock()
		return g.releaser(), nil
	default:
	}
	if g.waiting >= g.maxQueue {
		g.refused++
		g.mu.Unlock()
		return nil, &BusyError{After: g.retryAfter(),
			Msg: fmt.Sprintf("the daemon is starting %d sandboxes and %d more are waiting (max_concurrent_starts, start_queue_max): retry later", cap(g.slots), g.maxQueue)}
	}
	g.waiting++
	g.mu.Unlock()
	start := time.Now()
	t := time.NewTimer(g.maxWait)
	defer t.Stop()
	var cause string
	select {
	case g.slots <- struct{}{}:
	case <-t.C:
		cause = fmt.Sprintf("no start slot came free within %s (start_queue_timeout_sec)", g.maxWait)
	case <-ctx.Done():
		cause = fmt.Sprintf("the request ended while waiting %s for a start slot", time.Since(start).Round(time.Millisecond))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting--
	if cause != "" {
		g.refused++
		return nil, &BusyError{After: g.retryAfter(), Msg: fmt.Sprintf("the daemon is busy starting sandboxes: %s; retry later", cause)}
	}
	g.admitted++
	g.waited += time.Since(start)
	return g.releaser(), nil
}

// tryAcquireBackground takes a slot for a warm pool's refill, which must
// never delay a create: only when nobody waits and, with more than one
// slot, one more stays free.
func (g *startGate) tryAcquireBackground() (release func(), ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting > 0 || (cap(g.slots) > 1 && len(g.slots) >= cap(g.slots)-1) {
		return nil, false
	}
	select {
	case g.slots <- struct{}{}:
		return g.releaser(), true
	default:
		return nil, false
	}
}

func (g *startGate) releaser() func() {
	var once sync.Once
	return func() { once.Do(func() { <-g.slots }) }
}

// retryAfter estimates when a slot frees: a second per start ahead, per
// slot, at least one. g.mu is held.
func (g *startGate) retryAfter() time.Duration {
	return time.Duration(max(1, (g.waiting+cap(g.slots))/cap(g.slots))) * time.Second
}

// StartStats reports the start gate's state.
func (m *Manager) StartStats() StartStats {
	g := m.starts
	g.mu.Lock()
	defer g.mu.Unlock()
	return StartStats{Slots: cap(g.slots), Running: len(g.slots), Waiting: g.waiting,
		Admitted: g.admitted, Refused: g.refused, WaitSeconds: g.waited.Seconds()}
}

// warm waits until the sandbox's default kernel runs (the agent's ready
// route, which runs no code), then releases its start slot. It runs
// after Create returned; a kernel that does not come up within the kernel
// start timeout releases the slot too (the first cell reports it).
func (m *Manager) warm(s *Sandbox, release func()) {
	defer release()
	d := time.Duration(m.cfg.KernelStartTimeoutSec)*time.Second + 10*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	go func() {
		select {
		case <-s.inst.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = s.agent.ContextReady(ctx, agent.DefaultContextID)
}
