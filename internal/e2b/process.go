package e2b

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
)

// Messages of process.Process in proto3 JSON (proto/process.proto).

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  *string           `json:"cwd,omitempty"`
}

type startRequest struct {
	Process processConfig `json:"process"`
	PTY     any           `json:"pty"`
	Tag     *string       `json:"tag"`
	Stdin   *bool         `json:"stdin"`
}

// processSelector is the oneof {pid | tag}; pid is a uint32, which proto3
// JSON parsers accept as a number or a string.
type processSelector struct {
	PID json.Number `json:"pid"`
	Tag *string     `json:"tag"`
}

type selectorRequest struct {
	Process processSelector `json:"process"`
}

type sendInputRequest struct {
	Process processSelector `json:"process"`
	Input   struct {
		Stdin []byte `json:"stdin"` // bytes: base64 in proto3 JSON
		PTY   []byte `json:"pty"`
	} `json:"input"`
}

type sendSignalRequest struct {
	Process processSelector `json:"process"`
	Signal  json.RawMessage `json:"signal"`
}

type processInfo struct {
	Config processConfig `json:"config"`
	PID    int           `json:"pid"`
	Tag    string        `json:"tag,omitempty"`
}

type listResponse struct {
	Processes []processInfo `json:"processes"`
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine turns E2B's argv into our shell command. The SDKs send
// /bin/bash -l -c <cmd>; our agent runs commands with bash -c already, so
// <cmd> is used as is (a login shell would reset PATH from /etc/profile).
func commandLine(c processConfig) string {
	if (c.Cmd == "/bin/bash" || c.Cmd == "bash" || c.Cmd == "/bin/sh" || c.Cmd == "sh") &&
		len(c.Args) == 3 && c.Args[0] == "-l" && c.Args[1] == "-c" {
		return c.Args[2]
	}
	if (c.Cmd == "/bin/bash" || c.Cmd == "/bin/sh") && len(c.Args) == 2 && c.Args[0] == "-c" {
		return c.Args[1]
	}
	parts := []string{shellQuote(c.Cmd)}
	for _, a := range c.Args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

// pid resolves a selector.
func (s *Server) pid(r *http.Request, sel processSelector) (int, error) {
	if sel.Tag != nil {
		procs, err := sandboxFrom(r.Context()).Agent().ListProcesses(r.Context())
		if err != nil {
			return 0, err
		}
		for _, p := range procs {
			if p.Tag == *sel.Tag {
				return p.PID, nil
			}
		}
		return 0, api.Errorf(api.ErrNotFound, "process with tag %q", *sel.Tag)
	}
	n, err := strconv.Atoi(sel.PID.String())
	if err != nil || n <= 0 {
		return 0, api.Errorf(api.ErrInvalid, "process selector: pid %q is not a process id", sel.PID)
	}
	return n, nil
}

type msg = map[string]any

func endEvent(ev api.ProcessEvent) msg {
	end := msg{"exitCode": ev.ExitCode, "exited": ev.ExitCode >= 0}
	status := fmt.Sprintf("exit status %d", ev.ExitCode)
	if ev.ExitCode < 0 {
		status = "signal: killed"
	}
	end["status"] = status
	switch {
	case ev.Error != "":
		end["error"] = ev.Error
	case ev.ExitCode != 0:
		end["error"] = status
	}
	return end
}

// follow streams pid's events as ProcessEvents: start, data, keepalive, end.
func (s *Server) follow(r *http.Request, pid int, st *stream) error {
	ctx := r.Context()
	if err := st.Send(msg{"event": msg{"start": msg{"pid": pid}}}); err != nil {
		return nil
	}
	stop := make(chan struct{})
	defer close(stop)
	go st.keepalive(s.keepaliveInterval(r), msg{"event": msg{"keepalive": msg{}}}, stop)
	_, err := sandboxFrom(ctx).Agent().ConnectProcess(ctx, pid, func(ev api.ProcessEvent) {
		switch ev.Type {
		case api.ProcStdout, api.ProcStderr:
			_ = st.Send(msg{"event": msg{"data": msg{ev.Type: base64.StdEncoding.EncodeToString([]byte(ev.Data))}}})
		case api.ProcEnd:
			_ = st.Send(msg{"event": msg{"end": endEvent(ev)}})
		}
	})
	return err
}

// procStart starts a process in the background and follows it: a client
// that disconnects leaves it running (envd's behaviour; the SDK's background
// commands rely on it). Connect-Timeout-Ms also bounds the process, as in envd.
func (s *Server) procStart(r *http.Request, req *startRequest, st *stream) error {
	if req.PTY != nil {
		return api.Errorf(api.ErrUnsupported, "pseudo-terminals (pty) are not supported by ds-sandbox; use commands.run")
	}
	pr := api.ProcessRequest{Cmd: commandLine(req.Process), Envs: req.Process.Envs, Stdin: req.Stdin == nil || *req.Stdin}
	audit.FromContext(r.Context()).SetCode(pr.Cmd, s.m.Config().AuditLogCode)
	if req.Process.Cwd != nil {
		pr.Cwd = *req.Process.Cwd
	}
	if req.Tag != nil {
		pr.Tag = *req.Tag
	}
	if dl, ok := r.Context().Deadline(); ok {
		pr.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
	}
	info, err := sandboxFrom(r.Context()).Agent().StartProcess(r.Context(), pr)
	if err != nil {
		if strings.Contains(err.Error(), "cwd") && api.CodeOf(err) == api.CodeNotFound {
			return api.Errorf(api.ErrInvalid, "%v", err)
		}
		return err
	}
	return s.follow(r, info.PID, st)
}

func (s *Server) procConnect(r *http.Request, req *selectorRequest, st *stream) error {
	pid, err := s.pid(r, req.Process)
	if err != nil {
		return err
	}
	return s.follow(r, pid, st)
}

func (s *Server) procList(r *http.Request, _ *empty) (*listResponse, error) {
	procs, err := sandboxFrom(r.Context()).Agent().ListProcesses(r.Context())
	if err != nil {
		return nil, err
	}
	out := &listResponse{Processes: make([]processInfo, 0, len(procs))}
	for _, p := range procs {
		cwd := p.Cwd
		out.Processes = append(out.Processes, processInfo{
			Config: processConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", p.Cmd}, Envs: p.Envs, Cwd: &cwd},
			PID:    p.PID, Tag: p.Tag,
		})
	}
	return out, nil
}

func (s *Server) procSendInput(r *http.Request, req *sendInputRequest) (*empty, error) {
	if req.Input.PTY != nil {
		return nil, api.Errorf(api.ErrUnsupported, "pseudo-terminals (pty) are not supported by ds-sandbox")
	}
	pid, err := s.pid(r, req.Process)
	if err != nil {
		return nil, err
	}
	if err := sandboxFrom(r.Context()).Agent().SendStdin(r.Context(), pid, string(req.Input.Stdin), false); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Server) procCloseStdin(r *http.Request, req *selectorRequest) (*empty, error) {
	pid, err := s.pid(r, req.Process)
	if err != nil {
		return nil, err
	}
	if err := sandboxFrom(r.Context()).Agent().SendStdin(r.Context(), pid, "", true); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// procSendSignal accepts the Signal enum by name or number.
func (s *Server) procSendSignal(r *http.Request, req *sendSignalRequest) (*empty, error) {
	pid, err := s.pid(r, req.Process)
	if err != nil {
		return nil, err
	}
	var sig string
	switch strings.Trim(string(req.Signal), `"`) {
	case "SIGNAL_SIGKILL", "9":
		sig = "SIGKILL"
	case "SIGNAL_SIGTERM", "15":
		sig = "SIGTERM"
	default:
		return nil, api.Errorf(api.ErrInvalid, "signal %s: only SIGNAL_SIGTERM and SIGNAL_SIGKILL are defined", req.Signal)
	}
	if err := sandboxFrom(r.Context()).Agent().Signal(r.Context(), pid, sig); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func unimplemented[Req, Resp any](what string) func(*http.Request, *Req) (*Resp, error) {
	return func(*http.Request, *Req) (*Resp, error) {
		return nil, api.Errorf(api.ErrUnsupported, "%s is not supported by ds-sandbox", what)
	}
}
