package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
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
		writeJSON(w, http.StatusOK, exec)
		return nil
	}
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	started := false
	exec, err := sbx.Execute(r.Context(), req, func(ev api.ExecEvent) {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
		if enc.Encode(ev) == nil {
			_ = rc.Flush()
		}
	})
	s.observeExecution(exec, err, start)
	rec.SetExecution(exec)
	if err != nil && r.Context().Err() != nil && s.isShuttingDown() {
		err = api.Errorf(api.ErrUnavailable, "the daemon is shutting down; the execution was interrupted")
	}
	if err != nil && started {
		// The stream already began: say what happened in-band, as the agent
		// does, with the error's stable code.
		_ = enc.Encode(api.ExecEvent{Type: api.EventFailure, Error: &api.ExecutionError{Name: api.CodeOf(err), Value: err.Error()}})
		_ = rc.Flush()
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
