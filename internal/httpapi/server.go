// Package httpapi is the daemon's REST API under /v1: sandboxes, code
// execution (NDJSON streams or waited for), files, commands, templates,
// workspaces, datasets and events, plus /healthz, /readyz, /metrics and the
// OpenAPI document. It authenticates API keys, scopes sandboxes to the key that
// made them, bounds bodies, streams and creation rates, writes the audit log
// and maps every error to one JSON shape {code, message, request_id} through
// the one table in package api.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/eventstream"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/metrics"
)

// Options configure the API server.
type Options struct {
	// Loopback is true when the daemon listens only on a loopback address.
	// Without API keys the server refuses to run unless it is.
	Loopback bool
	Logger   *slog.Logger
	// Metrics and Audit are optional sinks.
	Metrics *metrics.Metrics
	Audit   *audit.Log
	// MCP, when set, is served at /mcp behind the same authentication.
	MCP http.Handler
	// E2B, when set, serves E2B's protocol: requests carrying E2b-Sandbox-Id
	// and E2B's control-plane paths (/sandboxes, /v2/sandboxes, /templates).
	// It does its own authentication (E2B's headers and tokens).
	E2B http.Handler
	// StallTimeout is how long a client may stop reading an execution's
	// stream before it is cut and the cell interrupted; 0 means
	// eventstream.ExecWriteTimeout (the documented 30 s).
	StallTimeout time.Duration
}

// Server is the REST API.
type Server struct {
	m   *manager.Manager
	cfg config.Config
	opt Options
	log *slog.Logger
	mux *http.ServeMux

	patterns []string // every registered route, for the OpenAPI test

	mu           sync.Mutex
	shuttingDown bool

	// base is the parent of every request's context, cancelled by CutStreams.
	base      context.Context
	cancelAll context.CancelFunc
}

// New builds the API over m. It refuses an open API (no keys) on a
// non-loopback address.
func New(m *manager.Manager, opt Options) (*Server, error) {
	cfg := m.Config()
	if !m.HasKeys() && !opt.Loopback {
		return nil, api.Errorf(api.ErrInvalid, "refusing to serve the API on a non-loopback address without API keys: configure api_keys (or DS_SANDBOX_API_KEY), or listen on 127.0.0.1")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = eventstream.ExecWriteTimeout
	}
	s := &Server{
		m: m, cfg: cfg, opt: opt, log: opt.Logger, mux: http.NewServeMux(),
	}
	s.base, s.cancelAll = context.WithCancel(context.Background())
	s.routes()
	return s, nil
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get("X-Request-ID")
		if !validRequestID(rid) {
			rid = newRequestID()
		}
		w.Header().Set("X-Request-ID", rid)
		ctx, cancel := context.WithCancel(context.WithValue(r.Context(), ridKey{}, rid))
		defer cancel()
		stop := context.AfterFunc(s.base, cancel)
		defer stop()
		r = r.WithContext(ctx)
		if !s.m.HasKeys() && !loopbackHost(r.Host) {
			// Without keys every caller is the admin: a page on another
			// site that rebinds its name to 127.0.0.1 must not become one.
			s.writeError(w, r, api.Errorf(api.ErrPermission, "host %q: a daemon without api_keys answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]); configure api_keys to serve other names", r.Host))
			return
		}
		if s.cors(w, r) {
			return
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "request_id", rid, "path", r.URL.Path, "panic", v)
				s.writeError(w, r, fmt.Errorf("internal error (request %s): %v", rid, v))
			}
		}()
		if s.opt.E2B != nil && isE2B(r) {
			s.serveE2B(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// serveE2B hands r to the E2B handler (which authenticates E2B's way and
// fills in the audit record: the key, the action, the sandbox, the code) and
// audits it like every other API request.
func (s *Server) serveE2B(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	rec := &audit.Record{Action: "e2b", RequestID: requestID(r.Context()), Remote: r.RemoteAddr,
		SandboxID: r.Header.Get("E2b-Sandbox-Id"), Detail: map[string]string{"method": r.Method, "path": r.URL.Path}}
	start := time.Now()
	s.opt.E2B.ServeHTTP(w, r.WithContext(audit.WithRecord(r.Context(), rec)))
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if s.opt.Metrics != nil {
		s.opt.Metrics.HTTPRequest("e2b", r.Method, w.status, time.Since(start))
	}
	var err error
	if w.status >= 400 {
		err = fmt.Errorf("HTTP %d", w.status)
		switch w.status {
		case http.StatusUnauthorized, http.StatusForbidden:
			err = fmt.Errorf("HTTP %d: %w", w.status, api.ErrUnauthenticated)
		case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge, http.StatusInsufficientStorage:
			err = fmt.Errorf("HTTP %d: %w", w.status, api.ErrLimit)
		case api.StatusClientClosed:
			err = fmt.Errorf("HTTP %d: %w", w.status, api.ErrCancelled)
		}
	}
	s.audit(rec, w.status, err)
}

// isE2B reports whether r belongs to E2B's protocol (see Options.E2B).
func isE2B(r *http.Request) bool {
	if r.Header.Get("E2b-Sandbox-Id") != "" {
		return true
	}
	for _, p := range []string{"/sandboxes", "/v2/sandboxes", "/templates"} {
		if r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") {
			return true
		}
	}
	return false
}

// loopbackHost reports whether a request's Host names this machine's
// loopback: localhost (or a name under it), or a loopback address, with any
// port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

type ridKey struct{}

func requestID(ctx context.Context) string {
	rid, _ := ctx.Value(ridKey{}).(string)
	return rid
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cors answers preflight requests and sets CORS headers for configured
// origins. It returns true when the request was fully answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.cfg.CORSOrigins) == 0 {
		return false
	}
	allowed := false
	for _, o := range s.cfg.CORSOrigins {
		allowed = allowed || o == origin || o == "*"
	}
	if !allowed {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "X-Request-ID")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, X-API-Key, Content-Type, X-Request-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// statusWriter records the status of a response and keeps Flush working
// through http.ResponseController (Unwrap).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// route is how every API route is registered: authentication, the per-route
// metrics and (when action is set) the audit record around h.
type routeOpts struct {
	action string // audit action; "" = not audited
	open   bool   // no authentication (health, OpenAPI)
	admin  bool   // admin keys only
	stream bool   // counts against the key's open streams
}

func (s *Server) handle(pattern string, o routeOpts, h func(w http.ResponseWriter, r *http.Request) error) {
	s.patterns = append(s.patterns, pattern)
	s.mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		rec := &audit.Record{Action: o.action, RequestID: requestID(r.Context()), Remote: r.RemoteAddr, SandboxID: r.PathValue("id")}
		r = r.WithContext(audit.WithRecord(r.Context(), rec))
		err := s.serve(w, r, o, rec, h)
		err = s.clientGone(r, err)
		if err != nil {
			switch {
			case w.status == 0:
				s.writeError(w, r, err)
			case errors.Is(err, api.ErrCancelled):
				s.log.Info("stream cut", "request_id", rec.RequestID, "err", err)
			default:
				s.log.Warn("stream ended with an error", "request_id", rec.RequestID, "err", err)
			}
		}
		if w.status == 0 {
			w.WriteHeader(http.StatusNoContent)
		}
		if s.opt.Metrics != nil {
			s.opt.Metrics.HTTPRequest(pattern, r.Method, w.status, time.Since(start))
		}
		if o.action != "" || errors.Is(err, api.ErrUnauthenticated) || errors.Is(err, api.ErrPermission) {
			s.audit(rec, w.status, err)
		}
	})
}

// clientGone turns the error of a request whose client went away (its
// context ended while the daemon is not shutting down) into ErrCancelled:
// recorded as status 499 and outcome cancelled, not as a failure of ours.
func (s *Server) clientGone(r *http.Request, err error) error {
	if err == nil || r.Context().Err() == nil || errors.Is(err, api.ErrCancelled) || s.isShuttingDown() {
		return err
	}
	return api.Errorf(api.ErrCancelled, "the client went away before the answer (%v)", err)
}

// auditRecord returns the request's audit record, for handlers to add detail.
func auditRecord(r *http.Request) *audit.Record { return audit.FromContext(r.Context()) }

func (s *Server) serve(w *statusWriter, r *http.Request, o routeOpts, rec *audit.Record, h func(http.ResponseWriter, *http.Request) error) error {
	if !o.open {
		id, err := s.authenticate(r)
		if err != nil {
			if rec.Action == "" {
				rec.Action = "auth"
			}
			return err
		}
		rec.KeyID = id.KeyID
		if o.admin && !id.Admin {
			return api.Errorf(api.ErrPermission, "%s needs an admin key", strings.SplitN(r.URL.Path, "?", 2)[0])
		}
		r = r.WithContext(auth.WithIdentity(r.Context(), id))
		if o.stream {
			release, err := s.m.AcquireStream(r.Context())
			if err != nil {
				return err
			}
			defer release()
		}
	}
	return h(w, r)
}

func (s *Server) audit(rec *audit.Record, status int, err error) {
	if s.opt.Audit == nil {
		return
	}
	rec.Status = status
	rec.Finish(status >= 400, err)
	if werr := s.opt.Audit.Write(*rec); werr != nil {
		s.log.Error("audit log write failed", "err", werr)
	}
}

// BeginShutdown marks the server as shutting down: executions cut from now on
// say so instead of reporting a vanished client.
func (s *Server) BeginShutdown() {
	s.mu.Lock()
	s.shuttingDown = true
	s.mu.Unlock()
}

// CutStreams cancels every request still running (after the shutdown grace).
func (s *Server) CutStreams() { s.cancelAll() }
