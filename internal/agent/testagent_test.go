package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// testAgent is an agent served on a real unix socket, and a Client for it.
type testAgent struct {
	c         *agentclient.Client
	s         *Server
	sock      string
	workspace string // host directory of the workdir (local mode)
}

// newLocalAgent starts an agent in local mode: the workspace (a temp dir) is
// mounted at /home/user and at its own host path, as the local backend does.
func newLocalAgent(t *testing.T) *testAgent {
	t.Helper()
	ws := t.TempDir()
	a := startAgent(t, Config{
		Workdir: "/home/user", User: "user",
		Mounts: []Mount{{Path: "/home/user", HostPath: ws}, {Path: ws, HostPath: ws}},
	})
	a.workspace = ws
	return a
}

// startAgent serves New(cfg) over a unix socket in a short temp dir (sun_path
// is limited to 107 bytes) with its Handler, so no code context is started.
func startAgent(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	dir, err := os.MkdirTemp("", "ag")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler()}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	c := agentclient.NewClient(sock)
	t.Cleanup(func() {
		c.Close()
		_ = srv.Close()
		<-served
		s.Close()
		_ = os.RemoveAll(dir)
	})
	return &testAgent{c: c, s: s, sock: sock}
}

// post sends body as it is to the agent's route p (for malformed requests no
// Client method sends) and returns the api.Error the agent answered with, nil
// for a 2xx answer.
func (a *testAgent) post(ctx context.Context, p string, body io.Reader) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", a.sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+p, body)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Code == "" {
		return fmt.Errorf("HTTP %d without an api.Error (%v)", resp.StatusCode, err)
	}
	return &e
}

// wantErr fails unless err wraps want (nil: no error).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v (code %s), want %v", what, err, api.CodeOf(err), want)
	}
}
