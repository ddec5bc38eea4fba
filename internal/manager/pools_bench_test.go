package manager_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
)

// BenchmarkPoolCreateFirstCell measures create → result of "1+1" on a warm
// pool hit and on a miss (a cold start), per backend, and reports the p50
// (p50-ms). Between samples the pool refills and the sandbox is killed,
// outside the measurement; samples are taken one at a time.
//
//	go test -run '^$' -bench BenchmarkPoolCreateFirstCell -benchtime 20x ./internal/manager/
func BenchmarkPoolCreateFirstCell(b *testing.B) {
	for _, name := range poolBackends {
		for _, hit := range []bool{true, false} {
			label := name + "/miss"
			if hit {
				label = name + "/hit"
			}
			b.Run(label, func(b *testing.B) {
				m := poolManager(b, stateDir(b), name, false, func(c *config.Config) {
					c.MaxSandboxesPerKey = 0
					c.Pools = []config.Pool{{Size: 1}}
				})
				req := api.CreateSandboxRequest{}
				if !hit {
					req.MemoryMB = 0
					req.MaxOutputBytes = 1 << 20 // no pool has these limits
				}
				var samples []time.Duration
				b.ResetTimer()
				for b.Loop() {
					b.StopTimer()
					for end := time.Now().Add(2 * time.Minute); m.PoolStats()[0].Ready != 1; time.Sleep(2 * time.Millisecond) {
						if time.Now().After(end) {
							b.Fatal("the pool did not refill")
						}
					}
					b.StartTimer()
					begin := time.Now()
					s, err := m.Create(context.Background(), req)
					if err != nil {
						b.Fatal(err)
					}
					e, err := s.Execute(context.Background(), api.ExecuteRequest{Code: "1+1"}, nil)
					if err != nil || e.Text() != "2" {
						b.Fatalf("1+1: %v %+v", err, e)
					}
					samples = append(samples, time.Since(begin))
					b.StopTimer()
					_ = m.Kill(context.Background(), s.ID())
					b.StartTimer()
				}
				st := m.PoolStats()[0]
				if hit && st.Hits != uint64(len(samples)) || !hit && st.Hits != 0 {
					b.Fatalf("pool %+v after %d samples (hit=%v)", st, len(samples), hit)
				}
				b.ReportMetric(p50(samples), "p50-ms")
			})
		}
	}
}

func p50(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}
