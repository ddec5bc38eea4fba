package backendtest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/enginehost"
)

// The suites' sandboxes on the lean engine get their default engine the way
// the daemon gives it wherever the backend allows it: forked from a zygote
// outside every sandbox and entered into the sandbox (enginehost). So every
// attack of Security that runs in a cell runs in such an engine.
var (
	hostOnce sync.Once
	host     *enginehost.Host
	hostDir  string
)

func engineHost() *enginehost.Host {
	hostOnce.Do(func() {
		hostDir, _ = os.MkdirTemp("", "dss-zygotes-")
		host = enginehost.New(enginehost.Config{Dir: filepath.Join(hostDir, "zygotes")})
	})
	return host
}

// entersEngines reports whether sandboxes of spec on b get their default
// engine forked in from outside.
func entersEngines(t *testing.T, b backend.Backend, spec backend.Spec) bool {
	t.Helper()
	if spec.Engine != api.EngineLean {
		return false
	}
	ec, ok := b.(backend.EnterChecker)
	return ok && ec.CanEnter(t.Context()) == nil
}

// create starts a sandbox of spec; on the lean engine of a backend whose
// sandboxes can be entered, its default engine is forked in from outside
// (failing the test if that fails: the suite checks that path).
func create(t *testing.T, b backend.Backend, spec backend.Spec) (backend.Instance, error) {
	t.Helper()
	enter := entersEngines(t, b, spec)
	spec.EngineHandoff = enter
	inst, err := b.Create(t.Context(), spec)
	if err != nil || !enter {
		return inst, err
	}
	h := engineHost()
	if err := h.WaitReady(t.Context(), spec.Preload); err != nil {
		_ = inst.Destroy(context.Background())
		t.Fatalf("zygote: %v", err)
	}
	e, err := inst.(backend.Enterer).Entry(t.Context())
	if err == nil {
		err = h.Spawn(t.Context(), spec.Preload, e, inst.AgentSocket())
	}
	if err != nil {
		_ = inst.Destroy(context.Background())
		t.Fatalf("fork the default engine into the sandbox: %v", err)
	}
	return inst, nil
}
