package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/auth"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/mcpserver"
)

const mcpUsage = `usage: ds-sandbox mcp [flags]

Serves the MCP tools (create_sandbox, run_code, run_command, read_file, write_file,
list_files, kill_sandbox) on stdin and stdout, for an MCP client that starts it.
`

// mcpCmd serves the MCP tools on stdin/stdout until stdin closes or ctx is
// done (SIGINT, SIGTERM), then kills the sandboxes it started. stdout carries
// only the protocol; logs go to stderr.
func mcpCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := newCommand("mcp", mcpUsage, stdout, stderr)
	cfgPath := fl.String("config", "", "config file (YAML or JSON)")
	verbose := fl.Bool("v", false, "log every session and sandbox (debug level)")
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

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox mcp:", err)
		return 1
	}
	m, err := manager.New(cfg, log, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox mcp:", err)
		return 1
	}
	opts := mcpserver.Options{Logger: log, Version: Version}
	if cfg.EnableAuditLog {
		al, err := audit.Open(cfg.AuditLogPath, int64(cfg.AuditMaxMB)<<20, cfg.AuditBackups)
		if err != nil {
			fmt.Fprintln(stderr, "ds-sandbox mcp:", err)
			return 1
		}
		defer al.Close()
		opts.Audit = al
	}
	srv := mcpserver.New(m, opts)
	ch := m.DefaultChoice()
	log.Info("serving MCP on stdio", "state_dir", cfg.StateDir, "default_backend", ch.Name, "why", ch.Reason)
	// The client on the other end of stdio is a remote caller like any
	// other: the per-key quotas apply to it (auth.Open), as to a daemon
	// without keys.
	serveErr := srv.ServeIO(auth.WithIdentity(ctx, auth.Open), stdin, stdout)

	// Kill what the session started; the manager's Close catches anything left.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = srv.Close()
	if err := m.Close(cctx); err != nil {
		log.Warn("stopping sandboxes", "error", err)
	}
	if serveErr != nil {
		fmt.Fprintln(stderr, "ds-sandbox mcp:", serveErr)
		return 1
	}
	return 0
}
