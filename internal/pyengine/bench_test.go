//go:build linux

package pyengine

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
)

// BenchmarkStart: a cold engine, from exec to hello (IPython imported, no
// preload).
func BenchmarkStart(b *testing.B) {
	env := testEnv(b)
	for b.Loop() {
		e, err := Start(context.Background(), Config{Env: env, Started: ownStarted, Reaped: ownReaped})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		e.Close()
		b.StartTimer()
	}
}

// BenchmarkFork: an engine forked from a zygote that preloaded numpy,
// pandas and matplotlib, from request to hello. It also reports the
// proportional set size of an idle forked engine after one cell
// (pss-KiB/engine: what density costs per engine).
func BenchmarkFork(b *testing.B) {
	z := startZygote(b, ZygoteConfig{})
	env := testEnv(b)
	var priv, n float64
	for b.Loop() {
		e, err := z.Fork(context.Background(), ForkConfig{Env: env})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "1+1"}, nil); err != nil {
			b.Fatal(err)
		}
		if kb, err := privateKiB(e.PID()); err == nil {
			priv += kb
			n++
		}
		e.Close()
		b.StartTimer()
	}
	if n > 0 {
		b.ReportMetric(priv/n, "private-KiB/engine")
	}
}

// privateKiB reads the memory only a process uses (smaps_rollup's
// Private_Clean + Private_Dirty).
func privateKiB(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	var sum float64
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		for _, key := range []string{"Private_Clean:", "Private_Dirty:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				if err != nil {
					return 0, err
				}
				sum += kb
				found++
			}
		}
	}
	if found != 2 {
		return 0, errors.New("no Private_Clean/Private_Dirty in smaps_rollup")
	}
	return sum, nil
}

// BenchmarkForkFirstPandasCell: fork, then the result of a first pandas
// cell (the "first data-science cell").
func BenchmarkForkFirstPandasCell(b *testing.B) {
	z := startZygote(b, ZygoteConfig{})
	env := testEnv(b)
	const cell = "import pandas as pd, numpy as np, matplotlib.pyplot as plt\npd.DataFrame({'a': np.arange(10)}).sum()"
	for b.Loop() {
		e, err := z.Fork(context.Background(), ForkConfig{Env: env})
		if err != nil {
			b.Fatal(err)
		}
		r, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: cell}, nil)
		if err != nil || r.Status != "ok" {
			b.Fatalf("%+v %v", r, err)
		}
		b.StopTimer()
		e.Close()
		b.StartTimer()
	}
}

// BenchmarkExecuteRTT: execute("1+1") on a forked engine, request to reply.
func BenchmarkExecuteRTT(b *testing.B) {
	z := startZygote(b, ZygoteConfig{Preload: []string{}})
	e := fork(b, z, ForkConfig{})
	for b.Loop() {
		r, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: "1+1", StoreHistory: true}, nil)
		if err != nil || r.Status != "ok" {
			b.Fatalf("%+v %v", r, err)
		}
	}
}
