package httpapi

import (
	"net/http"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/internal/auth"
)

// apiKey returns the key a request carries (X-API-Key, or Authorization:
// Bearer), "" for none.
func apiKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate finds the caller of a request; the manager matches the key
// (see manager.Manager.Authenticate).
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	return s.m.Authenticate(apiKey(r))
}
