//go:build linux

package jupyter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestExecuteTimeout interrupts a busy loop when the context ends; the kernel
// and its state survive.
func TestExecuteTimeout(t *testing.T) {
	t.Parallel()
	k := startKernel(t, Config{})
	run(t, k, ExecuteRequest{Code: "state = 'kept'"})

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var outs []Output
	start := time.Now()
	r, err := k.Execute(ctx, ExecuteRequest{Code: "while True: pass"}, func(o Output) { outs = append(outs, o) })
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDead) {
		t.Fatalf("Execute err = %v, want ErrInterrupted and DeadlineExceeded", err)
	}
	// Without the interrupt the cell would never end; the bound is loose
	// because the machines are noisy.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Execute took %v after a 1s timeout", d)
	}
	if r == nil || r.Status != "error" || r.EName != "KeyboardInterrupt" {
		t.Errorf("reply = %+v, want status error, KeyboardInterrupt", r)
	}
	if e := ofType(outs, "error"); len(e) != 1 || e[0].EName != "KeyboardInterrupt" {
		t.Errorf("outputs = %+v, want a KeyboardInterrupt error", outs)
	}
	select {
	case <-k.Done():
		t.Fatal("kernel died after the interrupt")
	default:
	}
	outs, _ = run(t, k, ExecuteRequest{Code: "print(state)"})
	if got := streams(outs, "stdout"); got != "kept\n" {
		t.Errorf("after the interrupt: stdout %q, want kept", got)
	}
}

// TestInterrupt interrupts a running cell with Kernel.Interrupt.
func TestInterrupt(t *testing.T) {
	t.Parallel()
	k := sharedKernel(t)

	type result struct {
		r   *Reply
		err error
	}
	res := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		var once bool
		r, err := k.Execute(t.Context(), ExecuteRequest{Code: "print('go', flush=True)\nwhile True: pass"}, func(o Output) {
			if !once {
				once = true
				close(started)
			}
		})
		res <- result{r, err}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("cell did not start")
	}
	if err := k.Interrupt(t.Context()); err != nil {
		t.Fatalf("Interrupt: %v", err)
	}
	select {
	case got := <-res:
		if got.err != nil || got.r == nil || got.r.EName != "KeyboardInterrupt" {
			t.Errorf("Execute = %+v, %v; want a KeyboardInterrupt reply and no error", got.r, got.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Execute did not return after Interrupt")
	}
}

// TestExecuteInterruptIgnored kills a kernel whose cell ignores SIGINT.
func TestExecuteInterruptIgnored(t *testing.T) {
	t.Parallel()
	k := startKernel(t, Config{InterruptGrace: 500 * time.Millisecond})

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := k.Execute(ctx, ExecuteRequest{Code: "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"}, nil)
	for _, want := range []error{ErrDead, ErrInterrupted, context.DeadlineExceeded} {
		if !errors.Is(err, want) {
			t.Errorf("Execute err = %v, want it to match %v", err, want)
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Execute took %v, want about 1s (the cell never ends by itself)", d)
	}
	select {
	case <-k.Done():
	default:
		t.Error("Done not closed after the kernel was killed")
	}
}
