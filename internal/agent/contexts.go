package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// DefaultContextID names the context every sandbox has from the start.
const DefaultContextID = "default"

// kernelSetup runs silently in every fresh kernel: plain tracebacks (no ANSI
// colours, which only confuse an LLM reading them).
const kernelSetup = `get_ipython().run_line_magic('colors', 'NoColor')`

// codeContext is one Jupyter kernel and its bookkeeping. mu serialises
// executions, restarts and deletion of the context; the kernel field is only
// touched with mu held.
type codeContext struct {
	info api.Context
	dir  string // host path of the cwd

	mu     sync.Mutex
	kernel *jupyter.Kernel
	// lost is set when the kernel died; the next execution starts a fresh kernel
	// and tells the caller that earlier state is gone.
	lost    bool
	deleted bool
}

// contextTable owns every code context of the sandbox.
type contextTable struct {
	cfg    *Config
	fs     *FS
	tmpDir string // private dir for kernel sockets and IPython state

	mu   sync.Mutex
	ctxs map[string]*codeContext
	seq  int
	// bg owns the background start of the default kernel.
	bg     sync.WaitGroup
	closed bool
}

func newContextTable(cfg *Config, fs *FS) *contextTable {
	return &contextTable{cfg: cfg, fs: fs, ctxs: make(map[string]*codeContext)}
}

// startDefault creates the default context and starts its kernel in the
// background, so a sandbox's first cell waits for less of the kernel start.
// A failure is not fatal here: the first execution retries and reports it.
func (t *contextTable) startDefault() {
	c, err := t.create(api.CreateContextRequest{}, DefaultContextID)
	if err != nil {
		t.cfg.Logger.Warn("default context", "err", err)
		return
	}
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.kernel == nil && !c.deleted {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := t.ensureKernel(ctx, c); err != nil {
				t.cfg.Logger.Warn("default kernel start", "err", err)
			}
		}
	}()
}

func (t *contextTable) create(req api.CreateContextRequest, id string) (*codeContext, error) {
	if req.Language != "" && !strings.EqualFold(req.Language, "python") {
		return nil, api.Errorf(api.ErrUnsupported, "language %q: only python is supported", req.Language)
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = t.cfg.Workdir
	}
	dir, err := t.fs.HostPath(cwd)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, api.Errorf(api.ErrInvalid, "context cwd %s is not a directory", cwd)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, api.Errorf(api.ErrUnavailable, "agent is shutting down")
	}
	if id == "" {
		t.seq++
		id = fmt.Sprintf("ctx-%d", t.seq)
	}
	if _, ok := t.ctxs[id]; ok {
		return nil, api.Errorf(api.ErrExists, "context %s", id)
	}
	if t.tmpDir == "" {
		d, err := os.MkdirTemp("", "dsk")
		if err != nil {
			return nil, fmt.Errorf("kernel dir: %w", err)
		}
		t.tmpDir = d
	}
	c := &codeContext{info: api.Context{ID: id, Language: "python", Cwd: absSandboxPath(t.cfg.Workdir, cwd)}, dir: dir}
	t.ctxs[id] = c
	return c, nil
}

func absSandboxPath(workdir, p string) string {
	if strings.HasPrefix(p, "/") {
		return filepath.Clean(p)
	}
	return filepath.Join(workdir, p)
}

func (t *contextTable) get(id string) (*codeContext, error) {
	if id == "" {
		id = DefaultContextID
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.ctxs[id]
	if !ok {
		return nil, api.Errorf(api.ErrNotFound, "context %s", id)
	}
	return c, nil
}

func (t *contextTable) list() []api.Context {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]api.Context, 0, len(t.ctxs))
	for _, c := range t.ctxs {
		out = append(out, c.info)
	}
	sortContexts(out)
	return out
}

// ensureKernel starts c's kernel when it has none. c.mu must be held.
func (t *contextTable) ensureKernel(ctx context.Context, c *codeContext) error {
	if c.kernel != nil {
		select {
		case <-c.kernel.Done():
			_ = c.kernel.Close()
			c.kernel = nil
			c.lost = true
		default:
			return nil
		}
	}
	env := append([]string(nil), t.cfg.Env...)
	if !hasEnv(env, "IPYTHONDIR") {
		env = append(env, "IPYTHONDIR="+filepath.Join(t.tmpDir, "ipython"))
	}
	k, err := jupyter.Start(ctx, jupyter.Config{
		Python:    t.cfg.Python,
		Dir:       c.dir,
		Env:       env,
		SocketDir: t.tmpDir,
	})
	if err != nil {
		return fmt.Errorf("start python kernel: %w", err)
	}
	if _, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: kernelSetup, Silent: true}, nil); err != nil {
		_ = k.Close()
		return fmt.Errorf("set up python kernel: %w", err)
	}
	c.kernel = k
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// restart replaces c's kernel with a fresh one.
func (t *contextTable) restart(ctx context.Context, c *codeContext) error {
	if err := lockCtx(ctx, &c.mu); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if c.deleted {
		return api.Errorf(api.ErrNotFound, "context %s", c.info.ID)
	}
	if c.kernel != nil {
		_ = c.kernel.Close()
		c.kernel = nil
	}
	c.lost = false
	return t.ensureKernel(ctx, c)
}

func (t *contextTable) remove(ctx context.Context, id string) error {
	if id == DefaultContextID {
		return api.Errorf(api.ErrInvalid, "the default context cannot be deleted; restart it instead")
	}
	c, err := t.get(id)
	if err != nil {
		return err
	}
	if err := lockCtx(ctx, &c.mu); err != nil {
		return err
	}
	defer c.mu.Unlock()
	t.mu.Lock()
	delete(t.ctxs, id)
	t.mu.Unlock()
	c.deleted = true
	if c.kernel != nil {
		_ = c.kernel.Close()
		c.kernel = nil
	}
	return nil
}

// closeAll stops every kernel. Executions in flight end with DeadKernelError.
func (t *contextTable) closeAll() {
	t.mu.Lock()
	t.closed = true
	ctxs := make([]*codeContext, 0, len(t.ctxs))
	for _, c := range t.ctxs {
		ctxs = append(ctxs, c)
	}
	t.mu.Unlock()
	for _, c := range ctxs {
		// Close the kernel without waiting for the lock: a running cell holds it,
		// and closing the kernel is what ends that cell.
		c.mu.Lock()
		c.deleted = true
		k := c.kernel
		c.mu.Unlock()
		if k != nil {
			_ = k.Close()
		}
	}
	t.bg.Wait()
	if t.tmpDir != "" {
		_ = os.RemoveAll(t.tmpDir)
	}
}

// lockCtx takes mu, giving up when ctx is done first.
func lockCtx(ctx context.Context, mu *sync.Mutex) error {
	if mu.TryLock() {
		return nil
	}
	done := make(chan struct{})
	go func() {
		mu.Lock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// The goroutine still gets the lock eventually; hand it back.
		go func() { <-done; mu.Unlock() }()
		return ctx.Err()
	}
}

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// envCode returns code that sets envs in os.environ (restore=false) or puts
// back the values saved by the matching set (restore=true).
func envCode(envs map[string]string, restore bool) string {
	if restore {
		return "import os as _ds_os\n" +
			"for _ds_k, _ds_v in _ds_saved_env.items():\n" +
			"    if _ds_v is None: _ds_os.environ.pop(_ds_k, None)\n" +
			"    else: _ds_os.environ[_ds_k] = _ds_v\n" +
			"del _ds_os, _ds_k, _ds_v, _ds_saved_env\n"
	}
	b, _ := json.Marshal(envs)
	enc := base64.StdEncoding.EncodeToString(b)
	return "import os as _ds_os, json as _ds_json, base64 as _ds_b64\n" +
		"_ds_new_env = _ds_json.loads(_ds_b64.b64decode('" + enc + "'))\n" +
		"_ds_saved_env = {k: _ds_os.environ.get(k) for k in _ds_new_env}\n" +
		"_ds_os.environ.update(_ds_new_env)\n" +
		"del _ds_os, _ds_json, _ds_b64, _ds_new_env\n"
}

var errEnvName = errors.New("environment variable names must be non-empty and contain no '=' or NUL")

func validateEnvs(envs map[string]string) error {
	for k, v := range envs {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return api.Errorf(api.ErrInvalid, "env %q: %v", k, errEnvName)
		}
	}
	return nil
}

func (s *Server) registerContextRoutes() {
	s.mux.HandleFunc("POST /contexts", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateContextRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		c, err := s.ctxs.create(req, "")
		if err == nil {
			err = s.ctxs.restart(r.Context(), c)
			if err != nil {
				_ = s.ctxs.remove(context.Background(), c.info.ID)
			}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, c.info)
	})
	s.mux.HandleFunc("GET /contexts", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.ctxs.list())
	})
	s.mux.HandleFunc("POST /contexts/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		c, err := s.ctxs.get(r.PathValue("id"))
		if err == nil {
			err = s.ctxs.restart(r.Context(), c)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c.info)
	})
	s.mux.HandleFunc("DELETE /contexts/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ctxs.remove(r.Context(), r.PathValue("id")); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("POST /execute", s.handleExecute)
}
