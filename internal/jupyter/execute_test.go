//go:build linux

package jupyter

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestExecuteOutputs runs cells on the shared kernel, in order (some cases
// build on the state of earlier ones).
func TestExecuteOutputs(t *testing.T) {
	t.Parallel()
	k := sharedKernel(t)

	tests := []struct {
		name  string
		req   ExecuteRequest
		check func(t *testing.T, outs []Output, r *Reply)
	}{
		{
			name: "assignment has no output",
			req:  ExecuteRequest{Code: "x = 41", StoreHistory: true},
			check: func(t *testing.T, outs []Output, r *Reply) {
				if len(outs) != 0 {
					t.Errorf("outputs = %+v, want none", outs)
				}
			},
		},
		{
			name: "state persists",
			req:  ExecuteRequest{Code: "x + 1", StoreHistory: true},
			check: func(t *testing.T, outs []Output, r *Reply) {
				res := ofType(outs, "execute_result")
				if len(res) != 1 {
					t.Fatalf("execute_results = %+v, want 1", outs)
				}
				if got := mime(t, res[0], "text/plain"); got != "42" {
					t.Errorf("text/plain = %q, want 42", got)
				}
				if res[0].ExecutionCount < 1 || res[0].ExecutionCount != r.ExecutionCount {
					t.Errorf("execution counts: result %d, reply %d", res[0].ExecutionCount, r.ExecutionCount)
				}
			},
		},
		{
			name: "print",
			req:  ExecuteRequest{Code: "print('hi')"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				want := []Output{{Type: "stream", Name: "stdout", Text: "hi\n"}}
				if !reflect.DeepEqual(outs, want) {
					t.Errorf("outputs = %+v, want %+v", outs, want)
				}
			},
		},
		{
			name: "stderr",
			req:  ExecuteRequest{Code: "import sys; print('oops', file=sys.stderr)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				if got := streams(outs, "stderr"); got != "oops\n" {
					t.Errorf("stderr = %q, want %q (outputs %+v)", got, "oops\n", outs)
				}
			},
		},
		{
			name: "error",
			req:  ExecuteRequest{Code: "1/0"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				errs := ofType(outs, "error")
				if len(errs) != 1 {
					t.Fatalf("error outputs = %+v, want 1", outs)
				}
				if e := errs[0]; e.EName != "ZeroDivisionError" || e.EValue != "division by zero" || len(e.Traceback) == 0 {
					t.Errorf("error output = %+v", e)
				}
				if r.Status != "error" || r.EName != "ZeroDivisionError" {
					t.Errorf("reply = %+v, want status error, ZeroDivisionError", r)
				}
			},
		},
		{
			name: "kernel fine after an error",
			req:  ExecuteRequest{Code: "print(x)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				if got := streams(outs, "stdout"); got != "41\n" {
					t.Errorf("stdout = %q, want 41", got)
				}
			},
		},
		{
			name: "display HTML",
			req:  ExecuteRequest{Code: "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				d := ofType(outs, "display_data")
				if len(d) != 1 {
					t.Fatalf("display_data = %+v, want 1", outs)
				}
				if got := mime(t, d[0], "text/html"); got != "<b>hi</b>" {
					t.Errorf("text/html = %q", got)
				}
			},
		},
		{
			name: "matplotlib",
			req:  ExecuteRequest{Code: "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				d := ofType(outs, "display_data")
				if len(d) != 1 {
					t.Fatalf("display_data = %+v, want 1", outs)
				}
				png, err := base64.StdEncoding.DecodeString(strings.TrimSpace(mime(t, d[0], "image/png")))
				if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
					t.Errorf("image/png is not a base64 PNG (%d bytes, %v)", len(png), err)
				}
			},
		},
		{
			name: "pandas",
			req:  ExecuteRequest{Code: "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				res := ofType(outs, "execute_result")
				if len(res) != 1 {
					t.Fatalf("execute_results = %+v, want 1", outs)
				}
				if got := mime(t, res[0], "text/html"); !strings.Contains(got, "<table") {
					t.Errorf("text/html = %q, want a table", got)
				}
			},
		},
		{
			name: "several displays in order",
			req:  ExecuteRequest{Code: "for i in range(5): display(i)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				var got []string
				for _, o := range ofType(outs, "display_data") {
					got = append(got, mime(t, o, "text/plain"))
				}
				if want := []string{"0", "1", "2", "3", "4"}; !slices.Equal(got, want) {
					t.Errorf("displays = %q, want %q", got, want)
				}
			},
		},
		{
			name: "update display",
			req:  ExecuteRequest{Code: "h = display('a', display_id=True)\nh.update('b')"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				if len(outs) != 2 || outs[0].Type != "display_data" || outs[1].Type != "update_display_data" {
					t.Fatalf("outputs = %+v, want display_data, update_display_data", outs)
				}
				if outs[0].DisplayID == "" || outs[0].DisplayID != outs[1].DisplayID {
					t.Errorf("display ids %q, %q: want equal, non-empty", outs[0].DisplayID, outs[1].DisplayID)
				}
				if a, b := mime(t, outs[0], "text/plain"), mime(t, outs[1], "text/plain"); a != "'a'" || b != "'b'" {
					t.Errorf("text/plain = %q then %q", a, b)
				}
			},
		},
		{
			name: "clear output",
			req:  ExecuteRequest{Code: "from IPython.display import clear_output\nprint(1)\nclear_output(wait=True)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				c := ofType(outs, "clear_output")
				if len(c) != 1 || !c[0].Wait {
					t.Errorf("outputs = %+v, want one clear_output with wait", outs)
				}
			},
		},
		{
			name: "silent",
			req:  ExecuteRequest{Code: "1 + 1", Silent: true},
			check: func(t *testing.T, outs []Output, r *Reply) {
				if len(outs) != 0 || r.Status != "ok" {
					t.Errorf("outputs = %+v, reply %+v: want none, ok", outs, r)
				}
			},
		},
		{
			name: "flood",
			req:  ExecuteRequest{Code: "for i in range(2000): print(i)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				var want strings.Builder
				for i := range 2000 {
					fmt.Fprintln(&want, i)
				}
				if got := streams(outs, "stdout"); got != want.String() {
					t.Errorf("stdout has %d lines, want 2000", strings.Count(got, "\n"))
				}
			},
		},
		{
			// More messages than the kernel's PUB high-water mark (1000):
			// none may be dropped.
			name: "display flood",
			req:  ExecuteRequest{Code: "for i in range(1500): display(i)"},
			check: func(t *testing.T, outs []Output, r *Reply) {
				d := ofType(outs, "display_data")
				if len(d) != 1500 {
					t.Fatalf("got %d display_data, want 1500", len(d))
				}
				for i, o := range d {
					if got := mime(t, o, "text/plain"); got != strconv.Itoa(i) {
						t.Fatalf("display %d is %q", i, got)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, r := run(t, k, tt.req)
			if r == nil {
				t.Fatal("nil reply")
			}
			tt.check(t, outs, r)
		})
	}
}

// TestExecuteStdin covers input() and getpass() with and without stdin.
func TestExecuteStdin(t *testing.T) {
	t.Parallel()
	k := sharedKernel(t)

	type prompt struct {
		Prompt   string
		Password bool
	}
	tests := []struct {
		name        string
		code        string
		allow       bool
		answer      string
		answerErr   error
		wantPrompts []prompt
		wantStdout  string
		wantEName   string
	}{
		{
			name: "input answered", code: "name = input('name? ')\nprint('hello', name)",
			allow: true, answer: "Ada",
			wantPrompts: []prompt{{"name? ", false}}, wantStdout: "hello Ada\n",
		},
		{
			name: "getpass answered", code: "import getpass\nprint(len(getpass.getpass('pw: ')))",
			allow: true, answer: "secret",
			wantPrompts: []prompt{{"pw: ", true}}, wantStdout: "6\n",
		},
		{
			name: "Input error answers empty", code: "print(repr(input('q ')))",
			allow: true, answerErr: errors.New("no user"),
			wantPrompts: []prompt{{"q ", false}}, wantStdout: "''\n",
		},
		{
			name: "stdin not allowed", code: "input('q ')",
			wantEName: "StdinNotImplementedError",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prompts []prompt
			outs, r := run(t, k, ExecuteRequest{
				Code:       tt.code,
				AllowStdin: tt.allow,
				Input: func(p string, password bool) (string, error) {
					prompts = append(prompts, prompt{p, password})
					return tt.answer, tt.answerErr
				},
			})
			if !slices.Equal(prompts, tt.wantPrompts) {
				t.Errorf("prompts = %+v, want %+v", prompts, tt.wantPrompts)
			}
			if got := streams(outs, "stdout"); got != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", got, tt.wantStdout)
			}
			if r.EName != tt.wantEName {
				t.Errorf("reply = %+v, want ename %q", r, tt.wantEName)
			}
		})
	}
}

// TestExecuteSerialized checks that concurrent Executes do not overlap and
// that a waiting caller honours its context.
func TestExecuteSerialized(t *testing.T) {
	t.Parallel()
	k := sharedKernel(t)

	const n = 3
	code := "import time\nt0 = time.time()\ntime.sleep(0.2)\nprint(t0, time.time())"
	type span struct{ start, end float64 }
	spans := make([]span, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var out strings.Builder
			_, err := k.Execute(t.Context(), ExecuteRequest{Code: code}, func(o Output) { out.WriteString(o.Text) })
			if err != nil {
				t.Errorf("Execute %d: %v", i, err)
				return
			}
			f := strings.Fields(out.String())
			if len(f) != 2 {
				t.Errorf("Execute %d: output %q", i, out.String())
				return
			}
			spans[i].start, _ = strconv.ParseFloat(f[0], 64)
			spans[i].end, _ = strconv.ParseFloat(f[1], 64)
		})
	}
	// A caller whose context ends while it waits gives up without running.
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	ran := false
	_, err := k.Execute(ctx, ExecuteRequest{Code: "print('ran')"}, func(Output) { ran = true })
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrInterrupted) || ran {
		t.Errorf("waiting Execute: err %v, ran %v; want DeadlineExceeded, not ErrInterrupted, not run", err, ran)
	}
	wg.Wait()
	for i := range spans {
		for j := range spans {
			if i != j && spans[i].start < spans[j].end && spans[j].start < spans[i].end {
				t.Errorf("cells %d %v and %d %v overlap", i, spans[i], j, spans[j])
			}
		}
	}
}

// TestExecuteSlowConsumer stalls onOutput while the kernel publishes more
// than its high-water mark: iopub must keep being drained meanwhile.
func TestExecuteSlowConsumer(t *testing.T) {
	t.Parallel()
	k := sharedKernel(t)
	n := 0
	_, err := k.Execute(t.Context(), ExecuteRequest{Code: "for i in range(1500): display(i)"}, func(o Output) {
		if n == 0 {
			time.Sleep(time.Second)
		}
		n++
	})
	if err != nil || n != 1500 {
		t.Errorf("Execute: %d outputs, err %v; want 1500, nil", n, err)
	}
}
