// Package auth holds who is calling: the identity an API key maps to, carried
// in a request's context from the HTTP layer (or the MCP session) down to the
// manager, which records it as a sandbox's owner.
package auth

import "context"

// Identity is the caller behind a request.
type Identity struct {
	// KeyID names the API key (never the key itself); "" when no keys are
	// configured (a single-user daemon on loopback).
	KeyID string `json:"key_id,omitempty"`
	// Admin identities see and manage every sandbox.
	Admin bool `json:"admin,omitempty"`
}

// Local is the identity of in-process callers (the embedded SDK, the CLI) and
// of a daemon without keys: it sees everything.
var Local = Identity{Admin: true}

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

// CanSee reports whether id may see and manage a sandbox owned by owner.
func (id Identity) CanSee(owner string) bool { return id.Admin || id.KeyID == owner }
