package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

type backendStatus struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Enforces says what the backend enforces, so operators know what a
	// sandbox on it is protected by.
	Enforces []string `json:"enforces"`
}

// readyz reports each backend's availability; 503 when one is unusable.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out := map[string]backendStatus{}
	ready := true
	for _, name := range s.m.BackendNames() {
		b, _ := s.m.Backend(name)
		st := backendStatus{Ready: true, Enforces: []string{}}
		if e, ok := b.(backend.Enforcer); ok {
			st.Enforces = e.Enforces()
		}
		if err := b.Available(ctx); err != nil {
			st.Ready, st.Reason = false, err.Error()
			ready = false
		}
		out[name] = st
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ready, "backends": out})
	return nil
}
