package daemon_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

type apiKeyTransport struct{ key string }

func (k apiKeyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if k.key != "" {
		r.Header.Set("Authorization", "Bearer "+k.key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestDaemonMCP drives /mcp on the real daemon with the official Go MCP
// client, behind the daemon's API keys.
func TestDaemonMCP(t *testing.T) {
	t.Parallel()
	testenv.RequirePython(t)
	cfg := localConfig(t)
	cfg.APIKeys = []config.APIKey{{ID: "agent", Key: "mcp-test-key-0123456789", Backends: []string{"local"}}}
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(5 * time.Second)
	// The MCP transport validates the Host of loopback requests.
	endpoint := strings.Replace(d.URL, "127.0.0.1", "localhost", 1) + "/mcp"
	client := mcp.NewClient(&mcp.Implementation{Name: "daemon-test", Version: "0"}, nil)

	if _, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: apiKeyTransport{}}}, nil); err == nil {
		t.Fatal("MCP without an API key connected")
	}

	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: apiKeyTransport{"mcp-test-key-0123456789"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, code := range []string{"x = 41", "x + 1"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": code}})
		if err != nil || res.IsError {
			t.Fatalf("run_code %q: %v %+v", code, err, res)
		}
		if code == "x + 1" {
			text := res.Content[len(res.Content)-1].(*mcp.TextContent).Text
			if !strings.Contains(text, "42") {
				t.Fatalf("x + 1 → %q", text)
			}
		}
	}
	list := d.Manager.List(context.Background(), nil)
	if len(list) != 1 || list[0].Owner != "agent" {
		t.Fatalf("the MCP session's sandbox: %+v", list)
	}
}
