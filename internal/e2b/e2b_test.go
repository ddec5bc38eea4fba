package e2b_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/e2b"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	testenv.MainRequirePython()
	os.Exit(m.Run())
}

const e2bKey = "e2b_0123456789abcdef"

// daemon is the daemon's handler (REST API with the E2B hook) over a real
// manager and the local backend, as `ds-sandbox serve` assembles it.
func daemon(t *testing.T, keys []config.APIKey, edits ...func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.APIKeys = keys
	cfg.DefaultBackend = "local"
	for _, edit := range edits {
		edit(&cfg)
	}
	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(t.Context()) })
	s, err := httpapi.New(m, httpapi.Options{Loopback: true, E2B: e2b.New(m, e2b.Options{Loopback: true})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

type call struct {
	method, path string
	headers      map[string]string
	body         string
}

func do(t *testing.T, base string, c call) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func apiCall(method, path, key, body string) call {
	return call{method: method, path: path, body: body, headers: map[string]string{"X-API-KEY": key, "Content-Type": "application/json"}}
}

type created struct {
	SandboxID, TemplateID, ClientID, EnvdVersion, EnvdAccessToken, TrafficAccessToken string
}

func create(t *testing.T, base, key, body string) created {
	t.Helper()
	st, _, b := do(t, base, apiCall("POST", "/v2/sandboxes", key, body))
	if st != 201 {
		t.Fatalf("create: %d %s", st, b)
	}
	var c created
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func errorCode(t *testing.T, b []byte) int {
	t.Helper()
	var e struct {
		Code    int
		Message string
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Message == "" {
		t.Fatalf("not E2B's error shape: %s (%v)", b, err)
	}
	return e.Code
}

func TestControlPlane(t *testing.T) {
	t.Parallel()
	base := daemon(t, nil)
	c := create(t, base, e2bKey, `{"templateID":"base","timeout":60,"metadata":{"a":"b"},"envVars":{"X":"1"}}`)
	if c.TemplateID != "base" || c.ClientID != "6532622b" || c.EnvdVersion != e2b.EnvdVersion || c.EnvdAccessToken == "" {
		t.Fatalf("create answered %+v", c)
	}
	for _, tc := range []struct {
		name   string
		call   call
		status int
	}{
		{"no key", call{method: "GET", path: "/v2/sandboxes"}, 401},
		{"key not e2b-shaped", apiCall("GET", "/v2/sandboxes", "secret", ""), 401},
		{"get info", apiCall("GET", "/sandboxes/"+c.SandboxID, e2bKey, ""), 200},
		{"get missing", apiCall("GET", "/sandboxes/nope", e2bKey, ""), 404},
		{"timeout", apiCall("POST", "/sandboxes/"+c.SandboxID+"/timeout", e2bKey, `{"timeout":120}`), 204},
		{"timeout too long", apiCall("POST", "/sandboxes/"+c.SandboxID+"/timeout", e2bKey, `{"timeout":999999}`), 400},
		{"timeout overflowing", apiCall("POST", "/sandboxes/"+c.SandboxID+"/timeout", e2bKey, `{"timeout":9223372037}`), 400},
		{"create timeout overflowing", apiCall("POST", "/sandboxes", e2bKey, `{"templateID":"base","timeout":9223372037}`), 400},
		{"body too large", apiCall("POST", "/sandboxes/"+c.SandboxID+"/timeout", e2bKey, `{"timeout":1,"x":"`+strings.Repeat("a", 5<<20)+`"}`), 413},
		{"connect v2", apiCall("POST", "/v2/sandboxes/"+c.SandboxID+"/connect", e2bKey, `{}`), 200},
		{"connect v1", apiCall("POST", "/sandboxes/"+c.SandboxID+"/connect", e2bKey, `{"timeout":300}`), 200},
		{"pause unsupported", apiCall("POST", "/sandboxes/"+c.SandboxID+"/pause", e2bKey, ``), 422},
		{"pause missing", apiCall("POST", "/sandboxes/nope/pause", e2bKey, ``), 404},
		{"resume running", apiCall("POST", "/sandboxes/"+c.SandboxID+"/resume", e2bKey, `{}`), 409},
		{"no internet on local", apiCall("POST", "/v2/sandboxes", e2bKey, `{"templateID":"base","allow_internet_access":false}`), 422},
		{"auto pause", apiCall("POST", "/sandboxes", e2bKey, `{"templateID":"base","autoPause":true}`), 422},
		{"unknown template", apiCall("POST", "/v2/sandboxes", e2bKey, `{"templateID":"no-such-template"}`), 404},
		{"template build", apiCall("POST", "/v3/templates", e2bKey, `{}`), 404},
		{"templates", apiCall("GET", "/templates", e2bKey, ``), 422},
		{"unknown route", apiCall("GET", "/sandboxes/"+c.SandboxID+"/nothing", e2bKey, ``), 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, b := do(t, base, tc.call)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, b)
			}
			if st >= 400 && tc.name != "template build" {
				if code := errorCode(t, b); code != st {
					t.Fatalf("body code %d, status %d", code, st)
				}
			}
		})
	}
	st, h, b := do(t, base, apiCall("GET", "/v2/sandboxes?metadata="+"a%3Db", e2bKey, ""))
	var listed []map[string]any
	if err := json.Unmarshal(b, &listed); st != 200 || err != nil || len(listed) != 1 || listed[0]["sandboxID"] != c.SandboxID || h.Get("X-Next-Token") != "" {
		t.Fatalf("list: %d %s %v", st, b, err)
	}
	if st, _, _ := do(t, base, apiCall("DELETE", "/sandboxes/"+c.SandboxID, e2bKey, "")); st != 204 {
		t.Fatalf("kill: %d", st)
	}
	if st, _, b := do(t, base, apiCall("DELETE", "/sandboxes/"+c.SandboxID, e2bKey, "")); st != 404 || errorCode(t, b) != 404 {
		t.Fatalf("second kill: %d %s", st, b)
	}
}

func TestConfiguredKeys(t *testing.T) {
	t.Parallel()
	base := daemon(t, []config.APIKey{{ID: "alice", Key: "alice-key-0123456789", Backends: []string{"local"}}})
	if st, _, _ := do(t, base, apiCall("GET", "/v2/sandboxes", e2bKey, "")); st != 401 {
		t.Fatalf("an e2b_ key that is not ours: %d", st)
	}
	if st, _, b := do(t, base, apiCall("GET", "/v2/sandboxes", "alice-key-0123456789", "")); st != 200 {
		t.Fatalf("our key: %d %s", st, b)
	}
}

func envd(c created, path, ctype, body string) call {
	return call{method: "POST", path: path, body: body, headers: map[string]string{
		"E2b-Sandbox-Id": c.SandboxID, "E2b-Sandbox-Port": e2b.EnvdPort, "X-Access-Token": c.EnvdAccessToken,
		"Content-Type": ctype, "Connect-Protocol-Version": "1",
	}}
}

func frames(t *testing.T, b []byte) (msgs []string, end string) {
	t.Helper()
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			t.Fatal(err)
		}
		m := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, m); err != nil {
			t.Fatal(err)
		}
		if hdr[0]&2 != 0 {
			return msgs, string(m)
		}
		msgs = append(msgs, string(m))
	}
	t.Fatal("no end-of-stream frame")
	return nil, ""
}

func envelope(s string) string {
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(s)))
	return string(b) + s
}

func TestEnvdAndInterpreter(t *testing.T) {
	t.Parallel()
	base := daemon(t, nil)
	c := create(t, base, e2bKey, `{"templateID":"code-interpreter-v1","envVars":{"FROM_CREATE":"yes"}}`)

	t.Run("health", func(t *testing.T) {
		cl := envd(c, "/health", "", "")
		cl.method = "GET"
		if st, _, _ := do(t, base, cl); st != 204 {
			t.Fatalf("health: %d", st)
		}
	})
	t.Run("unknown sandbox is 502", func(t *testing.T) {
		cl := envd(created{SandboxID: "nope"}, "/filesystem.Filesystem/Stat", "application/json", `{"path":"x"}`)
		if st, _, b := do(t, base, cl); st != 502 || !strings.Contains(string(b), "The sandbox was not found") {
			t.Fatalf("%d %s", st, b)
		}
	})
	t.Run("missing token", func(t *testing.T) {
		cl := envd(c, "/filesystem.Filesystem/Stat", "application/json", `{"path":"x"}`)
		delete(cl.headers, "X-Access-Token")
		if st, _, b := do(t, base, cl); st != 401 || !strings.Contains(string(b), `"unauthenticated"`) {
			t.Fatalf("%d %s", st, b)
		}
	})
	t.Run("unary stat not found", func(t *testing.T) {
		st, _, b := do(t, base, envd(c, "/filesystem.Filesystem/Stat", "application/json", `{"path":"nope"}`))
		if st != 404 || !strings.Contains(string(b), `"code":"not_found"`) {
			t.Fatalf("%d %s", st, b)
		}
	})
	t.Run("files and list", func(t *testing.T) {
		cl := envd(c, "/files?path=d%2Fa.txt", "application/octet-stream", "hello")
		if st, _, b := do(t, base, cl); st != 200 || !strings.Contains(string(b), `"name":"a.txt"`) || b[0] != '[' {
			t.Fatalf("upload: %d %s", st, b)
		}
		st, _, b := do(t, base, envd(c, "/filesystem.Filesystem/ListDir", "application/json", `{"path":"d","depth":1}`))
		if st != 200 || !strings.Contains(string(b), `"type":"FILE_TYPE_FILE"`) || !strings.Contains(string(b), `"size":"5"`) {
			t.Fatalf("ListDir: %d %s", st, b)
		}
		get := envd(c, "/files?path=d%2Fa.txt", "", "")
		get.method = "GET"
		if st, _, b := do(t, base, get); st != 200 || string(b) != "hello" {
			t.Fatalf("download: %d %q", st, b)
		}
	})
	t.Run("polling watcher", func(t *testing.T) {
		do(t, base, envd(c, "/filesystem.Filesystem/MakeDir", "application/json", `{"path":"w"}`))
		st, _, b := do(t, base, envd(c, "/filesystem.Filesystem/CreateWatcher", "application/json", `{"path":"w"}`))
		var cw struct{ WatcherID string }
		if err := json.Unmarshal(b, &cw); st != 200 || err != nil || cw.WatcherID == "" {
			t.Fatalf("CreateWatcher: %d %s", st, b)
		}
		do(t, base, envd(c, "/files?path=w%2Fnew.txt", "application/octet-stream", "x"))
		sel := `{"watcherId":"` + cw.WatcherID + `"}`
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, _, b = do(t, base, envd(c, "/filesystem.Filesystem/GetWatcherEvents", "application/json", sel))
			if strings.Contains(string(b), `"name":"new.txt"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no event for new.txt: %s", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st, _, b := do(t, base, envd(c, "/filesystem.Filesystem/RemoveWatcher", "application/json", sel)); st != 200 {
			t.Fatalf("RemoveWatcher: %d %s", st, b)
		}
		if st, _, _ := do(t, base, envd(c, "/filesystem.Filesystem/GetWatcherEvents", "application/json", sel)); st != 404 {
			t.Fatalf("a removed watcher: %d", st)
		}
	})
	t.Run("process stream", func(t *testing.T) {
		st, _, b := do(t, base, envd(c, "/process.Process/Start", "application/connect+json",
			envelope(`{"process":{"cmd":"/bin/bash","args":["-l","-c","echo $FROM_CREATE; exit 3"]},"stdin":false}`)))
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		msgs, end := frames(t, b)
		if len(msgs) < 3 || !strings.HasPrefix(msgs[0], `{"event":{"start":{"pid":`) || end != "{}" {
			t.Fatalf("frames %q, end %q", msgs, end)
		}
		want := base64.StdEncoding.EncodeToString([]byte("yes\n"))
		if !strings.Contains(strings.Join(msgs, ""), want) || !strings.Contains(msgs[len(msgs)-1], `"exitCode":3`) {
			t.Fatalf("frames %q", msgs)
		}
	})
	t.Run("pty unsupported", func(t *testing.T) {
		_, _, b := do(t, base, envd(c, "/process.Process/Start", "application/connect+json",
			envelope(`{"process":{"cmd":"/bin/bash"},"pty":{"size":{"cols":80,"rows":24}}}`)))
		if _, end := frames(t, b); !strings.Contains(end, `"unimplemented"`) {
			t.Fatalf("end %q", end)
		}
	})
	t.Run("execute", func(t *testing.T) {
		cl := call{method: "POST", path: "/execute", body: `{"code":"print('hi')\n1+1"}`, headers: map[string]string{
			"E2b-Sandbox-Id": c.SandboxID, "E2b-Sandbox-Port": e2b.InterpreterPort, "E2B-Traffic-Access-Token": c.TrafficAccessToken}}
		st, _, b := do(t, base, cl)
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		var types []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			if line["type"] == "keepalive" { // every 5 s: a slow machine may send one
				continue
			}
			types = append(types, line["type"].(string))
			if line["type"] == "result" && (line["text"] != "2" || line["is_main_result"] != true) {
				t.Fatalf("result %v", line)
			}
		}
		if got := strings.Join(types, ","); got != "stdout,result,number_of_executions,end_of_execution" {
			t.Fatalf("lines %s", got)
		}
		delete(cl.headers, "E2B-Traffic-Access-Token")
		if st, _, _ := do(t, base, cl); st != 401 {
			t.Fatalf("without a token: %d", st)
		}
	})
}

// TestExecuteAndTheCodeScanner: E2B's /execute goes through the code
// scanner. A blocked cell is an error line and does not run; a finding under
// warn adds no line E2B's SDKs would not know.
func TestExecuteAndTheCodeScanner(t *testing.T) {
	t.Parallel()
	base := daemon(t, nil, func(c *config.Config) { c.ScannerMode = api.ScannerBlock })
	c := create(t, base, e2bKey, `{"templateID":"code-interpreter-v1"}`)
	execute := func(code string) []map[string]any {
		body, _ := json.Marshal(map[string]string{"code": code})
		st, _, b := do(t, base, call{method: "POST", path: "/execute", body: string(body), headers: map[string]string{
			"E2b-Sandbox-Id": c.SandboxID, "E2b-Sandbox-Port": e2b.InterpreterPort, "E2B-Traffic-Access-Token": c.TrafficAccessToken}})
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		var lines []map[string]any
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			if line["type"] != "keepalive" {
				lines = append(lines, line)
			}
		}
		return lines
	}
	lines := execute("print('ran')\nexec('x = 1')")
	if len(lines) != 2 || lines[0]["type"] != "error" || lines[0]["name"] != api.ErrNameScanBlocked || lines[1]["type"] != "end_of_execution" {
		t.Fatalf("blocked cell: %v", lines)
	}
	lines = execute("import subprocess\nprint('x' in globals())")
	if len(lines) != 3 || lines[0]["type"] != "stdout" || lines[0]["text"] != "False\n" || lines[1]["type"] != "number_of_executions" {
		t.Fatalf("cell with a high finding: %v", lines)
	}
}
