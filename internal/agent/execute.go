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
	"github.com/ds-sandbox/ds-sandbox/internal/eventstream"
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

// DefaultMaxOutputBytes is the default bound of one execution's stdout and
// stderr (Config.MaxOutputBytes).
const DefaultMaxOutputBytes = 16 << 20

// Output bounds of one execution. Past Config.MaxOutputBytes the cell's stdout
// and stderr are dropped (a marker says how much); a result larger than
// maxResultSize is replaced by a notice; and when the client reads slower than
// the cell produces, at most eventstream.ExecMaxQueued bytes wait for it
// before events are dropped (a client that stops reading for
// eventstream.ExecWriteTimeout is cut and the cell interrupted). Together they
// keep the agent's (and every client's) memory bounded whatever a cell
// prints, and the cell's timeout runs regardless of the reader.
const (
	maxResultSize   = 32 << 20
	maxResultsTotal = 128 << 20
	// maxTimeout bounds timeout_ms.
	maxTimeout = 24 * time.Hour
)

// handleExecute runs one cell and streams its events as NDJSON. Validation
// errors come back as an api.Error before the stream starts; once it has
// started, everything (a timeout, a dead kernel, a failure of ours) is an
// event.
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
	if req.TimeoutMs < 0 || req.TimeoutMs > maxTimeout.Milliseconds() {
		writeError(w, api.Errorf(api.ErrInvalid, "timeout_ms %d must be between 0 (the default) and %d", req.TimeoutMs, maxTimeout.Milliseconds()))
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
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	newNDJSON(w)
	// The client is gone or stalled past eventstream.ExecWriteTimeout: stop
	// the cell as if it hung up.
	out := eventstream.New(w, eventstream.ExecOptions(func(error) { cancel() }))
	b := &outputBounds{q: out, maxStream: s.cfg.MaxOutputBytes}
	count, failure := s.ctxs.execute(ctx, c, req, timeout, b.send)
	b.finish()
	if failure != nil {
		out.Send(api.ExecEvent{Type: api.EventFailure, Error: &api.ExecutionError{Name: api.CodeOf(failure), Value: failure.Error()}})
	} else {
		out.Send(api.ExecEvent{Type: api.EventEnd, ExecutionCount: count})
	}
	_ = out.Close()
}

// execute runs req in c, sending every event through send, and returns the
// execution count, or a failure of ours (never of the user's code).
func (t *contextTable) execute(ctx context.Context, c *codeContext, req api.ExecuteRequest, timeout time.Duration, send func(api.ExecEvent)) (int, error) {
	if err := lockCtx(ctx, &c.mu); err != nil {
		return 0, api.Errorf(api.ErrUnavailable, "the request ended while waiting for the previous cell of context %s: %v", c.info.ID, err)
	}
	defer c.mu.Unlock()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	k, err := t.ensureKernel(startCtx, c)
	cancel()
	if err != nil {
		return 0, err
	}
	c.kmu.Lock()
	lost := c.lost
	c.lost = false
	c.kmu.Unlock()
	if lost {
		send(api.ExecEvent{Type: api.EventNotice, Text: "the previous kernel of context " + c.info.ID + " died; it was restarted and its earlier state is gone"})
	}
	if len(req.Envs) > 0 {
		if _, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: envCode(req.Envs, false), Silent: true}, nil); err != nil {
			return 0, api.Errorf(api.ErrUnavailable, "setting the cell's envs: %v", err)
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = k.Execute(rctx, jupyter.ExecuteRequest{Code: envCode(nil, true), Silent: true}, nil)
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
		c.kmu.Lock()
		why := c.killedFor
		if c.kernel == k {
			c.kernel = nil
			c.lost = true
		}
		c.kmu.Unlock()
		switch {
		case why != "":
			send(errorEvent(api.ErrNameDeadKernel, why+"; its state is gone"))
		case ectx.Err() != nil && ctx.Err() == nil:
			send(errorEvent(api.ErrNameTimeout, fmt.Sprintf("execution exceeded the timeout of %s and the kernel did not stop on interrupt; it was killed, so the next execution starts a fresh context", timeout)))
		default:
			send(errorEvent(api.ErrNameDeadKernel, "the kernel died while running this cell ("+err.Error()+"); the next execution starts a fresh context"))
		}
	case errors.Is(err, jupyter.ErrInterrupted):
		if ctx.Err() == nil {
			send(errorEvent(api.ErrNameTimeout, fmt.Sprintf("execution exceeded the timeout of %s and was interrupted; the context and its earlier state are kept", timeout)))
		}
	case ctx.Err() != nil:
		return count, api.Errorf(api.ErrUnavailable, "the request ended before the cell started: %v", ctx.Err())
	default:
		return count, api.Errorf(api.ErrUnavailable, "execute: %v", err)
	}
	return count, nil
}

// outputBounds applies the per-execution output limits to events on their
// way to the queue.
type outputBounds struct {
	q             *eventstream.Writer[api.ExecEvent]
	maxStream     int64
	streamBytes   int64
	droppedStream int64
	resultBytes   int
}

func (b *outputBounds) send(ev api.ExecEvent) {
	switch ev.Type {
	case api.EventStdout, api.EventStderr:
		if b.streamBytes >= b.maxStream {
			b.droppedStream += int64(len(ev.Text))
			return
		}
		if room := b.maxStream - b.streamBytes; int64(len(ev.Text)) > room {
			b.droppedStream += int64(len(ev.Text)) - room
			ev.Text = ev.Text[:room]
		}
		b.streamBytes += int64(len(ev.Text))
	case api.EventResult:
		n := resultSize(ev.Result)
		if n > maxResultSize || b.resultBytes+n > maxResultsTotal {
			b.q.Send(api.ExecEvent{Type: api.EventNotice, Truncated: true, Text: fmt.Sprintf("a %s result of %d bytes was dropped: results are limited to %d MiB each and %d MiB per execution",
				strings.Join(ev.Result.Formats(), "/"), n, maxResultSize>>20, maxResultsTotal>>20)})
			return
		}
		b.resultBytes += n
	}
	b.q.Send(ev)
}

// finish reports what the bounds dropped.
func (b *outputBounds) finish() {
	if b.droppedStream > 0 {
		b.q.Send(api.ExecEvent{Type: api.EventNotice, Truncated: true, Text: fmt.Sprintf("output truncated: %d bytes of stdout/stderr beyond the limit of %s per execution (max_output_bytes) were dropped", b.droppedStream, byteSize(b.maxStream))})
	}
	if d := b.q.Dropped(); d > 0 {
		b.q.Send(api.ExecEvent{Type: api.EventNotice, Truncated: true, Text: fmt.Sprintf("%d events were dropped because the client read them slower than the cell produced them", d)})
	}
}

func resultSize(r *api.Result) int {
	if r == nil {
		return 0
	}
	n := len(r.Text) + len(r.HTML) + len(r.Markdown) + len(r.SVG) + len(r.PNG) + len(r.JPEG) + len(r.PDF) + len(r.LaTeX) + len(r.JSON) + len(r.JavaScript)
	for _, v := range r.Other {
		n += len(v)
	}
	return n
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

// byteSize formats n bytes for messages: "16 MiB", "1000 bytes".
func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
