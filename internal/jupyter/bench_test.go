//go:build linux

package jupyter

import (
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// BenchmarkExecute measures one "1+1" round trip (execute_request →
// execute_reply and iopub idle) on a running kernel.
func BenchmarkExecute(b *testing.B) {
	k := startKernel(b, Config{})
	req := ExecuteRequest{Code: "1+1"}
	for b.Loop() {
		if _, err := k.Execute(b.Context(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStart measures process start → kernel ready, plus Close.
func BenchmarkStart(b *testing.B) {
	testenv.RequirePython(b)
	cfg := Config{Python: python, Env: kernelEnv(b.TempDir())}
	for b.Loop() {
		k, err := Start(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := k.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
