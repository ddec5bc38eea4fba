package client

import (
	"context"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// Commands runs shell commands inside a sandbox. A non-zero exit code is a
// result (CommandResult.ExitCode), not an error.
type Commands struct {
	c *agentclient.Client
}

// CommandOption configures Run and Start.
type CommandOption func(*cmdOptions)

type cmdOptions struct {
	req      api.ProcessRequest
	onStdout func(string)
	onStderr func(string)
}

// WithCommandEnvs sets environment variables of the command.
func WithCommandEnvs(envs map[string]string) CommandOption {
	return func(o *cmdOptions) { o.req.Envs = envs }
}

// WithCwd sets the command's working directory (relative to the workdir).
func WithCwd(dir string) CommandOption { return func(o *cmdOptions) { o.req.Cwd = dir } }

// WithUser runs the command as another user of the sandbox. Backends that
// cannot switch users refuse it with ErrUnsupported.
func WithUser(user string) CommandOption { return func(o *cmdOptions) { o.req.User = user } }

// WithCommandTimeout kills the command when it runs longer than d.
func WithCommandTimeout(d time.Duration) CommandOption {
	return func(o *cmdOptions) {
		o.req.TimeoutMs = d.Milliseconds()
		if d > 0 && o.req.TimeoutMs == 0 {
			o.req.TimeoutMs = 1
		}
	}
}

// WithStdin keeps the command's stdin open for SendStdin.
func WithStdin() CommandOption { return func(o *cmdOptions) { o.req.Stdin = true } }

// WithTag labels a background command in List.
func WithTag(tag string) CommandOption { return func(o *cmdOptions) { o.req.Tag = tag } }

// OnCommandStdout is called with stdout chunks as the command prints them.
func OnCommandStdout(fn func(string)) CommandOption { return func(o *cmdOptions) { o.onStdout = fn } }

// OnCommandStderr is called with stderr chunks as the command prints them.
func OnCommandStderr(fn func(string)) CommandOption { return func(o *cmdOptions) { o.onStderr = fn } }

func buildCmd(cmd string, opts []CommandOption) cmdOptions {
	var o cmdOptions
	for _, opt := range opts {
		opt(&o)
	}
	o.req.Cmd = cmd
	return o
}

func (o *cmdOptions) handler() func(api.ProcessEvent) {
	return func(ev api.ProcessEvent) {
		switch {
		case ev.Type == api.ProcStdout && o.onStdout != nil:
			o.onStdout(ev.Data)
		case ev.Type == api.ProcStderr && o.onStderr != nil:
			o.onStderr(ev.Data)
		}
	}
}

// Run runs cmd with bash and waits for it to end.
func (c *Commands) Run(ctx context.Context, cmd string, opts ...CommandOption) (CommandResult, error) {
	o := buildCmd(cmd, opts)
	return c.c.RunCommand(ctx, o.req, o.handler())
}

// Start starts cmd in the background and returns a handle on it.
func (c *Commands) Start(ctx context.Context, cmd string, opts ...CommandOption) (*CommandHandle, error) {
	o := buildCmd(cmd, opts)
	o.req.Background = true
	info, err := c.c.StartProcess(ctx, o.req)
	if err != nil {
		return nil, err
	}
	return &CommandHandle{PID: info.PID, c: c.c, onEvent: o.handler()}, nil
}

// List lists the background commands still running.
func (c *Commands) List(ctx context.Context) ([]ProcessInfo, error) {
	return c.c.ListProcesses(ctx)
}

// Connect returns a handle on a running command by pid.
func (c *Commands) Connect(_ context.Context, pid int) *CommandHandle {
	return &CommandHandle{PID: pid, c: c.c}
}

// Kill kills a command (and its process group) by pid.
func (c *Commands) Kill(ctx context.Context, pid int) error { return c.c.Kill(ctx, pid) }

// SendStdin writes data to a command's stdin (started WithStdin).
func (c *Commands) SendStdin(ctx context.Context, pid int, data string) error {
	return c.c.SendStdin(ctx, pid, data, false)
}

// CommandHandle is a running command.
type CommandHandle struct {
	PID     int
	c       *agentclient.Client
	onEvent func(api.ProcessEvent)
}

// Wait waits for the command to end and returns its result: output from the
// moment Wait was called, and the exit code.
func (h *CommandHandle) Wait(ctx context.Context) (CommandResult, error) {
	return h.c.ConnectProcess(ctx, h.PID, h.onEvent)
}

// Kill kills the command.
func (h *CommandHandle) Kill(ctx context.Context) error { return h.c.Kill(ctx, h.PID) }

// SendStdin writes data to the command's stdin.
func (h *CommandHandle) SendStdin(ctx context.Context, data string) error {
	return h.c.SendStdin(ctx, h.PID, data, false)
}

// CloseStdin closes the command's stdin (it then reads EOF).
func (h *CommandHandle) CloseStdin(ctx context.Context) error {
	return h.c.SendStdin(ctx, h.PID, "", true)
}
