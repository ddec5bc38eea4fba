package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// proxy forwards one of the agent's own routes (files, processes, contexts)
// into the sandbox after authentication and ownership checks: the path under
// /v1/sandboxes/{id} is the agent's path. Bodies and NDJSON streams pass
// through without buffering (uploads bounded by max_upload_mb).
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) error {
	// The query is forwarded as it came: one the agent's server would refuse
	// (it closes the connection on a bad request line) is the client's mistake.
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return api.Errorf(api.ErrInvalid, "query: %v", err)
	}
	sbx, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	rec := auditRecord(r)
	if p := r.URL.Query().Get("path"); p != "" {
		rec.Detail = map[string]string{"path": p}
	}
	switch {
	case r.Method == http.MethodPut:
		if s.cfg.MaxUploadMB > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxUploadMB)<<20)
		}
	case r.Body != nil && r.Body != http.NoBody:
		// JSON bodies are small: read them (bounded) so they reach the agent
		// in one write with the headers. The agent may answer an error before
		// reading a body, and a body still being written then breaks the pipe
		// and hides the agent's answer.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyMB)<<20))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return api.Errorf(api.ErrTooLarge, "request body is larger than %d MiB (max_body_mb)", s.cfg.MaxBodyMB)
		case err != nil:
			return api.Errorf(api.ErrInvalid, "request body: %v", err)
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/processes") {
			// Audit the command line.
			var req api.ProcessRequest
			if json.Unmarshal(body, &req) == nil {
				rec.SetCode(req.Cmd, s.cfg.AuditLogCode)
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	prefix := "/v1/sandboxes/" + r.PathValue("id")
	sock := sbx.AgentSocket()
	var proxyErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "agent"
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = "agent"
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("X-API-Key")
			pr.Out.Header.Del("Cookie")
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 400 {
				return nil
			}
			// Give the agent's error the request id and count it.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			var e api.Error
			if json.Unmarshal(b, &e) != nil || e.Code == "" {
				e = api.Error{Code: api.CodeInternal, Message: "agent: " + strings.TrimSpace(string(b))}
			}
			e.RequestID = requestID(r.Context())
			if s.opt.Metrics != nil {
				s.opt.Metrics.Error(e.Code)
			}
			rec.Error = e.Message
			nb, _ := json.Marshal(e)
			resp.Body = io.NopCloser(bytes.NewReader(nb))
			resp.ContentLength = int64(len(nb))
			resp.Header.Set("Content-Length", strconv.Itoa(len(nb)))
			resp.Header.Set("Content-Type", "application/json")
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
				proxyErr = api.Errorf(api.ErrTooLarge, "upload is larger than %d MiB (max_upload_mb)", s.cfg.MaxUploadMB)
				return
			case r.Context().Err() != nil:
				proxyErr = r.Context().Err()
				return
			}
			proxyErr = api.Errorf(api.ErrUnavailable, "sandbox %s: agent: %v", sbx.ID(), err)
		},
	}
	rp.ServeHTTP(w, r)
	return proxyErr
}
