package agentclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// maxCollectedOutput bounds the stdout and the stderr a CommandResult holds;
// onEvent still sees everything.
const maxCollectedOutput = 64 << 20

// RunCommand runs req in the foreground and waits for its end. onEvent (may be
// nil) sees every event as it arrives: "start", output chunks, "end". A
// non-zero exit, a timeout or a kill is a result (ExitCode, Error), not an
// error; err means the command could not run or the connection failed.
// Cancelling ctx kills the command.
func (c *Client) RunCommand(ctx context.Context, req api.ProcessRequest, onEvent func(api.ProcessEvent)) (api.CommandResult, error) {
	if req.Background {
		return api.CommandResult{}, api.Errorf(api.ErrInvalid, "RunCommand runs in the foreground; use StartProcess for background: true")
	}
	return c.collect(ctx, http.MethodPost, "/processes", req, onEvent)
}

// StartProcess starts req in the background (req.Background is implied) and
// returns as soon as it runs. Its output is kept, up to a bound, for the first
// ConnectProcess.
func (c *Client) StartProcess(ctx context.Context, req api.ProcessRequest) (api.ProcessInfo, error) {
	req.Background = true
	var info api.ProcessInfo
	err := c.do(ctx, http.MethodPost, "/processes", nil, req, &info)
	return info, err
}

// ListProcesses describes the running processes started through the API.
func (c *Client) ListProcesses(ctx context.Context) ([]api.ProcessInfo, error) {
	var out []api.ProcessInfo
	err := c.do(ctx, http.MethodGet, "/processes", nil, nil, &out)
	return out, err
}

// ConnectProcess streams a process's output from now on (plus output nobody
// has read yet) to onEvent (may be nil) and waits for its end: it is also
// "wait". A process that ended within the last two minutes gives its end
// (api.ErrNotFound later). Cancelling ctx stops only the streaming.
func (c *Client) ConnectProcess(ctx context.Context, pid int, onEvent func(api.ProcessEvent)) (api.CommandResult, error) {
	return c.collect(ctx, http.MethodGet, processPath(pid, "stream"), nil, onEvent)
}

// SendStdin writes data to the stdin of a process started with Stdin, and
// closes it afterwards when closeStdin.
func (c *Client) SendStdin(ctx context.Context, pid int, data string, closeStdin bool) error {
	return c.do(ctx, http.MethodPost, processPath(pid, "stdin"), nil, api.StdinRequest{Data: data, Close: closeStdin}, nil)
}

// Signal sends sig ("SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT") to the
// process group of pid. SIGKILL also kills descendants that left the group.
func (c *Client) Signal(ctx context.Context, pid int, sig string) error {
	return c.do(ctx, http.MethodPost, processPath(pid, "signal"), nil, api.SignalRequest{Signal: sig}, nil)
}

// Kill is Signal(ctx, pid, "SIGKILL").
func (c *Client) Kill(ctx context.Context, pid int) error { return c.Signal(ctx, pid, "SIGKILL") }

func processPath(pid int, op string) string { return "/processes/" + strconv.Itoa(pid) + "/" + op }

// collect reads a process event stream into a CommandResult.
func (c *Client) collect(ctx context.Context, method, p string, body any, onEvent func(api.ProcessEvent)) (api.CommandResult, error) {
	var res api.CommandResult
	var stdout, stderr boundedText
	ended := false
	err := c.stream(ctx, method, p, nil, body, func(line []byte) error {
		var ev api.ProcessEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("agent: process stream: bad event: %w", err)
		}
		if onEvent != nil {
			onEvent(ev)
		}
		switch ev.Type {
		case api.ProcStdout:
			stdout.add(ev.Data)
		case api.ProcStderr:
			stderr.add(ev.Data)
		case api.ProcEnd:
			res.ExitCode, res.Error, ended = ev.ExitCode, ev.Error, true
		}
		return nil
	})
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if err != nil {
		return res, err
	}
	if !ended {
		return res, api.Errorf(api.ErrUnavailable, "agent: the process stream ended before the process did")
	}
	return res, nil
}

// boundedText collects up to maxCollectedOutput bytes and notes what it drops.
type boundedText struct {
	b       strings.Builder
	dropped int
}

func (t *boundedText) add(s string) {
	if room := maxCollectedOutput - t.b.Len(); room < len(s) {
		t.dropped += len(s) - max(room, 0)
		s = s[:max(room, 0)]
	}
	t.b.WriteString(s)
}

func (t *boundedText) String() string {
	if t.dropped > 0 {
		return t.b.String() + fmt.Sprintf("\n[ds-sandbox: %d more bytes not kept]\n", t.dropped)
	}
	return t.b.String()
}
