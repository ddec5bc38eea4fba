package manager

import (
	"cmp"
	"context"
	"fmt"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
)

// PoolCheck says whether a configured warm pool can be filled here.
type PoolCheck struct {
	PoolStats
	// Problem says why its refills would fail ("" = none found).
	Problem string `json:"problem,omitempty"`
}

// CheckPools resolves every configured pool as its refills would (template,
// limits, network policy), without starting anything, and says what would
// keep it from filling: a missing template, one with files or commands, a
// backend that is unavailable or cannot enforce the policy. For `ds-sandbox
// doctor`, which runs no pools.
func (m *Manager) CheckPools(ctx context.Context) []PoolCheck {
	var out []PoolCheck
	for i, c := range m.cfg.Pools {
		pc := PoolCheck{PoolStats: PoolStats{Index: i, Template: c.Template, Backend: c.Backend, Network: c.Network, Size: c.Size}}
		if pc.Backend == "" {
			pc.Backend = m.cfg.DefaultBackend
		}
		pl, err := m.plan(c.Request())
		pc.Network = pl.network.Policy
		if pc.Network == "" {
			pc.Network = cmp.Or(c.Network, m.cfg.Network().Policy)
		}
		switch {
		case err != nil:
			pc.Problem = err.Error()
		case m.unpoolable("", pl) != "":
			pc.Problem = "cannot be pooled: " + m.unpoolable("", pl)
		default:
			if err := pl.backend.Available(ctx); err != nil {
				pc.Problem = fmt.Sprintf("backend %s is unavailable: %v", pl.backend.Name(), err)
			} else if nc, ok := pl.backend.(backend.NetworkChecker); ok {
				if err := nc.CheckNetwork(pl.network.Policy); err != nil {
					pc.Problem = err.Error()
				}
			}
		}
		out = append(out, pc)
	}
	return out
}
