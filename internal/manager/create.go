package manager

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/scanner"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
)

// Create starts a sandbox: it resolves the template and defaults, attaches the
// workspace, starts the backend and writes the template's files. On any error
// nothing is left behind (an anonymous workspace is removed; a named one stays).
func (m *Manager) Create(ctx context.Context, req api.CreateSandboxRequest) (*Sandbox, error) {
	// Admission first: a refused backend or template is refused whatever
	// else the request holds (and whether or not the template exists).
	if err := m.BackendAllowed(ctx, cmp.Or(req.Backend, m.cfg.DefaultBackend)); err != nil {
		return nil, err
	}
	tmplName := req.Template
	if req.TemplateSpec != nil {
		tmplName = "inline"
	}
	if err := m.templateAllowed(ctx, tmplName); err != nil {
		return nil, err
	}
	plan, err := m.plan(req)
	if err != nil {
		return nil, err
	}
	release, err := m.reserveCreate(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, api.Errorf(api.ErrUnavailable, "the manager is shutting down")
	}

	if s := m.claim(ctx, req, plan); s != nil {
		return s, nil
	}
	releaseRoom, err := m.reserveRoom()
	if err != nil {
		return nil, err
	}
	defer releaseRoom()

	// The start's own deadlines (the backend's, the kernel's) count from
	// here: after its turn came.
	releaseStart, err := m.starts.acquire(ctx)
	if err != nil {
		return nil, err
	}
	started := false // the slot passes to warm once the sandbox is registered
	defer func() {
		if !started {
			releaseStart()
		}
	}()
	s, err := m.start(ctx, plan, req.WorkspaceID)
	if err != nil {
		return nil, err
	}
	id := s.info.SandboxID
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		s.timer = time.NewTimer(0)
		_ = m.destroy(context.Background(), s, "manager closed")
		return nil, api.Errorf(api.ErrUnavailable, "the manager is shutting down")
	}
	m.sandboxes[id] = s
	s.mu.Lock()
	s.timer = time.AfterFunc(plan.timeout, func() { m.expire(id) })
	s.mu.Unlock()
	m.mu.Unlock()
	m.saveRecord(s)
	m.watchNetwork(s)
	go m.watch(s)
	started = true
	go m.warm(s, releaseStart)
	m.log.Info("sandbox created", "sandbox_id", id, "backend", plan.backend.Name(), "workspace_id", s.info.WorkspaceID)
	data := map[string]string{
		"backend": plan.backend.Name(), "template_id": plan.tmpl.ID, "workspace_id": s.info.WorkspaceID, "network": plan.network.Policy,
	}
	if len(s.info.Warnings) > 0 {
		data["warning"] = strings.Join(s.info.Warnings, "; ")
		m.log.Warn("sandbox created with a warning", "sandbox_id", id, "warning", data["warning"])
	}
	m.emit(api.EventSandboxCreated, id, s.info.Owner, data)
	return s, nil
}

// start attaches the workspace, asks the backend for an instance and
// applies the template: a sandbox owned by the caller in ctx, not yet
// registered, without a deadline. On error nothing is left behind.
func (m *Manager) start(ctx context.Context, plan plan, workspaceID string) (*Sandbox, error) {
	ws, quota, err := m.attachWorkspace(ctx, workspaceID, plan.limits.DiskQuotaMB)
	if err != nil {
		return nil, err
	}
	plan.limits.DiskQuotaMB = quota
	cleanup := func() { _ = m.releaseWorkspace(ws.ID, ws.Anonymous, false) }
	id := newID()
	spec := backend.Spec{
		ID: id, User: plan.user, Workdir: plan.workdir, WorkspaceDir: ws.Path,
		Env: plan.env, Network: plan.network, Python: m.cfg.Python, Engine: plan.engine, Preload: plan.preload,
		DefaultTimeout: time.Duration(m.cfg.DefaultTimeoutSec) * time.Second,
		Image:          plan.tmpl.Image, MemoryMB: plan.limits.MemoryMB, CPUCount: plan.limits.CPUCount,
		PidsLimit: plan.limits.PidsLimit, MaxOpenFiles: plan.limits.MaxOpenFiles, MaxOutputBytes: plan.limits.MaxOutputBytes,
		KernelStartTimeout: time.Duration(m.cfg.KernelStartTimeoutSec) * time.Second,
	}
	spec.EngineHandoff = m.handsEngines(ctx, plan.backend, plan.engine, plan.preload)
	inst, err := plan.backend.Create(ctx, spec)
	if errors.Is(err, api.ErrTimeout) && ctx.Err() == nil {
		// Its agent did not answer in time: on a loaded machine the next
		// try usually does. Once, with a fresh id.
		m.log.Warn("sandbox start timed out; retrying once", "sandbox_id", id, "err", err)
		id = newID()
		spec.ID = id
		inst, err = plan.backend.Create(ctx, spec)
	}
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	if spec.EngineHandoff {
		m.handEngine(ctx, id, inst, plan.preload)
	}
	now := time.Now().UTC()
	s := &Sandbox{
		m:     m,
		owner: auth.FromContext(ctx).KeyID,
		inst:  inst,
		agent: agentclient.NewClient(inst.AgentSocket()),
		info: api.SandboxInfo{
			SandboxID: id, Owner: auth.FromContext(ctx).KeyID, TemplateID: plan.tmpl.ID, Backend: plan.backend.Name(), State: api.StateRunning,
			User: plan.user, Workdir: plan.workdir, Metadata: plan.metadata,
			WorkspaceID: ws.ID, Anonymous: ws.Anonymous, WorkspacePath: ws.Path,
			Network: plan.network, ScannerMode: plan.scannerMode, Engine: plan.engine, StartedAt: now, EndAt: now.Add(plan.timeout), Limits: plan.limits,
		},
	}
	if w, ok := inst.(backend.Warner); ok {
		s.info.Warnings = w.Warnings()
	}
	if err := m.applyTemplate(ctx, s, plan.tmpl); err != nil {
		s.timer = time.NewTimer(0)
		_ = m.destroy(context.Background(), s, "template failed")
		return nil, err
	}
	return s, nil
}

// expire kills a sandbox whose deadline passed.
func (m *Manager) expire(id string) {
	m.mu.Lock()
	s, ok := m.sandboxes[id]
	if ok {
		s.mu.Lock()
		// SetTimeout may have moved the deadline after the timer fired.
		if time.Now().Before(s.info.EndAt) {
			ok = false
		}
		s.mu.Unlock()
	}
	if ok {
		delete(m.sandboxes, id)
	}
	m.mu.Unlock()
	if ok {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.destroy(ctx, s, reasonTimeout)
	}
}

// watch forgets a sandbox whose environment stopped by itself.
func (m *Manager) watch(s *Sandbox) {
	<-s.inst.Done()
	id := s.ID()
	m.mu.Lock()
	cur, ok := m.sandboxes[id]
	if ok && cur == s {
		delete(m.sandboxes, id)
	}
	m.mu.Unlock()
	if ok && cur == s {
		_ = m.destroy(context.Background(), s, reasonExited)
	}
}

type plan struct {
	backend  backend.Backend
	tmpl     api.Template
	user     string
	workdir  string
	env      map[string]string
	metadata map[string]string
	network  api.NetworkPolicy
	timeout  time.Duration
	limits   api.Limits
	// engine and preload: the template's, else the request's engine, else
	// the configuration's.
	engine  string
	preload []string
	// scannerMode is the strictest of the config's, the template's and the
	// request's: a request (or an inline template, which a client writes)
	// must not loosen what the operator configured.
	scannerMode string
}

// plan validates a create request and resolves it against the template and the
// configuration. Precedence: template > request > config defaults.
func (m *Manager) plan(req api.CreateSandboxRequest) (plan, error) {
	var p plan
	var err error
	if p.backend, err = m.Backend(req.Backend); err != nil {
		return p, err
	}
	switch {
	case req.TemplateSpec != nil:
		p.tmpl = *req.TemplateSpec
		if p.tmpl.ID == "" {
			p.tmpl.ID = "inline"
		}
		if err := template.Validate(p.tmpl); err != nil {
			return p, err
		}
	case req.Template != "":
		if p.tmpl, err = m.LoadTemplate(req.Template); err != nil {
			return p, err
		}
	}
	if m.cfg.EnableGPU {
		return p, api.Errorf(api.ErrUnsupported, "GPUs were asked for (enable_gpu_by_default / SANDBOX_ENABLE_GPU) but no backend of this build provides them")
	}
	p.user = firstOf(p.tmpl.User, req.User, m.cfg.DefaultUser)
	if req.Engine != "" {
		if err := template.ValidateEngine(req.Engine); err != nil {
			return p, fmt.Errorf("engine: %w", err)
		}
	}
	p.engine = firstOf(p.tmpl.Engine, req.Engine, m.cfg.Engine)
	// Refused here rather than by the sandbox's agent, after a start.
	if err := agent.CheckEngine(p.engine); err != nil {
		return p, err
	}
	p.preload = p.tmpl.Preload
	if len(p.preload) == 0 {
		p.preload = m.cfg.Preload
	}
	p.workdir = firstOf(p.tmpl.Workdir, req.Workdir, m.cfg.DefaultWorkdir)
	if err := template.ValidateWorkdir(p.workdir); err != nil {
		return p, err
	}
	if err := template.ValidateUser(p.user); err != nil {
		return p, err
	}
	reqLimits := api.Limits{
		MemoryMB: req.MemoryMB, CPUCount: req.CPUCount, PidsLimit: req.PidsLimit,
		MaxOpenFiles: req.MaxOpenFiles, MaxOutputBytes: req.MaxOutputBytes, DiskQuotaMB: req.DiskQuotaMB,
	}
	if err := template.ValidateLimits(reqLimits); err != nil {
		return p, err
	}
	p.limits = mergeLimits(template.LimitsOf(p.tmpl), reqLimits, m.cfg.DefaultLimits())

	switch {
	case req.TimeoutSeconds < 0:
		return p, api.Errorf(api.ErrInvalid, "timeout %d must not be negative", req.TimeoutSeconds)
	case req.TimeoutSeconds == 0:
		p.timeout = time.Duration(m.cfg.SandboxTimeoutSec) * time.Second
	default:
		p.timeout = Seconds(int64(req.TimeoutSeconds))
	}
	if max := m.maxTimeout(); p.timeout > max {
		return p, api.Errorf(api.ErrInvalid, "timeout %s is longer than the maximum %s (max_sandbox_timeout_sec)", p.timeout, max)
	}

	p.network = m.cfg.Network()
	if req.Network != nil {
		p.network = *req.Network
	}
	if err := config.ValidateNetworkPolicy(p.network); err != nil {
		return p, err
	}
	if err := scanner.ValidateMode(req.ScannerMode); err != nil {
		return p, err
	}
	// A template can only make the configured mode stricter (it is
	// configuration too); a request asking for a looser one is refused
	// rather than silently ignored.
	p.scannerMode = scanner.Stricter(m.cfg.ScannerMode, p.tmpl.ScannerMode)
	if req.ScannerMode != "" && scanner.Stricter(req.ScannerMode, p.scannerMode) != req.ScannerMode {
		return p, api.Errorf(api.ErrPermission,
			"scanner_mode %q is looser than the configured %q (scanner_mode of the configuration or the template): a request may only make the code scanner stricter (off < warn < block)",
			req.ScannerMode, p.scannerMode)
	}
	p.scannerMode = scanner.Stricter(p.scannerMode, req.ScannerMode)

	if err := checkMap("envs", req.Envs, maxEnvs, true); err != nil {
		return p, err
	}
	if err := checkMap("metadata", req.Metadata, maxMetadata, false); err != nil {
		return p, err
	}
	p.env = maps.Clone(p.tmpl.Env)
	if p.env == nil {
		p.env = map[string]string{}
	}
	maps.Copy(p.env, req.Envs)
	p.metadata = maps.Clone(req.Metadata)
	return p, nil
}

// applyTemplate writes the template's files into the workdir and runs its start
// command (in the background) and ready command (until it succeeds).
func (m *Manager) applyTemplate(ctx context.Context, s *Sandbox, t api.Template) error {
	for name, content := range t.Files {
		p := path.Join(s.info.Workdir, name)
		if _, err := s.agent.WriteFile(ctx, p, strings.NewReader(content)); err != nil {
			return fmt.Errorf("template %s: write %s: %w", t.ID, name, err)
		}
	}
	if t.StartCmd != "" {
		if _, err := s.agent.StartProcess(ctx, api.ProcessRequest{Cmd: t.StartCmd, Background: true, Tag: "start_cmd"}); err != nil {
			return fmt.Errorf("template %s: start_cmd: %w", t.ID, err)
		}
	}
	if t.ReadyCmd != "" {
		wait := time.Duration(t.ReadyTimeout) * time.Second
		if wait == 0 {
			wait = 20 * time.Second
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		var last api.CommandResult
		for {
			res, err := s.agent.RunCommand(rctx, api.ProcessRequest{Cmd: t.ReadyCmd}, nil)
			if err == nil && res.ExitCode == 0 {
				break
			}
			if err == nil {
				last = res
			}
			select {
			case <-rctx.Done():
				return api.Errorf(api.ErrTimeout, "template %s: ready_cmd %q did not succeed within %s (last exit code %d, stderr %q)",
					t.ID, t.ReadyCmd, wait, last.ExitCode, strings.TrimSpace(last.Stderr))
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// mergeLimits takes each limit from the first of its arguments that sets it
// (template > request > config defaults).
func mergeLimits(ls ...api.Limits) api.Limits {
	var out api.Limits
	for _, l := range slices.Backward(ls) {
		out.MemoryMB = cmp.Or(l.MemoryMB, out.MemoryMB)
		out.CPUCount = cmp.Or(l.CPUCount, out.CPUCount)
		out.PidsLimit = cmp.Or(l.PidsLimit, out.PidsLimit)
		out.MaxOpenFiles = cmp.Or(l.MaxOpenFiles, out.MaxOpenFiles)
		out.MaxOutputBytes = cmp.Or(l.MaxOutputBytes, out.MaxOutputBytes)
		out.DiskQuotaMB = cmp.Or(l.DiskQuotaMB, out.DiskQuotaMB)
	}
	return out
}

// maxTimeout is the longest lifetime a sandbox may have:
// max_sandbox_timeout_sec, and never more than MaxTimeout.
func (m *Manager) maxTimeout() time.Duration {
	if m.cfg.MaxSandboxTimeoutSec > 0 {
		return min(time.Duration(m.cfg.MaxSandboxTimeoutSec)*time.Second, MaxTimeout)
	}
	return MaxTimeout
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func checkMap(what string, m map[string]string, max int, envKeys bool) error {
	if len(m) > max {
		return api.Errorf(api.ErrInvalid, "%s: %d entries, at most %d", what, len(m), max)
	}
	for k, v := range m {
		if k == "" || len(k) > 256 || len(v) > maxValueLen {
			return api.Errorf(api.ErrInvalid, "%s: key %.40q: keys must be 1-256 bytes and values at most %d bytes", what, k, maxValueLen)
		}
		if envKeys && (strings.ContainsAny(k, "=\x00") || bytes.ContainsRune([]byte(v), 0)) {
			return api.Errorf(api.ErrInvalid, "envs: %q: names must not contain '=' or NUL, values not NUL", k)
		}
	}
	return nil
}
