//go:build linux

package pyengine

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// TestCellSemantics runs ipykernel's cell semantics on one cold engine, in
// order (they share its state).
func TestCellSemantics(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{})
	checkCellSemantics(t, e)
}

// checkCellSemantics is shared by the cold and the forked engine.
func checkCellSemantics(t *testing.T, e *Engine) {
	t.Run("execute_result and Out", func(t *testing.T) {
		r, o := run(t, e, "6*7")
		res := o.of("execute_result")
		if r.Status != "ok" || len(res) != 1 || text(t, res[0].Data["text/plain"]) != "42" {
			t.Fatalf("reply %+v, outputs %+v", r, o.list())
		}
		if res[0].ExecutionCount != r.ExecutionCount || r.ExecutionCount < 1 {
			t.Fatalf("execute_result count %d, reply count %d", res[0].ExecutionCount, r.ExecutionCount)
		}
		n := r.ExecutionCount
		r2, o2 := run(t, e, "print(Out["+strconv.Itoa(n)+"], In["+strconv.Itoa(n)+"]); _")
		if r2.ExecutionCount != n+1 {
			t.Fatalf("second cell count %d, want %d", r2.ExecutionCount, n+1)
		}
		if got := strings.TrimSpace(o2.stream("stdout")); got != "42 6*7" {
			t.Fatalf("Out/In printed %q", got)
		}
	})
	t.Run("streams in order with displays", func(t *testing.T) {
		_, o := run(t, e, "import sys\nprint('a')\nprint('err', file=sys.stderr)\ndisplay('b')\nprint('c')")
		var seq []string
		for _, out := range o.list() {
			switch out.Type {
			case "stream":
				seq = append(seq, out.Name+":"+strings.TrimSpace(out.Text))
			case "display_data":
				seq = append(seq, "display:"+text(t, out.Data["text/plain"]))
			}
		}
		if got := strings.Join(seq, " "); got != "stdout:a stderr:err display:'b' stdout:c" {
			t.Fatalf("outputs in order: %s", got)
		}
	})
	t.Run("MIME types", func(t *testing.T) {
		_, o := run(t, e, `from IPython.display import HTML, Markdown, JSON, Latex, SVG, Javascript, display
display(HTML('<b>h</b>'), Markdown('**m**'), Latex(r'$x$'), SVG('<svg xmlns="http://www.w3.org/2000/svg"></svg>'), Javascript('1'))
display(JSON({'k': [1, 2]}))`)
		want := []string{"text/html", "text/markdown", "text/latex", "image/svg+xml", "application/javascript", "application/json"}
		ds := o.of("display_data")
		if len(ds) != len(want) {
			t.Fatalf("%d display_data, want %d: %+v", len(ds), len(want), o.list())
		}
		for i, mime := range want {
			if _, ok := ds[i].Data[mime]; !ok {
				t.Errorf("display %d has %v, want %s", i, keys(ds[i].Data), mime)
			}
		}
		if got := string(ds[5].Data["application/json"]); strings.ReplaceAll(got, " ", "") != `{"k":[1,2]}` {
			t.Errorf("application/json = %s", got)
		}
	})
	t.Run("pandas DataFrame as text/html", func(t *testing.T) {
		_, o := run(t, e, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3.5, float('nan')]})")
		res := o.of("execute_result")
		if len(res) != 1 {
			t.Fatalf("outputs %+v", o.list())
		}
		if h := text(t, res[0].Data["text/html"]); !strings.Contains(h, "<table") || !strings.Contains(h, "NaN") {
			t.Fatalf("text/html = %q", h)
		}
	})
	t.Run("matplotlib figure as image/png", func(t *testing.T) {
		_, o := run(t, e, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nNone")
		ds := o.of("display_data")
		if len(ds) != 1 {
			t.Fatalf("outputs %+v", o.list())
		}
		png, err := base64.StdEncoding.DecodeString(text(t, ds[0].Data["image/png"]))
		if err != nil || !strings.HasPrefix(string(png), "\x89PNG\r\n\x1a\n") {
			t.Fatalf("image/png: %v, % x", err, png[:min(8, len(png))])
		}
	})
	t.Run("update_display and clear_output", func(t *testing.T) {
		_, o := run(t, e, "from IPython.display import clear_output\nh = display('one', display_id=True)\nh.update('two')\nprint('x')\nclear_output(wait=True)")
		d, u, c := o.of("display_data"), o.of("update_display_data"), o.of("clear_output")
		if len(d) != 1 || len(u) != 1 || len(c) != 1 {
			t.Fatalf("outputs %+v", o.list())
		}
		if d[0].DisplayID == "" || u[0].DisplayID != d[0].DisplayID || text(t, u[0].Data["text/plain"]) != "'two'" {
			t.Fatalf("display %+v, update %+v", d[0], u[0])
		}
		if !c[0].Wait {
			t.Fatal("clear_output(wait=True) lost its wait flag")
		}
	})
	t.Run("traceback without colours", func(t *testing.T) {
		r, o := run(t, e, "def f():\n    return 1/0\nf()")
		errs := o.of("error")
		if r.Status != "error" || r.EName != "ZeroDivisionError" || len(errs) != 1 || errs[0].EValue != "division by zero" {
			t.Fatalf("reply %+v, outputs %+v", r, o.list())
		}
		tb := strings.Join(errs[0].Traceback, "\n")
		if strings.Contains(tb, "\x1b[") || !strings.Contains(tb, "return 1/0") || !strings.Contains(tb, "ZeroDivisionError") {
			t.Fatalf("traceback %q", tb)
		}
		r, _ = run(t, e, "def (:")
		if r.Status != "error" || r.EName != "SyntaxError" {
			t.Fatalf("syntax error reply %+v", r)
		}
	})
	t.Run("fd-level output of subprocesses", func(t *testing.T) {
		_, o := run(t, e, "import os, subprocess\nos.system('echo from-system')\nsubprocess.run(['sh', '-c', 'echo from-sub >&2'])\n!echo from-bang")
		if out := o.stream("stdout"); !strings.Contains(out, "from-system") || !strings.Contains(out, "from-bang") {
			t.Errorf("stdout %q", out)
		}
		if errOut := o.stream("stderr"); !strings.Contains(errOut, "from-sub") {
			t.Errorf("stderr %q", errOut)
		}
	})
	t.Run("silent cell sets env", func(t *testing.T) {
		before, _ := run(t, e, "1")
		o := &outputs{}
		r, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "import os\nos.environ['DS_X'] = 'y'\n'hidden'", Silent: true}, o.add)
		if err != nil || r.Status != "ok" || len(o.list()) != 0 {
			t.Fatalf("silent cell: %+v %v, outputs %+v", r, err, o.list())
		}
		after, o := run(t, e, "import subprocess\nprint(subprocess.run(['sh', '-c', 'echo $DS_X'], capture_output=True, text=True).stdout)")
		if after.ExecutionCount != before.ExecutionCount+1 {
			t.Errorf("a silent cell moved the count: %d then %d", before.ExecutionCount, after.ExecutionCount)
		}
		if got := strings.TrimSpace(o.stream("stdout")); got != "y" {
			t.Errorf("env in a subprocess: %q", got)
		}
	})
	t.Run("input not allowed", func(t *testing.T) {
		r, _ := run(t, e, "input('name? ')")
		if r.Status != "error" || r.EName != "StdinNotImplementedError" {
			t.Fatalf("reply %+v", r)
		}
	})
	t.Run("input allowed", func(t *testing.T) {
		var prompts []string
		o := &outputs{}
		r, err := e.Execute(context.Background(), jupyter.ExecuteRequest{
			Code:       "import getpass\nprint('got', input('name? '), getpass.getpass('pw? '))",
			AllowStdin: true,
			Input: func(prompt string, password bool) (string, error) {
				prompts = append(prompts, prompt+strconv.FormatBool(password))
				if password {
					return "secret", nil
				}
				return "ada", nil
			},
		}, o.add)
		if err != nil || r.Status != "ok" {
			t.Fatalf("%+v %v %+v", r, err, o.list())
		}
		if got := strings.TrimSpace(o.stream("stdout")); got != "got ada secret" {
			t.Fatalf("stdout %q", got)
		}
		if strings.Join(prompts, ",") != "name? false,pw? true" {
			t.Fatalf("prompts %q", prompts)
		}
	})
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestStreamingAndInterrupt: output arrives while the cell runs (the test
// interrupts the cell only once it saw it), the interrupt ends the cell with
// KeyboardInterrupt and the state is kept.
func TestStreamingAndInterrupt(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{})
	eval(t, e, "x = 41")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := &outputs{}
	r, err := e.Execute(ctx, jupyter.ExecuteRequest{Code: "import time\nprint('working')\nwhile True: time.sleep(0.01)"}, func(out jupyter.Output) {
		o.add(out)
		if out.Type == "stream" && strings.Contains(out.Text, "working") {
			cancel()
		}
	})
	if !errors.Is(err, jupyter.ErrInterrupted) || !errors.Is(err, context.Canceled) || errors.Is(err, jupyter.ErrDead) {
		t.Fatalf("Execute: %v", err)
	}
	if r == nil || r.Status != "error" || r.EName != "KeyboardInterrupt" {
		t.Fatalf("reply %+v", r)
	}
	if got := eval(t, e, "x += 1\nprint(x)"); got != "42" {
		t.Fatalf("state after interrupt: %q", got)
	}
}

// TestTimeoutInterrupts: a deadline is an interrupt, the engine lives on.
func TestTimeoutInterrupts(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{})
	eval(t, e, "y = 'kept'")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := e.Execute(ctx, jupyter.ExecuteRequest{Code: "import time\ntime.sleep(600)"}, nil)
	if !errors.Is(err, jupyter.ErrInterrupted) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Execute: %v", err)
	}
	if got := eval(t, e, "print(y)"); got != "kept" {
		t.Fatalf("state after timeout: %q", got)
	}
}

// TestIgnoredInterruptKills: a cell that ignores SIGINT is killed after the
// grace.
func TestIgnoredInterruptKills(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{InterruptGrace: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := e.Execute(ctx, jupyter.ExecuteRequest{Code: "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ignoring')\nwhile True: time.sleep(0.01)"}, func(out jupyter.Output) {
		if strings.Contains(out.Text, "ignoring") {
			cancel()
		}
	})
	if !errors.Is(err, jupyter.ErrDead) || !errors.Is(err, jupyter.ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute: %v", err)
	}
	<-e.Done()
	if _, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "1"}, nil); !errors.Is(err, jupyter.ErrDead) {
		t.Fatalf("Execute after the kill: %v", err)
	}
}

// TestDeathMidCell: os._exit ends the cell with ErrDead after the output
// written before it; Done is closed; Close still works, twice.
func TestDeathMidCell(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{})
	o := &outputs{}
	_, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "import os, sys\nprint('bye')\nsys.stdout.flush()\nos._exit(3)"}, o.add)
	if !errors.Is(err, jupyter.ErrDead) {
		t.Fatalf("Execute: %v", err)
	}
	if got := o.stream("stdout"); got != "bye\n" {
		t.Fatalf("output before death: %q", got)
	}
	<-e.Done()
	if _, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "1"}, nil); !errors.Is(err, jupyter.ErrDead) {
		t.Fatalf("Execute after death: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close after death: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestHugeOutput: big stream output arrives in bounded chunks; an output
// over the frame limit kills the engine with a clear error instead of
// being buffered.
func TestHugeOutput(t *testing.T) {
	t.Parallel()
	e := startEngine(t, Config{MaxFrameBytes: minMaxFrameBytes})
	var total, chunks int
	_, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "print('x' * (12 << 20), end='')"}, func(out jupyter.Output) {
		if out.Type == "stream" {
			if len(out.Text) > 1<<20 {
				t.Errorf("a stream chunk of %d bytes", len(out.Text))
			}
			total += len(out.Text)
			chunks++
		}
	})
	if err != nil || total != 12<<20 || chunks < 12 {
		t.Fatalf("Execute: %v; %d bytes in %d chunks", err, total, chunks)
	}
	_, err = e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "display({'text/plain': 'y' * (9 << 20)}, raw=True)"}, nil)
	if !errors.Is(err, jupyter.ErrDead) || !strings.Contains(err.Error(), "over the 8388608-byte limit") {
		t.Fatalf("Execute with an oversized output: %v", err)
	}
	<-e.Done()
}

// TestStartErrors: a Python that cannot run the runner, and one that never
// says hello, fail Start clearly and within the timeout.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hang := filepath.Join(dir, "hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noIPython := filepath.Join(dir, "noipython")
	if err := os.WriteFile(noIPython, []byte("#!/bin/sh\nexec "+python+" -I -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantIs  error
		wantMsg string
	}{
		{name: "missing interpreter", cfg: Config{Python: filepath.Join(dir, "nope")}, wantMsg: "no such file"},
		{name: "no IPython", cfg: Config{Python: noIPython}, wantMsg: "No module named"},
		{name: "never ready", cfg: Config{Python: hang, StartTimeout: 300 * time.Millisecond}, wantIs: jupyter.ErrStartTimeout},
		{name: "frame limit too small", cfg: Config{MaxFrameBytes: 1024}, wantMsg: "below the minimum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Started, tt.cfg.Reaped = ownStarted, ownReaped
			e, err := Start(context.Background(), tt.cfg)
			if err == nil {
				e.Close()
				t.Fatal("Start succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("Start: %v, want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Start: %v, want it to say %q", err, tt.wantMsg)
			}
		})
	}
}
