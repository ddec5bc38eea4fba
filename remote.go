package dssandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// Environment variables of remote mode.
const (
	// URLEnv names a ds-sandbox server; when set, the package-level functions
	// (Create, Connect, List, …) talk to it instead of running embedded.
	URLEnv = "DS_SANDBOX_URL"
	// APIKeyEnv is the API key sent to that server.
	APIKeyEnv = "DS_SANDBOX_API_KEY"
)

// Client talks to a ds-sandbox server (`ds-sandbox serve`): the same calls as
// the package-level functions, with the same behaviour, over the REST API.
type Client struct {
	cp controlPlane
	r  *remote
}

// NewClient returns a client of the server at serverURL, authenticating with
// apiKey ("" when the server has no keys).
func NewClient(serverURL, apiKey string) (*Client, error) {
	r, err := newRemote(serverURL, apiKey)
	if err != nil {
		return nil, err
	}
	return &Client{cp: r, r: r}, nil
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
	return c.cp.list(ctx, metadata)
}

// Info describes a running sandbox by id.
func (c *Client) Info(ctx context.Context, id string) (SandboxInfo, error) {
	return c.cp.info(ctx, id)
}

// Kill kills a sandbox by id without connecting to it first.
func (c *Client) Kill(ctx context.Context, id string) error {
	return c.cp.kill(ctx, id)
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
	var out []Event
	err := c.r.call(ctx, http.MethodGet, p, q, nil, &out)
	return out, err
}

// ListWorkspaces lists the server's workspaces, named and anonymous.
func (c *Client) ListWorkspaces(ctx context.Context) ([]Workspace, error) {
	var out []Workspace
	err := c.r.call(ctx, http.MethodGet, "/v1/workspaces", nil, nil, &out)
	return out, err
}

// RemoveWorkspace removes a workspace and its files; one a running sandbox
// uses is refused (ErrExists).
func (c *Client) RemoveWorkspace(ctx context.Context, id string) error {
	return c.r.call(ctx, http.MethodDelete, "/v1/workspaces/"+url.PathEscape(id), nil, nil, nil)
}

// RegisterDataset uploads the local file source to the server as the
// dataset name. A directory is refused (ErrUnsupported): register it on the
// server's host with RegisterServerDataset.
func (c *Client) RegisterDataset(ctx context.Context, source, name, description string, tags []string) (Dataset, error) {
	return c.cp.registerDataset(ctx, source, name, description, tags)
}

// RegisterServerDataset registers a file or directory that is already on the
// server's host (serverPath is absolute there) as the dataset name. The
// server allows it to admin keys only.
func (c *Client) RegisterServerDataset(ctx context.Context, serverPath, name, description string, tags []string) (Dataset, error) {
	var d Dataset
	err := c.r.call(ctx, http.MethodPost, "/v1/datasets", nil,
		map[string]any{"source": serverPath, "name": name, "description": description, "tags": tags}, &d)
	return d, err
}

// ListDatasets lists the server's datasets, sorted by name.
func (c *Client) ListDatasets(ctx context.Context, f DatasetFilter) ([]Dataset, error) {
	return c.cp.listDatasets(ctx, f)
}

// RemoveDataset removes a dataset from the server's registry.
func (c *Client) RemoveDataset(ctx context.Context, name string) error {
	return c.cp.removeDataset(ctx, name)
}

// remote is the control plane of a ds-sandbox server.
type remote struct {
	base string
	hc   *http.Client
}

type keyTransport struct {
	key  string
	next http.RoundTripper
}

func (t keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.key)
	return t.next.RoundTrip(r)
}

func newRemote(serverURL, apiKey string) (*remote, error) {
	u, err := url.Parse(strings.TrimRight(serverURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, api.Errorf(api.ErrInvalid, "server URL %q: want http(s)://host:port", serverURL)
	}
	var tr http.RoundTripper = http.DefaultTransport.(*http.Transport).Clone()
	if apiKey != "" {
		tr = keyTransport{key: apiKey, next: tr}
	}
	return &remote{base: u.String(), hc: &http.Client{Transport: tr}}, nil
}

// call performs a JSON request; out may be nil.
func (r *remote) call(ctx context.Context, method, p string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return r.send(ctx, method, p, q, body, "application/json", out)
}

// maxBusyRetries bounds how often a request the server refused for load
// (429 with Retry-After: its sandbox start queue is full) is sent again.
const maxBusyRetries = 8

func (r *remote) send(ctx context.Context, method, p string, q url.Values, body io.Reader, ctype string, out any) error {
	u := r.base + p
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u, body)
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err = r.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ds-sandbox server %s: %v: %w", r.base, err, api.ErrUnavailable)
		}
		wait, retry := busyWait(resp, body, attempt)
		if !retry {
			break
		}
		resp.Body.Close()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if s, ok := body.(io.Seeker); ok {
			if _, err := s.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return &e
		}
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("ds-sandbox server: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("ds-sandbox server: decode %s %s: %w", method, p, err)
	}
	return nil
}

// busyWait says whether to send a request again after resp: a 429 with
// Retry-After (a refusal for load, not a quota) of a request whose body can
// be sent again, within maxBusyRetries; the wait grows with each attempt
// (Retry-After, then doubled, at most 30 s, with jitter).
func busyWait(resp *http.Response, body io.Reader, attempt int) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests || attempt >= maxBusyRetries {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0, false
	}
	if _, ok := body.(io.Seeker); body != nil && !ok {
		return 0, false
	}
	d := min(time.Duration(secs)*time.Second<<min(attempt, 5), 30*time.Second)
	return d/2 + rand.N(d/2+1), true
}

func (r *remote) agentFor(id string) *agentclient.Client {
	return agentclient.NewHTTPClient(r.hc, r.base+"/v1/sandboxes/"+url.PathEscape(id))
}

func (r *remote) create(ctx context.Context, req api.CreateSandboxRequest) (api.SandboxInfo, *agentclient.Client, error) {
	var info api.SandboxInfo
	if err := r.call(ctx, http.MethodPost, "/v1/sandboxes", nil, req, &info); err != nil {
		return info, nil, err
	}
	return info, r.agentFor(info.SandboxID), nil
}

func (r *remote) connect(ctx context.Context, id string) (api.SandboxInfo, *agentclient.Client, error) {
	var info api.SandboxInfo
	if err := r.call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/connect", nil, nil, &info); err != nil {
		return info, nil, err
	}
	return info, r.agentFor(id), nil
}

func (r *remote) execute(ctx context.Context, _ string, ac *agentclient.Client, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	return ac.Execute(ctx, req, onEvent)
}

func (r *remote) setNetwork(ctx context.Context, id string, p api.NetworkPolicy) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	err := r.call(ctx, http.MethodPut, "/v1/sandboxes/"+url.PathEscape(id)+"/network", nil, p, &info)
	return info, err
}

func (r *remote) list(ctx context.Context, md map[string]string) ([]api.SandboxInfo, error) {
	q := url.Values{}
	for k, v := range md {
		q.Add("metadata", k+"="+v)
	}
	var out []api.SandboxInfo
	err := r.call(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out)
	return out, err
}

func (r *remote) info(ctx context.Context, id string) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	err := r.call(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id), nil, nil, &info)
	return info, err
}

func (r *remote) setTimeout(ctx context.Context, id string, d time.Duration) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	secs := int((d + time.Second - 1) / time.Second)
	if d <= 0 {
		secs = 0
	}
	err := r.call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/timeout", nil, api.SetTimeoutRequest{TimeoutSeconds: secs}, &info)
	return info, err
}

func (r *remote) kill(ctx context.Context, id string) error {
	return r.call(ctx, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(id), nil, nil, nil)
}

func (r *remote) prepareDataset(ctx context.Context, id, name, strategy string) (string, error) {
	var out struct {
		Path string `json:"path"`
	}
	err := r.call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/datasets", nil,
		map[string]string{"name": name, "strategy": strategy}, &out)
	return out.Path, err
}

// registerDataset uploads a local file as a dataset. Directories are
// registered on the server itself (POST /v1/datasets with a server path).
func (r *remote) registerDataset(ctx context.Context, source, name, description string, tags []string) (api.Dataset, error) {
	f, err := os.Open(source)
	if err != nil {
		return api.Dataset{}, fmt.Errorf("dataset %s: %w", name, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return api.Dataset{}, api.Errorf(api.ErrUnsupported, "dataset %s: directories cannot be uploaded; register them on the server host", name)
	}
	q := url.Values{"filename": {filepath.Base(source)}, "description": {description}, "tag": tags}
	var d api.Dataset
	err = r.send(ctx, http.MethodPut, "/v1/datasets/"+url.PathEscape(name), q, f, "application/octet-stream", &d)
	return d, err
}

func (r *remote) listDatasets(ctx context.Context, f DatasetFilter) ([]api.Dataset, error) {
	q := url.Values{"tag": f.Tags}
	if f.NameContains != "" {
		q.Set("name_contains", f.NameContains)
	}
	if f.Format != "" {
		q.Set("format", f.Format)
	}
	var out []api.Dataset
	err := r.call(ctx, http.MethodGet, "/v1/datasets", q, nil, &out)
	return out, err
}

func (r *remote) removeDataset(ctx context.Context, name string) error {
	return r.call(ctx, http.MethodDelete, "/v1/datasets/"+url.PathEscape(name), nil, nil, nil)
}

func (r *remote) loadTemplate(ctx context.Context, id string) (api.Template, error) {
	var t api.Template
	err := r.call(ctx, http.MethodGet, "/v1/templates/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}
