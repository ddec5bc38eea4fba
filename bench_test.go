package dssandbox_test

import (
	"context"
	"slices"
	"testing"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

// reportQuantiles adds p50 and p99 (in ms) of the samples to the benchmark.
func reportQuantiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	q := func(f float64) float64 {
		return float64(samples[min(len(samples)-1, int(f*float64(len(samples))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkCreateToFirstResult measures Create → the result of "1+1" on the
// default backend. `ds-sandbox bench` runs the same with the jupyter_client
// peer beside it and prints ratios.
func BenchmarkCreateToFirstResult(b *testing.B) {
	var samples []time.Duration
	for b.Loop() {
		t0 := time.Now()
		sbx, err := dssandbox.Create(b.Context(), dssandbox.Options{})
		if err != nil {
			b.Fatal(err)
		}
		e, err := sbx.RunCode(b.Context(), "1+1")
		if err != nil || e.Text() != "2" {
			b.Fatalf("1+1: %v %+v", err, e)
		}
		samples = append(samples, time.Since(t0))
		b.StopTimer()
		_ = sbx.Kill(context.Background())
		b.StartTimer()
	}
	reportQuantiles(b, samples)
}

// BenchmarkRunCode measures one RunCode("1+1") round trip in a warm sandbox.
func BenchmarkRunCode(b *testing.B) {
	sbx, err := dssandbox.Create(b.Context(), dssandbox.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sbx.Kill(context.Background())
	if _, err := sbx.RunCode(b.Context(), "1+1"); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := sbx.RunCode(b.Context(), "1+1"); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(t0))
	}
	reportQuantiles(b, samples)
}
