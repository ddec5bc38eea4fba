package docker_test

import (
	"debug/elf"
	"os/exec"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/backend/docker"
)

// TestDynamicAgentIsRefusedWithAdvice: a cgo build of ds-sandbox (what `go
// install` gives on a machine with gcc) cannot run in an image; the backend
// refuses it before any daemon is asked, saying how to build a static one.
// A dynamically linked system binary stands in for that build: the check
// reads only the ELF program headers.
func TestDynamicAgentIsRefusedWithAdvice(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if !dynamic {
		t.Skipf("%s is statically linked here: no dynamic binary to offer", bin)
	}
	err = docker.New(docker.Config{AgentPath: bin, StateDir: t.TempDir()}).Available(t.Context())
	for _, want := range []string{"dynamically linked", "CGO_ENABLED=0 go install github.com/ds-sandbox/ds-sandbox/cmd/ds-sandbox@latest", "SANDBOX_AGENT_PATH"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Available with the dynamic agent %s: %v; want an error saying %q", bin, err, want)
		}
	}
}
