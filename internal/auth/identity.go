// Package auth holds who is calling: the identity an API key maps to, carried
// in a request's context from a face (REST, E2B, MCP) down to the manager,
// which admits or refuses what it asks (see manager.Manager's admission) and
// records it as the owner of what it creates.
package auth

import "context"

// Identity is the caller behind a request. It is comparable (MCP sessions
// compare the identity of each request with the one that opened them).
type Identity struct {
	// KeyID names the API key (never the key itself); "" when no keys are
	// configured (a single-user daemon on loopback) or in process.
	KeyID string `json:"key_id,omitempty"`
	// Admin identities see and manage every sandbox, workspace and dataset.
	Admin bool `json:"admin,omitempty"`
	// Internal marks the program's own in-process calls (the embedded SDK,
	// `ds-sandbox run`, the benchmarks): they are not metered by the per-key
	// quotas, which bound what remote callers may ask.
	Internal bool `json:"-"`
}

// Local is the identity of in-process callers (the embedded SDK, the CLI's
// one-shot runs): it sees everything and is not metered.
var Local = Identity{Admin: true, Internal: true}

// Open is the identity of a caller of a daemon without API keys (allowed only
// on loopback): it sees everything, and the per-key quotas apply to it.
var Open = Identity{Admin: true}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity in ctx, or Local when there is none.
func FromContext(ctx context.Context) Identity {
	if id, ok := ctx.Value(ctxKey{}).(Identity); ok {
		return id
	}
	return Local
}

// CanSee reports whether id may see and manage something owned by owner.
func (id Identity) CanSee(owner string) bool { return id.Admin || id.KeyID == owner }
