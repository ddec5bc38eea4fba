package backendset_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// TestAutoPicksOCIAsRoot: with nothing configured, as root on a host with
// runc, nft and ip, default_backend auto is oci, and a sandbox that names
// no backend runs its code there as the sandbox user (uid 1000) under the
// default network policy (allow).
func TestAutoPicksOCIAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("oci is auto's choice as root; rootless oci cannot enforce the default network policy allow")
	}
	testenv.RequirePython(t)
	bin, cleanup, err := backendtest.BuildStaticAgent()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	dir, err := os.MkdirTemp("", "dss-backends-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil { // the container's init walks to its workspace
		t.Fatal(err)
	}
	cfg := config.Default()
	if cfg.DefaultBackend != config.AutoBackend {
		t.Fatalf("the default backend is %q, want auto", cfg.DefaultBackend)
	}
	cfg.StateDir, cfg.AgentPath = dir, bin
	cfg.WorkspaceBaseDir, cfg.DatasetRegistryDir, cfg.AuditLogPath = "", "", ""
	cfg.Resolve()
	bs := backendset.New(cfg, backendset.Embedded)
	for _, b := range bs {
		if b.Name() == "oci" {
			testenv.RequireNoError(t, "the oci backend", b.Available(t.Context()))
		}
	}
	m, err := manager.New(cfg, nil, bs...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	ch := m.DefaultChoice()
	if ch.Name != "oci" || !ch.Auto || !ch.Isolated || ch.Warning() != "" || m.Config().DefaultBackend != "oci" {
		t.Fatalf("auto chose %+v (config default %q), want oci", ch, m.Config().DefaultBackend)
	}
	s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Info().Backend != "oci" || s.Info().Network.Policy != api.NetworkAllow {
		t.Fatalf("sandbox %+v", s.Info())
	}
	e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import os; print(os.getuid())"}, nil)
	if err != nil || e.Error != nil || strings.Join(e.Logs.Stdout, "") != "1000\n" {
		t.Fatalf("getuid in the sandbox: %v %+v", err, e)
	}
}
