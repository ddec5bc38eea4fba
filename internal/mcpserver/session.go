package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// session is the state of one MCP session.
type session struct {
	identity auth.Identity
	sid      string // the HTTP Mcp-Session-Id; "" on stdio

	// life ends when the session is interrupted; calls in flight end with it.
	life      context.Context
	interrupt context.CancelFunc

	// cleanup runs the end of the session once (see Server.endSession).
	cleanup sync.Once

	// defaultMu serializes finding or creating the default sandbox, so
	// concurrent calls of one session share one.
	defaultMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	ended     bool
	owned     map[string]bool // sandboxes this session created, killed at its end
	defaultID string
	// autoID is the default sandbox when the session started it itself (not
	// create_sandbox): only that one has its deadline moved on every use.
	autoID string
}

func newSession(id auth.Identity, sid string) *session {
	life, interrupt := context.WithCancel(context.Background())
	return &session{identity: id, sid: sid, life: life, interrupt: interrupt, owned: map[string]bool{}}
}

// end marks the session ended and returns the sandboxes to kill.
func (sess *session) end() []string {
	sess.interrupt()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.ended = true
	ids := slices.Sorted(maps.Keys(sess.owned))
	clear(sess.owned)
	sess.defaultID = ""
	return ids
}

// adopt records a sandbox the session created; it reports false when the
// session has already ended (the caller kills the sandbox). The first
// sandbox adopted becomes the default when the session has none.
func (sess *session) adopt(id string, asDefault bool) (isDefault, ok bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended {
		return false, false
	}
	sess.owned[id] = true
	if asDefault || sess.defaultID == "" {
		sess.defaultID = id
		isDefault = true
	}
	if asDefault {
		sess.autoID = id
	}
	return isDefault, true
}

// forget drops a sandbox that was killed.
func (sess *session) forget(id string) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	delete(sess.owned, id)
	if sess.defaultID == id {
		sess.defaultID = ""
	}
	if sess.autoID == id {
		sess.autoID = ""
	}
}

// defaultSandbox returns the default sandbox's id ("" when there is none) and
// whether the session started it itself.
func (sess *session) defaultSandbox() (id string, auto bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.defaultID, sess.defaultID != "" && sess.defaultID == sess.autoID
}

// create starts a sandbox owned by the caller in ctx and by sess (killed when
// sess ends). isDefault reports whether it became the session's default.
func (s *Server) create(ctx context.Context, sess *session, req api.CreateSandboxRequest, asDefault bool) (sb *manager.Sandbox, isDefault bool, err error) {
	if s.isClosed() {
		return nil, false, api.Errorf(api.ErrUnavailable, "the ds-sandbox MCP server is shutting down")
	}
	if req.Metadata == nil {
		req.Metadata = map[string]string{}
	}
	req.Metadata["created_by"] = "mcp"
	sb, err = s.m.Create(ctx, req)
	if err != nil {
		return nil, false, err
	}
	if rec := audit.FromContext(ctx); rec.Action == "sandbox.create" {
		rec.SandboxID = sb.ID()
	}
	isDefault, ok := sess.adopt(sb.ID(), asDefault)
	if !ok || s.isClosed() {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		defer cancel()
		_ = s.m.Kill(kctx, sb.ID())
		return nil, false, api.Errorf(api.ErrUnavailable, "the MCP session ended while sandbox %s was starting; it was killed", sb.ID())
	}
	s.log.Info("mcp sandbox created", "sandbox_id", sb.ID(), "session_id", sess.sid, "default", isDefault)
	return sb, isDefault, nil
}

// sandbox returns the sandbox a tool call names, or the session's default
// sandbox when id is "" (creating it, or replacing one that has ended; notice
// then says so). Another key's sandbox is api.ErrNotFound.
func (s *Server) sandbox(ctx context.Context, sess *session, id string) (sb *manager.Sandbox, notice string, err error) {
	defer func() {
		if sb != nil {
			audit.FromContext(ctx).SandboxID = sb.ID()
		}
	}()
	if id != "" {
		sb, err = s.m.Get(ctx, id)
		return sb, "", err
	}
	sess.defaultMu.Lock()
	defer sess.defaultMu.Unlock()
	if cur, auto := sess.defaultSandbox(); cur != "" {
		sb, err = s.m.Get(ctx, cur)
		switch {
		case err == nil:
			if auto {
				// A default sandbox the session started lives as long as the
				// session keeps using it (one made by create_sandbox keeps the
				// timeout it was given).
				lifetime := time.Duration(s.m.Config().SandboxTimeoutSec) * time.Second
				if _, err := s.m.SetTimeout(ctx, cur, lifetime); err != nil && !errors.Is(err, api.ErrNotFound) {
					s.log.Warn("mcp: extend default sandbox", "sandbox_id", cur, "error", err)
				}
			}
			return sb, "", nil
		case !errors.Is(err, api.ErrNotFound):
			return nil, "", err
		}
		sess.forget(cur)
		notice = fmt.Sprintf("this session's default sandbox %s had ended (its timeout passed or it was killed), so a new one was started: earlier variables and files are gone", cur)
	}
	sb, _, err = s.create(ctx, sess, api.CreateSandboxRequest{}, true)
	if err != nil {
		return nil, "", fmt.Errorf("start the session's default sandbox: %w", err)
	}
	if notice != "" {
		notice += fmt.Sprintf(" (new sandbox: %s)", sb.ID())
	}
	return sb, notice, nil
}

// kill kills the named sandbox, or the session's default when id is "".
func (s *Server) kill(ctx context.Context, sess *session, id string) (string, error) {
	if id == "" {
		if id, _ = sess.defaultSandbox(); id == "" {
			return "", api.Errorf(api.ErrNotFound, "this session has no default sandbox to kill; pass sandbox_id")
		}
	}
	audit.FromContext(ctx).SandboxID = id
	err := s.m.Kill(ctx, id)
	if err == nil || errors.Is(err, api.ErrNotFound) {
		sess.forget(id)
	}
	return id, err
}
