// Package sdkcp is the control plane behind the Go SDK: what package client
// needs of whoever manages sandboxes. Remote is a ds-sandbox server's
// (remote mode, client.NewClient); the root package dssandbox plugs in its
// in-process manager (embedded mode) through ClientFor. Files,
// commands and code contexts do not go through it: they go straight to the
// sandbox's agent client that Create and Connect return.
//
// It imports only api and the agent client, so a remote-only program links no
// manager, backend or engine.
package sdkcp

import (
	"context"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// ControlPlane is what the SDK needs of whoever manages sandboxes: the
// in-process manager (embedded mode) or a ds-sandbox server (remote mode).
// Errors are api errors (test with errors.Is against api.ErrNotFound, …).
type ControlPlane interface {
	Create(ctx context.Context, req api.CreateSandboxRequest) (api.SandboxInfo, *agentclient.Client, error)
	Connect(ctx context.Context, id string) (api.SandboxInfo, *agentclient.Client, error)
	List(ctx context.Context, metadata map[string]string) ([]api.SandboxInfo, error)
	Info(ctx context.Context, id string) (api.SandboxInfo, error)
	SetTimeout(ctx context.Context, id string, d time.Duration) (api.SandboxInfo, error)
	SetNetwork(ctx context.Context, id string, p api.NetworkPolicy) (api.SandboxInfo, error)
	Kill(ctx context.Context, id string) error
	PrepareDataset(ctx context.Context, id, name, strategy string) (string, error)
	RegisterDataset(ctx context.Context, source, name, description string, tags []string) (api.Dataset, error)
	ListDatasets(ctx context.Context, f DatasetFilter) ([]api.Dataset, error)
	RemoveDataset(ctx context.Context, name string) error
	LoadTemplate(ctx context.Context, id string) (api.Template, error)
	// Execute runs a cell: through the manager in process (which scans it,
	// applies a per-execution network policy and collects denials), through
	// the server's execute route remotely (which does the same there).
	Execute(ctx context.Context, id string, ac *agentclient.Client, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error)
}

// DatasetFilter narrows ListDatasets; zero fields match everything. It has
// client.DatasetFilter's fields, so either converts to the other.
type DatasetFilter struct {
	NameContains string
	Tags         []string
	Format       string
}

// ClientFor returns a *client.Client whose calls go to cp. Package client
// sets it when it is initialised; the root package dssandbox, which imports
// client, calls it for its embedded mode. It is a hook rather than an
// exported function of package client so that client's public API names no
// internal type.
var ClientFor func(cp ControlPlane) any
