package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateSandboxRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	sbx, err := s.m.Create(r.Context(), req)
	if err != nil {
		return err
	}
	info := sbx.Info()
	rec := auditRecord(r)
	rec.SandboxID = info.SandboxID
	rec.Detail = map[string]string{"backend": info.Backend, "template": info.TemplateID, "network": info.Network.Policy, "workspace_id": info.WorkspaceID}
	if s.opt.Metrics != nil {
		s.opt.Metrics.KernelStarted()
	}
	httpjson.Write(w, http.StatusCreated, info)
	return nil
}

// listSandboxes filters by ?state= (only "running" sandboxes exist) and
// repeated ?metadata=key=value.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	match := map[string]string{}
	for _, kv := range q["metadata"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return api.Errorf(api.ErrInvalid, "metadata filter %q: want key=value", kv)
		}
		match[k] = v
	}
	list := s.m.List(r.Context(), match)
	if st := q.Get("state"); st != "" && st != api.StateRunning {
		list = list[:0]
	}
	httpjson.Write(w, http.StatusOK, list)
	return nil
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) error {
	sbx, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, sbx.Info())
	return nil
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) error {
	var req api.SetTimeoutRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	info, err := s.m.SetTimeout(r.Context(), r.PathValue("id"), manager.Seconds(int64(req.TimeoutSeconds)))
	if err != nil {
		return err
	}
	auditRecord(r).Detail = map[string]string{"timeout": strconv.Itoa(req.TimeoutSeconds)}
	httpjson.Write(w, http.StatusOK, info)
	return nil
}

// setNetwork changes the sandbox's own network policy.
func (s *Server) setNetwork(w http.ResponseWriter, r *http.Request) error {
	var req api.NetworkPolicy
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	auditRecord(r).Detail = map[string]string{"network": req.Policy, "whitelist": strings.Join(req.Whitelist, ",")}
	info, err := s.m.SetNetwork(r.Context(), r.PathValue("id"), req)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, info)
	return nil
}

func (s *Server) killSandbox(w http.ResponseWriter, r *http.Request) error {
	if err := s.m.Kill(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 10000 {
		return 0, api.Errorf(api.ErrInvalid, "limit %q: want 1..10000", v)
	}
	return n, nil
}

func (s *Server) sandboxEvents(w http.ResponseWriter, r *http.Request) error {
	n, err := queryLimit(r)
	if err != nil {
		return err
	}
	evs, err := s.m.SandboxEvents(r.Context(), r.PathValue("id"), n)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, nonNil(evs))
	return nil
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	n, err := queryLimit(r)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, nonNil(s.m.Events(r.Context(), r.URL.Query().Get("sandbox_id"), n)))
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type prepareRequest struct {
	Name     string `json:"name"`
	Strategy string `json:"strategy,omitempty"`
}

func (s *Server) prepareDataset(w http.ResponseWriter, r *http.Request) error {
	var req prepareRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	p, err := s.m.PrepareDataset(r.Context(), r.PathValue("id"), req.Name, req.Strategy)
	if err != nil {
		return err
	}
	auditRecord(r).Detail = map[string]string{"dataset": req.Name, "strategy": req.Strategy}
	httpjson.Write(w, http.StatusOK, map[string]string{"path": p})
	return nil
}
