package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"golang.org/x/time/rate"
)

type keyEntry struct {
	hash [32]byte
	id   auth.Identity
}

func newKeys(keys []config.APIKey) []keyEntry {
	out := make([]keyEntry, len(keys))
	for i, k := range keys {
		out[i] = keyEntry{hash: sha256.Sum256([]byte(k.Key)), id: auth.Identity{KeyID: k.ID, Admin: k.Admin}}
	}
	return out
}

func withIdentity(ctx context.Context, id auth.Identity) context.Context {
	return auth.WithIdentity(ctx, id)
}

// authenticate finds the key of a request (X-API-Key or Authorization:
// Bearer). Every configured key is compared, in constant time over hashes, so
// neither timing nor the key's length tells which matched. Without configured
// keys every caller is the local admin (New allows that only on loopback).
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	if len(s.keys) == 0 {
		return auth.Local, nil
	}
	given := r.Header.Get("X-API-Key")
	if given == "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			given = strings.TrimSpace(h[7:])
		}
	}
	if given == "" {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "an API key is required (X-API-Key or Authorization: Bearer)")
	}
	h := sha256.Sum256([]byte(given))
	var found auth.Identity
	match := 0
	for _, k := range s.keys {
		if subtle.ConstantTimeCompare(h[:], k.hash[:]) == 1 {
			found, match = k.id, 1
		}
	}
	if match == 0 {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "the API key is not valid")
	}
	return found, nil
}

// allowCreate applies the per-key creation rate and sandbox count limits.
func (s *Server) allowCreate(ctx context.Context) error {
	id := auth.FromContext(ctx)
	if n := s.cfg.CreatesPerMinute; n > 0 {
		s.mu.Lock()
		l, ok := s.limiters[id.KeyID]
		if !ok {
			l = rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n)
			s.limiters[id.KeyID] = l
		}
		s.mu.Unlock()
		if !l.Allow() {
			return api.Errorf(api.ErrLimit, "key %q creates sandboxes faster than %d a minute; retry later", id.KeyID, n)
		}
	}
	if n := s.cfg.MaxSandboxesPerKey; n > 0 {
		count := 0
		for _, info := range s.m.List(ctx, nil) {
			if info.Owner == id.KeyID {
				count++
			}
		}
		if count >= n {
			return api.Errorf(api.ErrLimit, "key %q already runs %d sandboxes (max_sandboxes_per_key); kill one first", id.KeyID, count)
		}
	}
	return nil
}

// acquireStream counts an open stream of keyID against max_streams_per_key.
func (s *Server) acquireStream(keyID string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.cfg.MaxStreamsPerKey; n > 0 && s.streams[keyID] >= n {
		return nil, api.Errorf(api.ErrLimit, "key %q has %d open streams (max_streams_per_key); close one first", keyID, n)
	}
	s.streams[keyID]++
	return func() {
		s.mu.Lock()
		s.streams[keyID]--
		if s.streams[keyID] == 0 {
			delete(s.streams, keyID)
		}
		s.mu.Unlock()
	}, nil
}
