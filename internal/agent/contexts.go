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
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// maxContexts bounds the code contexts of one sandbox.
const maxContexts = 16

// DefaultContextID names the context every sandbox has from the start.
const DefaultContextID = "default"

// kernelSetup runs silently in every fresh kernel: plain tracebacks (no ANSI
// colours, which only confuse an LLM reading them), and stdout/stderr sent in
// messages of about 1 MiB at most. ipykernel otherwise sends whatever a cell
// printed in 0.2 s, or one huge print, as one message, which the agent has to
// hold whole before its output bound can drop it; chunked, the agent's memory
// stays bounded whatever an ordinary cell prints. (A cell that talks to the
// kernel's sockets itself can still send one huge message: on the isolating
// backends the agent shares the sandbox's memory limit with it.)
const kernelSetup = `get_ipython().run_line_magic('colors', 'NoColor')
def _dss_chunk_streams():
    from ipykernel.iostream import OutStream
    write, chunk = OutStream.write, 1 << 20
    def chunked(self, s):
        if not isinstance(s, str):
            return write(self, s)
        for i in range(0, len(s), chunk):
            write(self, s[i:i + chunk])
            buf = getattr(self, '_buffer', None)
            if len(s) > chunk or (buf is not None and buf.tell() >= chunk):
                self.flush()
        return len(s)
    OutStream.write = chunked
try:
    _dss_chunk_streams()
except Exception:
    pass
del _dss_chunk_streams`

// codeContext is one engine (a Jupyter kernel) and its bookkeeping.
//
// Locking: mu serialises executions and kernel (re)starts and is held for a
// whole cell. kmu guards the fields below it and is only held for moments, so
// restart, delete and shutdown can always reach a running cell's kernel and
// kill it (which ends the cell) without waiting for mu. Order: mu, then kmu.
type codeContext struct {
	info api.Context
	dir  string // host path of the cwd

	mu sync.Mutex

	kmu    sync.Mutex
	kernel engine
	// lost is set when the kernel died; the next execution starts a fresh kernel
	// and tells the caller that earlier state is gone.
	lost    bool
	deleted bool
	// killedFor says why the kernel was killed from outside a cell ("the
	// context was restarted", …), for the running cell's error.
	killedFor string
}

// takeKernel detaches the kernel (nil when none) for the caller to close.
func (c *codeContext) takeKernel(why string) engine {
	c.kmu.Lock()
	defer c.kmu.Unlock()
	k := c.kernel
	c.kernel = nil
	if k != nil {
		c.killedFor = why
	}
	return k
}

// contextTable owns every code context of the sandbox.
type contextTable struct {
	cfg     *Config
	fs      *FS
	engines engineStarter
	env     *environ // the engines' environment (cfg.Env, extended by POST /env)
	tmpDir  string   // private dir for kernel sockets and IPython state

	mu   sync.Mutex
	ctxs map[string]*codeContext
	seq  int
	// bg owns the background start of the default kernel.
	bg     sync.WaitGroup
	closed bool
	// children are the kernel processes not yet waited for (see reapOrphans).
	children pidSet
}

// newContextTable fails when cfg.Engine cannot be started here (see
// newEngineStarter).
func newContextTable(cfg *Config, fs *FS, env *environ) (*contextTable, error) {
	t := &contextTable{cfg: cfg, fs: fs, env: env, ctxs: make(map[string]*codeContext), children: pidSet{m: map[int]bool{}}}
	d, err := os.MkdirTemp("", "dsk")
	if err != nil {
		return nil, fmt.Errorf("kernel dir: %w", err)
	}
	t.tmpDir = d
	workdir, err := fs.HostPath(cfg.Workdir)
	if err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	t.engines, err = newEngineStarter(cfg, engineHooks{
		Started: func(pid int) error {
			t.children.add(pid)
			return t.cfg.Limits.apply(pid)
		},
		Reaped: t.children.remove,
	}, t.engineEnv(), workdir)
	if err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	return t, nil
}

// engineEnv is the environment of the sandbox's engines.
func (t *contextTable) engineEnv() []string {
	env := t.env.get()
	if !hasEnv(env, "IPYTHONDIR") {
		env = append(env, "IPYTHONDIR="+filepath.Join(t.tmpDir, "ipython"))
	}
	return env
}

// adopt makes an engine handed to the agent (handoff.go) the engine of
// context ctxID, which must have none running. It owns conn.
func (t *contextTable) adopt(ctxID string, conn *os.File) error {
	ad, ok := t.engines.(engineAdopter)
	if !ok {
		conn.Close()
		return api.Errorf(api.ErrUnsupported, "engine %s cannot take engines started outside the sandbox", t.cfg.Engine)
	}
	c, err := t.get(ctxID)
	if err != nil {
		conn.Close()
		return err
	}
	if !c.mu.TryLock() {
		conn.Close()
		return api.Errorf(api.ErrExists, "context %s is running a cell", ctxID)
	}
	defer c.mu.Unlock()
	c.kmu.Lock()
	busy := c.kernel != nil
	if busy {
		select {
		case <-c.kernel.Done():
			busy = false
		default:
		}
	}
	c.kmu.Unlock()
	if busy {
		conn.Close()
		return api.Errorf(api.ErrExists, "context %s already has a running engine", ctxID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
	defer cancel()
	e, err := ad.adopt(ctx, conn)
	if err != nil {
		return api.Errorf(api.ErrUnavailable, "adopt engine: %v", err)
	}
	c.kmu.Lock()
	defer c.kmu.Unlock()
	if c.deleted {
		_ = e.Close()
		return api.Errorf(api.ErrNotFound, "context %s was deleted", ctxID)
	}
	if old := c.kernel; old != nil {
		_ = old.Close()
	}
	c.kernel = e
	c.killedFor = ""
	return nil
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
	if t.cfg.EngineHandoff {
		// Its engine is handed to the agent (handoff.go); a first cell
		// that comes before it starts one here.
		return
	}
	t.bg.Add(1)
	// Locked here, not in the goroutine: a request that comes right after
	// (POST /env) waits for this start instead of finding no kernel.
	c.mu.Lock()
	go func() {
		defer t.bg.Done()
		defer c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := t.ensureKernel(ctx, c); err != nil {
			t.cfg.Logger.Warn("default kernel start", "err", err)
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
	if len(t.ctxs) >= maxContexts {
		return nil, api.Errorf(api.ErrLimit, "a sandbox has at most %d code contexts (each is a kernel process); delete one first", maxContexts)
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

// ensureKernel returns c's kernel, starting one when it has none (or its
// kernel died). c.mu must be held.
func (t *contextTable) ensureKernel(ctx context.Context, c *codeContext) (engine, error) {
	c.kmu.Lock()
	if c.deleted {
		c.kmu.Unlock()
		return nil, api.Errorf(api.ErrNotFound, "context %s was deleted", c.info.ID)
	}
	if k := c.kernel; k != nil {
		select {
		case <-k.Done():
			c.kernel = nil
			c.lost = true
			c.kmu.Unlock()
			_ = k.Close()
		default:
			c.kmu.Unlock()
			return k, nil
		}
	} else {
		c.kmu.Unlock()
	}
	k, err := t.engines.start(ctx, engineStart{Dir: c.dir, Env: t.engineEnv(), TmpDir: t.tmpDir})
	if err != nil {
		return nil, startError(err, t.cfg.KernelStartTimeout)
	}
	c.kmu.Lock()
	defer c.kmu.Unlock()
	if c.deleted {
		_ = k.Close()
		return nil, api.Errorf(api.ErrNotFound, "context %s was deleted", c.info.ID)
	}
	c.kernel = k
	c.killedFor = ""
	return k, nil
}

// startTimeout is the kernel start timeout in force, for messages.
func startTimeout(d time.Duration) string {
	if d <= 0 {
		d = jupyter.DefaultStartTimeout
	}
	return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// ready starts c's engine if it has none running, and runs one silent
// empty cell in it: the first cell of a forked engine pays for the pages it
// touches (copy-on-write faults, tens of milliseconds), which is then paid
// here, before the sandbox's first real cell. A silent cell counts nothing
// and records no history.
func (t *contextTable) ready(ctx context.Context, c *codeContext) error {
	if err := lockCtx(ctx, &c.mu); err != nil {
		return api.Errorf(api.ErrUnavailable, "context %s: %v", c.info.ID, err)
	}
	defer c.mu.Unlock()
	k, err := t.ensureKernel(ctx, c)
	if err != nil {
		return err
	}
	if _, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: "None", Silent: true}, nil); err != nil {
		return api.Errorf(api.ErrUnavailable, "context %s: warm-up cell: %v", c.info.ID, err)
	}
	return nil
}

// restart replaces c's kernel with a fresh one. The old kernel is killed
// first, so a cell still running in it ends (with an error saying why) and
// does not hold the restart up.
func (t *contextTable) restart(ctx context.Context, c *codeContext) error {
	if k := c.takeKernel("the context was restarted while this cell ran"); k != nil {
		_ = k.Close()
	}
	if err := lockCtx(ctx, &c.mu); err != nil {
		return err
	}
	defer c.mu.Unlock()
	c.kmu.Lock()
	c.lost = false
	c.kmu.Unlock()
	_, err := t.ensureKernel(ctx, c)
	return err
}

func (t *contextTable) remove(id string) error {
	if id == DefaultContextID {
		return api.Errorf(api.ErrInvalid, "the default context cannot be deleted; restart it instead")
	}
	c, err := t.get(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	delete(t.ctxs, id)
	t.mu.Unlock()
	c.kmu.Lock()
	c.deleted = true
	c.kmu.Unlock()
	if k := c.takeKernel("the context was deleted while this cell ran"); k != nil {
		_ = k.Close()
	}
	return nil
}

// closeAll kills every kernel without waiting for running cells (killing the
// kernel is what ends them).
func (t *contextTable) closeAll() {
	t.mu.Lock()
	t.closed = true
	ctxs := make([]*codeContext, 0, len(t.ctxs))
	for _, c := range t.ctxs {
		ctxs = append(ctxs, c)
	}
	t.mu.Unlock()
	for _, c := range ctxs {
		c.kmu.Lock()
		c.deleted = true
		c.kmu.Unlock()
		if k := c.takeKernel("the sandbox is shutting down"); k != nil {
			_ = k.Close()
		}
	}
	t.bg.Wait()
	t.engines.close()
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
				_ = s.ctxs.remove(c.info.ID)
			}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, c.info)
	})
	s.mux.HandleFunc("GET /contexts", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, s.ctxs.list())
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
		httpjson.Write(w, http.StatusOK, c.info)
	})
	// ready waits until the context's engine runs (starting one when it has
	// none), running no code: the manager's start admission holds a
	// sandbox's start slot until its default engine is up.
	s.mux.HandleFunc("POST /contexts/{id}/ready", func(w http.ResponseWriter, r *http.Request) {
		c, err := s.ctxs.get(r.PathValue("id"))
		if err == nil {
			err = s.ctxs.ready(r.Context(), c)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, c.info)
	})
	s.mux.HandleFunc("DELETE /contexts/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ctxs.remove(r.PathValue("id")); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("POST /execute", s.handleExecute)
}
