package client

import (
	"context"
	"fmt"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
	"github.com/ds-sandbox/ds-sandbox/internal/sdkcp"
)

// Options configure Create. Every field is optional.
type Options struct {
	// Template names a stored template (a YAML file in a templates directory).
	Template string
	// TemplateSpec is an inline template; it wins over Template.
	TemplateSpec *Template
	// Backend chooses the isolation backend ("local", …); "" is the default.
	Backend string
	// Envs are environment variables of the sandbox's code and commands.
	Envs map[string]string
	// Metadata is free-form; List can filter on it.
	Metadata map[string]string
	// Timeout is the sandbox's lifetime: it is killed when it passes (SetTimeout
	// extends it). 0 means the configured default.
	Timeout time.Duration
	// WorkspaceID attaches a named workspace that outlives the sandbox; "" gives
	// an anonymous workspace, removed on kill.
	WorkspaceID string
	// Network is the sandbox's network policy; nil means the configured default.
	// A backend that cannot enforce it refuses to create the sandbox.
	Network *NetworkPolicy
	// User and Workdir override the configured defaults ("user", "/home/user").
	User    string
	Workdir string
	// ScannerMode is the code scanner's mode for this sandbox's cells: off,
	// warn or block. It can only make the configured mode stricter; "" keeps it.
	ScannerMode string
	// Engine runs the sandbox's code contexts: "ipykernel" or "lean"
	// (EngineIPykernel, EngineLean); "" is the configured engine. A
	// template's engine wins.
	Engine string
	// Limits are the sandbox's resource limits (memory, CPU, pids, open
	// files, output per execution, workspace disk quota); a zero field means
	// the template's, else the configured default. A backend that cannot
	// enforce a limit refuses to create the sandbox (ErrUnsupported).
	Limits Limits
}

// Sandbox is a handle on a running sandbox. It is safe for concurrent use.
type Sandbox struct {
	// ID is the sandbox id.
	ID string
	// Files reads and writes the sandbox's filesystem.
	Files *Files
	// Commands runs shell commands inside the sandbox.
	Commands *Commands

	cp    sdkcp.ControlPlane
	agent *agentclient.Client
	info  SandboxInfo
}

func newSandbox(cp sdkcp.ControlPlane, info api.SandboxInfo, ac *agentclient.Client) *Sandbox {
	return &Sandbox{
		ID: info.SandboxID, cp: cp, agent: ac, info: info,
		Files:    &Files{c: ac},
		Commands: &Commands{c: ac},
	}
}

func create(ctx context.Context, cp sdkcp.ControlPlane, opts Options) (*Sandbox, error) {
	req := api.CreateSandboxRequest{
		Template: opts.Template, TemplateSpec: opts.TemplateSpec, Backend: opts.Backend,
		Envs: opts.Envs, Metadata: opts.Metadata, WorkspaceID: opts.WorkspaceID,
		Network: opts.Network, User: opts.User, Workdir: opts.Workdir, ScannerMode: opts.ScannerMode, Engine: opts.Engine,
		MemoryMB: opts.Limits.MemoryMB, CPUCount: opts.Limits.CPUCount, PidsLimit: opts.Limits.PidsLimit,
		MaxOpenFiles: opts.Limits.MaxOpenFiles, MaxOutputBytes: opts.Limits.MaxOutputBytes, DiskQuotaMB: opts.Limits.DiskQuotaMB,
	}
	if opts.Timeout < 0 {
		return nil, api.Errorf(api.ErrInvalid, "timeout %s is negative", opts.Timeout)
	}
	if opts.Timeout > 0 {
		req.TimeoutSeconds = int((opts.Timeout + time.Second - 1) / time.Second)
	}
	info, ac, err := cp.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return newSandbox(cp, info, ac), nil
}

func connect(ctx context.Context, cp sdkcp.ControlPlane, id string) (*Sandbox, error) {
	info, ac, err := cp.Connect(ctx, id)
	if err != nil {
		return nil, err
	}
	return newSandbox(cp, info, ac), nil
}

// User is the sandbox's default user.
func (s *Sandbox) User() string { return s.info.User }

// Workdir is the sandbox's working directory, where relative paths resolve.
func (s *Sandbox) Workdir() string { return s.info.Workdir }

// GetInfo returns the sandbox's current description (state, deadline, …).
func (s *Sandbox) GetInfo(ctx context.Context) (SandboxInfo, error) {
	return s.cp.Info(ctx, s.ID)
}

// SetTimeout moves the sandbox's deadline to now + d.
func (s *Sandbox) SetTimeout(ctx context.Context, d time.Duration) error {
	_, err := s.cp.SetTimeout(ctx, s.ID, d)
	return err
}

// SetNetwork changes the sandbox's own network policy from now on (its
// running executions finish first). Where a running sandbox's network
// cannot change (local; docker on Docker's own networks; a sandbox created
// with deny, which has no interface to open) it fails with ErrUnsupported
// and the policy stays as it was.
func (s *Sandbox) SetNetwork(ctx context.Context, p NetworkPolicy) error {
	_, err := s.cp.SetNetwork(ctx, s.ID, p)
	return err
}

// Kill stops the sandbox and every process it started. Its workspace is
// removed unless it is a named one.
func (s *Sandbox) Kill(ctx context.Context) error {
	err := s.cp.Kill(ctx, s.ID)
	s.agent.Close()
	return err
}

// IsRunning reports whether the sandbox still runs.
func (s *Sandbox) IsRunning(ctx context.Context) bool {
	info, err := s.cp.Info(ctx, s.ID)
	return err == nil && info.State == api.StateRunning
}

// PrepareDataset places a registered dataset into the workspace's data/
// directory ("copy" or "link"; "" is the configured default) and returns its
// path inside the sandbox.
func (s *Sandbox) PrepareDataset(ctx context.Context, name, strategy string) (string, error) {
	return s.cp.PrepareDataset(ctx, s.ID, name, strategy)
}

func (s *Sandbox) String() string { return fmt.Sprintf("sandbox %s", s.ID) }
