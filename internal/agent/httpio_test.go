package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJSONNotHTMLEscaped: the agent's JSON responses carry names as they are,
// as the daemon's own responses and every event stream do (no \u003c for <).
func TestJSONNotHTMLEscaped(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	const name = "a<b>&c.txt"
	if err := os.WriteFile(filepath.Join(a.workspace, name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", a.sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://agent/files/stat?path="+url.QueryEscape("/home/user/"+name), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"`+name+`"`) {
		t.Errorf("stat: %s %s, want 200 with %q as it is", resp.Status, body, name)
	}
}
