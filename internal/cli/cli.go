// Package cli holds the subcommands of the ds-sandbox binary. Each takes its
// arguments and streams and returns an exit status, so tests run them in
// process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ds-sandbox/ds-sandbox/internal/agent"
)

// Version is set at build time with -ldflags "-X …/internal/cli.Version=…".
var Version = "dev"

const usage = `ds-sandbox runs untrusted Python in sandboxes on your own machine.

Usage:
  ds-sandbox run [flags] (FILE.py | -c CODE | -)   run Python in a fresh sandbox (embedded, no daemon needed)
  ds-sandbox serve [--listen HOST:PORT] [--config FILE] [--ephemeral]   the daemon: REST API, MCP, /metrics, audit log
  ds-sandbox mcp [--config FILE]                   serve the MCP tools on stdio (for LLM clients)
  ds-sandbox template build|ls|rm|export …         build and manage template images
  ds-sandbox bench [flags]                         measure create and run_code latency beside jupyter_client
  ds-sandbox bench load [flags]                    the load and fault suite: clients × cells, kill -9 of kernels and the daemon, leftovers
  ds-sandbox bench SCENARIO [flags]                first-ds-cell, create-1+1, rtt, density, cycles: through the REST API, beside a baseline

Against a running daemon (DS_SANDBOX_URL, default http://127.0.0.1:8000; key in DS_SANDBOX_API_KEY):
  ds-sandbox ps [-q] [--json]                      list sandboxes
  ds-sandbox kill ID…                              kill sandboxes
  ds-sandbox exec [flags] ID -- CMD [ARG…]         run a command in a sandbox; exits with its exit code
  ds-sandbox cp SRC DST                            copy files and directories; one side is ID:PATH
  ds-sandbox logs [-f] ID                          print a sandbox's events
  ds-sandbox workspace ls|rm …                     list and remove workspaces
  ds-sandbox dataset add|ls|rm …                   register, list and remove datasets

  ds-sandbox doctor [--config FILE] [--json]       which backend runs sandboxes here and why; what each enforces or lacks
  ds-sandbox version                               print the version
  ds-sandbox help [COMMAND]                        this text, or a command's

Run 'ds-sandbox COMMAND -h' for a command's flags.
`

// commands are the subcommands by name; agent is hidden (backends start it
// inside a sandbox).
var commands = map[string]func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int{
	"run": runCmd,
	"serve": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
		return serveCmd(ctx, args, stdout, stderr)
	},
	"bench": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
		if len(args) > 0 && args[0] == "load" {
			return loadCmd(ctx, args[1:], stdout, stderr)
		}
		if len(args) > 0 && isScenario(args[0]) {
			return scenarioCmd(ctx, args[0], args[1:], stdout, stderr)
		}
		return benchCmd(ctx, args, stdout, stderr)
	},
	"template": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
		return templateCmd(ctx, args, stdout, stderr)
	},
	"mcp": mcpCmd,
	"doctor": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
		return doctorCmd(ctx, args, stdout, stderr)
	},
	"ps":        psCmd,
	"kill":      killCmd,
	"exec":      execCmd,
	"cp":        cpCmd,
	"logs":      logsCmd,
	"workspace": workspaceCmd,
	"dataset":   datasetCmd,
}

// Main runs the subcommand named by args[0] and returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	if cmd, ok := commands[args[0]]; ok {
		return cmd(ctx, args[1:], stdin, stdout, stderr)
	}
	switch args[0] {
	case "agent": // hidden: started by backends inside a sandbox
		return agent.Main(args[1:], stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "ds-sandbox", Version)
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			if cmd, ok := commands[args[1]]; ok {
				return cmd(ctx, []string{"-h"}, stdin, stdout, stderr)
			}
			fmt.Fprintf(stderr, "ds-sandbox help: unknown command %q\n\n%s", args[1], usage)
			return exitUsage
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ds-sandbox: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// command is a subcommand's flags and usage text. Its parse answers -h with
// the usage on stdout and exit status 0, and a bad flag with the message and
// the usage on stderr and exit status 2.
type command struct {
	*flag.FlagSet
	usage          string
	stdout, stderr io.Writer
}

// newCommand returns the flags of `ds-sandbox name`; usage is the text shown
// before the flags ("usage: ds-sandbox name …" and what it does).
func newCommand(name, usage string, stdout, stderr io.Writer) *command {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {} // parse prints it, on the stream it belongs to
	return &command{FlagSet: fl, usage: usage, stdout: stdout, stderr: stderr}
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprint(w, c.usage)
	n := 0
	c.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		c.SetOutput(w)
		c.PrintDefaults()
		c.SetOutput(c.stderr)
	}
}

// parse parses args; when ok is false the command ends with status.
func (c *command) parse(args []string) (status int, ok bool) {
	err := c.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.printUsage(c.stdout)
		return 0, false
	case err != nil: // the flag package printed what was wrong
		c.printUsage(c.stderr)
		return exitUsage, false
	}
	return 0, true
}

// usageError reports a wrong use, then the usage, and returns exit status 2.
func (c *command) usageError(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "ds-sandbox %s: %s\n\n", c.Name(), fmt.Sprintf(format, args...))
	c.printUsage(c.stderr)
	return exitUsage
}

// fail reports err and returns exit status 1.
func (c *command) fail(err error) int {
	fmt.Fprintf(c.stderr, "ds-sandbox %s: %v\n", c.Name(), err)
	return 1
}

// wantArgs checks the number of positional arguments: at least min, at most
// max (-1: no bound).
func (c *command) wantArgs(min, max int) (status int, ok bool) {
	n := c.NArg()
	switch {
	case n < min:
		return c.usageError("missing arguments"), false
	case max >= 0 && n > max:
		return c.usageError("unexpected arguments %q", c.Args()[max:]), false
	}
	return 0, true
}
