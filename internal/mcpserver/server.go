// Package mcpserver serves ds-sandbox to LLM clients over the Model Context
// Protocol, with the official Go SDK: on stdio (ds-sandbox mcp) and as a
// streamable HTTP handler that the daemon mounts at /mcp behind its auth
// middleware. No SDK type appears in this package's API.
//
// Tools: create_sandbox, run_code, run_command, read_file, write_file,
// list_files and kill_sandbox (see tools.go for their contracts).
//
// # Sessions
//
// Every MCP session (one stdio connection, one HTTP Mcp-Session-Id) has its
// own state: the sandboxes it created and its default sandbox, which the tools
// use when no sandbox_id is given. The default sandbox is created on first use
// (or is the first sandbox create_sandbox makes); its deadline moves forward on
// every use, and when it has ended anyway (timeout, kill_sandbox) the next use
// starts a fresh one and says so. When a session ends — stdin closes, the
// client sends DELETE, the HTTP session stays idle past
// Options.SessionIdleTimeout, or Close — every sandbox it created is killed.
// Two sessions never share a default sandbox.
//
// # Identity
//
// Tool handlers act as the auth.Identity in their context; the manager
// records it as a sandbox's owner and answers "not found" for sandboxes of
// other keys. On stdio it is the identity of ServeIO's ctx (auth.Local for the
// CLI). Over HTTP the SDK does not pass each POST's context to the tool call
// it carries: a session's handlers run under the context of the request that
// created the session (the initialize POST). Handler therefore uses the SDK's
// per-request server getter: each new session gets its own mcp.Server bound to
// the identity of the request that opened it, and a later request on that
// session id made with another identity is answered 404 (as an unknown session
// is), so a session id alone does not carry another key's rights.
//
// # Errors
//
// Bad arguments, unknown or foreign sandbox ids, and failures of ds-sandbox's
// machinery come back as tool results with isError set and a message that
// says what was wrong; they never end the session. A Python exception (or a
// cell timeout) is also reported with isError set, with its name, value and
// traceback as text, so the model sees that the code failed; stdout, stderr
// and results produced before the exception are in the same result. A command
// that exits non-zero is not an error (the exit code leads the result); one
// that was killed or timed out is.
package mcpserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// DefaultSessionIdleTimeout is how long an HTTP session may stay without
// requests before it is closed (and its sandboxes killed) when
// Options.SessionIdleTimeout is zero.
const DefaultSessionIdleTimeout = time.Hour

// killTimeout bounds killing one session's sandboxes.
const killTimeout = 30 * time.Second

// Options configures a Server. The zero value is usable.
type Options struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Version is reported to clients as the server's version ("dev" if empty).
	Version string
	// SessionIdleTimeout closes an HTTP session that has had no request for
	// this long; its sandboxes are killed. 0 means DefaultSessionIdleTimeout,
	// a negative value never closes idle sessions. Stdio sessions end when
	// their input does.
	SessionIdleTimeout time.Duration
	// Audit, when set, receives a record of every tool call (its key, action,
	// sandbox, outcome, and the code's sha256 and size).
	Audit *audit.Log
}

// Server exposes a manager's sandboxes as MCP tools. It is safe for
// concurrent use; one Server may serve stdio and HTTP sessions at once.
type Server struct {
	m       *manager.Manager
	opts    Options
	log     *slog.Logger
	schemas *mcp.SchemaCache
	// shared serves connections whose identity is in their context (stdio,
	// in-memory); HTTP sessions get a server each (see Handler).
	shared *mcp.Server
	tools  []func(*mcp.Server) // adds the tool definitions, built once

	done chan struct{} // closed by Close

	mu       sync.Mutex
	sessions map[*mcp.ServerSession]*session
	bySID    map[string]*session // HTTP sessions by Mcp-Session-Id
	closed   bool
	watchers sync.WaitGroup // one per session: waits for its end, then kills its sandboxes
}

// New returns a Server over m. The caller still owns m: Close kills only the
// sandboxes MCP sessions created.
func New(m *manager.Manager, opts Options) *Server {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.SessionIdleTimeout == 0 {
		opts.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		m: m, opts: opts, log: log, schemas: mcp.NewSchemaCache(),
		sessions: make(map[*mcp.ServerSession]*session), bySID: make(map[string]*session),
		done: make(chan struct{}),
	}
	s.tools = s.defineTools()
	s.shared = s.newMCPServer(auth.FromContext)
	return s
}

// ServeStdio serves one session on the process's stdin and stdout until stdin
// closes or ctx is done, then kills the sandboxes the session created.
func (s *Server) ServeStdio(ctx context.Context) error {
	return s.ServeIO(ctx, os.Stdin, os.Stdout)
}

// ServeIO serves one session of newline-delimited JSON-RPC read from r and
// written to w, until r ends or ctx is done; the session's sandboxes are
// killed before it returns. The tools act as the identity in ctx (auth.Local
// when there is none).
func (s *Server) ServeIO(ctx context.Context, r io.Reader, w io.Writer) error {
	rc, ok := r.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(r)
	}
	return s.serve(ctx, &mcp.IOTransport{Reader: rc, Writer: nopWriteCloser{w}})
}

// serve runs one session on t until the peer hangs up or ctx is done.
func (s *Server) serve(ctx context.Context, t mcp.Transport) error {
	if s.isClosed() {
		return api.Errorf(api.ErrUnavailable, "the ds-sandbox MCP server is closed")
	}
	ss, err := s.shared.Connect(ctx, t, nil)
	if err != nil {
		return err
	}
	ended := make(chan error, 1)
	go func() { ended <- ss.Wait() }()
	select {
	case err = <-ended: // the input ended; calls in flight were answered first
	case <-ctx.Done():
		err = s.stop(ss, ended)
	case <-s.done:
		err = s.stop(ss, ended)
	}
	s.endSession(ss)
	if errors.Is(err, io.EOF) || s.isClosed() { // the input ended, or Close ended the session
		err = nil
	}
	return err
}

// stop ends ss: the SDK's Close waits for calls in flight, so they are
// interrupted first.
func (s *Server) stop(ss *mcp.ServerSession, ended <-chan error) error {
	s.interrupt(ss)
	ss.Close()
	<-ended
	return nil
}

// Handler returns the streamable HTTP handler of the MCP endpoint. Mount it
// behind the daemon's auth middleware: the auth.Identity in each request's
// context is the caller, and a session belongs to the identity that opened it
// (see the package doc).
func (s *Server) Handler() http.Handler {
	idle := s.opts.SessionIdleTimeout
	if idle < 0 {
		idle = 0 // the SDK's "never"
	}
	h := mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		id := auth.FromContext(r.Context())
		return s.newMCPServer(func(context.Context) auth.Identity { return id })
	}, &mcp.StreamableHTTPOptions{SessionTimeout: idle, Logger: slog.New(minLevel{s.log.Handler(), slog.LevelWarn})})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
			if owner, ok := s.sessionOwner(sid); ok && owner != auth.FromContext(r.Context()) {
				http.Error(w, "session not found", http.StatusNotFound)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// Close ends every session and kills every sandbox MCP sessions created. New
// sessions are refused afterwards.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	live := make([]*mcp.ServerSession, 0, len(s.sessions))
	for ss := range s.sessions {
		live = append(live, ss)
	}
	s.mu.Unlock()
	for _, ss := range live {
		s.interrupt(ss)
		ss.Close()
	}
	s.watchers.Wait() // each watcher kills its session's sandboxes
	return nil
}

// newMCPServer builds an SDK server with the tools, whose sessions act as
// identityOf(the session's context).
func (s *Server) newMCPServer(identityOf func(context.Context) auth.Identity) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "ds-sandbox", Title: "ds-sandbox", Version: s.opts.Version}, &mcp.ServerOptions{
		Instructions: instructions(s.m),
		Logger:       slog.New(minLevel{s.log.Handler(), slog.LevelWarn}), // it logs every connection at Info
		SchemaCache:  s.schemas,
		Capabilities: &mcp.ServerCapabilities{},
	})
	srv.AddReceivingMiddleware(s.bindSession(identityOf))
	s.addTools(srv)
	return srv
}

// instructions tells the client what the tools do; "isolated" only when
// the default backend isolates code.
func instructions(m *manager.Manager) string {
	ch := m.DefaultChoice()
	first := "ds-sandbox runs Python and shell commands in isolated sandboxes (the " + ch.Name + " backend) on the user's machine.\n"
	if !ch.Isolated {
		first = "ds-sandbox runs Python and shell commands in sandboxes of the " + ch.Name + " backend, which does NOT isolate code: " +
			"it runs on the user's machine as the server's user.\n"
	}
	return first + instructionsRest
}

const instructionsRest = `Call run_code to run Python (state persists between calls); run_command for shell commands; read_file, write_file and list_files for files.
Without sandbox_id every tool uses this session's default sandbox, created on first use and killed when the session ends.
Use create_sandbox only for a separate environment (another template, environment variables or a named workspace).`

// bindSession is middleware that gives every request of a session that
// session's state, and a context carrying its identity.
func (s *Server) bindSession(identityOf func(context.Context) auth.Identity) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			ss, ok := req.GetSession().(*mcp.ServerSession)
			if !ok {
				return next(ctx, method, req)
			}
			sess, err := s.session(ss, identityOf(ctx))
			if err != nil {
				return nil, err
			}
			// The SDK's request context ends only when the client cancels;
			// also end it when the session is interrupted (Close, ctx of serve).
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			defer context.AfterFunc(sess.life, cancel)()
			ctx = auth.WithIdentity(ctx, sess.identity)
			return next(context.WithValue(ctx, sessionKey{}, sess), method, req)
		}
	}
}

type sessionKey struct{}

// sessionFrom returns the session state bindSession put in ctx.
func sessionFrom(ctx context.Context) *session {
	sess, _ := ctx.Value(sessionKey{}).(*session)
	return sess
}

// session returns ss's state, creating it (and the watcher that cleans up
// after the session) on the session's first request.
func (s *Server) session(ss *mcp.ServerSession, id auth.Identity) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.sessions[ss]; ok {
		return sess, nil
	}
	if s.closed {
		return nil, api.Errorf(api.ErrUnavailable, "the ds-sandbox MCP server is shutting down")
	}
	sess := newSession(id, ss.ID())
	s.sessions[ss] = sess
	if sess.sid != "" {
		s.bySID[sess.sid] = sess
	}
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		_ = ss.Wait()
		s.endSession(ss)
	}()
	s.log.Info("mcp session started", "session_id", ss.ID(), "key_id", id.KeyID)
	return sess, nil
}

// sessionOwner returns the identity of the live HTTP session with the given id.
func (s *Server) sessionOwner(sid string) (auth.Identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.bySID[sid]; ok {
		return sess.identity, true
	}
	return auth.Identity{}, false
}

// interrupt cancels the calls in flight in ss.
func (s *Server) interrupt(ss *mcp.ServerSession) {
	s.mu.Lock()
	sess := s.sessions[ss]
	s.mu.Unlock()
	if sess != nil {
		sess.interrupt()
	}
}

// endSession kills the sandboxes ss created and forgets it. Every caller
// returns only once that is done (Close relies on it), whichever of them did it.
func (s *Server) endSession(ss *mcp.ServerSession) {
	s.mu.Lock()
	sess := s.sessions[ss]
	s.mu.Unlock()
	if sess == nil {
		return // never used, or already cleaned up
	}
	sess.cleanup.Do(func() {
		ids := sess.end()
		ctx, cancel := context.WithTimeout(auth.WithIdentity(context.Background(), sess.identity), killTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				if err := s.m.Kill(ctx, id); err != nil && !errors.Is(err, api.ErrNotFound) {
					s.log.Warn("mcp session end: kill sandbox", "sandbox_id", id, "error", err)
				}
			})
		}
		wg.Wait()
		s.mu.Lock()
		delete(s.sessions, ss)
		if s.bySID[sess.sid] == sess {
			delete(s.bySID, sess.sid)
		}
		s.mu.Unlock()
		s.log.Info("mcp session ended", "session_id", ss.ID(), "key_id", sess.identity.KeyID, "sandboxes_killed", len(ids))
	})
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
