package manager

import (
	"fmt"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// TestDenialCollectorNeverBlocks: the reporting path (shared by every
// execution of a sandbox) hands denials over without waiting for a stream
// client that has stopped reading; the events still all go out, in order,
// before stop returns, and reports after stop are dropped.
func TestDenialCollectorNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	var got []string
	c := newDenialCollector(func(ev api.ExecEvent) {
		<-release // a client that does not read
		got = append(got, ev.Denial.Host)
	})
	added := make(chan struct{})
	go func() {
		defer close(added)
		for i := range maxExecDenials + 5 {
			c.add(api.NetworkDenial{Host: fmt.Sprint(i)})
		}
	}()
	select {
	case <-added:
	case <-time.After(30 * time.Second):
		t.Fatal("add blocked on a stalled stream")
	}
	close(release)
	c.stop()
	c.add(api.NetworkDenial{Host: "late"})
	if len(got) != maxExecDenials || got[0] != "0" || got[maxExecDenials-1] != fmt.Sprint(maxExecDenials-1) {
		t.Fatalf("%d events (%v…), want %d in order", len(got), got[:min(3, len(got))], maxExecDenials)
	}
	if len(c.list) != maxExecDenials || c.dropped != 5 {
		t.Errorf("list %d, dropped %d; want %d and 5 (and the late one ignored)", len(c.list), c.dropped, maxExecDenials)
	}
}
