package dssandbox_test

import (
	"context"
	"testing"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
)

// TestRemoteRetriesBusyStarts: a daemon whose start queue is full answers
// 429 with Retry-After; the SDK's remote mode waits and sends the create
// again, so the caller gets its sandbox, not an error.
func TestRemoteRetriesBusyStarts(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	cfg.Listen = "127.0.0.1:0"
	cfg.DefaultBackend = "local"
	cfg.Python = "/usr/bin/python3"
	cfg.MaxConcurrentStarts, cfg.StartQueueMax = 1, 0
	d, err := daemon.Start(t.Context(), cfg, daemon.Options{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(10 * time.Second)
	// An in-process create holds the only start slot until its kernel is
	// ready.
	held := make(chan error, 1)
	go func() { _, err := d.Manager.Create(context.Background(), api.CreateSandboxRequest{}); held <- err }()
	for end := time.Now().Add(60 * time.Second); d.Manager.StartStats().Running == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the in-process create never took the start slot")
		}
	}
	c, err := dssandbox.NewClient(d.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	sbx, err := c.Create(t.Context(), dssandbox.Options{})
	if err != nil {
		t.Fatalf("a remote create while the start queue is full: %v", err)
	}
	defer sbx.Kill(context.Background())
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if st := d.Manager.StartStats(); st.Refused == 0 || st.Admitted != 2 {
		t.Fatalf("start stats %+v: the remote create was not refused once and then admitted", st)
	}
}
