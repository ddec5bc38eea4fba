package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/sdkcp"
)

// Environment variables of remote mode.
const (
	// URLEnv names a ds-sandbox server; when set, package dssandbox's
	// package-level functions (Create, Connect, List, …) talk to it instead of
	// running embedded. A program of this package reads it itself:
	// NewClient(os.Getenv(URLEnv), os.Getenv(APIKeyEnv)).
	URLEnv = "DS_SANDBOX_URL"
	// APIKeyEnv is the API key sent to that server.
	APIKeyEnv = "DS_SANDBOX_API_KEY"
)

// Client talks to a ds-sandbox server (`ds-sandbox serve`): the same calls as
// package dssandbox's package-level functions, with the same behaviour, over
// the REST API.
type Client struct {
	cp sdkcp.ControlPlane
	r  *sdkcp.Remote // nil when cp is not a server
}

// NewClient returns a client of the server at serverURL, authenticating with
// apiKey ("" when the server has no keys).
func NewClient(serverURL, apiKey string) (*Client, error) {
	r, err := sdkcp.NewRemote(serverURL, apiKey)
	if err != nil {
		return nil, err
	}
	return &Client{cp: r, r: r}, nil
}

func init() {
	// Package dssandbox (the SDK's root package) reaches this package's
	// Sandbox, Files and Commands for its embedded mode through this hook,
	// which programs cannot call: cp's type is internal to ds-sandbox.
	sdkcp.ClientFor = func(cp sdkcp.ControlPlane) any { return forControlPlane(cp) }
}

// forControlPlane returns a Client whose calls go to cp. The server-only
// calls (Events, workspaces, RegisterServerDataset) of a Client whose cp is
// not a server fail with ErrUnsupported.
func forControlPlane(cp sdkcp.ControlPlane) *Client {
	if cp == nil {
		panic("client: nil control plane")
	}
	r, _ := cp.(*sdkcp.Remote)
	return &Client{cp: cp, r: r}
}

// server is the server c talks to, for the calls only a server has.
func (c *Client) server() (*sdkcp.Remote, error) {
	if c.r == nil {
		return nil, api.Errorf(api.ErrUnsupported, "this call needs a ds-sandbox server (client.NewClient)")
	}
	return c.r, nil
}

// Create starts a new sandbox on the server.
func (c *Client) Create(ctx context.Context, opts Options) (*Sandbox, error) {
	return create(ctx, c.cp, opts)
}

// Connect returns a handle on a running sandbox by id.
func (c *Client) Connect(ctx context.Context, id string) (*Sandbox, error) {
	return connect(ctx, c.cp, id)
}

// List returns the running sandboxes whose metadata contains every pair of
// metadata.
func (c *Client) List(ctx context.Context, metadata map[string]string) ([]SandboxInfo, error) {
	return c.cp.List(ctx, metadata)
}

// Info describes a running sandbox by id.
func (c *Client) Info(ctx context.Context, id string) (SandboxInfo, error) {
	return c.cp.Info(ctx, id)
}

// Kill kills a sandbox by id without connecting to it first.
func (c *Client) Kill(ctx context.Context, id string) error {
	return c.cp.Kill(ctx, id)
}

// Events returns up to limit of the most recent lifecycle events of a
// sandbox (created, killed, timed out, network denials, …), oldest first;
// sandboxID "" means every sandbox the key may see. The server keeps events
// after a sandbox ends, within a bounded history.
func (c *Client) Events(ctx context.Context, sandboxID string, limit int) ([]Event, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := "/v1/events"
	if sandboxID != "" {
		p = "/v1/sandboxes/" + url.PathEscape(sandboxID) + "/events"
	}
	r, err := c.server()
	if err != nil {
		return nil, err
	}
	var out []Event
	err = r.Call(ctx, http.MethodGet, p, q, nil, &out)
	return out, err
}

// ListWorkspaces lists the server's workspaces, named and anonymous.
func (c *Client) ListWorkspaces(ctx context.Context) ([]Workspace, error) {
	r, err := c.server()
	if err != nil {
		return nil, err
	}
	var out []Workspace
	err = r.Call(ctx, http.MethodGet, "/v1/workspaces", nil, nil, &out)
	return out, err
}

// RemoveWorkspace removes a workspace and its files; one a running sandbox
// uses is refused (ErrExists).
func (c *Client) RemoveWorkspace(ctx context.Context, id string) error {
	r, err := c.server()
	if err != nil {
		return err
	}
	return r.Call(ctx, http.MethodDelete, "/v1/workspaces/"+url.PathEscape(id), nil, nil, nil)
}

// RegisterDataset uploads the local file source to the server as the
// dataset name. A directory is refused (ErrUnsupported): register it on the
// server's host with RegisterServerDataset.
func (c *Client) RegisterDataset(ctx context.Context, source, name, description string, tags []string) (Dataset, error) {
	return c.cp.RegisterDataset(ctx, source, name, description, tags)
}

// RegisterServerDataset registers a file or directory that is already on the
// server's host (serverPath is absolute there) as the dataset name. The
// server allows it to admin keys only.
func (c *Client) RegisterServerDataset(ctx context.Context, serverPath, name, description string, tags []string) (Dataset, error) {
	r, err := c.server()
	if err != nil {
		return Dataset{}, err
	}
	var d Dataset
	err = r.Call(ctx, http.MethodPost, "/v1/datasets", nil,
		map[string]any{"source": serverPath, "name": name, "description": description, "tags": tags}, &d)
	return d, err
}

// ListDatasets lists the server's datasets, sorted by name.
func (c *Client) ListDatasets(ctx context.Context, f DatasetFilter) ([]Dataset, error) {
	return c.cp.ListDatasets(ctx, sdkcp.DatasetFilter(f))
}

// RemoveDataset removes a dataset from the server's registry.
func (c *Client) RemoveDataset(ctx context.Context, name string) error {
	return c.cp.RemoveDataset(ctx, name)
}
