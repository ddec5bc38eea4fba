package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
	"github.com/ds-sandbox/ds-sandbox/internal/e2b"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// The tenancy suite: one daemon, several keys, every face (REST, E2B's
// control plane, envd and interpreter, MCP over HTTP). Each case is tried
// by alice, who owns the target and must succeed (so the check can fail),
// and by bob, who must be refused as if the thing did not exist.

const (
	tenAdmin = "admin-key-0123456789"
	tenAlice = "alice-key-0123456789"
	tenBob   = "bob-key-01234567890"
	tenCarol = "carol-key-0123456789" // no backends listed: local is refused
	tenDave  = "dave-key-01234567890" // templates: only "allowed-tmpl"
)

type tenDaemon struct {
	url   string
	d     *daemon.Daemon
	audit string
}

func startTenancyDaemon(t *testing.T, mod func(*config.Config)) *tenDaemon {
	t.Helper()
	testenv.RequirePython(t)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.Listen = "127.0.0.1:0"
	cfg.DefaultBackend = "local"
	cfg.Python = "/usr/bin/python3"
	cfg.AuditLogCode = true
	local := []string{"local"}
	cfg.APIKeys = []config.APIKey{
		{ID: "admin", Key: tenAdmin, Admin: true},
		{ID: "alice", Key: tenAlice, Backends: local},
		{ID: "bob", Key: tenBob, Backends: local},
		{ID: "carol", Key: tenCarol},
		{ID: "dave", Key: tenDave, Backends: local, Templates: []string{"allowed-tmpl"}},
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Shutdown(10 * time.Second) })
	return &tenDaemon{url: d.URL, d: d, audit: cfg.AuditLogPath}
}

// do sends one request; headers alternate name, value.
func (td *tenDaemon) do(t *testing.T, method, path string, body any, headers ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, td.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if req.Header.Get("Content-Type") == "" && rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (td *tenDaemon) rest(t *testing.T, key, method, path string, body any) (int, []byte) {
	t.Helper()
	if key == "" {
		return td.do(t, method, path, body)
	}
	return td.do(t, method, path, body, "X-API-Key", key)
}

// e2bSandbox is an E2B create's answer.
type e2bSandbox struct {
	SandboxID       string `json:"sandboxID"`
	EnvdAccessToken string `json:"envdAccessToken"`
}

func (td *tenDaemon) e2bCreate(t *testing.T, key string) e2bSandbox {
	t.Helper()
	st, b := td.rest(t, key, "POST", "/sandboxes", map[string]any{"templateID": "base", "timeout": 600})
	if st != 201 {
		t.Fatalf("E2B create: %d %s", st, b)
	}
	var s e2bSandbox
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// envd calls a sandbox-side route with an access token.
func (td *tenDaemon) envd(t *testing.T, sandboxID, port, token, method, path string, body any, headers ...string) (int, []byte) {
	t.Helper()
	h := append([]string{"E2b-Sandbox-Id", sandboxID, "E2b-Sandbox-Port", port, "X-Access-Token", token}, headers...)
	return td.do(t, method, path, body, h...)
}

func mcpSession(t *testing.T, url, key string) (*mcp.ClientSession, error) {
	t.Helper()
	endpoint := strings.Replace(url, "127.0.0.1", "localhost", 1) + "/mcp"
	client := mcp.NewClient(&mcp.Implementation{Name: "tenancy-test", Version: "0"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: apiKeyTransport{key}}}, nil)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

// tool calls an MCP tool: its text, and whether it failed.
func tool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return err.Error(), true
	}
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String(), res.IsError
}

// outcome is what one attempt got: allowed, or refused (and how).
type outcome struct {
	ok   bool
	what string
}

func httpOutcome(st int, b []byte) outcome {
	return outcome{ok: st < 300, what: fmt.Sprintf("%d %.200s", st, b)}
}

func TestTenancy(t *testing.T) {
	td := startTenancyDaemon(t, nil)
	// alice's things: a sandbox (REST) with a named workspace and a file, a
	// background process and a code context; a dataset; a sandbox made
	// through E2B (for its tokens).
	st, b := td.rest(t, tenAlice, "POST", "/v1/sandboxes", api.CreateSandboxRequest{WorkspaceID: "alice-ws"})
	if st != 201 {
		t.Fatalf("alice create: %d %s", st, b)
	}
	var a1 api.SandboxInfo
	json.Unmarshal(b, &a1)
	if st, b := td.rest(t, tenAlice, "PUT", "/v1/sandboxes/"+a1.SandboxID+"/files?path=/home/user/secret.txt", "alice-secret"); st >= 300 {
		t.Fatalf("alice write: %d %s", st, b)
	}
	if st, b := td.rest(t, tenAlice, "POST", "/v1/sandboxes/"+a1.SandboxID+"/processes", api.ProcessRequest{Cmd: "sleep 600", Background: true}); st >= 300 {
		t.Fatalf("alice background process: %d %s", st, b)
	}
	if st, b := td.rest(t, tenAlice, "PUT", "/v1/datasets/alice-data?filename=a.csv", "x,y\n1,2\n"); st != 201 {
		t.Fatalf("alice dataset: %d %s", st, b)
	}
	a2 := td.e2bCreate(t, tenAlice)
	// bob's own: a REST sandbox (to prepare into) and an E2B one (his
	// tokens, tried on alice's sandbox).
	st, b = td.rest(t, tenBob, "POST", "/v1/sandboxes", api.CreateSandboxRequest{})
	if st != 201 {
		t.Fatalf("bob create: %d %s", st, b)
	}
	var b1 api.SandboxInfo
	json.Unmarshal(b, &b1)
	b2 := td.e2bCreate(t, tenBob)
	own := map[string]struct{ rest, token string }{
		tenAlice: {a1.SandboxID, a2.EnvdAccessToken},
		tenBob:   {b1.SandboxID, b2.EnvdAccessToken},
	}
	mcps := map[string]*mcp.ClientSession{}
	for _, k := range []string{tenAlice, tenBob} {
		cs, err := mcpSession(t, td.url, k)
		if err != nil {
			t.Fatal(err)
		}
		mcps[k] = cs
	}

	sb := "/v1/sandboxes/" + a1.SandboxID
	connect := func(key, service string, body any) outcome {
		js, _ := json.Marshal(body)
		st, b := td.envd(t, a2.SandboxID, e2b.EnvdPort, own[key].token, "POST", "/"+service, js,
			"Content-Type", "application/json", "Connect-Protocol-Version", "1")
		return httpOutcome(st, b)
	}
	mcpCall := func(key, name string, args map[string]any) outcome {
		text, failed := tool(t, mcps[key], name, args)
		return outcome{ok: !failed, what: text}
	}
	listed := func(key, path, needle string) outcome {
		st, b := td.rest(t, key, "GET", path, nil)
		return outcome{ok: st == 200 && bytes.Contains(b, []byte(needle)), what: fmt.Sprintf("%d %.300s", st, b)}
	}
	cases := []struct {
		face, name string
		try        func(key string) outcome
	}{
		{"rest", "get sandbox", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", sb, nil)) }},
		{"rest", "connect", func(k string) outcome { return httpOutcome(td.rest(t, k, "POST", sb+"/connect", nil)) }},
		{"rest", "list sandboxes", func(k string) outcome { return listed(k, "/v1/sandboxes", a1.SandboxID) }},
		{"rest", "execute", func(k string) outcome {
			st, b := td.rest(t, k, "POST", sb+"/execute?wait=true", api.ExecuteRequest{Code: "open('secret.txt').read()"})
			return outcome{ok: st == 200 && bytes.Contains(b, []byte("alice-secret")), what: fmt.Sprintf("%d %.200s", st, b)}
		}},
		{"rest", "read file", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "GET", sb+"/files?path=/home/user/secret.txt", nil))
		}},
		{"rest", "write file", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "PUT", sb+"/files?path=/home/user/from-"+k[:3]+".txt", "x"))
		}},
		{"rest", "list files", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "GET", sb+"/files/list?path=/home/user", nil))
		}},
		{"rest", "processes", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", sb+"/processes", nil)) }},
		{"rest", "contexts", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", sb+"/contexts", nil)) }},
		{"rest", "events of the sandbox", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", sb+"/events", nil)) }},
		{"rest", "events of all sandboxes", func(k string) outcome { return listed(k, "/v1/events", a1.SandboxID) }},
		{"rest", "set timeout", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "POST", sb+"/timeout", api.SetTimeoutRequest{TimeoutSeconds: 900}))
		}},
		{"rest", "get workspace", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", "/v1/workspaces/alice-ws", nil)) }},
		{"rest", "list workspaces", func(k string) outcome { return listed(k, "/v1/workspaces", "alice-ws") }},
		{"rest", "attach workspace", func(k string) outcome {
			st, b := td.rest(t, k, "POST", "/v1/sandboxes", api.CreateSandboxRequest{WorkspaceID: "alice-ws"})
			if st == 201 {
				var info api.SandboxInfo
				json.Unmarshal(b, &info)
				td.rest(t, k, "DELETE", "/v1/sandboxes/"+info.SandboxID, nil)
			}
			return httpOutcome(st, b)
		}},
		{"rest", "get dataset", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", "/v1/datasets/alice-data", nil)) }},
		{"rest", "list datasets", func(k string) outcome { return listed(k, "/v1/datasets", "alice-data") }},
		{"rest", "prepare dataset into own sandbox", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "POST", "/v1/sandboxes/"+own[k].rest+"/datasets", map[string]string{"name": "alice-data"}))
		}},
		{"e2b", "get sandbox", func(k string) outcome { return httpOutcome(td.rest(t, k, "GET", "/sandboxes/"+a2.SandboxID, nil)) }},
		{"e2b", "connect", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "POST", "/sandboxes/"+a2.SandboxID+"/connect", map[string]int{"timeout": 600}))
		}},
		{"e2b", "set timeout", func(k string) outcome {
			return httpOutcome(td.rest(t, k, "POST", "/sandboxes/"+a2.SandboxID+"/timeout", map[string]int{"timeout": 600}))
		}},
		{"e2b", "list sandboxes", func(k string) outcome { return listed(k, "/v2/sandboxes", a2.SandboxID) }},
		{"e2b-envd", "list dir", func(k string) outcome {
			return connect(k, "filesystem.Filesystem/ListDir", map[string]any{"path": "/home/user", "depth": 1})
		}},
		{"e2b-envd", "processes", func(k string) outcome { return connect(k, "process.Process/List", map[string]any{}) }},
		{"e2b-envd", "stat", func(k string) outcome {
			return connect(k, "filesystem.Filesystem/Stat", map[string]any{"path": "/home/user"})
		}},
		{"e2b-interpreter", "execute", func(k string) outcome {
			st, b := td.envd(t, a2.SandboxID, e2b.InterpreterPort, own[k].token, "POST", "/execute", map[string]string{"code": "6*7"})
			return outcome{ok: st == 200 && bytes.Contains(b, []byte(`"42"`)), what: fmt.Sprintf("%d %.200s", st, b)}
		}},
		{"e2b-interpreter", "contexts", func(k string) outcome {
			return httpOutcome(td.envd(t, a2.SandboxID, e2b.InterpreterPort, own[k].token, "GET", "/contexts", nil))
		}},
		{"mcp", "run_code", func(k string) outcome {
			return mcpCall(k, "run_code", map[string]any{"sandbox_id": a1.SandboxID, "code": "open('secret.txt').read()"})
		}},
		{"mcp", "read_file", func(k string) outcome {
			return mcpCall(k, "read_file", map[string]any{"sandbox_id": a1.SandboxID, "path": "/home/user/secret.txt"})
		}},
		{"mcp", "write_file", func(k string) outcome {
			return mcpCall(k, "write_file", map[string]any{"sandbox_id": a1.SandboxID, "path": "/home/user/mcp.txt", "content": "x"})
		}},
		{"mcp", "list_files", func(k string) outcome { return mcpCall(k, "list_files", map[string]any{"sandbox_id": a1.SandboxID}) }},
		{"mcp", "run_command", func(k string) outcome {
			return mcpCall(k, "run_command", map[string]any{"sandbox_id": a1.SandboxID, "command": "cat /home/user/secret.txt"})
		}},
		{"mcp", "create_sandbox in the workspace", func(k string) outcome {
			o := mcpCall(k, "create_sandbox", map[string]any{"workspace_id": "alice-ws"})
			if o.ok {
				mcpCall(k, "kill_sandbox", map[string]any{})
			}
			return o
		}},
	}
	for _, c := range cases {
		if o := c.try(tenAlice); !o.ok {
			t.Errorf("%s %s: the owner was refused: %s", c.face, c.name, o.what)
		}
		if o := c.try(tenBob); o.ok {
			t.Errorf("%s %s: another key was allowed: %s", c.face, c.name, o.what)
		}
	}

	// Killing is tried by bob only; alice's sandboxes must survive it.
	if st, b := td.rest(t, tenBob, "DELETE", sb, nil); st != 404 {
		t.Errorf("rest kill by bob: %d %s", st, b)
	}
	if st, b := td.rest(t, tenBob, "DELETE", "/sandboxes/"+a2.SandboxID, nil); st != 404 {
		t.Errorf("e2b kill by bob: %d %s", st, b)
	}
	if o := mcpCall(tenBob, "kill_sandbox", map[string]any{"sandbox_id": a1.SandboxID}); o.ok {
		t.Errorf("mcp kill by bob: %s", o.what)
	}
	if st, b := td.rest(t, tenBob, "DELETE", "/v1/datasets/alice-data", nil); st != 404 {
		t.Errorf("dataset delete by bob: %d %s", st, b)
	}
	if st, b := td.rest(t, tenBob, "DELETE", "/v1/workspaces/alice-ws", nil); st != 404 {
		t.Errorf("workspace delete by bob: %d %s", st, b)
	}
	for _, id := range []string{a1.SandboxID, a2.SandboxID} {
		if st, _ := td.rest(t, tenAlice, "GET", "/v1/sandboxes/"+id, nil); st != 200 {
			t.Errorf("alice's sandbox %s after bob's kills: %d", id, st)
		}
	}

	// An admin grants the workspace and publishes the dataset: bob may then
	// use them.
	if st, b := td.rest(t, tenAdmin, "PUT", "/v1/workspaces/alice-ws/grants/bob", nil); st != 200 {
		t.Fatalf("grant: %d %s", st, b)
	}
	if st, b := td.rest(t, tenBob, "GET", "/v1/workspaces/alice-ws", nil); st != 200 {
		t.Errorf("bob after the grant: %d %s", st, b)
	}
	if st, b := td.rest(t, tenBob, "DELETE", "/v1/workspaces/alice-ws", nil); st != 403 {
		t.Errorf("a grant lets bob delete the workspace: %d %s", st, b)
	}
	if st, b := td.rest(t, tenAlice, "PUT", "/v1/datasets/alice-data/public", nil); st != 403 {
		t.Errorf("a non-admin publishes: %d %s", st, b)
	}
	if st, b := td.rest(t, tenAdmin, "PUT", "/v1/datasets/alice-data/public", nil); st != 200 {
		t.Fatalf("publish: %d %s", st, b)
	}
	if st, b := td.rest(t, tenBob, "POST", "/v1/sandboxes/"+b1.SandboxID+"/datasets", map[string]string{"name": "alice-data"}); st != 200 {
		t.Errorf("bob prepares the published dataset: %d %s", st, b)
	}

	// The audit log names the key, the action and the code for every face.
	recs := readAudit(t, td.audit)
	for _, face := range []string{"rest", "e2b", "mcp"} {
		found := false
		for _, r := range recs {
			if r.Action == "code.execute" && r.KeyID == "alice" && r.CodeSHA256 != "" && r.Outcome == audit.OK && auditFace(r) == face {
				found = true
			}
		}
		if !found {
			t.Errorf("no code.execute record of alice through %s with its code's sha256", face)
		}
	}
}

// auditFace tells which face wrote an audit record.
func auditFace(r audit.Record) string {
	switch {
	case r.Detail["tool"] != "":
		return "mcp"
	case r.Detail["path"] != "":
		return "e2b"
	}
	return "rest"
}

func readAudit(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestTenancyRefusals: no key is 401 on every face; a backend or template a
// key may not use is 403 naming the setting, on every face.
func TestTenancyRefusals(t *testing.T) {
	td := startTenancyDaemon(t, nil)
	for _, c := range []struct{ method, path string }{{"GET", "/v1/sandboxes"}, {"POST", "/v1/sandboxes"}, {"GET", "/sandboxes"}, {"POST", "/sandboxes"}, {"GET", "/v1/workspaces"}, {"GET", "/v1/datasets"}, {"GET", "/metrics"}} {
		if st, b := td.rest(t, "", c.method, c.path, "{}"); st != 401 {
			t.Errorf("%s %s without a key: %d %s", c.method, c.path, st, b)
		}
	}
	if _, err := mcpSession(t, td.url, ""); err == nil {
		t.Error("MCP without a key connected")
	}
	if st, b := td.rest(t, tenAlice, "GET", "/metrics", nil); st != 403 {
		t.Errorf("/metrics for a non-admin key: %d %s", st, b)
	}

	// carol may not use local (the default backend here).
	st, b := td.rest(t, tenCarol, "POST", "/v1/sandboxes", api.CreateSandboxRequest{})
	if st != 403 || !bytes.Contains(b, []byte("api_keys[].backends")) {
		t.Errorf("rest create on local by carol: %d %s", st, b)
	}
	st, b = td.rest(t, tenCarol, "POST", "/sandboxes", map[string]any{"templateID": "base"})
	if st != 403 || !bytes.Contains(b, []byte("api_keys[].backends")) {
		t.Errorf("e2b create on local by carol: %d %s", st, b)
	}
	cs, err := mcpSession(t, td.url, tenCarol)
	if err != nil {
		t.Fatal(err)
	}
	if text, failed := tool(t, cs, "create_sandbox", map[string]any{}); !failed || !strings.Contains(text, "api_keys[].backends") {
		t.Errorf("mcp create on local by carol: %v %s", failed, text)
	}
	// dave may only use "allowed-tmpl".
	st, b = td.rest(t, tenDave, "POST", "/v1/sandboxes", api.CreateSandboxRequest{Template: "other"})
	if st != 403 || !bytes.Contains(b, []byte("api_keys[].templates")) {
		t.Errorf("rest create from another template by dave: %d %s", st, b)
	}
	st, b = td.rest(t, tenDave, "POST", "/v1/sandboxes", api.CreateSandboxRequest{TemplateSpec: &api.Template{ID: "mine"}})
	if st != 403 {
		t.Errorf("rest create from an inline template by dave: %d %s", st, b)
	}
	st, b = td.rest(t, tenDave, "POST", "/sandboxes", map[string]any{"templateID": "other"})
	if st != 403 || !bytes.Contains(b, []byte("api_keys[].templates")) {
		t.Errorf("e2b create from another template by dave: %d %s", st, b)
	}
	// Templates carry env values and files: dave sees only his own.
	for _, id := range []string{"allowed-tmpl", "team-secret"} {
		if st, b := td.rest(t, tenAdmin, "PUT", "/v1/templates/"+id, api.Template{ID: id, Env: map[string]string{"TOKEN": "s3cret"}}); st != 200 {
			t.Fatalf("save template %s: %d %s", id, st, b)
		}
	}
	if st, b := td.rest(t, tenDave, "GET", "/v1/templates/team-secret", nil); st != 404 {
		t.Errorf("dave reads a template he may not use: %d %s", st, b)
	}
	if st, b := td.rest(t, tenDave, "GET", "/v1/templates", nil); st != 200 || bytes.Contains(b, []byte("team-secret")) || !bytes.Contains(b, []byte("allowed-tmpl")) {
		t.Errorf("dave's template list: %d %s", st, b)
	}
	if st, b := td.rest(t, tenAlice, "GET", "/v1/templates/team-secret", nil); st != 200 {
		t.Errorf("alice (no template list) reads a template: %d %s", st, b)
	}
	// An admin may use local, and the refusal was not a broken daemon.
	st, b = td.rest(t, tenAdmin, "POST", "/v1/sandboxes", api.CreateSandboxRequest{})
	if st != 201 {
		t.Fatalf("admin create: %d %s", st, b)
	}
}

// TestTenancyQuotaRace: 20 creates of one key race across REST, E2B and MCP
// at once against max_sandboxes_per_key 3: exactly 3 sandboxes exist after,
// the rest were refused with the limit.
func TestTenancyQuotaRace(t *testing.T) {
	td := startTenancyDaemon(t, func(c *config.Config) { c.MaxSandboxesPerKey = 3 })
	cs, err := mcpSession(t, td.url, tenAlice)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	made, refused := 0, 0
	count := func(ok bool, what string) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ok:
			made++
		case strings.Contains(what, "max_sandboxes_per_key"):
			refused++
		default:
			t.Errorf("a create failed otherwise: %s", what)
		}
	}
	for i := range 20 {
		wg.Go(func() {
			switch i % 3 {
			case 0:
				st, b := td.rest(t, tenAlice, "POST", "/v1/sandboxes", api.CreateSandboxRequest{})
				count(st == 201, fmt.Sprintf("rest %d %s", st, b))
			case 1:
				st, b := td.rest(t, tenAlice, "POST", "/sandboxes", map[string]any{"templateID": "base"})
				count(st == 201, fmt.Sprintf("e2b %d %s", st, b))
			default:
				text, failed := tool(t, cs, "create_sandbox", map[string]any{})
				count(!failed, "mcp "+text)
			}
		})
	}
	wg.Wait()
	n := len(td.d.Manager.List(context.Background(), nil))
	if made != 3 || refused != 17 || n != 3 {
		t.Fatalf("20 racing creates under max_sandboxes_per_key 3: %d made, %d refused, %d running", made, refused, n)
	}
}
