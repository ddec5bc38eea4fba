package e2b

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// defaultTimeout is the sandbox lifetime when a create omits it: the v2
// default, also for v1 (whose server default is 15 s, but whose SDKs always
// send one).
const defaultTimeout = 300

func (s *Server) controlRoutes() {
	mux := http.NewServeMux()
	h := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := fn(w, r); err != nil {
				if r.Context().Err() != nil && !errors.Is(err, api.ErrCancelled) {
					err = api.Errorf(api.ErrCancelled, "the client went away before the answer (%v)", err)
				}
				if statusOf(err) >= 500 {
					s.log.Error("e2b request failed", "path", r.URL.Path, "err", err)
				}
				writeError(w, err)
			}
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.ErrNotFound, "no E2B route %s %s in ds-sandbox (see docs/E2B.md)", r.Method, r.URL.Path))
	})
	for _, prefix := range []string{"", "/v2"} {
		h("POST "+prefix+"/sandboxes", s.create)
		h("GET "+prefix+"/sandboxes", s.list)
		h("POST "+prefix+"/sandboxes/{id}/connect", s.connect)
	}
	h("GET /sandboxes/{id}", s.getInfo)
	h("DELETE /sandboxes/{id}", s.kill)
	h("POST /sandboxes/{id}/timeout", s.setTimeout)
	h("POST /sandboxes/{id}/refreshes", s.refresh)
	h("POST /sandboxes/{id}/pause", s.unsupportedFor("pause: ds-sandbox's backends cannot snapshot a running sandbox's memory; keep it alive with setTimeout, or keep files in a named workspace"))
	h("POST /sandboxes/{id}/resume", s.resume)
	h("GET /sandboxes/{id}/metrics", s.unsupportedFor("sandbox metrics are not served over E2B's API; use the daemon's /metrics (Prometheus)"))
	h("GET /sandboxes/metrics", unsupported("sandbox metrics are not served over E2B's API; use the daemon's /metrics (Prometheus)"))
	h("GET /sandboxes/{id}/logs", s.unsupportedFor("sandbox logs are not served over E2B's API"))
	h("GET /v2/sandboxes/{id}/logs", s.unsupportedFor("sandbox logs are not served over E2B's API"))
	h("PUT /sandboxes/{id}/network", s.updateNetwork)
	h("POST /sandboxes/{id}/fork", s.unsupportedFor("fork is not supported: ds-sandbox's backends cannot snapshot a running sandbox"))
	h("POST /sandboxes/{id}/snapshots", s.unsupportedFor("snapshots are not supported: ds-sandbox's backends cannot snapshot a running sandbox"))
	h("/templates", unsupported("E2B template builds are not supported; define ds-sandbox templates (YAML, `ds-sandbox template`) and pass their id as the template"))
	h("/templates/", unsupported("E2B template builds are not supported; define ds-sandbox templates (YAML, `ds-sandbox template`) and pass their id as the template"))
	s.cp = mux
}

func unsupported(msg string) func(http.ResponseWriter, *http.Request) error {
	return func(http.ResponseWriter, *http.Request) error { return api.Errorf(api.ErrUnsupported, "%s", msg) }
}

// unsupportedFor answers 404 for a sandbox that does not exist (the SDKs turn
// that into SandboxNotFoundError) and 422 (unsupported) with msg for one that
// does.
func (s *Server) unsupportedFor(msg string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := s.m.Get(r.Context(), r.PathValue("id")); err != nil {
			return err
		}
		return api.Errorf(api.ErrUnsupported, "%s", msg)
	}
}

// newSandbox is E2B's NewSandbox / NewSandboxV2.
type newSandbox struct {
	TemplateID          string                  `json:"templateID"`
	Timeout             *int                    `json:"timeout"`
	Metadata            map[string]string       `json:"metadata"`
	EnvVars             map[string]string       `json:"envVars"`
	AutoPause           bool                    `json:"autoPause"`
	AutoResume          *struct{ Enabled bool } `json:"autoResume"`
	Secure              *bool                   `json:"secure"`
	AllowInternetAccess *bool                   `json:"allow_internet_access"`
	Network             *networkConfig          `json:"network"`
	MCP                 any                     `json:"mcp"`
	IAM                 any                     `json:"iam"`
	VolumeMounts        []any                   `json:"volumeMounts"`
}

// networkConfig is E2B's SandboxNetworkConfig.
type networkConfig struct {
	AllowOut           []string       `json:"allowOut,omitempty"`
	DenyOut            []string       `json:"denyOut,omitempty"`
	AllowPublicTraffic *bool          `json:"allowPublicTraffic,omitempty"`
	MaskRequestHost    string         `json:"maskRequestHost,omitempty"`
	Rules              map[string]any `json:"rules,omitempty"`
	EgressProxy        any            `json:"egressProxy,omitempty"`
	HTTPSPorts         []int          `json:"httpsPorts,omitempty"`
}

const allTraffic = "0.0.0.0/0"

// networkPolicy maps E2B's network options onto our policy: everything
// allowed (the default), nothing (allow_internet_access false or denyOut
// 0.0.0.0/0), or only allowOut (allowOut with denyOut 0.0.0.0/0). Whether the
// backend can enforce it is the backend's call: the local backend refuses
// anything but "allow" with ErrUnsupported, never silently.
func networkPolicy(req *newSandbox) (*api.NetworkPolicy, error) {
	denyAll := req.AllowInternetAccess != nil && !*req.AllowInternetAccess
	var allow []string
	if n := req.Network; n != nil {
		switch {
		case n.MaskRequestHost != "":
			return nil, api.Errorf(api.ErrUnsupported, "network.maskRequestHost is not supported")
		case len(n.Rules) > 0:
			return nil, api.Errorf(api.ErrUnsupported, "network.rules (header transforms) are not supported")
		case n.EgressProxy != nil:
			return nil, api.Errorf(api.ErrUnsupported, "network.egressProxy is not supported")
		case len(n.HTTPSPorts) > 0:
			return nil, api.Errorf(api.ErrUnsupported, "network.httpsPorts is not supported")
		}
		for _, d := range n.DenyOut {
			if d != allTraffic {
				return nil, api.Errorf(api.ErrUnsupported, "network.denyOut %q: only %q (deny everything not in allowOut) is supported; ds-sandbox's policies are allowlists", d, allTraffic)
			}
			denyAll = true
		}
		if len(n.AllowOut) > 0 && !denyAll {
			// allowOut without a deny is E2B's "allow everything" plus
			// redundant exceptions.
			return nil, nil
		}
		allow = n.AllowOut
	}
	switch {
	case !denyAll:
		return nil, nil
	case len(allow) > 0:
		return &api.NetworkPolicy{Policy: api.NetworkWhitelist, Whitelist: allow}, nil
	default:
		return &api.NetworkPolicy{Policy: api.NetworkDeny}, nil
	}
}

// template maps E2B's template ids onto ours: E2B's default templates are our
// default; anything else names a ds-sandbox template.
func template(id string) string {
	id, _, _ = strings.Cut(id, ":") // name:tag
	switch id {
	case "", "base", "code-interpreter-v1", "code-interpreter", "code-interpreter-beta":
		return ""
	}
	return id
}

// sandboxResponse is E2B's Sandbox.
type sandboxResponse struct {
	SandboxID          string  `json:"sandboxID"`
	TemplateID         string  `json:"templateID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken"`
	TrafficAccessToken string  `json:"trafficAccessToken"`
	Domain             *string `json:"domain"`
}

func (s *Server) sandboxResponse(info api.SandboxInfo, templateID string) sandboxResponse {
	if templateID == "" {
		templateID = e2bTemplate(info)
	}
	return sandboxResponse{
		SandboxID: info.SandboxID, TemplateID: templateID, ClientID: clientID, EnvdVersion: EnvdVersion,
		EnvdAccessToken:    s.token("envd", info.SandboxID),
		TrafficAccessToken: s.token("traffic", info.SandboxID),
	}
}

const metaTemplate = "e2b.template"

// e2bTemplate is the template id an E2B client asked for (kept in a metadata
// key we hide), else ours, else "base".
func e2bTemplate(info api.SandboxInfo) string {
	if t := info.Metadata[metaTemplate]; t != "" {
		return t
	}
	if info.TemplateID != "" {
		return info.TemplateID
	}
	return "base"
}

func userMetadata(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != metaTemplate {
			out[k] = v
		}
	}
	return out
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	var req newSandbox
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	switch {
	case req.AutoPause:
		return api.Errorf(api.ErrUnsupported, "autoPause (lifecycle.onTimeout pause) is not supported: ds-sandbox cannot pause sandboxes; they are killed when their timeout passes")
	case req.AutoResume != nil && req.AutoResume.Enabled:
		return api.Errorf(api.ErrUnsupported, "autoResume is not supported: ds-sandbox cannot pause sandboxes")
	case req.MCP != nil:
		return api.Errorf(api.ErrUnsupported, "the MCP gateway (mcp) is not supported; ds-sandbox serves MCP itself at /mcp")
	case req.IAM != nil:
		return api.Errorf(api.ErrUnsupported, "iam tokens are not supported")
	case len(req.VolumeMounts) > 0:
		return api.Errorf(api.ErrUnsupported, "volumeMounts are not supported; use a named workspace (ds-sandbox's REST API)")
	}
	if _, bad := req.Metadata[metaTemplate]; bad {
		return api.Errorf(api.ErrInvalid, "metadata key %q is reserved", metaTemplate)
	}
	netp, err := networkPolicy(&req)
	if err != nil {
		return err
	}
	timeout := defaultTimeout
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if timeout <= 0 || manager.Seconds(int64(timeout)) > manager.MaxTimeout {
		return api.Errorf(api.ErrInvalid, "timeout %d s must be between 1 and %d seconds", timeout, int(manager.MaxTimeout/time.Second))
	}
	templateID := req.TemplateID
	if templateID == "" {
		templateID = "base"
	}
	meta := map[string]string{}
	for k, v := range req.Metadata {
		meta[k] = v
	}
	meta[metaTemplate] = templateID
	sbx, err := s.m.Create(r.Context(), api.CreateSandboxRequest{
		Template: template(templateID), Envs: req.EnvVars, Metadata: meta,
		TimeoutSeconds: timeout, Network: netp,
	})
	if err != nil {
		return err
	}
	info := sbx.Info()
	rec := audit.FromContext(r.Context())
	rec.SandboxID = info.SandboxID
	rec.Detail = map[string]string{"backend": info.Backend, "template": info.TemplateID, "network": info.Network.Policy, "workspace_id": info.WorkspaceID}
	httpjson.Write(w, http.StatusCreated, s.sandboxResponse(info, templateID))
	return nil
}

// listedSandbox is E2B's ListedSandbox (and, with the detail fields,
// SandboxDetail).
type listedSandbox struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	State       string            `json:"state"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int               `json:"memoryMB"`
	DiskSizeMB  int               `json:"diskSizeMB"`
	EnvdVersion string            `json:"envdVersion"`
	Metadata    map[string]string `json:"metadata"`

	EnvdAccessToken     string          `json:"envdAccessToken,omitempty"`
	Domain              *string         `json:"domain,omitempty"`
	AllowInternetAccess *bool           `json:"allowInternetAccess,omitempty"`
	Network             *networkConfig  `json:"network,omitempty"`
	Lifecycle           *map[string]any `json:"lifecycle,omitempty"`
}

func (s *Server) listed(info api.SandboxInfo) listedSandbox {
	return listedSandbox{
		SandboxID: info.SandboxID, TemplateID: e2bTemplate(info), ClientID: clientID,
		StartedAt: info.StartedAt, EndAt: info.EndAt, State: "running",
		// Sandboxes share the host's CPUs; memory is the configured limit (0:
		// none). Disk is not limited.
		CPUCount: runtime.NumCPU(), MemoryMB: s.m.Config().DefaultMemoryMB,
		EnvdVersion: EnvdVersion, Metadata: userMetadata(info.Metadata),
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	match := map[string]string{}
	if m := q.Get("metadata"); m != "" {
		vals, err := url.ParseQuery(m)
		if err != nil {
			return api.Errorf(api.ErrInvalid, "metadata %q must be URL-encoded key=value pairs joined by &: %v", m, err)
		}
		for k := range vals {
			match[k] = vals.Get(k)
		}
	}
	all := s.m.List(r.Context(), match)
	if st := q.Get("state"); st != "" && !slices.Contains(strings.Split(st, ","), "running") {
		all = nil // nothing is ever paused
	}
	if t := q.Get("template"); t != "" {
		all = slices.DeleteFunc(all, func(i api.SandboxInfo) bool { return e2bTemplate(i) != t && i.TemplateID != t })
	}
	if t := q.Get("startedAfter"); t != "" {
		after, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return api.Errorf(api.ErrInvalid, "startedAfter %q is not RFC 3339", t)
		}
		all = slices.DeleteFunc(all, func(i api.SandboxInfo) bool { return !i.StartedAt.After(after) })
	}
	if q.Get("order") == "desc" {
		slices.Reverse(all)
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return api.Errorf(api.ErrInvalid, "limit %q must be between 1 and 100", v)
		}
		limit = n
	}
	// nextToken is the id of the last sandbox of the previous page: the
	// order is stable (start time), so a page never repeats or skips one that
	// still runs.
	start := 0
	if tok := q.Get("nextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return api.Errorf(api.ErrInvalid, "nextToken %q is not one we issued", tok)
		}
		start = len(all)
		for i, info := range all {
			if info.SandboxID == string(b) {
				start = i + 1
				break
			}
		}
	}
	page := all[min(start, len(all)):]
	if len(page) > limit {
		page = page[:limit]
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].SandboxID)))
	}
	w.Header().Set("X-Total-Running", strconv.Itoa(len(all)))
	out := make([]listedSandbox, 0, len(page))
	for _, info := range page {
		out = append(out, s.listed(info))
	}
	httpjson.Write(w, http.StatusOK, out)
	return nil
}

func (s *Server) getInfo(w http.ResponseWriter, r *http.Request) error {
	sbx, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	info := sbx.Info()
	d := s.listed(info)
	d.EnvdAccessToken = s.token("envd", info.SandboxID)
	allow := info.Network.Policy == "" || info.Network.Policy == api.NetworkAllow
	d.AllowInternetAccess = &allow
	switch info.Network.Policy {
	case api.NetworkDeny:
		d.Network = &networkConfig{DenyOut: []string{allTraffic}}
	case api.NetworkWhitelist:
		d.Network = &networkConfig{AllowOut: info.Network.Whitelist, DenyOut: []string{allTraffic}}
	}
	d.Lifecycle = &map[string]any{"onTimeout": "kill", "autoResume": false}
	httpjson.Write(w, http.StatusOK, d)
	return nil
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) error {
	if err := s.m.Kill(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// updateNetwork is E2B's updateNetwork (SandboxNetworkUpdateConfig, which
// replaces the sandbox's egress configuration): mapped onto our policies as
// at create, and put in force where the backend can change a running
// sandbox's network (oci, docker with a network of ours); elsewhere
// unsupported, the network unchanged.
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		AllowInternetAccess *bool          `json:"allow_internet_access"`
		AllowOut            []string       `json:"allowOut"`
		DenyOut             []string       `json:"denyOut"`
		EgressProxy         any            `json:"egressProxy"`
		Rules               map[string]any `json:"rules"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	pol, err := networkPolicy(&newSandbox{AllowInternetAccess: req.AllowInternetAccess, Network: &networkConfig{
		AllowOut: req.AllowOut, DenyOut: req.DenyOut, EgressProxy: req.EgressProxy, Rules: req.Rules,
	}})
	if err != nil {
		return err
	}
	if pol == nil {
		pol = &api.NetworkPolicy{Policy: api.NetworkAllow}
	}
	if _, err := s.m.SetNetwork(r.Context(), r.PathValue("id"), *pol); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Timeout *int `json:"timeout"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Timeout == nil {
		return api.Errorf(api.ErrInvalid, "timeout (seconds) is required")
	}
	if _, err := s.m.SetTimeout(r.Context(), r.PathValue("id"), manager.Seconds(int64(*req.Timeout))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// extend moves the deadline to now+secs unless it is already later (connect
// and refreshes only ever extend).
func (s *Server) extend(r *http.Request, id string, secs int) (api.SandboxInfo, error) {
	sbx, err := s.m.Get(r.Context(), id)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	info := sbx.Info()
	if secs <= 0 {
		return info, nil
	}
	d := min(manager.Seconds(int64(secs)), manager.MaxTimeout)
	if time.Now().Add(d).After(info.EndAt) {
		return s.m.SetTimeout(r.Context(), id, d)
	}
	return info, nil
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Timeout int `json:"timeout"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	info, err := s.extend(r, r.PathValue("id"), req.Timeout)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, s.sandboxResponse(info, ""))
	return nil
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Duration int `json:"duration"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if _, err := s.extend(r, r.PathValue("id"), max(req.Duration, 60)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// resume: nothing is ever paused, so a running sandbox is E2B's 409 and a
// missing one 404.
func (s *Server) resume(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.m.Get(r.Context(), id); err != nil {
		return err
	}
	return &httpError{status: http.StatusConflict, msg: fmt.Sprintf("sandbox %s is already running (ds-sandbox never pauses sandboxes)", id)}
}
