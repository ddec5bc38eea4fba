package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/e2b"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/mcpserver"
	"github.com/ds-sandbox/ds-sandbox/internal/metrics"
)

// shutdownGrace bounds how long SIGTERM waits for in-flight requests
// (executions, streams) before cutting them.
const shutdownGrace = 20 * time.Second

const serveUsage = `usage: ds-sandbox serve [flags]

The daemon: the REST API (/v1), E2B's API, MCP at /mcp, /metrics and the audit
log, on one address. Its sandboxes outlive it (unless --ephemeral); a restarted
daemon re-attaches to them. The first line on stdout is its URL.
`

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := newCommand("serve", serveUsage, stdout, stderr)
	listen := fl.String("listen", "", "HOST:PORT to listen on (default from config: 127.0.0.1:8000; port 0 picks a free one)")
	cfgPath := fl.String("config", "", "config file (YAML or JSON)")
	ephemeral := fl.Bool("ephemeral", false, "a private server: its sandboxes die with it (no records, no recovery); what clients that start their own server use")
	verbose := fl.Bool("v", false, "debug logging")
	if st, ok := fl.parse(args); !ok {
		return st
	}
	if st, ok := fl.wantArgs(0, 0); !ok {
		return st
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, *cfgPath, *listen, *ephemeral, stdout, log); err != nil {
		fmt.Fprintln(stderr, "ds-sandbox serve:", err)
		return 1
	}
	return 0
}

// Daemon is a running API server, for serve and for tests.
type Daemon struct {
	URL       string
	Manager   *manager.Manager
	ephemeral bool
	srv       *http.Server
	api       *httpapi.Server
	audit     *audit.Log
	mcp       *mcpserver.Server
	log       *slog.Logger
	done      chan error
}

// StartDaemon starts the daemon: manager with persisted records (re-attaching
// to sandboxes an earlier daemon left running), metrics, audit log, the REST
// API and MCP, listening on cfg.Listen. An ephemeral daemon keeps no records
// and its sandboxes die with it.
func StartDaemon(ctx context.Context, cfg config.Config, ephemeral bool, log *slog.Logger) (*Daemon, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	d, err := startDaemon(ctx, cfg, ephemeral, ln, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return d, nil
}

func startDaemon(ctx context.Context, cfg config.Config, ephemeral bool, ln net.Listener, log *slog.Logger) (*Daemon, error) {
	loopback := isLoopback(ln.Addr())
	if len(cfg.APIKeys) == 0 && !loopback {
		return nil, api.Errorf(api.ErrInvalid, "refusing to listen on %s without API keys: configure api_keys (or DS_SANDBOX_API_KEY), or listen on 127.0.0.1", ln.Addr())
	}
	mode := backendset.Daemon
	if ephemeral {
		mode = backendset.Embedded
	}
	m, err := manager.New(cfg, log, backendset.New(cfg, mode)...)
	if err != nil {
		return nil, err
	}
	if !ephemeral {
		if err := m.Persist(); err != nil {
			return nil, err
		}
	}
	d := &Daemon{Manager: m, ephemeral: ephemeral, log: log, done: make(chan error, 1)}
	opt := httpapi.Options{Loopback: loopback, Logger: log}
	if cfg.EnableMetrics {
		opt.Metrics = metrics.New(func() []metrics.SandboxCount {
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
	}
	if opt.Metrics != nil {
		opt.Metrics.WatchStarts(func() metrics.Starts {
			st := m.StartStats()
			return metrics.Starts{Slots: st.Slots, Running: st.Running, Waiting: st.Waiting,
				Admitted: st.Admitted, Refused: st.Refused, WaitSeconds: st.WaitSeconds}
		})
		opt.Metrics.WatchPools(func() []metrics.Pool {
			var out []metrics.Pool
			for _, p := range m.PoolStats() {
				out = append(out, metrics.Pool{Index: p.Index, Template: p.Template, Backend: p.Backend,
					Size: p.Size, Ready: p.Ready, Starting: p.Starting, Hits: p.Hits, Misses: p.Misses,
					Dropped: p.Dropped, Recycled: p.Recycled, Failed: p.RefillFailures, Failing: p.LastError != ""})
			}
			return out
		}, m.UnmatchedCreates)
	}
	if cfg.EnableAuditLog {
		d.audit, err = audit.Open(cfg.AuditLogPath, int64(cfg.AuditMaxMB)<<20, cfg.AuditBackups)
		if err != nil {
			return nil, err
		}
		opt.Audit = d.audit
	}
	m.Subscribe(func(ev api.Event, owner string) {
		if opt.Metrics != nil {
			switch ev.Type {
			case api.EventSandboxCreated:
				opt.Metrics.SandboxCreated(ev.Data["backend"])
			case api.EventSandboxKilled, api.EventSandboxExpired, api.EventSandboxExited, api.EventSandboxReaped:
				opt.Metrics.SandboxStopped(ev.Data["reason"])
			}
		}
		// Lifecycle changes nobody asked for over the API (timeouts, exits,
		// recovery) are audited here; requests are audited by the API.
		// A cell the code scanner blocked is audited here for every face (E2B
		// and MCP requests have one record per HTTP request, not per cell).
		if d.audit != nil && ev.Type != api.EventSandboxCreated && ev.Type != api.EventSandboxKilled && ev.Type != api.EventSandboxTimeout {
			rec := audit.Record{Action: ev.Type, SandboxID: ev.SandboxID, KeyID: owner, Outcome: audit.OK, Detail: ev.Data}
			switch ev.Type {
			case api.EventSandboxNetworkDenied:
				rec.Outcome = audit.Denied
			case api.EventCodeBlocked:
				rec.Outcome, rec.CodeSHA256 = audit.Blocked, ev.Data["code_sha256"]
				rec.CodeSize, _ = strconv.Atoi(ev.Data["code_size"])
			}
			_ = d.audit.Write(rec)
		}
	})
	if !ephemeral {
		rep, err := m.Recover(ctx)
		if err != nil {
			return nil, err
		}
		if len(rep.Reattached)+len(rep.Reaped)+rep.Orphans > 0 {
			log.Info("recovered sandboxes after restart", "reattached", rep.Reattached, "reaped", rep.Reaped, "orphans_removed", rep.Orphans, "workspaces_removed", rep.Workspaces)
		}
	}
	// After Recover, which reaps the unclaimed pooled sandboxes of an
	// earlier run.
	m.StartPools()
	if m.OffersLocal() && os.Geteuid() == 0 {
		log.Warn("the local backend is offered and this daemon runs as root: code on local runs on the host as root, unisolated; non-admin keys may use it only when their api_keys[].backends lists it. Set allowed_backends to leave it out.")
	}
	d.mcp = mcpserver.New(m, mcpserver.Options{Logger: log, Version: Version, Audit: d.audit})
	opt.MCP = d.mcp.Handler()
	opt.E2B = e2b.New(m, e2b.Options{Loopback: loopback, Logger: log})
	if d.api, err = httpapi.New(m, opt); err != nil {
		return nil, err
	}
	d.srv = &http.Server{
		Handler:           d.api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	d.URL = "http://" + ln.Addr().String()
	go func() { d.done <- d.srv.Serve(ln) }()
	return d, nil
}

// Shutdown stops accepting requests, lets in-flight ones finish within grace,
// then cuts the rest (their executions are interrupted and the streams end
// with an error saying so), and detaches from the sandboxes: they keep
// running and the next daemon re-attaches to them.
func (d *Daemon) Shutdown(grace time.Duration) error {
	d.api.BeginShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Cut what is left: handlers see their context end, interrupt their
		// cells and answer with an error saying the daemon is stopping; give
		// them a moment to write it before closing the connections.
		d.api.CutStreams()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if d.srv.Shutdown(cctx) != nil {
			_ = d.srv.Close()
		}
		err = nil
	}
	_ = d.mcp.Close()
	if d.ephemeral {
		kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer kcancel()
		_ = d.Manager.Close(kctx)
	} else {
		d.Manager.Detach()
	}
	if d.audit != nil {
		d.audit.Close()
	}
	return err
}

func serve(ctx context.Context, cfgPath, listen string, ephemeral bool, stdout io.Writer, log *slog.Logger) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	d, err := StartDaemon(ctx, cfg, ephemeral, log)
	if err != nil {
		return err
	}
	// The first line on stdout is for programs that start us (the Python
	// client reads the port from it).
	fmt.Fprintf(stdout, "ds-sandbox: listening on %s\n", d.URL)
	ch := d.Manager.DefaultChoice()
	log.Info("serving", "url", d.URL, "state_dir", cfg.StateDir, "backends", d.Manager.BackendNames(),
		"default_backend", ch.Name, "why", ch.Reason)
	select {
	case err := <-d.done:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace)
	return d.Shutdown(shutdownGrace)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
