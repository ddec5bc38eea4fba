package dssandbox

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/dataset"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/sdkcp"
)

// ConfigEnv names a config file (YAML or JSON) for the embedded manager; the
// SANDBOX_* variables are applied on top of it.
const ConfigEnv = "DS_SANDBOX_CONFIG"

var (
	embeddedOnce sync.Once
	embeddedCP   atomic.Pointer[embedded]
	embeddedErr  error

	remoteOnce sync.Once
	remoteCP   *sdkcp.Remote
	remoteErr  error
)

// defaultControlPlane is the server named by DS_SANDBOX_URL when it is set,
// else the embedded manager.
func defaultControlPlane() (sdkcp.ControlPlane, error) {
	if u := os.Getenv(URLEnv); u != "" {
		remoteOnce.Do(func() { remoteCP, remoteErr = sdkcp.NewRemote(u, os.Getenv(APIKeyEnv)) })
		if remoteErr != nil {
			return nil, remoteErr
		}
		return remoteCP, nil
	}
	embeddedOnce.Do(func() {
		cfg, err := config.Load(os.Getenv(ConfigEnv))
		if err != nil {
			embeddedErr = err
			return
		}
		m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
		if err != nil {
			embeddedErr = err
			return
		}
		// Code that is not isolated is said so once, on stderr, as the
		// CLI and the daemon do.
		if w := m.DefaultChoice().Warning(); w != "" {
			fmt.Fprintln(os.Stderr, "ds-sandbox:", w)
		}
		embeddedCP.Store(&embedded{m: m})
	})
	if embeddedErr != nil {
		return nil, embeddedErr
	}
	return embeddedCP.Load(), nil
}

// Shutdown kills every sandbox the embedded manager started. Programs that
// embed the SDK call it before they exit (sandboxes die with the process
// anyway, but Shutdown also removes their anonymous workspaces).
func Shutdown(ctx context.Context) error {
	e := embeddedCP.Load()
	if e == nil {
		return nil
	}
	return e.m.Close(ctx)
}

// embedded is the in-process control plane.
type embedded struct {
	m *manager.Manager
}

var _ sdkcp.ControlPlane = (*embedded)(nil)

func (e *embedded) Create(ctx context.Context, req api.CreateSandboxRequest) (api.SandboxInfo, *agentclient.Client, error) {
	s, err := e.m.Create(ctx, req)
	if err != nil {
		return api.SandboxInfo{}, nil, err
	}
	return s.Info(), s.Agent(), nil
}

func (e *embedded) Connect(ctx context.Context, id string) (api.SandboxInfo, *agentclient.Client, error) {
	s, err := e.m.Get(ctx, id)
	if err != nil {
		return api.SandboxInfo{}, nil, err
	}
	return s.Info(), agentclient.NewClient(s.AgentSocket()), nil
}

func (e *embedded) Execute(ctx context.Context, id string, _ *agentclient.Client, req api.ExecuteRequest, onEvent func(api.ExecEvent)) (*api.Execution, error) {
	s, err := e.m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.Execute(ctx, req, onEvent)
}

func (e *embedded) SetNetwork(ctx context.Context, id string, p api.NetworkPolicy) (api.SandboxInfo, error) {
	return e.m.SetNetwork(ctx, id, p)
}

func (e *embedded) List(ctx context.Context, md map[string]string) ([]api.SandboxInfo, error) {
	return e.m.List(ctx, md), nil
}

func (e *embedded) Info(ctx context.Context, id string) (api.SandboxInfo, error) {
	s, err := e.m.Get(ctx, id)
	if err != nil {
		return api.SandboxInfo{}, err
	}
	return s.Info(), nil
}

func (e *embedded) SetTimeout(ctx context.Context, id string, d time.Duration) (api.SandboxInfo, error) {
	return e.m.SetTimeout(ctx, id, d)
}

func (e *embedded) Kill(ctx context.Context, id string) error { return e.m.Kill(ctx, id) }

func (e *embedded) PrepareDataset(ctx context.Context, id, name, strategy string) (string, error) {
	return e.m.PrepareDataset(ctx, id, name, strategy)
}

func (e *embedded) RegisterDataset(ctx context.Context, source, name, description string, tags []string) (api.Dataset, error) {
	return e.m.RegisterDataset(ctx, source, name, description, tags)
}

func (e *embedded) ListDatasets(ctx context.Context, f sdkcp.DatasetFilter) ([]api.Dataset, error) {
	return e.m.ListDatasets(ctx, dataset.Filter{NameContains: f.NameContains, Tags: f.Tags, Format: f.Format})
}

func (e *embedded) RemoveDataset(ctx context.Context, name string) error {
	return e.m.RemoveDataset(ctx, name)
}

func (e *embedded) LoadTemplate(_ context.Context, id string) (api.Template, error) {
	return e.m.LoadTemplate(id)
}
