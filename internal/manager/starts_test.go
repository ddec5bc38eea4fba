package manager_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// waitFor polls cond (a state the test drives, not a clock: the bound only
// tells a hang from a result).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("still waiting for %s", what)
		}
	}
}

// TestStartGate: with one start slot and room for one waiting create, a
// third create is refused at once for load (a BusyError: api.ErrLimit with
// a Retry-After), the waiting one starts when the first's kernel is ready,
// and the slot is held until then — the warm-up cell is not counted.
func TestStartGate(t *testing.T) {
	t.Parallel()
	m := localManager(t, func(c *config.Config) { c.MaxConcurrentStarts, c.StartQueueMax = 1, 1 })
	type made struct {
		s   *manager.Sandbox
		err error
	}
	first, second := make(chan made, 1), make(chan made, 1)
	go func() { s, err := m.Create(context.Background(), api.CreateSandboxRequest{}); first <- made{s, err} }()
	waitFor(t, "the first start to hold the slot", func() bool { return m.StartStats().Running == 1 })
	go func() { s, err := m.Create(context.Background(), api.CreateSandboxRequest{}); second <- made{s, err} }()
	waitFor(t, "the second create to wait", func() bool { return m.StartStats().Waiting == 1 })

	_, err := m.Create(context.Background(), api.CreateSandboxRequest{})
	var busy *manager.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, api.ErrLimit) || busy.RetryAfter() < time.Second {
		t.Fatalf("a create past start_queue_max: %v, want a BusyError with a Retry-After", err)
	}
	for _, c := range []chan made{first, second} {
		r := <-c
		if r.err != nil {
			t.Fatalf("a queued create: %v", r.err)
		}
		e, err := r.s.Execute(t.Context(), api.ExecuteRequest{Code: "1+1"}, nil)
		if err != nil || e.Text() != "2" || e.ExecutionCount != 1 {
			t.Fatalf("first cell: %v %+v (the warm-up must not count)", err, e)
		}
	}
	waitFor(t, "the slot to come free", func() bool { return m.StartStats().Running == 0 })
	st := m.StartStats()
	if st.Admitted != 2 || st.Refused != 1 || st.Waiting != 0 {
		t.Fatalf("start stats %+v", st)
	}

	// A create whose request ends while it waits is refused for load too.
	go func() { s, err := m.Create(context.Background(), api.CreateSandboxRequest{}); first <- made{s, err} }()
	waitFor(t, "a start to hold the slot", func() bool { return m.StartStats().Running == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for end := time.Now().Add(60 * time.Second); m.StartStats().Waiting == 0 && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := m.Create(ctx, api.CreateSandboxRequest{}); !errors.As(err, &busy) {
		t.Fatalf("a create cancelled while waiting: %v", err)
	}
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
}
