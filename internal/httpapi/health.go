package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
	"github.com/ds-sandbox/ds-sandbox/internal/workspace"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

type backendStatus struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Enforces says what the backend enforces, so operators know what a
	// sandbox on it is protected by.
	Enforces []string `json:"enforces"`
}

// readyz reports each backend's availability (503 when one is unusable),
// which backend serves requests that name none, and why, the default code
// engine (503 when this build cannot run it), and the warm pools (a failing
// pool does not make the daemon unready: creates start cold).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out := map[string]backendStatus{}
	ready := true
	for _, name := range s.m.BackendNames() {
		b, _ := s.m.Backend(name)
		st := backendStatus{Ready: true, Enforces: s.enforces(b)}
		if err := b.Available(ctx); err != nil {
			st.Ready, st.Reason = false, err.Error()
			ready = false
		}
		out[name] = st
	}
	eng := s.m.DefaultEngine()
	ready = ready && eng.Ready
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	httpjson.Write(w, status, map[string]any{"ready": ready, "backends": out, "default_backend": s.m.DefaultChoice(), "default_engine": eng, "pools": s.m.PoolStats()})
	return nil
}

// enforces lists what a sandbox on b is protected by: the backend's own
// list, plus what the manager and the agent enforce everywhere.
func (s *Server) enforces(b backend.Backend) []string {
	var out []string
	if e, ok := b.(backend.Enforcer); ok {
		out = append(out, e.Enforces()...)
	}
	cfg := s.m.Config()
	out = append(out,
		fmt.Sprintf("max_output_bytes: stdout/stderr per execution (default %d), the rest dropped and marked truncated", cfg.MaxOutputBytes),
		fmt.Sprintf("lifetime: killed when its timeout passes (default %ds, at most %ds)", cfg.SandboxTimeoutSec, cfg.MaxSandboxTimeoutSec))
	if err := workspace.QuotaSupported(); err == nil {
		out = append(out, "disk_quota_mb: the workspace is a loop-mounted ext4 image of that size")
	} else {
		out = append(out, "refused: disk_quota_mb ("+err.Error()+")")
	}
	return out
}
