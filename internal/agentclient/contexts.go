package agentclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Execute runs code and returns the whole Execution, calling onEvent (when
// non-nil) for every event as it arrives. A Python error, timeout or dead kernel
// is in Execution.Error; err is only for failures of the machinery: a
// "failure" event becomes an *api.Error with its code, and a stream that ends
// without its "end" event (the sandbox went away) an error wrapping
// api.ErrUnavailable, each with the partial Execution.
func (c *Client) Execute(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	exec := &api.Execution{Results: []api.Result{}, Logs: api.Logs{Stdout: []string{}, Stderr: []string{}}}
	err := c.ExecuteStream(ctx, req, func(ev api.ExecEvent) {
		exec.Apply(ev)
		if onEvent != nil {
			onEvent(ev)
		}
	})
	return exec, err
}

// ExecuteStream runs code and passes every event to onEvent (not nil) as it
// arrives, keeping none of them: Execute is the same with the events folded
// into an Execution. Its errors are Execute's.
func (c *Client) ExecuteStream(ctx context.Context, req api.ExecuteRequest, onEvent func(api.ExecEvent)) error {
	ended := false
	var failure *api.Error
	err := c.stream(ctx, http.MethodPost, "/execute", nil, req, func(line []byte) error {
		var ev api.ExecEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("agent: bad execution event: %w", err)
		}
		if ev.Type == api.EventFailure {
			failure = &api.Error{Code: api.CodeInternal, Message: "execution failed"}
			if ev.Error != nil {
				failure = &api.Error{Code: ev.Error.Name, Message: ev.Error.Value}
			}
			return nil
		}
		if ev.Type == api.EventEnd {
			ended = true
		}
		onEvent(ev)
		return nil
	})
	if err != nil {
		return err
	}
	if failure != nil {
		return failure
	}
	if !ended {
		return fmt.Errorf("agent: execution stream ended early: %w", api.ErrUnavailable)
	}
	return nil
}

// CreateContext creates a code context with a fresh kernel.
func (c *Client) CreateContext(ctx context.Context, req api.CreateContextRequest) (api.Context, error) {
	var out api.Context
	err := c.do(ctx, http.MethodPost, "/contexts", nil, req, &out)
	return out, err
}

// ListContexts lists the code contexts, the default one first.
func (c *Client) ListContexts(ctx context.Context) ([]api.Context, error) {
	var out []api.Context
	err := c.do(ctx, http.MethodGet, "/contexts", nil, nil, &out)
	return out, err
}

// RestartContext replaces a context's kernel with a fresh one; its state is lost.
func (c *Client) RestartContext(ctx context.Context, id string) (api.Context, error) {
	var out api.Context
	err := c.do(ctx, http.MethodPost, "/contexts/"+url.PathEscape(id)+"/restart", nil, nil, &out)
	return out, err
}

// ContextReady waits until a context's engine runs, starting one if it has
// none; it runs no code.
func (c *Client) ContextReady(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/contexts/"+url.PathEscape(id)+"/ready", nil, nil, nil)
}

// DeleteContext stops a context's kernel and forgets it.
func (c *Client) DeleteContext(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/contexts/"+url.PathEscape(id), nil, nil, nil)
}
