// Package daemon is the composition root of `ds-sandbox serve`: it builds
// the manager over this build's backends, the audit log and the metrics,
// and the faces (the REST API, E2B's API, MCP over HTTP) on one address.
// The CLI parses flags and calls it; tests build a daemon with it directly.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/e2b"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/mcpserver"
)

// ShutdownGrace bounds how long Run, once its context ends, waits for
// in-flight requests (executions, streams) before cutting them.
const ShutdownGrace = 20 * time.Second

// Options are what a daemon needs besides the configuration.
type Options struct {
	// Ephemeral: a private server whose sandboxes die with it (no records,
	// no recovery).
	Ephemeral bool
	// Logger gets the daemon's log; nil discards it.
	Logger *slog.Logger
	// Version is reported to MCP clients ("dev" if empty).
	Version string
}

// Daemon is the API server: the manager and the faces on one listener.
type Daemon struct {
	// URL is where it serves: "http://" and the listener's address.
	URL string
	// Manager is the daemon's manager, for callers in the same process.
	Manager   *manager.Manager
	ephemeral bool
	ln        net.Listener
	srv       *http.Server
	api       *httpapi.Server
	audit     *audit.Log
	mcp       *mcpserver.Server
	log       *slog.Logger
}

// New builds the daemon and listens on cfg.Listen, without serving yet
// (Serve, Run): the manager with persisted records (re-attaching to
// sandboxes an earlier daemon left running), metrics, the audit log, the
// REST API, E2B's API and MCP. An ephemeral daemon keeps no records and its
// sandboxes die with it. When New fails, whatever it had opened is closed
// again (listener, state-directory lock, audit log, manager).
func New(ctx context.Context, cfg config.Config, opts Options) (_ *Daemon, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	d := &Daemon{ephemeral: opts.Ephemeral, ln: ln, log: log}
	// recovered: sandboxes an earlier daemon left are now the manager's, and
	// a failure from here on must leave them to the next daemon.
	recovered := false
	defer func() {
		if err != nil {
			d.release(recovered)
		}
	}()
	loopback := isLoopback(ln.Addr())
	if len(cfg.APIKeys) == 0 && !loopback {
		return nil, api.Errorf(api.ErrInvalid, "refusing to listen on %s without API keys: configure api_keys (or DS_SANDBOX_API_KEY), or listen on 127.0.0.1", ln.Addr())
	}
	mode := backendset.Daemon
	if opts.Ephemeral {
		mode = backendset.Embedded
	}
	m, err := manager.New(cfg, log, backendset.New(cfg, mode)...)
	if err != nil {
		return nil, err
	}
	d.Manager = m
	if !opts.Ephemeral {
		if err := m.Persist(); err != nil {
			return nil, err
		}
	}
	opt := httpapi.Options{Loopback: loopback, Logger: log}
	if cfg.EnableMetrics {
		opt.Metrics = newMetrics(m)
	}
	if cfg.EnableAuditLog {
		d.audit, err = audit.Open(cfg.AuditLogPath, int64(cfg.AuditMaxMB)<<20, cfg.AuditBackups)
		if err != nil {
			return nil, err
		}
		opt.Audit = d.audit
	}
	observe(m, opt.Metrics, d.audit)
	if !opts.Ephemeral {
		rep, err := m.Recover(ctx)
		recovered = true
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
	d.mcp = mcpserver.New(m, mcpserver.Options{Logger: log, Version: opts.Version, Audit: d.audit})
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
	return d, nil
}

// Start is New, then Serve in the background; Shutdown stops it.
func Start(ctx context.Context, cfg config.Config, opts Options) (*Daemon, error) {
	d, err := New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := d.Serve(); err != nil {
			d.log.Error("serving stopped", "err", err)
		}
	}()
	return d, nil
}

// Serve serves requests until Shutdown (then it returns nil) or until the
// listener fails.
func (d *Daemon) Serve() error {
	if err := d.srv.Serve(d.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Run serves until ctx ends, then shuts down within ShutdownGrace. When
// serving fails by itself, Run shuts down too and returns that error.
func (d *Daemon) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- d.Serve() }()
	select {
	case err := <-done:
		if err != nil {
			return errors.Join(err, d.Shutdown(0))
		}
		return nil
	case <-ctx.Done():
	}
	d.log.Info("shutting down", "grace", ShutdownGrace)
	return d.Shutdown(ShutdownGrace)
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
	d.release(true)
	return err
}

// release closes what New opened, in reverse: MCP's sessions, the manager
// (an ephemeral daemon's sandboxes are destroyed; a persistent daemon's
// are detached once recovered, left to the next daemon), the audit log and
// the listener (already closed when it was served; closing again is
// harmless).
func (d *Daemon) release(recovered bool) {
	if d.mcp != nil {
		_ = d.mcp.Close()
	}
	if d.Manager != nil {
		if d.ephemeral || !recovered {
			kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer kcancel()
			_ = d.Manager.Close(kctx)
		} else {
			d.Manager.Detach()
		}
	}
	if d.audit != nil {
		d.audit.Close()
	}
	_ = d.ln.Close()
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
