package manager_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// TestEngineResolution: a sandbox's engine and preload list are the
// template's, else (the engine) the request's, else the configuration's;
// the preload list in force is imported in the sandbox's engine. (backendtest
// proves every backend passes the engine on to its agent.)
func TestEngineResolution(t *testing.T) {
	t.Parallel()
	m := localManager(t, func(c *config.Config) {
		c.Engine = api.EngineLean
		c.Preload = []string{"mailbox"}
	})
	imported := func(t *testing.T, s interface {
		Execute(context.Context, api.ExecuteRequest, func(api.ExecEvent)) (*api.Execution, error)
	}) string {
		t.Helper()
		e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import sys; print('mailbox' in sys.modules, 'wave' in sys.modules)"}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("execute: %v %+v", err, e.Error)
		}
		return strings.TrimSpace(strings.Join(e.Logs.Stdout, ""))
	}
	t.Run("the configured engine and preload", func(t *testing.T) {
		t.Parallel()
		s, err := m.Create(t.Context(), api.CreateSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Info().Engine; got != api.EngineLean {
			t.Errorf("info engine %q, want lean", got)
		}
		if got := imported(t, s); got != "True False" {
			t.Errorf("mailbox, wave imported: %s, want True False", got)
		}
	})
	t.Run("a template's engine wins over the request's", func(t *testing.T) {
		t.Parallel()
		s, err := m.Create(t.Context(), api.CreateSandboxRequest{Engine: api.EngineIPykernel,
			TemplateSpec: &api.Template{Engine: api.EngineLean, Preload: []string{"wave"}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Info().Engine; got != api.EngineLean {
			t.Errorf("info engine %q, want lean", got)
		}
		if got := imported(t, s); got != "False True" {
			t.Errorf("mailbox, wave imported: %s, want False True", got)
		}
	})
	t.Run("an unknown engine is refused", func(t *testing.T) {
		t.Parallel()
		_, err := m.Create(t.Context(), api.CreateSandboxRequest{Engine: "jupyter"})
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `engine: "jupyter" is not one of ipykernel, lean`) {
			t.Fatalf("create: %v, want invalid naming the engine", err)
		}
	})
	for _, tc := range []struct {
		name    string
		tmpl    *api.Template
		want    string
		wantEng string
	}{
		{"the request's engine over the configured one, with the configured preload", nil, "True False", api.EngineIPykernel},
		{"a template's engine and preload", &api.Template{Engine: api.EngineIPykernel, Preload: []string{"wave"}}, "False True", api.EngineIPykernel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := m.Create(t.Context(), api.CreateSandboxRequest{Engine: api.EngineIPykernel, TemplateSpec: tc.tmpl})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Info().Engine; got != tc.wantEng {
				t.Errorf("info engine %q, want %q", got, tc.wantEng)
			}
			e, err := s.Execute(t.Context(), api.ExecuteRequest{Code: "import sys; print('mailbox' in sys.modules, 'wave' in sys.modules)"}, nil)
			if err != nil || e.Error != nil {
				t.Fatalf("execute: %v %+v", err, e.Error)
			}
			if got := strings.TrimSpace(strings.Join(e.Logs.Stdout, "")); got != tc.want {
				t.Fatalf("mailbox, wave imported: %s, want %s", got, tc.want)
			}
		})
	}
}
