package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

const execUsage = `usage: ds-sandbox exec [flags] ID -- CMD [ARG…]

Runs a command in a running sandbox, as its user and in its workdir, streaming
its stdout and stderr. The arguments are quoted for the sandbox's shell, so
CMD is one program; for pipes and the like run sh -c '…'. Exit status: the
command's; 137 when it was killed (timeout, signal); 125 when ds-sandbox
itself failed (no such sandbox, no daemon); 2 for a wrong use.
`

// Exit statuses of exec besides the command's own.
const (
	exitExecFailure = 125
	exitExecKilled  = 137
)

func execCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := newCommand("exec", execUsage, stdout, stderr)
	timeout := c.Int("timeout", 0, "seconds the command may run before it is killed (default: the sandbox's default timeout)")
	cwd := c.String("cwd", "", "working directory inside the sandbox (default: the workdir)")
	envs := map[string]string{}
	c.Func("e", "KEY=VALUE environment variable of the command (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: want KEY=VALUE", s)
		}
		envs[k] = v
		return nil
	})
	if st, ok := c.parse(args); !ok {
		return st
	}
	rest := c.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1:1], rest[2:]...)
	}
	if len(rest) < 2 {
		return c.usageError("want a sandbox id and a command")
	}
	if *timeout < 0 {
		return c.usageError("--timeout %d is negative", *timeout)
	}
	id, argv := rest[0], rest[1:]
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	opts := []dssandbox.CommandOption{
		dssandbox.OnCommandStdout(func(s string) { io.WriteString(stdout, s) }),
		dssandbox.OnCommandStderr(func(s string) { io.WriteString(stderr, s) }),
		dssandbox.WithCwd(*cwd),
	}
	if len(envs) > 0 {
		opts = append(opts, dssandbox.WithCommandEnvs(envs))
	}
	if *timeout > 0 {
		opts = append(opts, dssandbox.WithCommandTimeout(time.Duration(*timeout)*time.Second))
	}

	d, err := dialDaemon()
	if err != nil {
		c.fail(err)
		return exitExecFailure
	}
	sbx, err := d.Connect(ctx, id)
	if err != nil {
		c.fail(d.explain(err))
		return exitExecFailure
	}
	// Interrupting exec hangs up, and the sandbox kills the command.
	res, err := sbx.Commands.Run(ctx, strings.Join(quoted, " "), opts...)
	switch {
	case ctx.Err() != nil:
		return 130
	case err != nil:
		c.fail(d.explain(err))
		return exitExecFailure
	case res.ExitCode < 0:
		fmt.Fprintf(stderr, "ds-sandbox exec: the command %s\n", res.Error)
		return exitExecKilled
	}
	return res.ExitCode
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
