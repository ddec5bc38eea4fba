package sdkcp

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

var _ ControlPlane = (*Remote)(nil)

// Remote is the control plane of a ds-sandbox server: its REST API, with the
// sandbox's agent routes reached through the server (/v1/sandboxes/{id}/…).
type Remote struct {
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

// NewRemote returns the control plane of the server at serverURL,
// authenticating with apiKey ("" when the server has no keys).
func NewRemote(serverURL, apiKey string) (*Remote, error) {
	u, err := url.Parse(strings.TrimRight(serverURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, api.Errorf(api.ErrInvalid, "server URL %q: want http(s)://host:port", serverURL)
	}
	var tr http.RoundTripper = http.DefaultTransport.(*http.Transport).Clone()
	if apiKey != "" {
		tr = keyTransport{key: apiKey, next: tr}
	}
	return &Remote{base: u.String(), hc: &http.Client{Transport: tr}}, nil
}

// Call performs a JSON request on the server; out may be nil.
func (r *Remote) Call(ctx context.Context, method, p string, q url.Values, in, out any) error {
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

func (r *Remote) send(ctx context.Context, method, p string, q url.Values, body io.Reader, ctype string, out any) error {
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

func (r *Remote) agentFor(id string) *agentclient.Client {
	return agentclient.NewHTTPClient(r.hc, r.base+"/v1/sandboxes/"+url.PathEscape(id))
}

// Create is POST /v1/sandboxes; the agent client goes through the server.
func (r *Remote) Create(ctx context.Context, req api.CreateSandboxRequest) (api.SandboxInfo, *agentclient.Client, error) {
	var info api.SandboxInfo
	if err := r.Call(ctx, http.MethodPost, "/v1/sandboxes", nil, req, &info); err != nil {
		return info, nil, err
	}
	return info, r.agentFor(info.SandboxID), nil
}

// Connect is POST /v1/sandboxes/{id}/connect.
func (r *Remote) Connect(ctx context.Context, id string) (api.SandboxInfo, *agentclient.Client, error) {
	var info api.SandboxInfo
	if err := r.Call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/connect", nil, nil, &info); err != nil {
		return info, nil, err
	}
	return info, r.agentFor(id), nil
}

// Execute runs the cell through the server's execute route (ac is the
// server's per-sandbox routes), where the manager applies the scanner and
// per-execution network policies.
func (r *Remote) Execute(ctx context.Context, _ string, ac *agentclient.Client, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	return ac.Execute(ctx, req, onEvent)
}

// SetNetwork is PUT /v1/sandboxes/{id}/network.
func (r *Remote) SetNetwork(ctx context.Context, id string, p api.NetworkPolicy) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	err := r.Call(ctx, http.MethodPut, "/v1/sandboxes/"+url.PathEscape(id)+"/network", nil, p, &info)
	return info, err
}

// List is GET /v1/sandboxes, filtered by metadata.
func (r *Remote) List(ctx context.Context, md map[string]string) ([]api.SandboxInfo, error) {
	q := url.Values{}
	for k, v := range md {
		q.Add("metadata", k+"="+v)
	}
	var out []api.SandboxInfo
	err := r.Call(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out)
	return out, err
}

// Info is GET /v1/sandboxes/{id}.
func (r *Remote) Info(ctx context.Context, id string) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	err := r.Call(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id), nil, nil, &info)
	return info, err
}

// SetTimeout is POST /v1/sandboxes/{id}/timeout, in whole seconds rounded up.
func (r *Remote) SetTimeout(ctx context.Context, id string, d time.Duration) (api.SandboxInfo, error) {
	var info api.SandboxInfo
	secs := int((d + time.Second - 1) / time.Second)
	if d <= 0 {
		secs = 0
	}
	err := r.Call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/timeout", nil, api.SetTimeoutRequest{TimeoutSeconds: secs}, &info)
	return info, err
}

// Kill is DELETE /v1/sandboxes/{id}.
func (r *Remote) Kill(ctx context.Context, id string) error {
	return r.Call(ctx, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(id), nil, nil, nil)
}

// PrepareDataset is POST /v1/sandboxes/{id}/datasets.
func (r *Remote) PrepareDataset(ctx context.Context, id, name, strategy string) (string, error) {
	var out struct {
		Path string `json:"path"`
	}
	err := r.Call(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/datasets", nil,
		map[string]string{"name": name, "strategy": strategy}, &out)
	return out.Path, err
}

// RegisterDataset uploads a local file as a dataset. Directories are
// registered on the server itself (POST /v1/datasets with a server path).
func (r *Remote) RegisterDataset(ctx context.Context, source, name, description string, tags []string) (api.Dataset, error) {
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

// ListDatasets is GET /v1/datasets.
func (r *Remote) ListDatasets(ctx context.Context, f DatasetFilter) ([]api.Dataset, error) {
	q := url.Values{"tag": f.Tags}
	if f.NameContains != "" {
		q.Set("name_contains", f.NameContains)
	}
	if f.Format != "" {
		q.Set("format", f.Format)
	}
	var out []api.Dataset
	err := r.Call(ctx, http.MethodGet, "/v1/datasets", q, nil, &out)
	return out, err
}

// RemoveDataset is DELETE /v1/datasets/{name}.
func (r *Remote) RemoveDataset(ctx context.Context, name string) error {
	return r.Call(ctx, http.MethodDelete, "/v1/datasets/"+url.PathEscape(name), nil, nil, nil)
}

// LoadTemplate is GET /v1/templates/{id}.
func (r *Remote) LoadTemplate(ctx context.Context, id string) (api.Template, error) {
	var t api.Template
	err := r.Call(ctx, http.MethodGet, "/v1/templates/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}
