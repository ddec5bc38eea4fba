package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// environ is the environment of kernels and commands (Config.Env), which
// POST /env can extend after the agent started: a sandbox taken from a warm
// pool gets its create request's envs that way, without a restart.
type environ struct {
	mu   sync.RWMutex
	list []string
}

// get returns a copy of the environment.
func (e *environ) get() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return slices.Clone(e.list)
}

// set adds envs, replacing variables of the same names.
func (e *environ) set(envs map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = slices.DeleteFunc(e.list, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ok := envs[k]
		return ok
	})
	for k, v := range envs {
		e.list = append(e.list, k+"="+v)
	}
}

// setEnvCode returns code that sets envs in os.environ for good.
func setEnvCode(envs map[string]string) string {
	b, _ := json.Marshal(envs)
	return "import os as _ds_os, json as _ds_json, base64 as _ds_b64\n" +
		"_ds_os.environ.update(_ds_json.loads(_ds_b64.b64decode('" + base64.StdEncoding.EncodeToString(b) + "')))\n" +
		"del _ds_os, _ds_json, _ds_b64\n"
}

// setEnv extends the environment of commands and kernels started from now
// on, then sets envs in every running kernel. Each context's lock is taken
// first, so a kernel that is starting (the default one, right after the
// agent started) either read the new environment or gets the cell after
// it is up. A context without a kernel gets the new environment when its
// kernel starts. It answers api.ErrUnavailable when the default context's
// kernel is not running: a warm pool waits on this route for a new
// sandbox's kernel, and drops a sandbox whose kernel died instead of
// handing it out.
func (s *Server) setEnv(ctx context.Context, envs map[string]string) error {
	if err := validateEnvs(envs); err != nil {
		return err
	}
	s.env.set(envs)
	s.ctxs.mu.Lock()
	ctxs := make([]*codeContext, 0, len(s.ctxs.ctxs))
	for _, c := range s.ctxs.ctxs {
		ctxs = append(ctxs, c)
	}
	s.ctxs.mu.Unlock()
	for _, c := range ctxs {
		if err := lockCtx(ctx, &c.mu); err != nil {
			return api.Errorf(api.ErrUnavailable, "setting envs: waiting for context %s: %v", c.info.ID, err)
		}
		c.kmu.Lock()
		k := c.kernel
		c.kmu.Unlock()
		var err error
		alive := false
		if k != nil {
			select {
			case <-k.Done(): // its next kernel reads the new environment
			default:
				alive = true
				if len(envs) > 0 {
					_, err = k.Execute(ctx, jupyter.ExecuteRequest{Code: setEnvCode(envs), Silent: true}, nil)
				}
			}
		}
		if err == nil && !alive && c.info.ID == DefaultContextID {
			err = errors.New("its kernel is not running (it failed to start or died)")
		}
		c.mu.Unlock()
		if err != nil {
			return api.Errorf(api.ErrUnavailable, "setting envs in context %s: %v", c.info.ID, err)
		}
	}
	return nil
}

func (s *Server) registerEnvRoutes() {
	s.mux.HandleFunc("POST /env", func(w http.ResponseWriter, r *http.Request) {
		var req api.SetEnvRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if err := s.setEnv(r.Context(), req.Envs); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
