package dssandbox

import (
	"context"

	"github.com/ds-sandbox/ds-sandbox/client"
	"github.com/ds-sandbox/ds-sandbox/internal/sdkcp"
)

// The SDK's types live in package client (remote-only programs import it
// alone); these aliases make them this package's too.
type (
	// Options configure Create. Every field is optional.
	Options = client.Options
	// Sandbox is a handle on a running sandbox. It is safe for concurrent use.
	Sandbox = client.Sandbox
)

// Create starts a new sandbox: on the server named by DS_SANDBOX_URL when it
// is set, else embedded in this process.
func Create(ctx context.Context, opts Options) (*Sandbox, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return nil, err
	}
	return clientFor(cp).Create(ctx, opts)
}

// Connect returns a handle on a running sandbox by id.
func Connect(ctx context.Context, id string) (*Sandbox, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return nil, err
	}
	return clientFor(cp).Connect(ctx, id)
}

// List returns the running sandboxes whose metadata contains every pair of
// metadata (nil lists all).
func List(ctx context.Context, metadata map[string]string) ([]SandboxInfo, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return nil, err
	}
	return cp.List(ctx, metadata)
}

// LoadTemplate loads a stored template by id: a YAML file in the state
// directory's templates/ or in /etc/ds-sandbox/templates (the seed's
// SandboxConfig.load_template).
func LoadTemplate(ctx context.Context, id string) (Template, error) {
	cp, err := defaultControlPlane()
	if err != nil {
		return Template{}, err
	}
	return cp.LoadTemplate(ctx, id)
}

// clientFor is package client's Client over cp (see sdkcp.ClientFor).
func clientFor(cp sdkcp.ControlPlane) *client.Client {
	return sdkcp.ClientFor(cp).(*client.Client)
}
