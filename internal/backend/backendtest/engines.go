package backendtest

import (
	"context"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// engines are the code engines the suites run on, each with the reason its
// runs are skipped ("" = they run). This is the one place that says which
// engines are wired in: wiring one in is emptying its reason here.
var engines = []struct{ name, notWired string }{
	{api.EngineIPykernel, ""},
	{api.EngineLean, ""},
}

// ForEachEngine runs fn once per code engine (api.Engines), one after the
// other, each as a subtest named after the engine. A backend's tests run Run
// and Security through it, passing the engine in their Options, so every
// suite runs on every engine.
func ForEachEngine(t *testing.T, fn func(t *testing.T, engine string)) {
	t.Helper()
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { fn(t, e.name) })
	}
}

// notWired returns why the suites skip engine ("" when they run it).
func notWired(engine string) string {
	if engine == "" {
		return ""
	}
	for _, e := range engines {
		if e.name == engine {
			return e.notWired
		}
	}
	return "engine " + engine + " is not one of " + strings.Join(api.Engines, ", ")
}

// checkNotWired proves that the backend hands spec.Engine to its agent for
// an engine that is not wired in yet: the agent refuses to start, so Create
// fails saying the engine is not built, and nothing is left running.
func checkNotWired(t *testing.T, b backend.Backend, s backend.Spec) {
	t.Helper()
	inst, err := b.Create(t.Context(), s)
	if err == nil {
		_ = inst.Destroy(context.Background())
		t.Fatalf("engine %s is not wired in, yet a sandbox asking for it started", s.Engine)
	}
	if want := "engine \"" + s.Engine + "\" is not built yet"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Create with engine %s: %v; want an error saying %q (does the backend pass --engine to its agent?)", s.Engine, err, want)
	}
}
