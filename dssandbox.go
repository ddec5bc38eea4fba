// Package dssandbox is the Go SDK of ds-sandbox: stateful Python sandboxes with
// rich, Jupyter-style results, a workspace of files, and commands.
//
//	sbx, err := dssandbox.Create(ctx, dssandbox.Options{})
//	if err != nil { … }
//	defer sbx.Kill(context.Background())
//	exec, err := sbx.RunCode(ctx, "x = 41\nx + 1")
//	fmt.Println(exec.Text()) // 42
//
// The SDK runs embedded: an in-process manager starts sandboxes on this machine
// (the local backend by default), configured from the SANDBOX_* environment
// variables. A program that embeds the SDK needs the ds-sandbox binary on PATH
// (or SANDBOX_AGENT_PATH) to run the in-sandbox agent, or calls
// ServeAgentIfChild first thing in main so it can serve the agent itself.
//
// With DS_SANDBOX_URL set, or through NewClient, the SDK talks to a
// ds-sandbox server instead (remote mode). A program that only ever does
// that can import package client, which this package re-exports: the same
// types and calls, without the embedded mode linked in.
package dssandbox

import (
	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agent"
)

// Wire types, shared with every other interface of ds-sandbox.
type (
	// Execution is the outcome of RunCode.
	Execution = api.Execution
	// Result is one rich output of a cell, with every MIME format it came in.
	Result = api.Result
	// Logs is a cell's stdout and stderr chunks.
	Logs = api.Logs
	// ExecutionError is a Python exception (or timeout, or dead kernel) of a cell.
	ExecutionError = api.ExecutionError
	// Finding is one thing the code scanner saw in a cell.
	Finding = api.Finding
	// SandboxInfo describes a sandbox.
	SandboxInfo = api.SandboxInfo
	// Template describes a sandbox environment.
	Template = api.Template
	// Limits are a sandbox's resource limits (Options.Limits, SandboxInfo.Limits).
	Limits = api.Limits
	// NetworkPolicy is a network policy: allow, deny or whitelist.
	NetworkPolicy = api.NetworkPolicy
	// NetworkDenial is one connection or name lookup the network policy
	// refused (Execution.NetworkDenials).
	NetworkDenial = api.NetworkDenial
	// EntryInfo describes a file or directory in a sandbox.
	EntryInfo = api.EntryInfo
	// FilesystemEvent is a change seen by WatchDir.
	FilesystemEvent = api.FilesystemEvent
	// CommandResult is the outcome of a finished command.
	CommandResult = api.CommandResult
	// ProcessInfo describes a running command.
	ProcessInfo = api.ProcessInfo
	// CodeContext is a code context: one kernel with its own state.
	CodeContext = api.Context
	// Dataset is a registered dataset.
	Dataset = api.Dataset
	// Workspace describes a workspace directory.
	Workspace = api.Workspace
	// Event is one lifecycle event of a sandbox (Client.Events).
	Event = api.Event
)

// Code scanner modes (Options.ScannerMode, WithScannerMode), least strict
// first. The scanner is a tripwire for obvious dangerous code, not a security
// boundary.
const (
	ScannerOff   = api.ScannerOff
	ScannerWarn  = api.ScannerWarn
	ScannerBlock = api.ScannerBlock
)

// Code engines (Options.Engine, Template.Engine): what runs a sandbox's code
// contexts.
const (
	EngineIPykernel = api.EngineIPykernel
	EngineLean      = api.EngineLean
)

// ErrNameScanBlocked is the Execution.Error name of a cell the code scanner
// refused to run (scanner mode block).
const ErrNameScanBlocked = api.ErrNameScanBlocked

// Errors every SDK call may wrap; test with errors.Is.
var (
	ErrNotFound    = api.ErrNotFound
	ErrInvalid     = api.ErrInvalid
	ErrExists      = api.ErrExists
	ErrUnsupported = api.ErrUnsupported
	ErrLimit       = api.ErrLimit
	ErrPermission  = api.ErrPermission
	ErrUnavailable = api.ErrUnavailable
	ErrTimeout     = api.ErrTimeout
)

// ServeAgentIfChild lets a program that embeds the SDK serve the in-sandbox
// agent itself, so it needs no ds-sandbox binary: call it first thing in main
// (and in TestMain). When the process was started as an agent it runs the agent
// and exits; otherwise it returns at once.
func ServeAgentIfChild() { agent.MainIfReexec() }
