// Package e2b serves E2B's wire protocol so that E2B's unmodified SDKs (JS
// `e2b`, `@e2b/code-interpreter`, Python `e2b`, `e2b-code-interpreter`) work
// against ds-sandbox with E2B_API_URL and E2B_SANDBOX_URL pointing at the
// daemon.
//
// Two halves share one listen address:
//
//   - the control plane (/sandboxes, /v2/sandboxes, /templates): E2B's REST
//     API, authenticated by X-API-Key, answering errors as {code, message}
//     with the numeric HTTP status in code (the SDKs read it);
//   - the sandbox side: every request carrying E2b-Sandbox-Id. E2b-Sandbox-Port
//     picks the service: 49983 is envd (Connect-JSON filesystem.Filesystem
//     and process.Process, /files, /health), 49999 the code interpreter
//     (/execute, /contexts). These are served by the sandbox's agent through
//     the manager, authenticated by the per-sandbox access tokens returned at
//     create/connect.
//
// The Connect protocol is written by hand with encoding/json (connect.go):
// both SDKs speak only Connect with the JSON codec, unary and server
// streaming, so the whole protocol is the proto3 JSON mapping plus the 5-byte
// envelope; no protoc is needed and the JSON on the wire is exactly the one
// our tests check. proto/*.proto document the messages with E2B's names and
// numbers.
package e2b

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// Ports of E2B's in-sandbox services, as the SDKs name them in E2b-Sandbox-Port.
const (
	EnvdPort        = "49983"
	InterpreterPort = "49999"
)

// EnvdVersion is the envd version we report: the SDKs gate features on it
// (>= 0.4.0: no forced user; 0.5.7: octet-stream uploads).
const EnvdVersion = "0.5.7"

// clientID is the constant E2B returns in the deprecated clientID field.
const clientID = "6532622b"

// Options configure the E2B server.
type Options struct {
	// Loopback is true when the daemon listens only on loopback: without
	// configured API keys, any e2b_+hex key is then accepted.
	Loopback bool
	Logger   *slog.Logger
	// KeepaliveInterval overrides the stream keepalive period (tests).
	KeepaliveInterval time.Duration
}

// Server serves E2B's protocol over a manager.
type Server struct {
	m      *manager.Manager
	opt    Options
	log    *slog.Logger
	secret []byte // derives per-sandbox access tokens; new for every daemon
	cp     *http.ServeMux
	envd   *http.ServeMux
	ci     *http.ServeMux
	watch  watchers
}

// New builds the E2B server over m.
func New(m *manager.Manager, opt Options) *Server {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{m: m, opt: opt, log: opt.Logger, secret: make([]byte, 32), watch: watchers{m: map[string]*watcher{}}}
	_, _ = rand.Read(s.secret)
	s.controlRoutes()
	s.envdRoutes()
	s.interpreterRoutes()
	return s
}

// ServeHTTP serves one E2B request. The daemon's handler sends it requests
// carrying E2b-Sandbox-Id and the control-plane paths (/sandboxes,
// /v2/sandboxes, /templates); see httpapi.Options.E2B.
//
// The audit record in r's context (audit.FromContext), written by the
// daemon, gets the action, the caller's key and the sandbox here.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := audit.FromContext(r.Context())
	rec.Action = action(r)
	if r.Header.Get("E2b-Sandbox-Id") != "" {
		s.serveSandbox(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(strings.TrimPrefix(r.URL.Path, "/v2"), "/sandboxes/"); ok {
		rec.SandboxID, _, _ = strings.Cut(rest, "/")
	}
	id, err := s.authenticate(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rec.KeyID = id.KeyID
	s.cp.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), id)))
}

// action names an E2B request in the audit log with the REST API's words.
func action(r *http.Request) string {
	p := r.URL.Path
	if r.Header.Get("E2b-Sandbox-Id") != "" {
		switch {
		case p == "/execute":
			return "code.execute"
		case p == "/contexts" && r.Method == http.MethodPost:
			return "context.create"
		case strings.HasPrefix(p, "/contexts/") && strings.HasSuffix(p, "/restart"):
			return "context.restart"
		case strings.HasPrefix(p, "/contexts/") && r.Method == http.MethodDelete:
			return "context.delete"
		case strings.HasPrefix(p, "/contexts"):
			return "context.list"
		case p == "/files" && r.Method == http.MethodPost:
			return "files.write"
		case p == "/files":
			return "files.read"
		}
		if svc, method, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/"); ok {
			switch svc {
			case "filesystem.Filesystem":
				return "files." + strings.ToLower(method)
			case "process.Process":
				if method == "Start" {
					return "command.run"
				}
				return "command." + strings.ToLower(method)
			}
		}
		return "e2b" + strings.ReplaceAll(p, "/", ".")
	}
	p = strings.TrimPrefix(p, "/v2")
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "sandboxes" && r.Method == http.MethodPost:
		return "sandbox.create"
	case len(parts) == 1 && parts[0] == "sandboxes":
		return "sandbox.list"
	case len(parts) == 2 && parts[0] == "sandboxes" && r.Method == http.MethodDelete:
		return "sandbox.kill"
	case len(parts) == 2 && parts[0] == "sandboxes":
		return "sandbox.get"
	case len(parts) == 3 && parts[0] == "sandboxes":
		return "sandbox." + parts[2]
	}
	return "e2b." + strings.Join(parts, ".")
}

var e2bKey = regexp.MustCompile(`^e2b_[0-9a-fA-F]+$`)

// authenticate checks the control plane's X-API-Key. Without configured keys
// (allowed only on loopback) any e2b_+hex key is the open daemon's caller;
// with keys, the manager matches it (manager.Manager.Authenticate).
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	given := r.Header.Get("X-API-Key")
	if given == "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			given = strings.TrimSpace(h[7:])
		}
	}
	if given == "" {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "an API key is required: set E2B_API_KEY")
	}
	if !s.m.HasKeys() {
		if !s.opt.Loopback {
			return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "no API keys are configured and the daemon is not on loopback")
		}
		if !e2bKey.MatchString(given) {
			return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "without configured keys, E2B_API_KEY must look like e2b_ followed by hex digits")
		}
		return auth.Open, nil
	}
	id, err := s.m.Authenticate(given)
	if err != nil {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "the API key is not one of the daemon's keys (set E2B_API_KEY to a ds-sandbox API key)")
	}
	return id, nil
}

// token derives a sandbox's access token of a kind ("envd" or "traffic"):
// only this daemon can mint it, and it names one sandbox.
func (s *Server) token(kind, sandboxID string) string {
	h := hmac.New(sha256.New, s.secret)
	h.Write([]byte(kind + "\x00" + sandboxID))
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) validToken(kind, sandboxID, given string) bool {
	return given != "" && hmac.Equal([]byte(given), []byte(s.token(kind, sandboxID)))
}

// serveSandbox routes a sandbox-side request by E2b-Sandbox-Port, after
// finding the sandbox and checking its access token. A missing sandbox is
// E2B's proxy answer: 502 {sandboxId, message, code}.
func (s *Server) serveSandbox(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("E2b-Sandbox-Id")
	port := r.Header.Get("E2b-Sandbox-Port")
	// The token is proof of access: the sandbox is looked up as the local
	// admin, whichever key created it, and the request then acts as its
	// owner (quotas, audit).
	sbx, err := s.m.Get(auth.WithIdentity(r.Context(), auth.Local), id)
	if err != nil {
		httpjson.Write(w, http.StatusBadGateway, map[string]any{"sandboxId": id, "message": "The sandbox was not found", "code": http.StatusBadGateway})
		return
	}
	envdOK := s.validToken("envd", id, r.Header.Get("X-Access-Token"))
	trafficOK := s.validToken("traffic", id, r.Header.Get("E2B-Traffic-Access-Token"))
	owner := s.m.IdentityOf(sbx.Info().Owner)
	if envdOK || trafficOK {
		audit.FromContext(r.Context()).KeyID = owner.KeyID
	}
	ctx := context.WithValue(auth.WithIdentity(r.Context(), owner), sandboxKey{}, sbx)
	r = r.WithContext(ctx)
	switch port {
	case EnvdPort:
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !envdOK && !trafficOK {
			if isConnect(r) {
				writeConnectUnaryError(w, api.Errorf(api.ErrUnauthenticated, "unauthorized access, please provide a valid access token (X-Access-Token from Sandbox.create/connect)"))
				return
			}
			httpjson.Write(w, http.StatusUnauthorized, errorBody{Code: 401, Message: "unauthorized access, please provide a valid access token or method signing if supported"})
			return
		}
		s.envd.ServeHTTP(w, r)
	case InterpreterPort:
		if !envdOK && !trafficOK {
			http.Error(w, "unauthorized access: the sandbox's access token is missing or wrong", http.StatusUnauthorized)
			return
		}
		s.ci.ServeHTTP(w, r)
	default:
		httpjson.Write(w, http.StatusBadGateway, map[string]any{
			"message": "The sandbox is running but port is not open: ds-sandbox serves only envd (49983) and the code interpreter (49999) through E2B's headers, not user ports",
			"port":    port, "sandboxId": id, "code": http.StatusBadGateway})
	}
}

type sandboxKey struct{}

func sandboxFrom(ctx context.Context) *manager.Sandbox {
	s, _ := ctx.Value(sandboxKey{}).(*manager.Sandbox)
	return s
}

// errorBody is E2B's control-plane and envd REST error shape.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// statusOf maps our error codes to HTTP statuses, as the REST API does.
func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.status
	}
	return api.HTTPStatus(api.CodeOf(err))
}

// httpError carries a status that our error table has no code for.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func writeError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	var busy interface{ RetryAfter() time.Duration }
	if errors.As(err, &busy) {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(busy.RetryAfter().Round(time.Second)/time.Second))))
	}
	httpjson.Write(w, st, errorBody{Code: st, Message: err.Error()})
}

// maxBody bounds a JSON request body of E2B's protocol.
const maxBody = 4 << 20

// decodeBody reads an optional JSON body (unknown fields are ignored, as the
// SDKs of newer versions may send more).
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	err := dec.Decode(v)
	var mbe *http.MaxBytesError
	switch {
	case err == nil || errors.Is(err, io.EOF):
	case errors.As(err, &mbe):
		return api.Errorf(api.ErrTooLarge, "request body is larger than %d MiB", maxBody>>20)
	default:
		return api.Errorf(api.ErrInvalid, "request body: %v", err)
	}
	return nil
}
