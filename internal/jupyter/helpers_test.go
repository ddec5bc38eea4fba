//go:build linux

package jupyter

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

// python is the interpreter with Debian's ipykernel.
const python = testenv.Python

var (
	sharedOnce   sync.Once
	shared       *Kernel
	sharedErr    error
	sharedIPYDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	if sharedIPYDir != "" {
		os.RemoveAll(sharedIPYDir)
	}
	os.Exit(code)
}

// kernelEnv is our environment with a private IPYTHONDIR (the history
// database) under dir and without variables that could redirect the kernel.
func kernelEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "IPYTHONDIR=") || strings.HasPrefix(kv, "PYTHONPATH=") ||
			strings.HasPrefix(kv, "PYTHONHOME=") || strings.HasPrefix(kv, "MPLBACKEND=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "IPYTHONDIR="+filepath.Join(dir, "ipython"))
}

// startKernel starts a kernel for one test and closes it at the end.
func startKernel(tb testing.TB, cfg Config) *Kernel {
	tb.Helper()
	testenv.RequirePython(tb)
	if cfg.Python == "" {
		cfg.Python = python
	}
	if cfg.Env == nil {
		cfg.Env = kernelEnv(tb.TempDir())
	}
	k, err := Start(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { k.Close() })
	return k
}

// sharedKernel returns the kernel shared by tests that do not depend on its
// state; TestMain closes it.
func sharedKernel(tb testing.TB) *Kernel {
	tb.Helper()
	testenv.RequirePython(tb)
	sharedOnce.Do(func() {
		sharedIPYDir, sharedErr = os.MkdirTemp("", "jupyter-test")
		if sharedErr != nil {
			return
		}
		// Not tb.Context(): the kernel outlives the first test using it.
		shared, sharedErr = Start(context.Background(), Config{Python: python, Env: kernelEnv(sharedIPYDir)})
	})
	if sharedErr != nil {
		tb.Fatalf("start shared kernel: %v", sharedErr)
	}
	return shared
}

// run executes code and collects the outputs.
func run(tb testing.TB, k *Kernel, req ExecuteRequest) ([]Output, *Reply) {
	tb.Helper()
	var outs []Output
	r, err := k.Execute(tb.Context(), req, func(o Output) { outs = append(outs, o) })
	if err != nil {
		tb.Fatalf("Execute(%q): %v", req.Code, err)
	}
	return outs, r
}

// streams joins the text of the stream outputs with the given name.
func streams(outs []Output, name string) string {
	var b strings.Builder
	for _, o := range outs {
		if o.Type == "stream" && o.Name == name {
			b.WriteString(o.Text)
		}
	}
	return b.String()
}

// ofType returns the outputs of one type.
func ofType(outs []Output, typ string) []Output {
	var r []Output
	for _, o := range outs {
		if o.Type == typ {
			r = append(r, o)
		}
	}
	return r
}

// mime decodes the string value of one MIME type of an output's bundle.
func mime(tb testing.TB, o Output, typ string) string {
	tb.Helper()
	raw, ok := o.Data[typ]
	if !ok {
		tb.Fatalf("%s output has no %s (has %v)", o.Type, typ, keys(o.Data))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		tb.Fatalf("%s of %s output: %v", typ, o.Type, err)
	}
	return s
}

func keys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
