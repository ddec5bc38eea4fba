package api

// ProcessRequest starts a command inside a sandbox.
type ProcessRequest struct {
	// Cmd is a shell command line, run with /bin/bash -c (or /bin/sh when bash is
	// missing).
	Cmd  string            `json:"cmd"`
	Envs map[string]string `json:"envs,omitempty"`
	// Cwd is resolved against the sandbox workdir; "" means the workdir.
	Cwd string `json:"cwd,omitempty"`
	// User runs the command as another sandbox user; "" means the sandbox user.
	User string `json:"user,omitempty"`
	// TimeoutMs kills the command (SIGKILL to its process group) when it runs
	// longer; 0 means no timeout for background processes and the default for
	// foreground ones.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// Background returns as soon as the process started; its output is kept (up to
	// a bound) for Connect.
	Background bool `json:"background,omitempty"`
	// Stdin keeps the process's stdin open for SendStdin; otherwise it reads EOF.
	Stdin bool `json:"stdin,omitempty"`
	// Tag is a free-form label shown in process lists.
	Tag string `json:"tag,omitempty"`
}

// Process event types.
const (
	ProcStart  = "start"
	ProcStdout = "stdout"
	ProcStderr = "stderr"
	ProcEnd    = "end"
)

// ProcessEvent is one line of a process's NDJSON stream: "start" (with the pid),
// output chunks, and a final "end" with the exit code.
type ProcessEvent struct {
	Type string `json:"type"`
	PID  int    `json:"pid,omitempty"`
	// Data is an output chunk (stdout/stderr), as text; invalid UTF-8 is replaced.
	Data string `json:"data,omitempty"`
	// ExitCode is set on "end". -1 means the process was killed by a signal.
	ExitCode int `json:"exit_code"`
	// Error is set on "end" when the process did not exit by itself ("killed by
	// signal 9", "timed out after 2s").
	Error string `json:"error,omitempty"`
}

// ProcessInfo describes a running process started through the API.
type ProcessInfo struct {
	PID  int               `json:"pid"`
	Cmd  string            `json:"cmd"`
	Tag  string            `json:"tag,omitempty"`
	Cwd  string            `json:"cwd"`
	Envs map[string]string `json:"envs,omitempty"`
}

// CommandResult is the outcome of a command that ran to the end. A non-zero exit
// code is a result, not an error.
type CommandResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// Error explains an end that was not a normal exit (timeout, signal).
	Error string `json:"error,omitempty"`
}

// StdinRequest sends data to a process's stdin; Close closes it after the data.
type StdinRequest struct {
	Data  string `json:"data"`
	Close bool   `json:"close,omitempty"`
}

// SignalRequest sends a signal to a process: "SIGTERM", "SIGKILL", "SIGINT".
type SignalRequest struct {
	Signal string `json:"signal"`
}
