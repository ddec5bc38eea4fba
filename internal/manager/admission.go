package manager

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// Admission. The manager is the one place that decides what a caller may do,
// whichever face it came through (REST, E2B, MCP over stdio or HTTP, the
// embedded SDK): faces find the caller's identity (Authenticate), put it in
// the context (auth.WithIdentity) and translate the errors; they decide no
// policy. What is decided here:
//
//   - who the caller is: Authenticate matches an API key, in constant time
//     over hashes, against every configured key;
//   - which backends and templates a key may use (allowed_backends,
//     api_keys[].backends, api_keys[].templates; local only for admins and
//     keys that list it), checked by Create;
//   - per-key quotas: creates_per_minute and max_sandboxes_per_key, counted
//     under the manager's lock together with the creates still in flight,
//     so racing creates cannot exceed them; max_streams_per_key through
//     AcquireStream;
//   - ownership: sandboxes (Get, List, Kill), workspaces (workspaces.go)
//     and datasets (datasets.go) belong to the key that made them.
//
// In-process callers (auth.Local) are the program itself: they see
// everything and are not metered.

// keyEntry is one configured API key.
type keyEntry struct {
	hash [32]byte
	key  config.APIKey
}

// admission is the manager's admission state.
type admission struct {
	keys []keyEntry

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	streams  map[string]int
}

func (a *admission) init(cfg config.Config) {
	a.limiters, a.streams = map[string]*rate.Limiter{}, map[string]int{}
	for _, k := range cfg.APIKeys {
		a.keys = append(a.keys, keyEntry{hash: sha256.Sum256([]byte(k.Key)), key: k})
	}
}

// HasKeys reports whether API keys are configured (without them every remote
// caller is auth.Open, which the daemon allows only on loopback).
func (m *Manager) HasKeys() bool { return len(m.adm.keys) > 0 }

// Authenticate returns the identity of an API key. Every configured key is
// compared, in constant time over hashes, so neither timing nor the key's
// length tells which matched. Without configured keys every caller is
// auth.Open. Errors wrap api.ErrUnauthenticated.
func (m *Manager) Authenticate(given string) (auth.Identity, error) {
	if len(m.adm.keys) == 0 {
		return auth.Open, nil
	}
	if given == "" {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "an API key is required (X-API-Key or Authorization: Bearer)")
	}
	h := sha256.Sum256([]byte(given))
	var found auth.Identity
	match := 0
	for _, k := range m.adm.keys {
		if subtle.ConstantTimeCompare(h[:], k.hash[:]) == 1 {
			found, match = auth.Identity{KeyID: k.key.ID, Admin: k.key.Admin}, 1
		}
	}
	if match == 0 {
		return auth.Identity{}, api.Errorf(api.ErrUnauthenticated, "the API key is not valid")
	}
	return found, nil
}

// IdentityOf returns the identity of the key named keyID: a sandbox's owner,
// for requests that prove access to one sandbox by its own token (E2B's
// envd and interpreter) and so act as its owner.
func (m *Manager) IdentityOf(keyID string) auth.Identity {
	if k, ok := m.keyOf(keyID); ok {
		return auth.Identity{KeyID: k.ID, Admin: k.Admin}
	}
	if len(m.adm.keys) == 0 {
		return auth.Open
	}
	// An owner no configured key has (the key was removed from the config
	// since): no rights beyond what it owns.
	return auth.Identity{KeyID: keyID}
}

func (m *Manager) keyOf(keyID string) (config.APIKey, bool) {
	for _, k := range m.adm.keys {
		if k.key.ID == keyID {
			return k.key, true
		}
	}
	return config.APIKey{}, false
}

// CanReadMetrics reports whether the caller may read the daemon's metrics
// (every key's numbers): admins and keys configured with metrics: true.
func (m *Manager) CanReadMetrics(ctx context.Context) bool {
	id := auth.FromContext(ctx)
	if id.Admin {
		return true
	}
	k, ok := m.keyOf(id.KeyID)
	return ok && k.Metrics
}

// BackendAllowed returns nil when the caller may create sandboxes on the
// named backend, else an api.ErrPermission error naming the setting.
func (m *Manager) BackendAllowed(ctx context.Context, name string) error {
	id := auth.FromContext(ctx)
	if id.Internal {
		return nil
	}
	if len(m.cfg.AllowedBackends) > 0 && !slices.Contains(m.cfg.AllowedBackends, name) {
		return api.Errorf(api.ErrPermission, "backend %s is not allowed on this daemon (allowed_backends: %s)", name, strings.Join(m.cfg.AllowedBackends, ", "))
	}
	k, ok := m.keyOf(id.KeyID)
	if !ok {
		if !m.HasKeys() || id.Admin {
			return nil // no keys: the single-user daemon on loopback
		}
		// An identity no configured key has (the owner of a sandbox whose
		// key was removed since): no more than a key without settings.
		k = config.APIKey{ID: id.KeyID}
	}
	if len(k.Backends) > 0 && !slices.Contains(k.Backends, name) {
		return api.Errorf(api.ErrPermission, "backend %s is not allowed for key %q (api_keys[].backends: %s)", name, k.ID, strings.Join(k.Backends, ", "))
	}
	if name == "local" && !k.Admin && !slices.Contains(k.Backends, "local") {
		return api.Errorf(api.ErrPermission, "backend local runs code on the host without isolation: key %q may not use it (list it in that key's api_keys[].backends to allow it); ask for an isolating backend such as oci", k.ID)
	}
	return nil
}

// OffersLocal reports whether the local backend (code on the host,
// unisolated) is configured and allowed to some caller.
func (m *Manager) OffersLocal() bool {
	_, ok := m.backends["local"]
	return ok && (len(m.cfg.AllowedBackends) == 0 || slices.Contains(m.cfg.AllowedBackends, "local"))
}

// templateAllowed returns nil when the caller may create sandboxes from
// template id ("" = none, "inline" = a template given in the request).
func (m *Manager) templateAllowed(ctx context.Context, id string) error {
	who := auth.FromContext(ctx)
	if who.Internal {
		return nil
	}
	k, ok := m.keyOf(who.KeyID)
	if !ok || len(k.Templates) == 0 || slices.Contains(k.Templates, id) {
		return nil
	}
	name := id
	if name == "" {
		name = "(none)"
	}
	return api.Errorf(api.ErrPermission, "template %s is not allowed for key %q (api_keys[].templates: %s)", name, k.ID, strings.Join(k.Templates, ", "))
}

// reserveCreate applies the caller's creation rate and sandbox count before
// a create, and holds a place for it: the count is of the key's running
// sandboxes plus its creates in flight, taken under m.mu, so concurrent
// creates through any face cannot exceed max_sandboxes_per_key. release
// gives the place back once the sandbox is registered (or failed).
func (m *Manager) reserveCreate(ctx context.Context) (release func(), err error) {
	id := auth.FromContext(ctx)
	if id.Internal {
		return func() {}, nil
	}
	if n := m.cfg.CreatesPerMinute; n > 0 {
		m.adm.mu.Lock()
		l, ok := m.adm.limiters[id.KeyID]
		if !ok {
			l = rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n)
			m.adm.limiters[id.KeyID] = l
		}
		m.adm.mu.Unlock()
		if !l.Allow() {
			return nil, api.Errorf(api.ErrLimit, "key %q creates sandboxes faster than %d a minute (creates_per_minute); retry later", id.KeyID, n)
		}
	}
	n := m.cfg.MaxSandboxesPerKey
	if n <= 0 {
		return func() {}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	count := m.pending[id.KeyID]
	for _, s := range m.sandboxes {
		if s.owner == id.KeyID {
			count++
		}
	}
	if count >= n {
		return nil, api.Errorf(api.ErrLimit, "key %q already has %d sandboxes running or starting (max_sandboxes_per_key %d); kill one first", id.KeyID, count, n)
	}
	m.pending[id.KeyID]++
	return func() {
		m.mu.Lock()
		if m.pending[id.KeyID]--; m.pending[id.KeyID] <= 0 {
			delete(m.pending, id.KeyID)
		}
		m.mu.Unlock()
	}, nil
}

// AcquireStream counts an open stream (an execution, a watch, a command's
// output, a download) of the caller against max_streams_per_key; release
// ends it. Every face that streams calls it.
func (m *Manager) AcquireStream(ctx context.Context) (release func(), err error) {
	id := auth.FromContext(ctx)
	n := m.cfg.MaxStreamsPerKey
	if id.Internal || n <= 0 {
		return func() {}, nil
	}
	a := &m.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams[id.KeyID] >= n {
		return nil, api.Errorf(api.ErrLimit, "key %q has %d open streams (max_streams_per_key); close one first", id.KeyID, n)
	}
	a.streams[id.KeyID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			if a.streams[id.KeyID]--; a.streams[id.KeyID] <= 0 {
				delete(a.streams, id.KeyID)
			}
			a.mu.Unlock()
		})
	}, nil
}
