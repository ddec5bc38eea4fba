package mcpserver

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxTextSection bounds each text section (stdout, stderr, one result) of a
// tool result; the middle of a longer one is cut, so its start and its end
// (where errors usually are) both reach the model.
const maxTextSection = 256 << 10

func (s *Server) runCode(ctx context.Context, sess *session, in runCodeIn) (*mcp.CallToolResult, any, error) {
	if strings.TrimSpace(in.Code) == "" {
		return nil, nil, api.Errorf(api.ErrInvalid, "code is empty: pass the Python source to run in \"code\"")
	}
	ms, err := timeoutMs(in.TimeoutSeconds, maxToolTimeout)
	if err != nil {
		return nil, nil, err
	}
	sb, notice, err := s.sandbox(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, nil, err
	}
	rec := audit.FromContext(ctx)
	rec.SetCode(in.Code, s.m.Config().AuditLogCode)
	exec, err := sb.Execute(ctx, api.ExecuteRequest{Code: in.Code, TimeoutMs: ms}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: %w", sb.ID(), err)
	}
	rec.SetExecution(exec)
	content, failed := executionContent(exec)
	return &mcp.CallToolResult{Content: withNotice(notice, content), IsError: failed}, nil, nil
}

// executionContent renders an execution for a model: labelled text sections
// for the output streams, results and error, images as image content. failed
// reports a Python exception, timeout or dead kernel.
func executionContent(exec *api.Execution) (content []mcp.Content, failed bool) {
	for _, n := range exec.Notices {
		content = append(content, text("[ds-sandbox] %s", n))
	}
	if len(exec.Findings) > 0 {
		var b strings.Builder
		for _, f := range exec.Findings {
			fmt.Fprintf(&b, "\nline %d: %s %s: %s", f.Line, f.Severity, f.Type, f.Message)
		}
		content = append(content, text("[code scanner] %d finding(s):%s", len(exec.Findings), b.String()))
	}
	if len(exec.NetworkDenials) > 0 {
		var b strings.Builder
		for _, d := range exec.NetworkDenials {
			fmt.Fprintf(&b, "\n%s: %s", d.Target(), d.Reason)
		}
		content = append(content, text("[network policy] %d refused:%s", len(exec.NetworkDenials), b.String()))
	}
	if out := strings.Join(exec.Logs.Stdout, ""); out != "" {
		content = append(content, text("[stdout]\n%s", clip(out)))
	}
	if errOut := strings.Join(exec.Logs.Stderr, ""); errOut != "" {
		content = append(content, text("[stderr]\n%s", clip(errOut)))
	}
	for i := range exec.Results {
		content = append(content, resultContent(&exec.Results[i], exec.ExecutionCount)...)
	}
	if e := exec.Error; e != nil {
		msg := fmt.Sprintf("[error] %s: %s", e.Name, e.Value)
		if tb := strings.TrimRight(e.Traceback, "\n"); tb != "" {
			msg += "\n" + clip(tb)
		}
		content = append(content, text("%s", msg))
		failed = true
	}
	if len(content) == 0 {
		content = append(content, text("[no output] the code ran and printed nothing; end it with an expression to see its value"))
	}
	return content, failed
}

// resultContent renders one rich result: PNG and JPEG as images, SVG and
// HTML as text (with the text/plain form too), other formats as text.
func resultContent(r *api.Result, count int) []mcp.Content {
	label := "[display]"
	if r.IsMainResult {
		label = "[result]"
		if count > 0 {
			label = fmt.Sprintf("[result Out[%d]]", count)
		}
	}
	var out []mcp.Content
	caption := func(kind string) {
		if r.Text != "" {
			out = append(out, text("%s %s: %s", label, kind, clip(r.Text)))
		} else {
			out = append(out, text("%s %s", label, kind))
		}
	}
	for _, img := range []struct{ data, mime string }{{r.PNG, "image/png"}, {r.JPEG, "image/jpeg"}} {
		if img.data == "" {
			continue
		}
		data, err := base64.StdEncoding.DecodeString(img.data)
		if err != nil {
			return append(out, text("%s %s that could not be decoded: %v", label, img.mime, err))
		}
		caption(img.mime)
		return append(out, &mcp.ImageContent{Data: data, MIMEType: img.mime})
	}
	switch {
	case r.SVG != "":
		caption("image/svg+xml")
		out = append(out, text("%s", clip(r.SVG)))
	case r.HTML != "":
		if r.Text != "" {
			out = append(out, text("%s text/plain:\n%s", label, clip(r.Text)))
		}
		out = append(out, text("%s text/html:\n%s", label, clip(r.HTML)))
	case r.Text != "":
		out = append(out, text("%s\n%s", label, clip(r.Text)))
	case r.Markdown != "":
		out = append(out, text("%s text/markdown:\n%s", label, clip(r.Markdown)))
	case r.LaTeX != "":
		out = append(out, text("%s text/latex:\n%s", label, clip(r.LaTeX)))
	case len(r.JSON) > 0:
		out = append(out, text("%s application/json:\n%s", label, clip(string(r.JSON))))
	default:
		out = append(out, text("%s in formats this tool does not show: %s", label, strings.Join(r.Formats(), ", ")))
	}
	return out
}

// clip cuts the middle out of s when it is longer than maxTextSection.
func clip(s string) string {
	if len(s) <= maxTextSection {
		return s
	}
	half := maxTextSection / 2
	head, tail := s[:half], s[len(s)-half:]
	head = strings.ToValidUTF8(head, "")
	tail = strings.ToValidUTF8(tail, "")
	return fmt.Sprintf("%s\n[ds-sandbox: %d bytes cut here]\n%s", head, len(s)-2*half, tail)
}

func (s *Server) runCommand(ctx context.Context, sess *session, in runCommandIn) (*mcp.CallToolResult, runCommandOut, error) {
	if strings.TrimSpace(in.Command) == "" {
		return nil, runCommandOut{}, api.Errorf(api.ErrInvalid, "command is empty: pass a shell command line in \"command\"")
	}
	ms, err := timeoutMs(in.TimeoutSeconds, maxToolTimeout)
	if err != nil {
		return nil, runCommandOut{}, err
	}
	sb, notice, err := s.sandbox(ctx, sess, in.SandboxID)
	if err != nil {
		return nil, runCommandOut{}, err
	}
	audit.FromContext(ctx).SetCode(in.Command, s.m.Config().AuditLogCode)
	res, err := sb.Agent().RunCommand(ctx, api.ProcessRequest{Cmd: in.Command, Cwd: in.Cwd, TimeoutMs: ms}, nil)
	if err != nil {
		return nil, runCommandOut{}, fmt.Errorf("sandbox %s: %w", sb.ID(), err)
	}
	out := runCommandOut{SandboxID: sb.ID(), ExitCode: res.ExitCode, Stdout: clip(res.Stdout), Stderr: clip(res.Stderr), Error: res.Error}
	var b strings.Builder
	fmt.Fprintf(&b, "exit code: %d", out.ExitCode)
	if out.Error != "" {
		fmt.Fprintf(&b, " (%s)", out.Error)
	}
	fmt.Fprintf(&b, "\n[stdout]\n%s", out.Stdout)
	if out.Stdout != "" && !strings.HasSuffix(out.Stdout, "\n") {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "[stderr]\n%s", out.Stderr)
	content := withNotice(notice, []mcp.Content{text("%s", b.String())})
	return &mcp.CallToolResult{Content: content, IsError: out.Error != ""}, out, nil
}
