package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// FuzzRouter sends arbitrary methods, paths, headers and bodies through the
// real router over a real manager and the local backend ("{id}" in a path
// is a live sandbox of the caller). No input may panic or get a 5xx, and a
// sandbox created or extended never ends past the timeout cap.
func FuzzRouter(f *testing.F) {
	seeds := []struct {
		method, path, hkey, hval, body string
		key                            byte
	}{
		{"POST", "/v1/sandboxes", "", "", `{"timeout": 9223372037}`, 1},
		{"POST", "/v1/sandboxes", "", "", `{"timeout": 9223372036854775807}`, 1},
		{"POST", "/v1/sandboxes", "", "", `{"timeout": -9223372036854775808}`, 1},
		{"POST", "/v1/sandboxes/{id}/timeout", "", "", `{"timeout": 9223372037}`, 1},
		{"POST", "/v1/sandboxes/{id}/timeout", "", "", `{"timeout": 86400}`, 1},
		{"POST", "/v1/sandboxes/{id}/execute", "", "", `{"code": "1", "timeout_ms": 9223372036854775807}`, 1},
		{"POST", "/v1/sandboxes/{id}/execute?wait=true", "", "", `{"code": "6*7", "timeout_ms": 5000}`, 1},
		{"POST", "/v1/sandboxes/{id}/processes", "", "", `{"cmd": "true", "timeout_ms": 9223372036854775807}`, 1},
		{"PUT", "/v1/datasets/d1?filename=%00", "", "", "x", 1},
		{"PUT", "/v1/datasets/d1?filename=" + strings.Repeat("a", 10000), "", "", "x", 1},
		{"PUT", "/v1/datasets/..?filename=../../x", "", "", "x", 1},
		{"POST", "/v1/sandboxes/{id}/datasets", "", "", `{"name": "d1", "strategy": "link"}`, 1},
		{"POST", "/v1/sandboxes", "", "", `{"metadata": {"x": "` + strings.Repeat("a", 1<<20) + `"}}`, 1},
		{"PUT", "/v1/sandboxes/{id}/files?path=%00", "", "", "data", 1},
		{"GET", "/v1/sandboxes/{id}/files/list?path=.&depth=99999999999999999999", "", "", "", 1},
		{"GET", "/v1/sandboxes/{id}/processes/-1/stream", "", "", "", 1},
		{"DELETE", "/v1/sandboxes/{id}/contexts/%2e%2e", "", "", "", 1},
		{"PATCH", "//v1/../v1/sandboxes", "X-Request-ID", strings.Repeat("r", 100), "", 0},
		{"GET", "/v1/events?limit=99999999999999999999", "", "", "", 2},
		{"POST", "/v1/sandboxes/{id}/connect", "Content-Type", "text/plain", "\x00\xff", 3},
		{"OPTIONS", "/v1/sandboxes", "Origin", "http://x", "", 1},
		{"GET", "/sandboxes", "X-API-Key", "e2b", "", 0},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.hkey, s.hval, []byte(s.body), s.key)
	}

	e := newServerWith(f, func(c *config.Config) {
		c.MaxBodyMB = 1
		c.MaxUploadMB = 1
		c.CreatesPerMinute = 2
		c.MaxSandboxesPerKey = 2
	}, httpapi.Options{})
	h := e.handler
	sbx := e.create(f, aliceKey, api.CreateSandboxRequest{})
	keys := []string{"", aliceKey, bobKey, "not-a-key-0123456789"}

	f.Fuzz(func(t *testing.T, method, path, hkey, hval string, body []byte, key byte) {
		path = strings.ReplaceAll(path, "{id}", sbx.SandboxID)
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, "http://daemon"+path, strings.NewReader(string(body)))
		if err != nil {
			t.Skip("not a request net/http would send")
		}
		if k := keys[int(key)%len(keys)]; k != "" {
			req.Header.Set("X-API-Key", k)
		}
		if validHeader(hkey, hval) { // the server refuses others before any handler
			req.Header.Set(hkey, hval)
		}
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req) // a panic fails the fuzz target
		if ctx.Err() != nil {
			return // our own deadline: the answer is a cancellation
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, path, rec.Code, rec.Body.Bytes())
		}
		if (rec.Code == http.StatusCreated || rec.Code == http.StatusOK) && strings.Contains(rec.Header().Get("Content-Type"), "json") {
			var info api.SandboxInfo
			if json.Unmarshal(rec.Body.Bytes(), &info) == nil && !info.EndAt.IsZero() && info.SandboxID != "" {
				if info.EndAt.After(time.Now().Add(manager.MaxTimeout+time.Minute)) || info.EndAt.Before(info.StartedAt) {
					t.Fatalf("%s %q: end_at %s (started %s) is outside the cap of %s", method, path, info.EndAt, info.StartedAt, manager.MaxTimeout)
				}
			}
		}
	})
}

// validHeader reports whether a header would pass net/http's server: a token
// name and a value without control characters other than tab.
func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	for _, c := range []byte(v) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
