package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/eventstream"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// execute runs a cell. By default the response is the NDJSON event stream of
// the agent, passed through as events arrive (with network_denied events of
// ours among them); with ?wait=true it is the whole api.Execution. A
// per-execution network policy (the seed's run_code arguments) is applied
// by the manager for that cell, or refused when the backend cannot.
func (s *Server) execute(w http.ResponseWriter, r *http.Request) error {
	var req api.ExecuteRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	rec := auditRecord(r)
	rec.SetCode(req.Code, s.cfg.AuditLogCode)
	sbx, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if req.Network != nil {
		rec.Detail = map[string]string{"network": req.Network.Policy}
	}
	start := time.Now()
	if r.URL.Query().Get("wait") == "true" {
		exec, err := sbx.Execute(r.Context(), req, nil)
		s.observeExecution(exec, err, start)
		rec.SetExecution(exec)
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, exec)
		return nil
	}
	// The stream goes through a bounded queue, so a slow client never holds
	// back the agent's stream (output is dropped for it, with a notice, as
	// the agent does), and a client that stops reading for
	// Options.StallTimeout is cut and its cell interrupted.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	opts := eventstream.ExecOptions(func(error) { cancel() })
	opts.WriteTimeout = s.opt.StallTimeout
	out := eventstream.New(w, opts)
	var end *api.ExecEvent // held back so a notice of ours comes before it
	// Stream, not Execute: the events go out as they come and only the
	// cell's summary (error, notices, counts) is kept, for the metrics and
	// the audit record.
	exec, err := sbx.Stream(ctx, req, func(ev api.ExecEvent) {
		if ev.Type == api.EventEnd {
			end = &ev
			return
		}
		out.Send(ev)
	})
	if d := out.Dropped(); d > 0 {
		out.Send(api.ExecEvent{Type: api.EventNotice, Truncated: true, Text: fmt.Sprintf("%d events were dropped because the client read them slower than the cell produced them", d)})
	}
	if err != nil && r.Context().Err() != nil && out.Started() && !s.isShuttingDown() {
		// net/http cancels the request when the connection breaks, which a
		// stalled client's does inside the write that timed out: let that
		// write end, so a stall is told apart from a client that went away.
		// (Not on shutdown: the failure event below still has to go out.)
		_ = out.Close()
	}
	switch {
	case errors.Is(out.Err(), eventstream.ErrStalled):
		err = api.Errorf(api.ErrCancelled, "the client stopped reading the stream for %s: it was cut and the cell interrupted (%v)", s.opt.StallTimeout, out.Err())
	case err != nil && r.Context().Err() != nil && s.isShuttingDown():
		err = api.Errorf(api.ErrUnavailable, "the daemon is shutting down; the execution was interrupted")
	case out.Err() != nil:
		err = api.Errorf(api.ErrCancelled, "the client went away during the execution (%v)", out.Err())
	case err != nil && r.Context().Err() != nil:
		err = api.Errorf(api.ErrCancelled, "the client went away during the execution (%v)", err)
	}
	if err == nil && end != nil {
		out.Send(*end)
	}
	s.observeExecution(exec, err, start)
	rec.SetExecution(exec)
	if err != nil && out.Started() {
		// The stream already began: say what happened in-band, as the agent
		// does, with the error's stable code.
		out.Send(api.ExecEvent{Type: api.EventFailure, Error: &api.ExecutionError{Name: api.CodeOf(err), Value: err.Error()}})
	}
	if werr := out.Close(); werr != nil && err == nil {
		err = api.Errorf(api.ErrCancelled, "the client went away before the end of the stream (%v)", werr)
	}
	if err != nil && out.Started() {
		return fmt.Errorf("execute: %w", err)
	}
	return err
}

func (s *Server) observeExecution(exec *api.Execution, err error, start time.Time) {
	if s.opt.Metrics == nil {
		return
	}
	outcome := "ok"
	switch {
	case errors.Is(err, api.ErrCancelled):
		outcome = "cancelled"
	case err != nil:
		outcome = "failed"
	case exec.Error == nil:
	case exec.Error.Name == api.ErrNameTimeout:
		outcome = "timeout"
	case exec.OOMKilled:
		outcome = "oom"
	case exec.Error.Name == api.ErrNameDeadKernel:
		outcome = "dead_kernel"
	case exec.Error.Name == api.ErrNameScanBlocked:
		outcome = "blocked"
	default:
		outcome = "error"
	}
	s.opt.Metrics.Execution(outcome, time.Since(start))
	if exec != nil {
		for _, n := range exec.Notices {
			if strings.Contains(n, "restarted") {
				s.opt.Metrics.KernelRestarted()
			}
		}
	}
}

func (s *Server) isShuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shuttingDown
}
