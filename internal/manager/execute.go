package manager

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// maxExecDenials bounds the denials attached to one Execution; past it the
// Execution gets a notice with the count left out.
const maxExecDenials = 100

// Denial events are rate-limited per sandbox (a loop of refused connects
// must not flood the event history or the audit log); those left out are
// counted in the next event that passes.
const (
	denialEventsPerSecond = 10
	denialEventsBurst     = 50
)

// netState is a sandbox's network bookkeeping: the lock that keeps
// executions with a per-execution policy apart from the others, and the
// collectors of denials of the executions running now.
type netState struct {
	// policy is held shared by ordinary executions (one unit each) and
	// exclusively by one with its own network policy or a SetNetwork (all
	// units), which changes the whole sandbox's network; waits for it
	// honour the caller's context. Lazily made (see policyLock).
	policyOnce sync.Once
	policy     *semaphore.Weighted

	mu         sync.Mutex
	collectors map[*denialCollector]struct{}
	limiter    *rate.Limiter
	suppressed int
}

// policyUnits is the exclusive weight of netState.policy.
const policyUnits = 1 << 30

func (ns *netState) policyLock() *semaphore.Weighted {
	ns.policyOnce.Do(func() { ns.policy = semaphore.NewWeighted(policyUnits) })
	return ns.policy
}

// acquire takes the sandbox's network shared (exclusive=false) or
// exclusively, or fails when ctx ends first.
func (ns *netState) acquire(ctx context.Context, exclusive bool) (release func(), err error) {
	n := int64(1)
	if exclusive {
		n = policyUnits
	}
	sem := ns.policyLock()
	if err := sem.Acquire(ctx, n); err != nil {
		return nil, api.Errorf(api.ErrTimeout, "waiting for the sandbox's network (another execution with a network policy of its own, or a policy change, holds it): %v", err)
	}
	return func() { sem.Release(n) }, nil
}

// denialCollector gathers the denials of one execution. add never blocks:
// it runs on the enforcement's reporting path (the egress proxy, the DNS
// server, the packet log's reader), shared by every execution of the
// sandbox, so an execution whose stream client stops reading must not hold
// up the others. The events go out from a goroutine of its own (see start
// and stop); those that do not fit in its queue are still in the list.
type denialCollector struct {
	mu      sync.Mutex
	list    []api.NetworkDenial
	dropped int
	stopped bool               // late reports (from a snapshot taken before removal) are dropped
	events  chan api.ExecEvent // nil: no stream
	done    chan struct{}
}

// newDenialCollector makes a collector; onEvent (nil: none) is told of each
// denial as it happens, until stop.
func newDenialCollector(onEvent func(api.ExecEvent)) *denialCollector {
	c := &denialCollector{}
	if onEvent != nil {
		c.events = make(chan api.ExecEvent, maxExecDenials)
		c.done = make(chan struct{})
		go func() {
			defer close(c.done)
			for ev := range c.events {
				onEvent(ev)
			}
		}()
	}
	return c
}

func (c *denialCollector) add(d api.NetworkDenial) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	if len(c.list) >= maxExecDenials {
		c.dropped++
		return
	}
	c.list = append(c.list, d)
	if c.events != nil {
		c.events <- api.ExecEvent{Type: api.EventNetworkDenied, Denial: &d} // room for maxExecDenials
	}
}

// stop ends the collection and waits until every denial event is out.
func (c *denialCollector) stop() {
	c.mu.Lock()
	c.stopped = true
	if c.events != nil {
		close(c.events)
	}
	c.mu.Unlock()
	if c.done != nil {
		<-c.done
	}
}

// watchNetwork makes the sandbox's denials events (rate-limited, so
// audited) and hands them to the executions running at the time.
func (m *Manager) watchNetwork(s *Sandbox) {
	nc, ok := s.inst.(backend.NetworkController)
	if !ok {
		return
	}
	s.net.limiter = rate.NewLimiter(denialEventsPerSecond, denialEventsBurst)
	nc.OnNetworkDenial(func(d api.NetworkDenial) {
		ns := &s.net
		ns.mu.Lock()
		cs := make([]*denialCollector, 0, len(ns.collectors))
		for c := range ns.collectors {
			cs = append(cs, c)
		}
		emit := ns.limiter.Allow()
		suppressed := ns.suppressed
		if emit {
			ns.suppressed = 0
		} else {
			ns.suppressed++
		}
		ns.mu.Unlock()
		for _, c := range cs {
			c.add(d)
		}
		if emit {
			data := map[string]string{"host": d.Host, "ip": d.IP, "reason": d.Reason}
			if d.Protocol != "" {
				data["protocol"] = d.Protocol
			}
			if d.Port != 0 {
				data["port"] = fmt.Sprint(d.Port)
			}
			if suppressed > 0 {
				data["suppressed_before"] = fmt.Sprint(suppressed)
			}
			m.emit(api.EventSandboxNetworkDenied, s.ID(), s.Info().Owner, data)
		}
	})
}

// Execute runs a cell in the sandbox and returns its whole Execution. It
// (or Stream, for a face that only forwards the events) is the path every
// face takes — the SDK (embedded, and remote through the REST API), the REST
// API, MCP, E2B's /execute and `ds-sandbox run` — so what applies to every
// cell is done here.
//
// The code scanner runs first (see scanCell): its findings are attached to
// the Execution and go to onEvent as a "scan" event before the cell's own
// events; under scanner mode block a critical finding means the cell is not
// run at all (its Execution carries a SecurityScanFailedError).
//
// A per-execution network policy (req.Network, the seed's run_code
// arguments) is put in force for the cell and the sandbox's own restored
// after it; other executions of the sandbox wait meanwhile (the network is
// the whole sandbox's), and a backend that cannot change a running sandbox's
// network refuses it. The network denials that happen while the cell runs
// are attached to the Execution and, as they happen, passed to onEvent as
// network_denied events.
func (s *Sandbox) Execute(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	return s.execute(ctx, req, onEvent, true)
}

// Stream runs a cell as Execute does, for a caller that forwards its events
// and needs the rest only to account for the cell (a streaming response, its
// audit record and metrics): stdout, stderr and results go to onEvent and
// are not kept, so a streamed cell's output is never held whole. The
// Execution it returns is the cell's summary — error, oom_killed, notices,
// truncated, findings, network denials, execution count — with Logs and
// Results empty.
func (s *Sandbox) Stream(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	return s.execute(ctx, req, onEvent, false)
}

// execute is Execute (keepOutput) and Stream.
func (s *Sandbox) execute(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent), keepOutput bool) (exec *api.Execution, err error) {
	override := req.Network
	req.Network = nil
	if override != nil {
		if err := config.ValidateNetworkPolicy(*override); err != nil {
			return nil, err
		}
		if samePolicy(*override, s.Info().Network) {
			override = nil
		}
	}
	sc, err := s.scanCell(&req)
	if err != nil {
		return nil, err
	}
	if sc.blocked != nil {
		sc.deliverBlocked(onEvent)
		return sc.blocked, nil
	}
	// The scanner's events go out just before the first other one (below
	// the wrapper that serializes events from the agent and from denials).
	onEvent = sc.before(onEvent)
	var end *api.ExecEvent // held back so every denial comes before it
	if onEvent != nil {
		// Denials arrive on other goroutines than the agent's events, and
		// one may arrive as the execution ends: after the end event nothing
		// more is passed on.
		var mu sync.Mutex
		finished := false
		fn := onEvent
		onEvent = func(ev api.ExecEvent) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case finished:
			case ev.Type == api.EventEnd:
				end = &ev
			default:
				fn(ev)
			}
		}
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			if end != nil {
				fn(*end)
			}
			finished = true
		}()
	}
	if override == nil {
		release, err := s.net.acquire(ctx, false)
		if err != nil {
			return nil, err
		}
		defer release()
	} else {
		restore, err := s.setNetwork(ctx, *override)
		if err != nil {
			return nil, err
		}
		defer func() {
			if rerr := restore(); rerr != nil && exec != nil {
				exec.Notices = append(exec.Notices, rerr.Error())
			}
		}()
	}
	c := newDenialCollector(onEvent)
	s.net.mu.Lock()
	if s.net.collectors == nil {
		s.net.collectors = map[*denialCollector]struct{}{}
	}
	s.net.collectors[c] = struct{}{}
	s.net.mu.Unlock()
	oom := s.startOOMCheck()
	if keepOutput {
		exec, err = s.agent.Execute(ctx, req, oom.wrap(onEvent))
	} else {
		exec, err = s.streamAgent(ctx, req, oom.wrap(onEvent))
	}
	oom.finish(exec)
	if nc, ok := s.inst.(backend.NetworkController); ok {
		nc.FlushNetworkDenials() // packets the cell saw refused are its denials
	}
	s.net.mu.Lock()
	delete(s.net.collectors, c)
	s.net.mu.Unlock()
	c.stop()
	sc.attach(exec)
	if exec != nil {
		c.mu.Lock()
		exec.NetworkDenials = append(exec.NetworkDenials, c.list...)
		if c.dropped > 0 {
			exec.Notices = append(exec.Notices, fmt.Sprintf("%d more network denials not listed", c.dropped))
		}
		c.mu.Unlock()
	}
	return exec, err
}

// streamAgent runs the cell on the agent, passing its events to onEvent (nil:
// none) and folding into the returned summary all but stdout, stderr and
// results.
func (s *Sandbox) streamAgent(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	sum := &api.Execution{Results: []api.Result{}, Logs: api.Logs{Stdout: []string{}, Stderr: []string{}}}
	err := s.agent.ExecuteStream(ctx, req, func(ev api.ExecEvent) {
		switch ev.Type {
		case api.EventStdout, api.EventStderr, api.EventResult:
		default:
			sum.Apply(ev)
		}
		if onEvent != nil {
			onEvent(ev)
		}
	})
	return sum, err
}

// setNetwork puts pol in force for one execution and returns what restores
// the sandbox's own policy. It holds the sandbox's network exclusively
// until restore. Restoring fails only if the host's firewall cannot be
// changed: the sandbox, left under the execution's policy, is then
// destroyed rather than left running under a policy it was not created
// with, and restore says so.
func (s *Sandbox) setNetwork(ctx context.Context, pol api.NetworkPolicy) (func() error, error) {
	nc, ok := s.inst.(backend.NetworkController)
	if !ok {
		info := s.Info()
		return nil, api.Errorf(api.ErrUnsupported,
			"this sandbox's network policy is %q; the %s backend cannot change it for one execution (asked for %q): create the sandbox with that policy instead",
			info.Network.Policy, info.Backend, pol.Policy)
	}
	release, err := s.net.acquire(ctx, true)
	if err != nil {
		return nil, err
	}
	if err := nc.SetNetwork(ctx, pol); err != nil {
		release()
		return nil, err
	}
	return func() error {
		defer release()
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := nc.SetNetwork(rctx, s.Info().Network); err != nil {
			_ = s.inst.Destroy(rctx)
			return fmt.Errorf("the sandbox's own network policy could not be restored after this execution (%v); the sandbox was stopped", err)
		}
		return nil
	}, nil
}

// samePolicy reports whether a and b are the same policy (whitelists
// compared as sets).
func samePolicy(a, b api.NetworkPolicy) bool {
	if a.Policy != b.Policy {
		return false
	}
	x, y := slices.Clone(a.Whitelist), slices.Clone(b.Whitelist)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// SetNetwork changes a running sandbox's own network policy (until the next
// change), waiting for its running executions to finish first. Backends
// that cannot change a running sandbox's network, and sandboxes created
// with deny (no interface to open), refuse with api.ErrUnsupported; the
// policy is then unchanged.
func (m *Manager) SetNetwork(ctx context.Context, id string, pol api.NetworkPolicy) (api.SandboxInfo, error) {
	if err := config.ValidateNetworkPolicy(pol); err != nil {
		return api.SandboxInfo{}, err
	}
	s, err := m.Get(ctx, id)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	nc, ok := s.inst.(backend.NetworkController)
	if !ok {
		info := s.Info()
		if samePolicy(pol, info.Network) {
			return info, nil
		}
		return api.SandboxInfo{}, api.Errorf(api.ErrUnsupported, "the %s backend cannot change a running sandbox's network (its policy is %q); create a sandbox with policy %q instead", info.Backend, info.Network.Policy, pol.Policy)
	}
	release, err := s.net.acquire(ctx, true)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	defer release()
	if err := nc.SetNetwork(ctx, pol); err != nil {
		return api.SandboxInfo{}, err
	}
	s.mu.Lock()
	s.info.Network = pol
	owner := s.info.Owner
	s.mu.Unlock()
	m.saveRecord(s)
	m.emit(api.EventSandboxNetworkSet, id, owner, map[string]string{"network": pol.Policy, "whitelist": strings.Join(pol.Whitelist, ",")})
	return s.Info(), nil
}

// oomCheck tells a kernel killed by the sandbox's memory limit from one
// that died otherwise, by the memory cgroup's OOM-kill count before and
// after the cell, and says so in the cell's DeadKernelError (streamed and
// returned). A nil *oomCheck (no memory limit, or a backend without a
// memory cgroup) changes nothing.
type oomCheck struct {
	c      backend.OOMCounter
	before uint64
	limit  int

	once sync.Once
	hit  bool
}

func (s *Sandbox) startOOMCheck() *oomCheck {
	c, ok := s.inst.(backend.OOMCounter)
	limit := s.Info().Limits.MemoryMB
	if !ok || limit == 0 {
		return nil
	}
	n, err := c.OOMKills()
	if err != nil {
		return nil
	}
	return &oomCheck{c: c, before: n, limit: limit}
}

// killed reports whether the OOM killer struck since the cell started. The
// kernel counts the kill before the process dies, so by the time the agent
// reports the kernel dead the count has moved.
func (o *oomCheck) killed() bool {
	o.once.Do(func() {
		n, err := o.c.OOMKills()
		o.hit = err == nil && n > o.before
	})
	return o.hit
}

const oomPrefix = "memory limit reached"

func (o *oomCheck) rewrite(e *api.ExecutionError) bool {
	if e == nil || e.Name != api.ErrNameDeadKernel || !o.killed() {
		return false
	}
	if !strings.HasPrefix(e.Value, oomPrefix) {
		e.Value = fmt.Sprintf("%s: the sandbox's memory limit of %d MiB (memory_mb) was reached and the kernel was killed by the out-of-memory killer; the context's state is lost (%s)", oomPrefix, o.limit, e.Value)
	}
	return true
}

func (o *oomCheck) wrap(fn func(api.ExecEvent)) func(api.ExecEvent) {
	if o == nil || fn == nil {
		return fn
	}
	return func(ev api.ExecEvent) {
		if ev.Error != nil && ev.Error.Name == api.ErrNameDeadKernel {
			e := *ev.Error
			if o.rewrite(&e) {
				ev.Error, ev.OOMKilled = &e, true
			}
		}
		fn(ev)
	}
}

func (o *oomCheck) finish(exec *api.Execution) {
	if o == nil || exec == nil || exec.Error == nil {
		return
	}
	if o.rewrite(exec.Error) {
		exec.OOMKilled = true
	}
}
