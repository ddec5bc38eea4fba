package agent

import (
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// TestSetEnvReachesKernelsAndCommands: envs set after the agent started (as
// a warm pool's claim does) are in the running default kernel's os.environ,
// in a context created later, after a restart, and in commands; a bad name
// is refused.
func TestSetEnvReachesKernelsAndCommands(t *testing.T) {
	t.Parallel()
	a := newKernelAgent(t)
	ctx := t.Context()
	if err := a.c.SetEnv(ctx, map[string]string{"DSS_CLAIMED": "yes it=is", "PATH": "/claimed:/usr/bin:/bin"}); err != nil {
		t.Fatalf("SetEnv: %v", err)
	}
	check := func(what, contextID string) {
		t.Helper()
		e, err := a.c.Execute(ctx, api.ExecuteRequest{ContextID: contextID, Code: "import os; os.environ.get('DSS_CLAIMED', 'missing') + '|' + os.environ['PATH'].split(':')[0]"}, nil)
		if err != nil || e.Error != nil {
			t.Fatalf("%s: %v %+v", what, err, e.Error)
		}
		if got := e.Text(); got != "'yes it=is|/claimed'" {
			t.Fatalf("%s: os.environ gives %s, want 'yes it=is|/claimed'", what, got)
		}
	}
	check("default context", "")
	if _, err := a.c.RestartContext(ctx, DefaultContextID); err != nil {
		t.Fatal(err)
	}
	check("default context after a restart", "")
	c, err := a.c.CreateContext(ctx, api.CreateContextRequest{})
	if err != nil {
		t.Fatal(err)
	}
	check("a new context", c.ID)
	res, err := a.c.RunCommand(ctx, api.ProcessRequest{Cmd: `echo "$DSS_CLAIMED"`}, nil)
	if err != nil || strings.TrimSpace(res.Stdout) != "yes it=is" {
		t.Fatalf("command: %v %+v", err, res)
	}
	err = a.c.SetEnv(ctx, map[string]string{"A=B": "x"})
	wantErr(t, "a name with '='", err, api.ErrInvalid)
}

// TestSetEnvSaysTheDefaultKernelIsGone: a sandbox whose default kernel died
// is not "ready" (a warm pool drops it).
func TestSetEnvSaysTheDefaultKernelIsGone(t *testing.T) {
	t.Parallel()
	a := newKernelAgent(t)
	ctx := t.Context()
	if err := a.c.SetEnv(ctx, nil); err != nil {
		t.Fatalf("SetEnv right after the start (waits for the default kernel): %v", err)
	}
	e, err := a.c.Execute(ctx, api.ExecuteRequest{Code: "import os; os._exit(1)"}, nil)
	if err != nil || e.Error == nil {
		t.Fatalf("killing the kernel: %v %+v", err, e)
	}
	wantErr(t, "SetEnv with a dead default kernel", a.c.SetEnv(ctx, map[string]string{"X": "1"}), api.ErrUnavailable)
}
