// Package cli holds the subcommands of the ds-sandbox binary. Each takes its
// arguments and streams and returns an exit status, so tests run them in
// process.
package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
)

// Version is set at build time with -ldflags "-X …/internal/cli.Version=…".
var Version = "dev"

const usage = `ds-sandbox runs untrusted Python in sandboxes on your own machine.

Usage:
  ds-sandbox run [flags] (FILE.py | -c CODE | -)   run Python in a fresh sandbox
  ds-sandbox serve [--listen HOST:PORT] [--config FILE] [--ephemeral]   the daemon: REST API, MCP, /metrics, audit log
  ds-sandbox bench [flags]                         measure create and run_code latency beside jupyter_client
  ds-sandbox mcp [--config FILE]                   serve the MCP tools on stdio (for LLM clients)
  ds-sandbox version                               print the version

Run 'ds-sandbox COMMAND -h' for a command's flags.
`

// Main runs the subcommand named by args[0] and returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdin, stdout, stderr)
	case "serve":
		return serveCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "template":
		return templateCmd(ctx, args[1:], stdout, stderr)
	case "mcp":
		return mcpCmd(ctx, args[1:], stdin, stdout, stderr)
	case "agent": // hidden: started by backends inside a sandbox
		return agent.Main(args[1:], stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "ds-sandbox", Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ds-sandbox: unknown command %q\n\n%s", args[0], usage)
	return 2
}
