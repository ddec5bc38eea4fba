// Command ds-sandbox is the one binary of ds-sandbox: the CLI, the daemon and
// the in-sandbox agent.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
	"github.com/ds-sandbox/ds-sandbox/internal/cli"
)

func main() {
	// This binary serves the agent itself (`ds-sandbox agent`), whatever its
	// file is named.
	agent.ServeFromSelf()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
