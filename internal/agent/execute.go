package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

func sortContexts(cs []api.Context) {
	slices.SortFunc(cs, func(a, b api.Context) int {
		switch {
		case a.ID == b.ID:
			return 0
		case a.ID == DefaultContextID:
			return -1
		case b.ID == DefaultContextID:
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// handleExecute runs one cell and streams its events as NDJSON. Validation
// errors come back as an api.Error before the stream starts; once the stream
// has started, everything (including a timeout or a dead kernel) is an event.
func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request) {
	var req api.ExecuteRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if strings.TrimSpace(req.Code) == "" {
		writeError(w, api.Errorf(api.ErrInvalid, "code is empty"))
		return
	}
	if req.TimeoutMs < 0 {
		writeError(w, api.Errorf(api.ErrInvalid, "timeout_ms %d is negative", req.TimeoutMs))
		return
	}
	if err := validateEnvs(req.Envs); err != nil {
		writeError(w, err)
		return
	}
	c, err := s.ctxs.get(req.ContextID)
	if err != nil {
		writeError(w, err)
		return
	}
	timeout := s.cfg.DefaultTimeout
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	out := newNDJSON(w)
	// The client may hang up; events then go nowhere, but the cell is still
	// interrupted through the request context.
	send := func(ev api.ExecEvent) { _ = out.Send(ev) }
	count := s.ctxs.execute(r.Context(), c, req, timeout, send)
	send(api.ExecEvent{Type: api.EventEnd, ExecutionCount: count})
}

// execute runs req in c, sending every event through send, and returns the
// execution count.
func (t *contextTable) execute(ctx context.Context, c *codeContext, req api.ExecuteRequest, timeout time.Duration, send func(api.ExecEvent)) int {
	if err := lockCtx(ctx, &c.mu); err != nil {
		send(errorEvent("ContextBusyError", "the request ended while waiting for the previous cell of this context: "+err.Error()))
		return 0
	}
	defer c.mu.Unlock()
	if c.deleted {
		send(errorEvent("ContextNotFoundError", "context "+c.info.ID+" was deleted"))
		return 0
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err := t.ensureKernel(startCtx, c)
	cancel()
	if err != nil {
		send(errorEvent("KernelStartError", err.Error()))
		return 0
	}
	if c.lost {
		c.lost = false
		send(api.ExecEvent{Type: api.EventNotice, Text: "the previous kernel of context " + c.info.ID + " died; it was restarted and its earlier state is gone"})
	}
	k := c.kernel
	if len(req.Envs) > 0 {
		if _, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: envCode(req.Envs, false), Silent: true}, nil); err != nil {
			send(errorEvent("EnvironmentError", "setting envs: "+err.Error()))
			return 0
		}
		defer func() {
			if c.kernel == k {
				rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, _ = k.Execute(rctx, jupyter.ExecuteRequest{Code: envCode(nil, true), Silent: true}, nil)
			}
		}()
	}

	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := k.Execute(ectx, jupyter.ExecuteRequest{Code: req.Code, StoreHistory: true}, func(o jupyter.Output) {
		if ev, ok := outputEvent(o); ok {
			send(ev)
		}
	})
	count := 0
	if reply != nil {
		count = reply.ExecutionCount
	}
	switch {
	case err == nil:
	case errors.Is(err, jupyter.ErrDead):
		_ = k.Close()
		c.kernel = nil
		c.lost = true
		if errors.Is(err, jupyter.ErrInterrupted) || ectx.Err() != nil {
			send(errorEvent(api.ErrNameTimeout, fmt.Sprintf("execution exceeded the timeout of %s and the kernel did not stop on interrupt; it was killed, so the next execution starts a fresh context", timeout)))
		} else {
			send(errorEvent(api.ErrNameDeadKernel, "the kernel died while running this cell ("+err.Error()+"); the next execution starts a fresh context"))
		}
	case errors.Is(err, jupyter.ErrInterrupted):
		if ctx.Err() == nil {
			send(errorEvent(api.ErrNameTimeout, fmt.Sprintf("execution exceeded the timeout of %s and was interrupted; the context and its earlier state are kept", timeout)))
		}
	default:
		send(errorEvent("ExecutionError", err.Error()))
	}
	return count
}

func errorEvent(name, value string) api.ExecEvent {
	return api.ExecEvent{Type: api.EventError, Error: &api.ExecutionError{Name: name, Value: value}}
}

// outputEvent converts one kernel output into a stream event.
func outputEvent(o jupyter.Output) (api.ExecEvent, bool) {
	switch o.Type {
	case "stream":
		typ := api.EventStdout
		if o.Name == "stderr" {
			typ = api.EventStderr
		}
		return api.ExecEvent{Type: typ, Text: o.Text}, true
	case "execute_result", "display_data", "update_display_data":
		r := resultFromBundle(o.Data)
		r.IsMainResult = o.Type == "execute_result"
		r.DisplayID = o.DisplayID
		return api.ExecEvent{Type: api.EventResult, Result: &r}, true
	case "error":
		tb := make([]string, len(o.Traceback))
		for i, l := range o.Traceback {
			tb[i] = stripANSI(l)
		}
		return api.ExecEvent{Type: api.EventError, Error: &api.ExecutionError{
			Name: o.EName, Value: stripANSI(o.EValue), Traceback: strings.Join(tb, "\n"),
		}}, true
	}
	return api.ExecEvent{}, false
}

// resultFromBundle maps a Jupyter MIME bundle onto api.Result. String-valued
// types become strings; application/json stays raw JSON; anything else goes to
// Other unchanged.
func resultFromBundle(data map[string]json.RawMessage) api.Result {
	var r api.Result
	str := func(raw json.RawMessage) (string, bool) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, true
		}
		// Some kernels send multi-line text as a list of strings.
		var lines []string
		if json.Unmarshal(raw, &lines) == nil {
			return strings.Join(lines, ""), true
		}
		return "", false
	}
	for mime, raw := range data {
		var dst *string
		switch mime {
		case "text/plain":
			dst = &r.Text
		case "text/html":
			dst = &r.HTML
		case "text/markdown":
			dst = &r.Markdown
		case "image/svg+xml":
			dst = &r.SVG
		case "image/png":
			dst = &r.PNG
		case "image/jpeg":
			dst = &r.JPEG
		case "application/pdf":
			dst = &r.PDF
		case "text/latex":
			dst = &r.LaTeX
		case "application/javascript", "text/javascript":
			dst = &r.JavaScript
		case "application/json":
			r.JSON = raw
			continue
		}
		if dst != nil {
			if s, ok := str(raw); ok {
				if mime == "image/png" || mime == "image/jpeg" {
					s = strings.TrimSpace(s)
				}
				*dst = s
				continue
			}
		}
		if r.Other == nil {
			r.Other = make(map[string]json.RawMessage)
		}
		r.Other[mime] = raw
	}
	return r
}
