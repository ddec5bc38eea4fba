package manager

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
)

// maxEvents bounds the in-memory event history.
const maxEvents = 10000

type ownedEvent struct {
	ev    api.Event
	owner string
}

// events is a bounded ring of lifecycle events plus the listeners (metrics,
// audit) that see each one as it happens.
type events struct {
	mu        sync.Mutex
	ring      []ownedEvent
	next      int
	seq       uint64
	listeners []func(api.Event, string)
}

// Subscribe registers fn to be called (synchronously, keep it quick) with every
// event and the owner of its sandbox.
func (m *Manager) Subscribe(fn func(ev api.Event, owner string)) {
	m.events.mu.Lock()
	defer m.events.mu.Unlock()
	m.events.listeners = append(m.events.listeners, fn)
}

func (m *Manager) emit(typ, sandboxID, owner string, data map[string]string) {
	e := &m.events
	e.mu.Lock()
	e.seq++
	ev := api.Event{ID: fmt.Sprintf("evt-%d-%d", time.Now().Unix(), e.seq), Type: typ, SandboxID: sandboxID, Time: time.Now().UTC(), Data: data}
	if len(e.ring) < maxEvents {
		e.ring = append(e.ring, ownedEvent{ev, owner})
	} else {
		e.ring[e.next] = ownedEvent{ev, owner}
		e.next = (e.next + 1) % maxEvents
	}
	listeners := e.listeners
	e.mu.Unlock()
	for _, fn := range listeners {
		fn(ev, owner)
	}
}

// Events returns up to limit of the most recent events the caller may see,
// oldest first; sandboxID "" means every sandbox.
func (m *Manager) Events(ctx context.Context, sandboxID string, limit int) []api.Event {
	if limit <= 0 || limit > maxEvents {
		limit = 100
	}
	id := auth.FromContext(ctx)
	e := &m.events
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []api.Event
	n := len(e.ring)
	for i := n - 1; i >= 0 && len(out) < limit; i-- {
		oe := e.ring[(e.next+i)%n]
		if (sandboxID == "" || oe.ev.SandboxID == sandboxID) && id.CanSee(oe.owner) {
			out = append(out, oe.ev)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// SandboxEvents returns up to limit of the most recent events of one
// sandbox, oldest first. A sandbox the caller may not see (another key's,
// running) is ErrNotFound, as are ids with no event the caller may see; a
// sandbox of the caller's that has ended still has its events.
func (m *Manager) SandboxEvents(ctx context.Context, sandboxID string, limit int) ([]api.Event, error) {
	if evs := m.Events(ctx, sandboxID, limit); len(evs) > 0 {
		return evs, nil
	}
	if _, err := m.Get(ctx, sandboxID); err != nil {
		return nil, err
	}
	return nil, nil
}
