package dssandbox

import (
	"time"

	"github.com/ds-sandbox/ds-sandbox/client"
)

// RunOption configures one RunCode call.
type RunOption = client.RunOption

// InContext runs the code in a code context made by CreateCodeContext instead
// of the default one.
func InContext(c CodeContext) RunOption { return client.InContext(c) }

// WithTimeout bounds the cell: past it the cell is interrupted, the Execution
// carries a TimeoutError, and the context's earlier state survives.
func WithTimeout(d time.Duration) RunOption { return client.WithTimeout(d) }

// WithNetwork runs this cell under its own network policy (the seed's
// run_code allow_internet / network_policy / network_whitelist): the
// sandbox's network changes for the cell and is restored after it, and the
// sandbox's other executions wait meanwhile. Where a running sandbox's
// network cannot change (local; docker on Docker's own networks; any
// sandbox created with deny, which has no interface to open) it is refused
// unless it is the sandbox's own policy.
func WithNetwork(p NetworkPolicy) RunOption { return client.WithNetwork(p) }

// WithEnvs sets environment variables for this cell only.
func WithEnvs(envs map[string]string) RunOption { return client.WithEnvs(envs) }

// WithScannerMode makes the code scanner stricter for this cell ("warn" or
// "block"); a mode looser than the sandbox's is refused with ErrPermission.
func WithScannerMode(mode string) RunOption { return client.WithScannerMode(mode) }

// OnStdout is called with each stdout chunk as the cell prints it.
func OnStdout(fn func(string)) RunOption { return client.OnStdout(fn) }

// OnStderr is called with each stderr chunk as the cell prints it.
func OnStderr(fn func(string)) RunOption { return client.OnStderr(fn) }

// OnResult is called with each rich result as the cell produces it.
func OnResult(fn func(Result)) RunOption { return client.OnResult(fn) }

// OnError is called when the cell raises (or times out, or kills its kernel).
func OnError(fn func(ExecutionError)) RunOption { return client.OnError(fn) }
