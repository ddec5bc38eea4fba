package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
	"github.com/ds-sandbox/ds-sandbox/internal/template"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxToolTimeout bounds timeout_seconds of run_code and run_command, as the
// configuration bounds its default.
const maxToolTimeout = 86400

// Tool inputs. The JSON Schemas clients see are inferred from these types
// (descriptions from the jsonschema tags) and then given numeric bounds in
// tool definitions; handlers check everything again and explain what is wrong.

type createSandboxIn struct {
	Template       string            `json:"template,omitempty" jsonschema:"Id of a stored sandbox template (environment, files, start command). Omit for the default environment."`
	Envs           map[string]string `json:"envs,omitempty" jsonschema:"Environment variables set for all code and commands in the sandbox."`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"Lifetime of the sandbox in seconds; it is killed when this passes. Omit for the configured default (an hour unless configured otherwise)."`
	WorkspaceID    string            `json:"workspace_id,omitempty" jsonschema:"Name of a persistent workspace to mount as the working directory (created when missing, kept after the sandbox ends). Omit for a throwaway workspace."`
	NetworkPolicy  string            `json:"network_policy,omitempty" jsonschema:"Network access: allow (the internet, not private addresses), deny (none), or whitelist (only network_whitelist). Omit for the configured default. Refused where the backend cannot enforce it."`
	Whitelist      []string          `json:"network_whitelist,omitempty" jsonschema:"Destinations allowed under network_policy whitelist: domains, *.wildcards, IPs, CIDRs."`
	MemoryMB       int               `json:"memory_mb,omitempty" jsonschema:"Memory limit in MiB. Omit for the default. Refused where the backend cannot enforce it."`
	CPUCount       int               `json:"cpu_count,omitempty" jsonschema:"CPU quota in CPUs. Omit for the default."`
	DiskQuotaMB    int               `json:"disk_quota_mb,omitempty" jsonschema:"Workspace size limit in MiB (a new workspace only). Omit for none."`
	PidsLimit      int               `json:"pids_limit,omitempty" jsonschema:"Most tasks (processes and threads) the sandbox may have; a fork bomb stops there. Omit for the default."`
	MaxOpenFiles   int               `json:"max_open_files,omitempty" jsonschema:"Open-file limit of the sandbox's processes. Omit for the default."`
	MaxOutputBytes int64             `json:"max_output_bytes,omitempty" jsonschema:"Most stdout and stderr bytes one execution returns; the rest is cut with a notice. Omit for the default."`
}

type createSandboxOut struct {
	SandboxID   string    `json:"sandbox_id" jsonschema:"Id to pass as sandbox_id to the other tools."`
	User        string    `json:"user" jsonschema:"User the code runs as."`
	Workdir     string    `json:"workdir" jsonschema:"Working directory; relative paths are resolved against it."`
	WorkspaceID string    `json:"workspace_id" jsonschema:"Workspace mounted at the working directory."`
	EndAt       time.Time `json:"end_at" jsonschema:"When the sandbox will be killed."`
	Default     bool      `json:"default" jsonschema:"Whether this is now the session's default sandbox (used when sandbox_id is omitted)."`
}

type runCodeIn struct {
	Code           string `json:"code" jsonschema:"Python source to run as one Jupyter cell. Variables and imports persist between calls in the same sandbox. The value of the last expression is returned; matplotlib figures (plt.show()) are returned as images."`
	SandboxID      string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to use, as returned by create_sandbox. Omit it to use this session's default sandbox (started on first use, killed when the session ends)."`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"Interrupt the cell after this many seconds (reported as a TimeoutError). Omit for the configured default."`
}

type runCommandIn struct {
	Command        string `json:"command" jsonschema:"Shell command line, run with bash -c in the sandbox, e.g. 'pip list | head' or 'ls -la data/'."`
	SandboxID      string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to use, as returned by create_sandbox. Omit it to use this session's default sandbox (started on first use, killed when the session ends)."`
	Cwd            string `json:"cwd,omitempty" jsonschema:"Working directory of the command; relative paths are resolved against the sandbox's working directory. Omit for the working directory."`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"Kill the command after this many seconds. Omit for the configured default."`
}

type runCommandOut struct {
	SandboxID string `json:"sandbox_id"`
	ExitCode  int    `json:"exit_code" jsonschema:"Exit status; -1 when the command was killed by a signal."`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Error     string `json:"error,omitempty" jsonschema:"Why the command did not exit by itself (timeout, signal)."`
}

type readFileIn struct {
	Path      string `json:"path" jsonschema:"File to read: absolute, or relative to the sandbox's working directory."`
	SandboxID string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to use, as returned by create_sandbox. Omit it to use this session's default sandbox (started on first use, killed when the session ends)."`
}

type writeFileIn struct {
	Path      string `json:"path" jsonschema:"File to write: absolute, or relative to the sandbox's working directory. Parent directories are created; an existing file is replaced."`
	Content   string `json:"content" jsonschema:"The file's new content."`
	Encoding  string `json:"encoding,omitempty" jsonschema:"How content is encoded: utf-8 (the default, text as is) or base64 (binary data)."`
	SandboxID string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to use, as returned by create_sandbox. Omit it to use this session's default sandbox (started on first use, killed when the session ends)."`
}

type writeFileOut struct {
	SandboxID string `json:"sandbox_id"`
	Path      string `json:"path" jsonschema:"Absolute path of the written file."`
	Size      int64  `json:"size" jsonschema:"Size of the file in bytes."`
}

type listFilesIn struct {
	Path      string `json:"path,omitempty" jsonschema:"Directory to list: absolute, or relative to the sandbox's working directory. Omit for the working directory."`
	Depth     int    `json:"depth,omitempty" jsonschema:"How many levels to descend: 1 (the default) lists the directory's children only."`
	SandboxID string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to use, as returned by create_sandbox. Omit it to use this session's default sandbox (started on first use, killed when the session ends)."`
}

type listFilesOut struct {
	SandboxID string  `json:"sandbox_id"`
	Entries   []entry `json:"entries"`
	// Omitted counts entries left out past maxListEntries.
	Omitted int `json:"omitted,omitempty" jsonschema:"Entries left out because the listing was too long; list a subdirectory or use a smaller depth."`
}

type entry struct {
	Path string `json:"path"`
	Type string `json:"type" jsonschema:"file, dir, symlink or other."`
	Size int64  `json:"size"`
}

type killSandboxIn struct {
	SandboxID string `json:"sandbox_id,omitempty" jsonschema:"Sandbox to kill. Omit it to kill this session's default sandbox (the next tool call without sandbox_id then starts a fresh one)."`
}

type killSandboxOut struct {
	SandboxID string `json:"sandbox_id"`
}

// sandboxKind describes the default backend's sandboxes truthfully: only a
// backend that isolates its code is called isolated.
func sandboxKind(m *manager.Manager) string {
	ch := m.DefaultChoice()
	if ch.Isolated {
		return "isolated Python sandbox (" + ch.Name + " backend)"
	}
	return "Python sandbox on the " + ch.Name + " backend, which does NOT isolate code: it runs on the host as the server's user"
}

// addTools registers every tool on srv.
func (s *Server) addTools(srv *mcp.Server) {
	for _, add := range s.tools {
		add(srv)
	}
}

// defineTools builds the tool definitions once; per-session servers (HTTP)
// reuse them, so their schemas are inferred and resolved once.
func (s *Server) defineTools() []func(*mcp.Server) {
	destructive := true
	kind := sandboxKind(s.m)
	return []func(*mcp.Server){
		tool(s, &mcp.Tool{
			Name:  "create_sandbox",
			Title: "Create a sandbox",
			Description: "Start a new " + kind + " and return its id. Usually unnecessary: every other tool starts this session's default sandbox on first use. " +
				"Create one for a separate environment: a template, environment variables, a longer or shorter lifetime, a named workspace whose files persist, a network policy, or resource limits. " +
				"The first sandbox created becomes the session's default if it has none. Sandboxes are killed when the MCP session ends.",
			InputSchema: schemaFor[createSandboxIn](bound("timeout_seconds", 1, manager.MaxTimeout.Seconds()), enum("network_policy", "allow", "deny", "whitelist"),
				// 0 is the default; the handler explains a value between 0 and
				// a limit's minimum.
				bound("memory_mb", 0, template.MaxMemoryMB), bound("cpu_count", 0, template.MaxCPUCount),
				bound("disk_quota_mb", 0, template.MaxDiskQuotaMB), bound("pids_limit", 0, template.MaxPidsLimit),
				bound("max_open_files", 0, template.MaxOpenFiles), bound("max_output_bytes", 0, template.MaxOutputBytes)),
		}, s.createSandbox),
		tool(s, &mcp.Tool{
			Name:  "run_code",
			Title: "Run Python code",
			Description: "Run Python code in a sandbox's Jupyter kernel and return what it printed (stdout, stderr), the value of the last expression, rich outputs (images as image content, HTML as text) and, if it raised, the exception with its traceback (the result is then marked as an error). " +
				"State persists between calls in the same sandbox, like notebook cells. pandas, numpy and matplotlib are typically available; check for other packages with run_command (pip list) rather than assuming they can be installed.",
			InputSchema: schemaFor[runCodeIn](bound("timeout_seconds", 1, maxToolTimeout)),
		}, s.runCode),
		tool(s, &mcp.Tool{
			Name:        "run_command",
			Title:       "Run a shell command",
			Description: "Run a shell command in a sandbox and wait for it to finish; returns the exit code, stdout and stderr. A non-zero exit code is reported, not treated as a failure of the tool.",
			InputSchema: schemaFor[runCommandIn](bound("timeout_seconds", 1, maxToolTimeout)),
		}, s.runCommand),
		tool(s, &mcp.Tool{
			Name:        "read_file",
			Title:       "Read a file",
			Description: fmt.Sprintf("Read a file from a sandbox. Text comes back as text; images as image content; other binary files as base64. Files over %d MiB are refused: read a part with run_command (head, tail) or run_code.", maxFileSize>>20),
			InputSchema: schemaFor[readFileIn](),
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
		}, s.readFile),
		tool(s, &mcp.Tool{
			Name:        "write_file",
			Title:       "Write a file",
			Description: fmt.Sprintf("Write a file in a sandbox, creating parent directories and replacing any existing file. Content is text, or base64 with encoding=base64; at most %d MiB.", maxFileSize>>20),
			InputSchema: schemaFor[writeFileIn](enum("encoding", "utf-8", "base64")),
			Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
		}, s.writeFile),
		tool(s, &mcp.Tool{
			Name:        "list_files",
			Title:       "List files",
			Description: fmt.Sprintf("List the entries of a directory in a sandbox (path, type, size), optionally recursively; at most %d entries.", maxListEntries),
			InputSchema: schemaFor[listFilesIn](bound("depth", 1, maxListDepth)),
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
		}, s.listFiles),
		tool(s, &mcp.Tool{
			Name:        "kill_sandbox",
			Title:       "Kill a sandbox",
			Description: "Kill a sandbox and everything running in it; its state and throwaway workspace are gone (a named workspace is kept). Without sandbox_id, kills this session's default sandbox.",
			InputSchema: schemaFor[killSandboxIn](),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: &destructive},
		}, s.killSandbox),
	}
}

// handler is a tool's implementation: sess is the calling session, ctx carries
// the caller's identity. An error becomes a tool result with isError set.
type handler[In, Out any] func(ctx context.Context, sess *session, in In) (*mcp.CallToolResult, Out, error)

// tool returns a function that adds t, served by h, to a server. A panic in h
// is logged and answered as a tool error: one bad call never ends the server.
func tool[In, Out any](s *Server, t *mcp.Tool, h handler[In, Out]) func(*mcp.Server) {
	return func(srv *mcp.Server) {
		mcp.AddTool(srv, t, func(ctx context.Context, _ *mcp.CallToolRequest, in In) (res *mcp.CallToolResult, out Out, err error) {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("mcp tool panicked", "tool", t.Name, "panic", p, "stack", string(debug.Stack()))
					var zero Out
					res, out, err = nil, zero, fmt.Errorf("%s: internal error in ds-sandbox (%v); please report it", t.Name, p)
				}
			}()
			sess := sessionFrom(ctx)
			if sess == nil {
				return nil, out, errors.New("no MCP session state (internal error)")
			}
			rec := &audit.Record{Action: toolActions[t.Name], KeyID: sess.identity.KeyID, Detail: map[string]string{"tool": t.Name}}
			if sess.sid != "" {
				rec.Detail["mcp_session"] = sess.sid
			}
			defer func() { s.audit(rec, err) }()
			// A tool call runs on after its HTTP request is gone (the SDK
			// does not cancel it): it counts as one of the key's streams
			// for as long as it runs.
			release, err := s.m.AcquireStream(ctx)
			if err != nil {
				return nil, out, fmt.Errorf("%s: %w", t.Name, err)
			}
			defer release()
			res, out, err = h(audit.WithRecord(ctx, rec), sess, in)
			if err != nil {
				s.log.Debug("mcp tool failed", "tool", t.Name, "error", err)
				return nil, out, fmt.Errorf("%s: %w", t.Name, err)
			}
			return res, out, nil
		})
	}
}

// toolActions name the tools' calls in the audit log with the REST API's
// words.
var toolActions = map[string]string{
	"create_sandbox": "sandbox.create", "run_code": "code.execute", "run_command": "command.run",
	"read_file": "files.read", "write_file": "files.write", "list_files": "files.list", "kill_sandbox": "sandbox.kill",
}

// audit writes a tool call's record: its outcome is the handler's error's
// (denied for refusals by admission) unless the handler set one (an
// execution blocked, killed by the memory limit, timed out).
func (s *Server) audit(rec *audit.Record, err error) {
	if s.opts.Audit == nil {
		return
	}
	rec.Finish(err != nil, err)
	if err != nil {
		rec.Status = api.HTTPStatus(api.CodeOf(err))
	}
	if werr := s.opts.Audit.Write(*rec); werr != nil {
		s.log.Error("audit log write failed", "err", werr)
	}
}

// schemaFor infers T's input schema and applies the tweaks.
func schemaFor[T any](tweaks ...func(*jsonschema.Schema)) *jsonschema.Schema {
	sch, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("mcpserver: schema of %T: %v", *new(T), err))
	}
	for _, tw := range tweaks {
		tw(sch)
	}
	return sch
}

func bound(prop string, lo, hi float64) func(*jsonschema.Schema) {
	return func(s *jsonschema.Schema) {
		p := property(s, prop)
		p.Minimum, p.Maximum = &lo, &hi
	}
}

func enum(prop string, vals ...any) func(*jsonschema.Schema) {
	return func(s *jsonschema.Schema) { property(s, prop).Enum = vals }
}

// property is s's property prop; a name that is not one is a bug here.
func property(s *jsonschema.Schema, prop string) *jsonschema.Schema {
	p := s.Properties[prop]
	if p == nil {
		panic("mcpserver: the tool schema has no property " + prop)
	}
	return p
}

// timeoutMs checks a timeout_seconds argument (0: the default).
func timeoutMs(sec, max int) (int64, error) {
	if sec < 0 || sec > max {
		return 0, api.Errorf(api.ErrInvalid, "timeout_seconds %d must be between 1 and %d (or omitted for the default)", sec, max)
	}
	return int64(sec) * 1000, nil
}

// text is a text content block.
func text(format string, args ...any) mcp.Content {
	return &mcp.TextContent{Text: fmt.Sprintf(format, args...)}
}

// withNotice puts notice (if any) before the content.
func withNotice(notice string, content []mcp.Content) []mcp.Content {
	if notice == "" {
		return content
	}
	return append([]mcp.Content{text("[ds-sandbox] %s", notice)}, content...)
}

func (s *Server) createSandbox(ctx context.Context, sess *session, in createSandboxIn) (*mcp.CallToolResult, createSandboxOut, error) {
	if in.TimeoutSeconds < 0 {
		return nil, createSandboxOut{}, api.Errorf(api.ErrInvalid, "timeout_seconds %d must be positive (or omitted for the default)", in.TimeoutSeconds)
	}
	req := api.CreateSandboxRequest{
		Template: in.Template, Envs: in.Envs, TimeoutSeconds: in.TimeoutSeconds, WorkspaceID: in.WorkspaceID,
		MemoryMB: in.MemoryMB, CPUCount: in.CPUCount, DiskQuotaMB: in.DiskQuotaMB,
		PidsLimit: in.PidsLimit, MaxOpenFiles: in.MaxOpenFiles, MaxOutputBytes: in.MaxOutputBytes,
	}
	if in.NetworkPolicy != "" || len(in.Whitelist) > 0 {
		p := in.NetworkPolicy
		if p == "" {
			p = api.NetworkWhitelist
		}
		req.Network = &api.NetworkPolicy{Policy: p, Whitelist: in.Whitelist}
	}
	sb, isDefault, err := s.create(ctx, sess, req, false)
	if err != nil {
		return nil, createSandboxOut{}, err
	}
	info := sb.Info()
	out := createSandboxOut{
		SandboxID: info.SandboxID, User: info.User, Workdir: info.Workdir,
		WorkspaceID: info.WorkspaceID, EndAt: info.EndAt, Default: isDefault,
	}
	msg := fmt.Sprintf("Created sandbox %s (user %s, working directory %s, workspace %s; killed at %s or when this session ends).",
		out.SandboxID, out.User, out.Workdir, out.WorkspaceID, out.EndAt.Format(time.RFC3339))
	if isDefault {
		msg += " It is this session's default sandbox: tools called without sandbox_id use it."
	} else {
		msg += " Pass sandbox_id=" + out.SandboxID + " to use it."
	}
	return &mcp.CallToolResult{Content: []mcp.Content{text("%s", msg)}}, out, nil
}

func (s *Server) killSandbox(ctx context.Context, sess *session, in killSandboxIn) (*mcp.CallToolResult, killSandboxOut, error) {
	id, err := s.kill(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, killSandboxOut{}, err
	}
	return &mcp.CallToolResult{Content: []mcp.Content{text("Killed sandbox %s.", id)}}, killSandboxOut{SandboxID: id}, nil
}
