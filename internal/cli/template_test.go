package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestTemplateUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"no operation", []string{"template"}},
		{"unknown operation", []string{"template", "push", "x"}},
		{"build without a file", []string{"template", "build"}},
		{"rm without an id", []string{"template", "rm"}},
		{"export without a directory", []string{"template", "export", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := Main(t.Context(), tt.args, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "ds-sandbox template build") {
				t.Fatalf("exit %d, stderr %q; want 2 and the usage", code, errb.String())
			}
		})
	}
}

func TestTemplateBuildRejectsABadFile(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Main(t.Context(), []string{"template", "build", "/nonexistent/t.yaml"}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "/nonexistent/t.yaml") {
		t.Fatalf("exit %d, stderr %q; want 1 naming the file", code, errb.String())
	}
}
