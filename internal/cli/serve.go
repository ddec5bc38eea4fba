package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/daemon"
)

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

func serve(ctx context.Context, cfgPath, listen string, ephemeral bool, stdout io.Writer, log *slog.Logger) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	d, err := daemon.New(ctx, cfg, daemon.Options{Ephemeral: ephemeral, Logger: log, Version: Version})
	if err != nil {
		return err
	}
	// The first line on stdout is for programs that start us (the Python
	// client reads the port from it).
	fmt.Fprintf(stdout, "ds-sandbox: listening on %s\n", d.URL)
	ch := d.Manager.DefaultChoice()
	log.Info("serving", "url", d.URL, "state_dir", cfg.StateDir, "backends", d.Manager.BackendNames(),
		"default_backend", ch.Name, "why", ch.Reason)
	return d.Run(ctx)
}
