package daemon

import (
	"context"
	"strconv"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/metrics"
)

// newMetrics returns the daemon's metric set, reading sandbox counts, start
// admission and warm pools from m when scraped.
func newMetrics(m *manager.Manager) *metrics.Metrics {
	mt := metrics.New(func() []metrics.SandboxCount {
		counts := map[string]int{}
		for _, s := range m.List(context.Background(), nil) {
			counts[s.Backend]++
		}
		out := make([]metrics.SandboxCount, 0, len(counts))
		for b, n := range counts {
			out = append(out, metrics.SandboxCount{State: api.StateRunning, Backend: b, N: n})
		}
		return out
	})
	mt.WatchStarts(func() metrics.Starts {
		st := m.StartStats()
		return metrics.Starts{Slots: st.Slots, Running: st.Running, Waiting: st.Waiting,
			Admitted: st.Admitted, Refused: st.Refused, WaitSeconds: st.WaitSeconds}
	})
	mt.WatchPools(func() []metrics.Pool {
		var out []metrics.Pool
		for _, p := range m.PoolStats() {
			out = append(out, metrics.Pool{Index: p.Index, Template: p.Template, Backend: p.Backend,
				Size: p.Size, Ready: p.Ready, Starting: p.Starting, Hits: p.Hits, Misses: p.Misses,
				Dropped: p.Dropped, Recycled: p.Recycled, Failed: p.RefillFailures, Failing: p.LastError != ""})
		}
		return out
	}, m.UnmatchedCreates)
	return mt
}

// observe counts the manager's lifecycle events in mt and audits them in
// al (either may be nil).
func observe(m *manager.Manager, mt *metrics.Metrics, al *audit.Log) {
	m.Subscribe(func(ev api.Event, owner string) {
		if mt != nil {
			switch ev.Type {
			case api.EventSandboxCreated:
				mt.SandboxCreated(ev.Data["backend"])
			case api.EventSandboxKilled, api.EventSandboxExpired, api.EventSandboxExited, api.EventSandboxReaped:
				mt.SandboxStopped(ev.Data["reason"])
			}
		}
		// Lifecycle changes nobody asked for over the API (timeouts, exits,
		// recovery) are audited here; requests are audited by the API.
		// A cell the code scanner blocked is audited here for every face (E2B
		// and MCP requests have one record per HTTP request, not per cell).
		if al != nil && ev.Type != api.EventSandboxCreated && ev.Type != api.EventSandboxKilled && ev.Type != api.EventSandboxTimeout {
			rec := audit.Record{Action: ev.Type, SandboxID: ev.SandboxID, KeyID: owner, Outcome: audit.OK, Detail: ev.Data}
			switch ev.Type {
			case api.EventSandboxNetworkDenied:
				rec.Outcome = audit.Denied
			case api.EventCodeBlocked:
				rec.Outcome, rec.CodeSHA256 = audit.Blocked, ev.Data["code_sha256"]
				rec.CodeSize, _ = strconv.Atoi(ev.Data["code_size"])
			}
			_ = al.Write(rec)
		}
	})
}
