package dssandbox

import (
	"time"

	"github.com/ds-sandbox/ds-sandbox/client"
)

type (
	// Commands runs shell commands inside a sandbox. A non-zero exit code is a
	// result (CommandResult.ExitCode), not an error.
	Commands = client.Commands
	// CommandOption configures Run and Start.
	CommandOption = client.CommandOption
	// CommandHandle is a running command.
	CommandHandle = client.CommandHandle
)

// WithCommandEnvs sets environment variables of the command.
func WithCommandEnvs(envs map[string]string) CommandOption { return client.WithCommandEnvs(envs) }

// WithCwd sets the command's working directory (relative to the workdir).
func WithCwd(dir string) CommandOption { return client.WithCwd(dir) }

// WithUser runs the command as another user of the sandbox. Backends that
// cannot switch users refuse it with ErrUnsupported.
func WithUser(user string) CommandOption { return client.WithUser(user) }

// WithCommandTimeout kills the command when it runs longer than d.
func WithCommandTimeout(d time.Duration) CommandOption { return client.WithCommandTimeout(d) }

// WithStdin keeps the command's stdin open for SendStdin.
func WithStdin() CommandOption { return client.WithStdin() }

// WithTag labels a background command in List.
func WithTag(tag string) CommandOption { return client.WithTag(tag) }

// OnCommandStdout is called with stdout chunks as the command prints them.
func OnCommandStdout(fn func(string)) CommandOption { return client.OnCommandStdout(fn) }

// OnCommandStderr is called with stderr chunks as the command prints them.
func OnCommandStderr(fn func(string)) CommandOption { return client.OnCommandStderr(fn) }
