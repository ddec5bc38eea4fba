package local_test

import (
	"os"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/backendtest"
	"github.com/ds-sandbox/ds-sandbox/internal/backend/local"
)

func TestMain(m *testing.M) {
	agent.MainIfReexec()
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, local.New(local.Config{CacheDir: t.TempDir()}), backendtest.Options{
		EnforcesNetwork:  []string{api.NetworkAllow},
		WorkspaceEnvRoot: func(s backend.Spec) string { return s.WorkspaceDir },
	})
}
