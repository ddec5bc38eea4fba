package client

import (
	"context"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// RunOption configures one RunCode call.
type RunOption func(*runOptions)

type runOptions struct {
	req      api.ExecuteRequest
	onStdout func(string)
	onStderr func(string)
	onResult func(Result)
	onError  func(ExecutionError)
}

// InContext runs the code in a code context made by CreateCodeContext instead
// of the default one.
func InContext(c CodeContext) RunOption { return func(o *runOptions) { o.req.ContextID = c.ID } }

// WithTimeout bounds the cell: past it the cell is interrupted, the Execution
// carries a TimeoutError, and the context's earlier state survives.
func WithTimeout(d time.Duration) RunOption {
	return func(o *runOptions) {
		o.req.TimeoutMs = d.Milliseconds()
		if d > 0 && o.req.TimeoutMs == 0 {
			o.req.TimeoutMs = 1
		}
	}
}

// WithNetwork runs this cell under its own network policy (the seed's
// run_code allow_internet / network_policy / network_whitelist): the
// sandbox's network changes for the cell and is restored after it, and the
// sandbox's other executions wait meanwhile. Where a running sandbox's
// network cannot change (local; docker on Docker's own networks; any
// sandbox created with deny, which has no interface to open) it is refused
// unless it is the sandbox's own policy.
func WithNetwork(p NetworkPolicy) RunOption { return func(o *runOptions) { o.req.Network = &p } }

// WithEnvs sets environment variables for this cell only.
func WithEnvs(envs map[string]string) RunOption { return func(o *runOptions) { o.req.Envs = envs } }

// WithScannerMode makes the code scanner stricter for this cell ("warn" or
// "block"); a mode looser than the sandbox's is refused with ErrPermission.
func WithScannerMode(mode string) RunOption {
	return func(o *runOptions) { o.req.ScannerMode = mode }
}

// OnStdout is called with each stdout chunk as the cell prints it.
func OnStdout(fn func(string)) RunOption { return func(o *runOptions) { o.onStdout = fn } }

// OnStderr is called with each stderr chunk as the cell prints it.
func OnStderr(fn func(string)) RunOption { return func(o *runOptions) { o.onStderr = fn } }

// OnResult is called with each rich result as the cell produces it.
func OnResult(fn func(Result)) RunOption { return func(o *runOptions) { o.onResult = fn } }

// OnError is called when the cell raises (or times out, or kills its kernel).
func OnError(fn func(ExecutionError)) RunOption { return func(o *runOptions) { o.onError = fn } }

// RunCode runs Python code in the sandbox, like a Jupyter cell: state persists
// between calls of one context. A Python exception, a timeout or a dead kernel
// is reported in Execution.Error; err is non-nil only when ds-sandbox itself
// failed (bad input, sandbox gone). The code scanner's findings (scanner mode
// warn or block) are in Execution.Findings; a cell it blocks is not run and
// its Error is named ErrNameScanBlocked.
func (s *Sandbox) RunCode(ctx context.Context, code string, opts ...RunOption) (*Execution, error) {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	o.req.Code = code
	if o.req.TimeoutMs < 0 {
		return nil, api.Errorf(api.ErrInvalid, "timeout is negative")
	}
	return s.cp.Execute(ctx, s.ID, s.agent, o.req, func(ev api.ExecEvent) {
		switch {
		case ev.Type == api.EventStdout && o.onStdout != nil:
			o.onStdout(ev.Text)
		case ev.Type == api.EventStderr && o.onStderr != nil:
			o.onStderr(ev.Text)
		case ev.Type == api.EventResult && o.onResult != nil && ev.Result != nil:
			o.onResult(*ev.Result)
		case ev.Type == api.EventError && o.onError != nil && ev.Error != nil:
			o.onError(*ev.Error)
		}
	})
}

// CreateCodeContext starts a new code context (a fresh kernel) with cwd as
// its working directory ("" = the workdir).
func (s *Sandbox) CreateCodeContext(ctx context.Context, cwd string) (CodeContext, error) {
	return s.agent.CreateContext(ctx, api.CreateContextRequest{Language: "python", Cwd: cwd})
}

// ListCodeContexts lists the sandbox's code contexts, the default one first.
func (s *Sandbox) ListCodeContexts(ctx context.Context) ([]CodeContext, error) {
	return s.agent.ListContexts(ctx)
}

// RestartCodeContext gives the context a fresh kernel; its state is lost.
func (s *Sandbox) RestartCodeContext(ctx context.Context, c CodeContext) error {
	_, err := s.agent.RestartContext(ctx, c.ID)
	return err
}

// RemoveCodeContext stops a context's kernel and forgets the context.
func (s *Sandbox) RemoveCodeContext(ctx context.Context, c CodeContext) error {
	return s.agent.DeleteContext(ctx, c.ID)
}
