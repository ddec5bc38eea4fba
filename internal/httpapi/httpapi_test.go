package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/metrics"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	testenv.MainRequirePython()
	os.Exit(m.Run())
}

const (
	adminKey = "admin-key-0123456789"
	aliceKey = "alice-key-0123456789"
	bobKey   = "bob-key-0123456789ab"
)

type env struct {
	url     string
	handler http.Handler
	cfg     config.Config
	m       *manager.Manager
	auditLn string
}

// newServer starts the API over a real manager and the local backend.
func newServer(t *testing.T, edit func(*config.Config)) *env {
	t.Helper()
	return newServerWith(t, edit, httpapi.Options{})
}

// newServerWith is newServer with API options (Loopback, Metrics, Audit and
// Logger are set here).
func newServerWith(t testing.TB, edit func(*config.Config), opt httpapi.Options) *env {
	t.Helper()
	cfg := config.Default()
	cfg.DefaultBackend = "local"
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.APIKeys = []config.APIKey{{ID: "admin", Key: adminKey, Admin: true}, {ID: "alice", Key: aliceKey, Backends: []string{"local"}}, {ID: "bob", Key: bobKey, Backends: []string{"local"}}}
	if edit != nil {
		edit(&cfg)
	}
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.Open(cfg.AuditLogPath, 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	met := metrics.New(func() []metrics.SandboxCount {
		return []metrics.SandboxCount{{State: api.StateRunning, Backend: "local", N: len(m.List(context.Background(), nil))}}
	})
	m.Subscribe(func(ev api.Event, _ string) {
		if ev.Type == api.EventSandboxCreated {
			met.SandboxCreated(ev.Data["backend"])
		}
	})
	opt.Loopback, opt.Metrics, opt.Audit, opt.Logger = true, met, al, slog.New(slog.DiscardHandler)
	s, err := httpapi.New(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.Close()
		_ = m.Close(context.Background())
		al.Close()
	})
	return &env{url: ts.URL, handler: s.Handler(), cfg: cfg, m: m, auditLn: cfg.AuditLogPath}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, key, method, path string, body any) resp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, e.url+path, rd)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

func (r resp) apiError(t *testing.T) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" {
		t.Fatalf("not an error body (%d): %s", r.status, r.body)
	}
	return e
}

func (e *env) create(t testing.TB, key string, req api.CreateSandboxRequest) api.SandboxInfo {
	t.Helper()
	r := e.do(t, key, "POST", "/v1/sandboxes", req)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var info api.SandboxInfo
	json.Unmarshal(r.body, &info)
	return info
}

func TestAuthAndOwnership(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)

	for name, c := range map[string]struct {
		header, value string
	}{"no key": {}, "bad key": {"X-API-Key", "not-a-key-0123456789"}, "bad bearer": {"Authorization", "Bearer nope"}} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url+"/v1/sandboxes", nil)
			if c.header != "" {
				req.Header.Set(c.header, c.value)
			}
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			var ae api.Error
			json.NewDecoder(r.Body).Decode(&ae)
			if r.StatusCode != 401 || ae.Code != api.CodeUnauth || ae.RequestID == "" || ae.RequestID != r.Header.Get("X-Request-ID") {
				t.Fatalf("%d %+v (X-Request-ID %q)", r.StatusCode, ae, r.Header.Get("X-Request-ID"))
			}
		})
	}

	alice := e.create(t, aliceKey, api.CreateSandboxRequest{})
	if alice.Owner != "alice" {
		t.Fatalf("owner = %q", alice.Owner)
	}
	// Bearer works as well as X-API-Key.
	req, _ := http.NewRequest("GET", e.url+"/v1/sandboxes/"+alice.SandboxID, nil)
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", r, err)
	}
	for _, p := range []struct{ method, path string }{
		{"GET", "/v1/sandboxes/" + alice.SandboxID},
		{"POST", "/v1/sandboxes/" + alice.SandboxID + "/execute"},
		{"GET", "/v1/sandboxes/" + alice.SandboxID + "/files?path=x"},
		{"DELETE", "/v1/sandboxes/" + alice.SandboxID},
	} {
		body := any(nil)
		if p.method == "POST" {
			body = api.ExecuteRequest{Code: "1"}
		}
		if r := e.do(t, bobKey, p.method, p.path, body); r.status != 404 || r.apiError(t).Code != api.CodeNotFound {
			t.Errorf("bob %s %s: %d %s", p.method, p.path, r.status, r.body)
		}
	}
	var list []api.SandboxInfo
	json.Unmarshal(e.do(t, bobKey, "GET", "/v1/sandboxes", nil).body, &list)
	if len(list) != 0 {
		t.Fatalf("bob lists %d sandboxes", len(list))
	}
	json.Unmarshal(e.do(t, adminKey, "GET", "/v1/sandboxes", nil).body, &list)
	if len(list) != 1 {
		t.Fatalf("admin lists %d sandboxes", len(list))
	}
	var wss []api.Workspace
	json.Unmarshal(e.do(t, aliceKey, "GET", "/v1/workspaces", nil).body, &wss)
	if len(wss) != 1 || wss[0].ID != alice.WorkspaceID || wss[0].Owner != "alice" {
		t.Fatalf("alice's workspaces: %+v", wss)
	}
	json.Unmarshal(e.do(t, bobKey, "GET", "/v1/workspaces", nil).body, &wss)
	if len(wss) != 0 {
		t.Fatalf("bob lists alice's workspace: %+v", wss)
	}
	if r := e.do(t, bobKey, "GET", "/v1/workspaces/"+alice.WorkspaceID, nil); r.status != 404 {
		t.Fatalf("bob gets alice's workspace: %d %s", r.status, r.body)
	}
	if r := e.do(t, adminKey, "DELETE", "/v1/sandboxes/"+alice.SandboxID, nil); r.status != 204 {
		t.Fatalf("admin kill: %d %s", r.status, r.body)
	}
}

func TestRefusesOpenNonLoopback(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DefaultBackend = "local"
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := httpapi.New(m, httpapi.Options{Loopback: false}); err == nil || !strings.Contains(err.Error(), "API keys") {
		t.Fatalf("open API on a non-loopback address: %v", err)
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) {
		c.MaxBodyMB = 1
		c.CreatesPerMinute = 3
		c.MaxSandboxesPerKey = 2
		c.MaxStreamsPerKey = 1
	})
	if r := e.do(t, aliceKey, "POST", "/v1/sandboxes", `{"metadata": {"x": "`+strings.Repeat("a", 2<<20)+`"}}`); r.status != 413 || r.apiError(t).Code != api.CodeTooLarge || !strings.Contains(r.apiError(t).Message, "larger than 1 MiB") {
		t.Fatalf("oversized body: %d %s", r.status, r.body)
	}
	a := e.create(t, aliceKey, api.CreateSandboxRequest{})
	e.create(t, aliceKey, api.CreateSandboxRequest{})
	if r := e.do(t, aliceKey, "POST", "/v1/sandboxes", api.CreateSandboxRequest{}); r.status != 429 || !strings.Contains(r.apiError(t).Message, "max_sandboxes_per_key") {
		t.Fatalf("third sandbox: %d %s", r.status, r.body)
	}
	if r := e.do(t, aliceKey, "POST", "/v1/sandboxes", api.CreateSandboxRequest{}); r.status != 429 || !strings.Contains(r.apiError(t).Message, "a minute") {
		t.Fatalf("rate limit: %d %s", r.status, r.body)
	}
	// Bob has his own budget.
	e.create(t, bobKey, api.CreateSandboxRequest{})

	// One open stream per key: a watch holds it; the next stream is refused.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.url+"/v1/sandboxes/"+a.SandboxID+"/files/watch?path=.", nil)
	req.Header.Set("X-API-Key", aliceKey)
	watch, err := http.DefaultClient.Do(req)
	if err != nil || watch.StatusCode != 200 {
		t.Fatalf("watch: %v %v", watch, err)
	}
	if r := e.do(t, aliceKey, "POST", "/v1/sandboxes/"+a.SandboxID+"/execute", api.ExecuteRequest{Code: "1"}); r.status != 429 || !strings.Contains(r.apiError(t).Message, "open streams") {
		t.Fatalf("second stream: %d %s", r.status, r.body)
	}
	watch.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.do(t, aliceKey, "POST", "/v1/sandboxes/"+a.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "1+1"})
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream slot never freed: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestErrorsAndRequestIDs(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code, msg          string
	}{
		{"unknown route", "GET", "/v1/nope", nil, 404, api.CodeNotFound, "no route"},
		{"wrong method", "PATCH", "/v1/sandboxes", nil, 404, api.CodeNotFound, "no route"},
		{"malformed json", "POST", "/v1/sandboxes", `{"timeout": `, 400, api.CodeInvalid, "request body"},
		{"unknown field", "POST", "/v1/sandboxes", `{"timeuot": 5}`, 400, api.CodeInvalid, "timeuot"},
		{"two values", "POST", "/v1/sandboxes", `{} {}`, 400, api.CodeInvalid, "more than one"},
		{"empty code", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/execute", api.ExecuteRequest{Code: " "}, 400, api.CodeInvalid, "code is empty"},
		{"per-run deny on local", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/execute", api.ExecuteRequest{Code: "1", Network: &api.NetworkPolicy{Policy: "deny"}}, 422, api.CodeUnsupported, "cannot change it"},
		{"bad per-run policy", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/execute", api.ExecuteRequest{Code: "1", Network: &api.NetworkPolicy{Policy: "often"}}, 400, api.CodeInvalid, "often"},
		{"escape via proxy", "GET", "/v1/sandboxes/" + sbx.SandboxID + "/files?path=/etc/shadow", nil, 403, api.CodePermission, "outside"},
		{"unknown pid", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/processes/999999/signal", api.SignalRequest{Signal: "SIGKILL"}, 404, api.CodeNotFound, ""},
		{"bad limit", "GET", "/v1/events?limit=0", nil, 400, api.CodeInvalid, "limit"},
		{"missing template", "GET", "/v1/templates/none", nil, 404, api.CodeNotFound, "none"},
		{"bad timeout", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/timeout", api.SetTimeoutRequest{TimeoutSeconds: -1}, 400, api.CodeInvalid, "timeout"},
		{"overflowing timeout", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/timeout", `{"timeout": 9223372037}`, 400, api.CodeInvalid, "timeout"},
		{"max int timeout", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/timeout", `{"timeout": 9223372036854775807}`, 400, api.CodeInvalid, "timeout"},
		{"overflowing create timeout", "POST", "/v1/sandboxes", `{"timeout": 9223372037}`, 400, api.CodeInvalid, "timeout"},
		{"max int create timeout", "POST", "/v1/sandboxes", `{"timeout": 9223372036854775807}`, 400, api.CodeInvalid, "timeout"},
		{"overflowing timeout_ms", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/execute", `{"code": "1", "timeout_ms": 9223372036854775807}`, 400, api.CodeInvalid, "timeout_ms"},
		{"overflowing command timeout", "POST", "/v1/sandboxes/" + sbx.SandboxID + "/processes", `{"cmd": "true", "timeout_ms": 9223372036854775807}`, 400, api.CodeInvalid, "timeout_ms"},
		{"NUL dataset filename", "PUT", "/v1/datasets/d1?filename=%00", "x", 400, api.CodeInvalid, "filename"},
		{"long dataset filename", "PUT", "/v1/datasets/d1?filename=" + strings.Repeat("a", 10000), "x", 400, api.CodeInvalid, "filename"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, aliceKey, c.method, c.path, c.body)
			ae := r.apiError(t)
			if r.status != c.status || ae.Code != c.code || !strings.Contains(ae.Message, c.msg) || ae.RequestID == "" || r.header.Get("X-Request-ID") != ae.RequestID {
				t.Fatalf("%d %+v", r.status, ae)
			}
		})
	}
	// A client's own request id is kept.
	req, _ := http.NewRequest("GET", e.url+"/healthz", nil)
	req.Header.Set("X-Request-ID", "my-trace-1")
	r, _ := http.DefaultClient.Do(req)
	if r.Header.Get("X-Request-ID") != "my-trace-1" {
		t.Fatalf("request id not kept: %q", r.Header.Get("X-Request-ID"))
	}
	// Allowing what the sandbox already has is fine.
	if r := e.do(t, aliceKey, "POST", "/v1/sandboxes/"+sbx.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "6*7", Network: &api.NetworkPolicy{Policy: "allow"}}); r.status != 200 || !strings.Contains(string(r.body), `"42"`) {
		t.Fatalf("per-run allow: %d %s", r.status, r.body)
	}
}

func TestStreamingExecute(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/sandboxes/"+sbx.SandboxID+"/execute",
		strings.NewReader(`{"code": "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')"}`))
	req.Header.Set("X-API-Key", aliceKey)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("content type %q", r.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(r.Body)
	var types []string
	var firstAt, endAt time.Time
	for sc.Scan() {
		var ev api.ExecEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		types = append(types, ev.Type)
		endAt = time.Now()
	}
	if strings.Join(types, ",") != "stdout,stdout,end" {
		t.Fatalf("events %v", types)
	}
	if endAt.Sub(firstAt) < 500*time.Millisecond {
		t.Fatal("the first event was not streamed before the cell finished")
	}
}

func TestMetricsAndAudit(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.AuditLogCode = true })
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	e.do(t, aliceKey, "POST", "/v1/sandboxes/"+sbx.SandboxID+"/execute?wait=true", api.ExecuteRequest{Code: "1/0"})
	e.do(t, aliceKey, "POST", "/v1/sandboxes/"+sbx.SandboxID+"/processes", api.ProcessRequest{Cmd: "echo audited"})
	e.do(t, "", "GET", "/v1/sandboxes", nil) // denied
	e.do(t, aliceKey, "DELETE", "/v1/sandboxes/"+sbx.SandboxID, nil)

	if r := e.do(t, aliceKey, "GET", "/metrics", nil); r.status != 403 {
		t.Fatalf("a non-admin key reads /metrics: %d", r.status)
	}
	r := e.do(t, adminKey, "GET", "/metrics", nil)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	for _, name := range []string{"dssandbox_sandboxes", "dssandbox_sandbox_creates_total", "dssandbox_executions_total",
		"dssandbox_execution_duration_seconds", "dssandbox_errors_total", "dssandbox_kernel_starts_total", "dssandbox_http_requests_total"} {
		if fams[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	count := func(fam string, labels map[string]string) float64 {
		for _, m := range fams[fam].GetMetric() {
			ok := true
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == k && lp.GetValue() == v
				}
				ok = ok && found
			}
			if ok {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		return -1
	}
	if n := count("dssandbox_executions_total", map[string]string{"outcome": "error"}); n != 1 {
		t.Errorf("error executions = %v", n)
	}
	if n := count("dssandbox_errors_total", map[string]string{"code": "unauthenticated"}); n != 1 {
		t.Errorf("unauthenticated errors = %v", n)
	}
	if n := count("dssandbox_http_requests_total", map[string]string{"route": "POST /v1/sandboxes", "status": "201"}); n != 1 {
		t.Errorf("create requests = %v", n)
	}

	b, err := os.ReadFile(e.auditLn)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		recs = append(recs, rec)
	}
	find := func(action string) *audit.Record {
		for i := range recs {
			if recs[i].Action == action {
				return &recs[i]
			}
		}
		t.Fatalf("no %s in audit log: %s", action, b)
		return nil
	}
	if c := find("sandbox.create"); c.KeyID != "alice" || c.SandboxID != sbx.SandboxID || c.Outcome != audit.OK || c.Remote == "" {
		t.Errorf("create record %+v", c)
	}
	if x := find("code.execute"); x.CodeSize != 3 || len(x.CodeSHA256) != 64 || x.Code != "1/0" {
		t.Errorf("execute record %+v", x)
	}
	if c := find("command.run"); !strings.Contains(c.Code, "echo audited") {
		t.Errorf("command record %+v", c)
	}
	if d := find("auth"); d.Outcome != audit.Denied || d.Status != 401 {
		t.Errorf("denied record %+v", d)
	}
	find("sandbox.kill")
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)
	r := e.do(t, "", "GET", "/v1/openapi.json", nil)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || doc.OpenAPI == "" {
		t.Fatalf("openapi.json: %v", err)
	}
	for _, p := range httpapi.Patterns(e.m) {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			path, method = p, "POST"
		}
		if doc.Paths[path][strings.ToLower(method)] == nil {
			t.Errorf("route %q is not in api/openapi.json", p)
		}
	}
}

func TestDatasetsAndTemplatesOverHTTP(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)
	r := e.do(t, aliceKey, "PUT", "/v1/datasets/sales?filename=sales.csv&description=q3&tag=finance", "a,b\n1,2\n")
	if r.status != 201 || !strings.Contains(string(r.body), `"format":"csv"`) {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := e.do(t, aliceKey, "GET", "/v1/datasets?tag=finance", nil); !strings.Contains(string(r.body), `"sales"`) {
		t.Fatalf("list: %s", r.body)
	}
	if r := e.do(t, aliceKey, "POST", "/v1/datasets", map[string]string{"source": "/etc/passwd", "name": "pw"}); r.status != 403 {
		t.Fatalf("non-admin registering a server path: %d %s", r.status, r.body)
	}
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	r = e.do(t, aliceKey, "POST", "/v1/sandboxes/"+sbx.SandboxID+"/datasets", map[string]string{"name": "sales"})
	if r.status != 200 || !strings.Contains(string(r.body), `"data/sales.csv"`) {
		t.Fatalf("prepare: %d %s", r.status, r.body)
	}
	tmpl := api.Template{ID: "t1", Env: map[string]string{"A": "1"}, Workdir: "/home/t"}
	if r := e.do(t, aliceKey, "PUT", "/v1/templates/t1", tmpl); r.status != 403 {
		t.Fatalf("non-admin template save: %d", r.status)
	}
	if r := e.do(t, adminKey, "PUT", "/v1/templates/t1", tmpl); r.status != 200 {
		t.Fatalf("template save: %d %s", r.status, r.body)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "templates", "t1.yaml")); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, aliceKey, "GET", "/v1/templates/t1", nil); r.status != 200 || !strings.Contains(string(r.body), `"/home/t"`) {
		t.Fatalf("template get: %d %s", r.status, r.body)
	}
	info := e.create(t, aliceKey, api.CreateSandboxRequest{Template: "t1"})
	if info.Workdir != "/home/t" {
		t.Fatalf("template not applied: %+v", info)
	}
	if r := e.do(t, adminKey, "DELETE", "/v1/templates/t1", nil); r.status != 204 {
		t.Fatalf("template delete: %d", r.status)
	}
	if r := e.do(t, adminKey, "DELETE", "/v1/workspaces/"+info.WorkspaceID, nil); r.status != 409 {
		t.Fatalf("deleting an attached workspace: %d %s", r.status, r.body)
	}
	var evs []api.Event
	json.Unmarshal(e.do(t, aliceKey, "GET", "/v1/sandboxes/"+info.SandboxID+"/events", nil).body, &evs)
	if len(evs) != 1 || evs[0].Type != api.EventSandboxCreated {
		t.Fatalf("events: %+v", evs)
	}
}

func TestCORSAndReadiness(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.CORSOrigins = []string{"https://notebook.example"} })
	pre := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.url+"/v1/sandboxes", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r
	}
	if r := pre("https://notebook.example"); r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") != "https://notebook.example" {
		t.Fatalf("allowed origin: %d %v", r.StatusCode, r.Header)
	}
	if r := pre("https://evil.example"); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin got CORS headers: %v", r.Header)
	}
	// Off by default.
	plain := newServer(t, nil)
	req, _ := http.NewRequest("GET", plain.url+"/healthz", nil)
	req.Header.Set("Origin", "https://notebook.example")
	r, err := http.DefaultClient.Do(req)
	if err != nil || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS without configuration: %v %v", err, r.Header)
	}

	rr := e.do(t, "", "GET", "/readyz", nil)
	var ready struct {
		Ready    bool `json:"ready"`
		Backends map[string]struct {
			Ready    bool     `json:"ready"`
			Enforces []string `json:"enforces"`
		} `json:"backends"`
		Default struct {
			Name     string `json:"name"`
			Auto     bool   `json:"auto"`
			Isolated bool   `json:"isolated"`
			Reason   string `json:"reason"`
		} `json:"default_backend"`
		Engine manager.EngineStatus `json:"default_engine"`
	}
	if err := json.Unmarshal(rr.body, &ready); err != nil || rr.status != 200 || !ready.Ready || !ready.Backends["local"].Ready || len(ready.Backends["local"].Enforces) == 0 {
		t.Fatalf("readyz: %d %s", rr.status, rr.body)
	}
	if e := ready.Engine; e.Name != "ipykernel" || !e.Ready {
		t.Errorf("readyz default_engine: %+v", e)
	}
	if d := ready.Default; d.Name != "local" || d.Auto || d.Isolated || !strings.Contains(d.Reason, "default_backend is local") {
		t.Errorf("readyz default_backend: %+v", d)
	}
	// Every limit is either listed as enforced or as refused.
	enf := strings.Join(ready.Backends["local"].Enforces, "\n")
	for _, limit := range []string{"max_open_files", "max_output_bytes", "lifetime", "disk_quota_mb", "pids_limit", "memory_mb"} {
		if !strings.Contains(enf, limit) {
			t.Errorf("readyz says nothing of %s for local: %q", limit, enf)
		}
	}
}

// TestReadyzReportsTheEngine: /readyz names the default engine and whether
// it runs here.
func TestReadyzReportsTheEngine(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.Engine = "lean" })
	r := e.do(t, "", "GET", "/readyz", nil)
	if !strings.Contains(string(r.body), `"default_engine":{"name":"lean","ready":true`) {
		t.Fatalf("readyz with engine lean: %d %s", r.status, r.body)
	}
}

func TestReadyzReportsAnUnusableBackend(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.AgentPath = "/nonexistent/ds-sandbox" })
	r := e.do(t, "", "GET", "/readyz", nil)
	if r.status != 503 || !strings.Contains(string(r.body), "nonexistent") {
		t.Fatalf("readyz with a missing agent binary: %d %s", r.status, r.body)
	}
}

// TestE2BRequestsAreDispatchedAndAudited: E2B's paths and headers reach the
// E2B handler (not our mux) and land in the audit log like our own requests.
func TestE2BRequestsAreDispatchedAndAudited(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DefaultBackend = "local"
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	al, err := audit.Open(cfg.AuditLogPath, 1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	e2b := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	s, err := httpapi.New(m, httpapi.Options{Loopback: true, Audit: al, E2B: e2b})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	send := func(path, key, sandbox string) int {
		req, _ := http.NewRequest("POST", ts.URL+path, nil)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		if sandbox != "" {
			req.Header.Set("E2b-Sandbox-Id", sandbox)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if st := send("/sandboxes", "e2b_00", ""); st != 201 {
		t.Fatalf("E2B create: %d", st)
	}
	if st := send("/v2/sandboxes", "", ""); st != 401 {
		t.Fatalf("E2B without key: %d", st)
	}
	if st := send("/process.Process/Start", "e2b_00", "sbx1"); st != 201 {
		t.Fatalf("envd route by header: %d", st)
	}
	if st := send("/v1/sandboxes/x/timeout", "", ""); st == 201 {
		t.Fatal("our own route went to the E2B handler")
	}
	al.Close()
	b, _ := os.ReadFile(cfg.AuditLogPath)
	var e2bLines, denied int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec audit.Record
		json.Unmarshal([]byte(l), &rec)
		if rec.Action == "e2b" {
			e2bLines++
			if rec.Outcome == audit.Denied {
				denied++
			}
		}
	}
	if e2bLines != 3 || denied != 1 {
		t.Fatalf("audit: %d e2b records, %d denied:\n%s", e2bLines, denied, b)
	}
}

// TestScannerOverHTTP: findings reach a streaming client as a "scan" event
// and a waiting one in the Execution; a blocked cell does not run and is
// audited with outcome "blocked"; one execution can only be stricter.
func TestScannerOverHTTP(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil) // the default mode: warn
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	if sbx.ScannerMode != api.ScannerWarn {
		t.Fatalf("scanner mode %q", sbx.ScannerMode)
	}
	path := "/v1/sandboxes/" + sbx.SandboxID + "/execute"

	r := e.do(t, aliceKey, "POST", path, api.ExecuteRequest{Code: "import subprocess\nprint('ran')"})
	var evs []api.ExecEvent
	for _, l := range strings.Split(strings.TrimSpace(string(r.body)), "\n") {
		var ev api.ExecEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Type != api.EventScan || len(evs[0].Findings) != 1 || evs[0].Findings[0].Module != "subprocess" ||
		evs[1].Type != api.EventStdout || evs[2].Type != api.EventEnd {
		t.Fatalf("stream %s", r.body)
	}

	var x api.Execution
	r = e.do(t, aliceKey, "POST", path+"?wait=true", api.ExecuteRequest{Code: "open('outputs/x.txt', 'w').write('ran')", ScannerMode: api.ScannerBlock})
	if err := json.Unmarshal(r.body, &x); err != nil || r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if x.Error == nil || x.Error.Name != api.ErrNameScanBlocked || len(x.Findings) != 1 || x.Findings[0].Severity != api.SeverityCritical {
		t.Fatalf("blocked execution %s", r.body)
	}
	if _, err := os.Stat(filepath.Join(sbx.WorkspacePath, "outputs", "x.txt")); !os.IsNotExist(err) {
		t.Fatalf("the blocked cell ran: %v", err)
	}

	r = e.do(t, aliceKey, "POST", path, api.ExecuteRequest{Code: "1", ScannerMode: api.ScannerOff})
	if r.status != 403 || r.apiError(t).Code != api.CodePermission {
		t.Fatalf("looser scanner_mode: %d %s", r.status, r.body)
	}

	b, err := os.ReadFile(e.auditLn)
	if err != nil {
		t.Fatal(err)
	}
	var execRec *audit.Record
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Outcome == audit.Blocked && rec.Action == "code.execute" {
			execRec = &rec
		}
	}
	if execRec == nil || execRec.KeyID != "alice" || execRec.SandboxID != sbx.SandboxID || execRec.Detail["findings"] != "1" {
		t.Fatalf("no blocked execute record in the audit log: %s", b)
	}
}

// TestBusyStartsAre429: a create the start gate refuses for load is 429
// limit_exceeded with Retry-After, and /metrics shows the gate.
func TestBusyStartsAre429(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.MaxConcurrentStarts, c.StartQueueMax = 1, 0 })
	done := make(chan resp, 1)
	go func() { done <- e.do(t, aliceKey, "POST", "/v1/sandboxes", api.CreateSandboxRequest{}) }()
	for end := time.Now().Add(60 * time.Second); e.m.StartStats().Running == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the first create never took the start slot")
		}
	}
	r := e.do(t, aliceKey, "POST", "/v1/sandboxes", api.CreateSandboxRequest{})
	if r.status != 429 || r.apiError(t).Code != api.CodeLimit || r.header.Get("Retry-After") == "" {
		t.Fatalf("a create past the start queue: %d %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if r := <-done; r.status != 201 {
		t.Fatalf("the first create: %d %s", r.status, r.body)
	}
}

// TestKeylessDaemonAnswersLoopbackNamesOnly: without API keys every caller
// is the admin, so a request addressed to another name (a page whose DNS
// rebinds its name to 127.0.0.1) is refused before any route runs.
func TestKeylessDaemonAnswersLoopbackNamesOnly(t *testing.T) {
	t.Parallel()
	e := newServer(t, func(c *config.Config) { c.APIKeys = nil })
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"", true}, {"localhost:8000", true}, {"127.0.0.1", true}, {"[::1]:8000", true}, {"8000-abc.localhost", true},
		{"attacker.example:8000", false}, {"127.0.0.1.nip.io", false}, {"10.0.0.1:8000", false},
	} {
		req, _ := http.NewRequest("GET", e.url+"/v1/sandboxes", nil)
		if c.host != "" {
			req.Host = c.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == 200; got != c.ok {
			t.Errorf("Host %q: %d", c.host, resp.StatusCode)
		}
	}
}
