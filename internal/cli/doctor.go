package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/backend"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// doctorReport is what `ds-sandbox doctor --json` prints.
type doctorReport struct {
	Default  backend.Choice       `json:"default_backend"`
	Network  string               `json:"default_network_policy"`
	Engine   manager.EngineStatus `json:"default_engine"`
	Backends []doctorBackend      `json:"backends"`
	// Pools are the configured warm pools and what would keep each from
	// filling (the daemon keeps them; doctor starts none).
	Pools []manager.PoolCheck `json:"pools"`
}

type doctorBackend struct {
	Name     string `json:"name"`
	Ready    bool   `json:"ready"`
	Isolates bool   `json:"isolates"`
	// Reason is why the backend cannot run sandboxes here.
	Reason string `json:"reason,omitempty"`
	// Network is why it cannot enforce the default network policy here.
	Network  string   `json:"network,omitempty"`
	Enforces []string `json:"enforces,omitempty"`
}

// doctorCmd says which backend runs sandboxes on this host and why, and
// what each backend enforces or lacks here. It assembles the backends and
// resolves default_backend exactly as run, serve and mcp do.
const doctorUsage = `usage: ds-sandbox doctor [flags]

Says which backend runs sandboxes here (default_backend, auto by default) and
why, what each backend enforces or lacks on this host, and which code engine
runs their code (engine, ipykernel by default) and whether it can.
`

func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := newCommand("doctor", doctorUsage, stdout, stderr)
	cfgPath := fl.String("config", "", "config file (YAML or JSON)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	if st, ok := fl.parse(args); !ok {
		return st
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "ds-sandbox doctor: unexpected arguments %q\n", fl.Args())
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox doctor:", err)
		return 1
	}
	bs := backendset.New(cfg, backendset.Embedded)
	m, err := manager.New(cfg, nil, bs...)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox doctor:", err)
		return 1
	}
	defer m.Close(context.WithoutCancel(ctx))
	rep := doctorReport{Default: m.DefaultChoice(), Network: cfg.Network().Policy, Engine: m.DefaultEngine()}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Strongest first, the order auto tries them in.
	slices.SortStableFunc(bs, func(a, b backend.Backend) int { return rank(a.Name()) - rank(b.Name()) })
	for _, b := range bs {
		d := doctorBackend{Name: b.Name(), Ready: true, Isolates: backend.Isolates(b)}
		if err := b.Available(pctx); err != nil {
			d.Ready, d.Reason = false, err.Error()
		} else if nc, ok := b.(backend.NetworkChecker); ok {
			if err := nc.CheckNetwork(rep.Network); err != nil {
				d.Network = err.Error()
			}
		}
		if e, ok := b.(backend.Enforcer); ok {
			d.Enforces = e.Enforces()
		}
		rep.Backends = append(rep.Backends, d)
	}
	rep.Pools = m.CheckPools(pctx)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "ds-sandbox doctor:", err)
			return 1
		}
		return 0
	}
	printDoctor(stdout, rep)
	return 0
}

func rank(name string) int {
	if i := slices.Index(backend.AutoOrder, name); i >= 0 {
		return i
	}
	return len(backend.AutoOrder)
}

func printDoctor(w io.Writer, rep doctorReport) {
	ch := rep.Default
	fmt.Fprintf(w, "default backend: %s\n  why: %s\n", ch.Name, ch.Reason)
	if warn := ch.Warning(); warn != "" {
		fmt.Fprintf(w, "  %s\n", warn)
	}
	fmt.Fprintf(w, "  default network policy: %s\n", rep.Network)
	eng := rep.Engine
	fmt.Fprintf(w, "default engine: %s", eng.Name)
	if len(eng.Preload) > 0 {
		fmt.Fprintf(w, " (preload: %s)", strings.Join(eng.Preload, ", "))
	}
	if !eng.Ready {
		fmt.Fprintf(w, "\n  unavailable: %s", eng.Reason)
	}
	fmt.Fprintln(w)
	for _, b := range rep.Backends {
		state := "available"
		switch {
		case !b.Ready:
			state = "unavailable: " + b.Reason
		case b.Network != "":
			state = "available, but not for the default network policy: " + b.Network
		}
		if !b.Isolates {
			state += " (isolates nothing: code runs on the host as your user)"
		}
		fmt.Fprintf(w, "\n%s: %s\n", b.Name, state)
		for _, e := range b.Enforces {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
	if len(rep.Pools) > 0 {
		fmt.Fprintf(w, "\nwarm pools (kept by ds-sandbox serve):\n")
	}
	for _, p := range rep.Pools {
		state := "ok"
		if p.Problem != "" {
			state = "cannot fill: " + p.Problem
		}
		fmt.Fprintf(w, "  pools[%d]: template %q on %s, network %s, size %d: %s\n", p.Index, p.Template, p.Backend, p.Network, p.Size, state)
	}
}
