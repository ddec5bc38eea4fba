package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/httpapi"
)

// interruptible is a cell that records being interrupted in the kernel's
// state (stopped = True) and otherwise runs until its 10-minute timeout.
const interruptible = "import time\nstopped = False\ntry:\n    while True:\n        %s\nexcept KeyboardInterrupt:\n    stopped = True\n"

// waitAudit polls the audit log until a record matches (the handler writes
// it after the response ends), bounded by the test's deadline.
func (e *env) waitAudit(t *testing.T, match func(audit.Record) bool) audit.Record {
	t.Helper()
	for {
		b, _ := os.ReadFile(e.auditLn)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var rec audit.Record
			if json.Unmarshal([]byte(l), &rec) == nil && match(rec) {
				return rec
			}
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("no matching audit record in %s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stoppedAfter runs print(stopped) in the sandbox's default context: it
// answers only once the previous cell ended, so a cell that was not
// interrupted fails the test at ctx's deadline.
func (e *env) stoppedAfter(t *testing.T, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	body := strings.NewReader(`{"code": "print(stopped)"}`)
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/sandboxes/"+id+"/execute?wait=true", body)
	req.Header.Set("X-API-Key", aliceKey)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the next cell did not run: the interrupted one still holds the context: %v", err)
	}
	defer r.Body.Close()
	var exec api.Execution
	if err := json.NewDecoder(r.Body).Decode(&exec); err != nil || r.StatusCode != 200 {
		t.Fatalf("next cell: %d %v", r.StatusCode, err)
	}
	out := strings.TrimSpace(strings.Join(exec.Logs.Stdout, ""))
	if exec.Error != nil {
		// Say why, for the failure message: a kernel killed after its
		// interrupt grace comes back fresh, without the variable.
		out += fmt.Sprintf(" [error %s: %s; notices %q]", exec.Error.Name, exec.Error.Value, exec.Notices)
	}
	return out
}

// TestStalledReaderIsCut: a raw TCP client that stops reading an execution
// stream is cut after the stall bound, its cell is interrupted (the context
// and its state are kept), the execution is audited as cancelled, and what
// the client reads when it resumes is whole events and then a broken body.
func TestStalledReaderIsCut(t *testing.T) {
	t.Parallel()
	// Not shorter: on a loaded machine a bound of 1 s cut even the first
	// write, before the response's headers.
	e := newServerWith(t, nil, httpapi.Options{StallTimeout: 3 * time.Second})
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	// Steady output (about 8 MB/s), enough to fill the socket buffers soon.
	code := fmt.Sprintf(interruptible, "print('x' * 16384); time.sleep(0.002)")
	body, _ := json.Marshal(api.ExecuteRequest{Code: code, TimeoutMs: 600_000})
	fmt.Fprintf(conn, "POST /v1/sandboxes/%s/execute HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		sbx.SandboxID, aliceKey, len(body), body)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("execute: %d %s", resp.StatusCode, b)
	}
	// Stop reading. The cell floods; the daemon must cut us and interrupt it.
	if got := e.stoppedAfter(t, sbx.SandboxID); got != "True" {
		t.Fatalf("stopped = %q after the cut, want True (the cell was interrupted, its state kept)", got)
	}
	rec := e.waitAudit(t, func(r audit.Record) bool {
		return r.Action == "code.execute" && r.SandboxID == sbx.SandboxID && r.Outcome != audit.OK
	})
	if rec.Outcome != audit.Cancelled || !strings.Contains(rec.Error, "stopped reading") {
		t.Fatalf("audit record of the cut execution: %+v", rec)
	}

	// Resume reading: whole events only, then a body that is not ended
	// cleanly (no end or failure event could be sent to a cut client).
	rd := bufio.NewReader(resp.Body)
	n := 0
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatalf("the cut stream ended cleanly after %d events", n)
			}
			break
		}
		var ev api.ExecEvent
		if jerr := json.Unmarshal(line, &ev); jerr != nil {
			t.Fatalf("event %d is torn: %v (%.80q)", n, jerr, line)
		}
		if ev.Type == api.EventEnd || ev.Type == api.EventFailure {
			t.Fatalf("a cut client got a final event: %+v", ev)
		}
		n++
	}
}

// TestClientGoneIsCancelled: a client that goes away during an execution is
// recorded as cancelled (status 499 in metrics and the audit log), not as an
// internal error, and its cell is interrupted.
func TestClientGoneIsCancelled(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil)
	sbx := e.create(t, aliceKey, api.CreateSandboxRequest{})
	ctx, cancel := context.WithCancel(t.Context())
	code := "open('running', 'w').close()\n" + fmt.Sprintf(interruptible, "time.sleep(0.05)")
	body, _ := json.Marshal(api.ExecuteRequest{Code: code, TimeoutMs: 600_000})
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/sandboxes/"+sbx.SandboxID+"/execute", strings.NewReader(string(body)))
	req.Header.Set("X-API-Key", aliceKey)
	done := make(chan error, 1)
	go func() {
		r, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		done <- err
	}()
	// Cancel once the cell runs (it made a file), before it sent any event.
	for e.do(t, aliceKey, "GET", "/v1/sandboxes/"+sbx.SandboxID+"/files/stat?path=running", nil).status != 200 {
		select {
		case <-t.Context().Done():
			t.Fatal("the cell never started")
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	if got := e.stoppedAfter(t, sbx.SandboxID); got != "True" {
		t.Fatalf("stopped = %q after the client went away, want True", got)
	}
	rec := e.waitAudit(t, func(r audit.Record) bool {
		return r.Action == "code.execute" && r.SandboxID == sbx.SandboxID && r.Outcome != audit.OK
	})
	if rec.Outcome != audit.Cancelled || rec.Status != api.StatusClientClosed {
		t.Fatalf("audit record of the abandoned execution: %+v", rec)
	}
	m := e.do(t, adminKey, "GET", "/metrics", nil)
	if !strings.Contains(string(m.body), `dssandbox_errors_total{code="cancelled"} 1`) || strings.Contains(string(m.body), `code="internal"`) {
		t.Fatalf("metrics:\n%s", grepLines(string(m.body), "errors_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
