package backendtest

import (
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ForEachEngine runs fn once per code engine (api.Engines), one after the
// other, each as a subtest named after the engine. A backend's tests run Run
// and Security through it, passing the engine in their Options, so every
// suite runs on every engine.
func ForEachEngine(t *testing.T, fn func(t *testing.T, engine string)) {
	t.Helper()
	for _, e := range api.Engines {
		t.Run(e, func(t *testing.T) { fn(t, e) })
	}
}
