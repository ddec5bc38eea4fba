package e2b

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// The Connect protocol (connectrpc.com/docs/protocol) with the JSON codec,
// which is all E2B's SDKs speak to envd:
//
//   - unary: POST /<pkg.Service>/<Method>, Content-Type application/json,
//     body = the request message in proto3 JSON; 200 + response JSON, or a
//     non-200 status + {"code": "<connect code>", "message": "…"};
//   - server streaming: Content-Type application/connect+json; request and
//     response bodies are envelopes [flags:1][length:4 big-endian][JSON]; the
//     last response envelope has flag 0x02 (end of stream) and carries {} or
//     {"error": {code, message}}. The HTTP status is always 200.

const (
	flagEndStream   = 0x02
	flagCompressed  = 0x01
	maxMessageBytes = 16 << 20
)

// connectCode maps our error codes to Connect's.
func connectCode(err error) string {
	switch api.CodeOf(err) {
	case api.CodeNotFound:
		return "not_found"
	case api.CodeInvalid:
		return "invalid_argument"
	case api.CodeExists:
		return "already_exists"
	case api.CodeUnsupported:
		return "unimplemented"
	case api.CodeLimit, api.CodeTooLarge, api.CodeNoSpace:
		return "resource_exhausted"
	case api.CodeCancelled:
		return "canceled"
	case api.CodePermission:
		return "permission_denied"
	case api.CodeUnavailable:
		return "unavailable"
	case api.CodeTimeout:
		return "deadline_exceeded"
	case api.CodeUnauth:
		return "unauthenticated"
	}
	return "internal"
}

// connectStatus is the HTTP status of a unary Connect error code.
func connectStatus(code string) int {
	switch code {
	case "not_found":
		return 404
	case "invalid_argument", "failed_precondition", "out_of_range":
		return 400
	case "already_exists", "aborted":
		return 409
	case "unimplemented":
		return 501
	case "resource_exhausted":
		return 429
	case "permission_denied":
		return 403
	case "unavailable":
		return 503
	case "deadline_exceeded":
		return 504
	case "unauthenticated":
		return 401
	case "canceled":
		return 499
	}
	return 500
}

type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

func toConnectError(err error) connectError {
	return connectError{Code: connectCode(err), Message: err.Error()}
}

func isConnect(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return r.Method == http.MethodPost && (strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/connect+json"))
}

func writeConnectUnaryError(w http.ResponseWriter, err error) {
	ce := toConnectError(err)
	httpjson.Write(w, connectStatus(ce.Code), ce)
}

// unary adapts fn to a unary Connect-JSON handler.
func unary[Req, Resp any](fn func(r *http.Request, req *Req) (*Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			writeConnectUnaryError(w, api.Errorf(api.ErrInvalid, "unary Connect calls must use Content-Type application/json (only the JSON codec is served)"))
			return
		}
		if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
			writeConnectUnaryError(w, api.Errorf(api.ErrUnsupported, "Content-Encoding %q: compression is not supported", enc))
			return
		}
		ctx, cancel, err := deadline(r)
		if err != nil {
			writeConnectUnaryError(w, err)
			return
		}
		defer cancel()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxMessageBytes+1))
		if err != nil || len(body) > maxMessageBytes {
			writeConnectUnaryError(w, api.Errorf(api.ErrInvalid, "reading the request: too large or cut (%v)", err))
			return
		}
		req := new(Req)
		if len(body) > 0 {
			if err := json.Unmarshal(body, req); err != nil {
				writeConnectUnaryError(w, api.Errorf(api.ErrInvalid, "request message: %v", err))
				return
			}
		}
		resp, err := fn(r.WithContext(ctx), req)
		if err != nil {
			writeConnectUnaryError(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, resp)
	}
}

// deadline applies Connect-Timeout-Ms to the request's context.
func deadline(r *http.Request) (ctx context.Context, cancel context.CancelFunc, err error) {
	ctx, cancel = context.WithCancel(r.Context())
	if v := r.Header.Get("Connect-Timeout-Ms"); v != "" {
		ms, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || ms <= 0 || len(v) > 10 {
			cancel()
			return nil, nil, api.Errorf(api.ErrInvalid, "Connect-Timeout-Ms %q is not a positive integer", v)
		}
		cancel()
		ctx, cancel = context.WithTimeout(r.Context(), time.Duration(ms)*time.Millisecond)
	}
	return ctx, cancel, nil
}

// readEnvelope reads one enveloped message.
func readEnvelope(r io.Reader) (flags byte, msg []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessageBytes {
		return 0, nil, fmt.Errorf("message of %d bytes is larger than %d", n, maxMessageBytes)
	}
	msg = make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, nil, fmt.Errorf("message cut short: %w", err)
	}
	return hdr[0], msg, nil
}

// appendEnvelope frames msg.
func appendEnvelope(dst []byte, flags byte, msg []byte) []byte {
	dst = append(dst, flags, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(msg)))
	return append(dst, msg...)
}

// stream is the response side of a server-streaming call. Send is safe for
// concurrent use (keepalives come from another goroutine).
type stream struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	closed bool
	err    error
}

// Send writes one message.
func (s *stream) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("stream closed")
	}
	if s.err != nil {
		return s.err
	}
	if _, err := s.w.Write(appendEnvelope(nil, 0, b)); err != nil {
		s.err = err
		return err
	}
	http.NewResponseController(s.w).Flush()
	return nil
}

func (s *stream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	msg := []byte("{}")
	if err != nil {
		msg, _ = json.Marshal(map[string]any{"error": toConnectError(err)})
	}
	_, _ = s.w.Write(appendEnvelope(nil, flagEndStream, msg))
	http.NewResponseController(s.w).Flush()
}

// keepalive sends msg every interval until stop is closed.
func (s *stream) keepalive(interval time.Duration, msg any, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if s.Send(msg) != nil {
				return
			}
		}
	}
}

// serverStream adapts fn to a server-streaming Connect-JSON handler. fn's
// error ends the stream with a Connect error.
func serverStream[Req any](fn func(r *http.Request, req *Req, st *stream) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/connect+json") {
			writeConnectUnaryError(w, api.Errorf(api.ErrInvalid, "streaming Connect calls must use Content-Type application/connect+json (only the JSON codec is served)"))
			return
		}
		w.Header().Set("Content-Type", "application/connect+json")
		st := &stream{w: w}
		ctx, cancel, err := deadline(r)
		if err != nil {
			w.WriteHeader(http.StatusOK)
			st.end(err)
			return
		}
		defer cancel()
		req := new(Req)
		flags, msg, err := readEnvelope(r.Body)
		switch {
		case err != nil:
			err = api.Errorf(api.ErrInvalid, "request envelope: %v", err)
		case flags&flagCompressed != 0:
			err = api.Errorf(api.ErrUnsupported, "compressed messages are not supported")
		default:
			if jerr := json.Unmarshal(msg, req); jerr != nil {
				err = api.Errorf(api.ErrInvalid, "request message: %v", jerr)
			}
		}
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		if err == nil {
			err = fn(r.WithContext(ctx), req, st)
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
				err = api.Errorf(api.ErrTimeout, "the call's Connect-Timeout-Ms passed")
			}
		}
		st.end(err)
	}
}

// keepaliveInterval reads Keepalive-Ping-Interval (seconds; envd's default 90).
func (s *Server) keepaliveInterval(r *http.Request) time.Duration {
	if s.opt.KeepaliveInterval > 0 {
		return s.opt.KeepaliveInterval
	}
	if n, err := strconv.Atoi(r.Header.Get("Keepalive-Ping-Interval")); err == nil && n > 0 && n < 3600 {
		return time.Duration(n) * time.Second
	}
	return 90 * time.Second
}
