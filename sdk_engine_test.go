package dssandbox_test

import (
	"errors"
	"strings"
	"testing"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

// TestEngineOption runs in embedded and (DS_SANDBOX_TEST_REMOTE=1) remote
// mode: Options.Engine reaches the server, which says which engine runs,
// and an unknown engine is refused naming it.
func TestEngineOption(t *testing.T) {
	t.Parallel()
	sbx := newSandbox(t, dssandbox.Options{Engine: dssandbox.EngineIPykernel})
	info, err := sbx.GetInfo(t.Context())
	if err != nil || info.Engine != dssandbox.EngineIPykernel {
		t.Fatalf("info engine %q, %v", info.Engine, err)
	}
	if e := run(t, sbx, "6*7"); e.Text() != "42" {
		t.Fatalf("cell: %+v", e)
	}
	_, err = dssandbox.Create(t.Context(), dssandbox.Options{Engine: "jupyter"})
	if !errors.Is(err, dssandbox.ErrInvalid) || !strings.Contains(err.Error(), `engine: "jupyter" is not one of ipykernel, lean`) {
		t.Fatalf("create with engine jupyter: %v", err)
	}
}
