// Package jupyter is a small client for the Jupyter messaging protocol (v5.3)
// over ZeroMQ, plus management of the ipykernel process it talks to.
//
// Start launches one `python -m ipykernel_launcher` process with a connection
// file written by us (ipc transport in a fresh private socket directory,
// hmac-sha256 signatures with a random key), connects DEALER sockets for
// shell, control and stdin and a SUB socket for iopub, and waits until the
// kernel answers kernel_info_request and publishes on iopub. Execute runs one
// cell and streams its outputs; Close kills the kernel's process group.
//
// The package knows nothing about sandboxes: isolation is the caller's job
// (Config.SysProcAttr, Config.Env, Config.Dir).
//
// Concurrency: a Kernel is safe for concurrent use. Executes are serialized;
// Interrupt and Close may be called at any time. Internally one goroutine per
// socket pumps messages into per-request inboxes, so iopub is always drained
// (the kernel's PUB socket silently drops messages when its queue fills) and no
// call ever blocks on a go-zeromq Recv, which has no deadline.
package jupyter

import "errors"

// ErrDead reports that the kernel process exited, its connection was lost, or
// it was killed because it did not respond to an interrupt. A dead Kernel
// cannot be used again; Close it and Start a new one.
var ErrDead = errors.New("kernel died")

// ErrStartTimeout reports that the kernel did not become ready within
// Config.StartTimeout (a loaded machine starts kernels slowly).
var ErrStartTimeout = errors.New("kernel start timeout (Config.StartTimeout) passed")

// ErrInterrupted reports that Execute's context ended before the cell finished
// and the cell was interrupted. The error returned alongside it also matches
// the context's error (context.DeadlineExceeded or context.Canceled).
var ErrInterrupted = errors.New("execution interrupted")
