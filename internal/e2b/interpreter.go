package e2b

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
	"github.com/ds-sandbox/ds-sandbox/internal/eventstream"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// The code interpreter (port 49999): /execute streams NDJSON in E2B's format
// over our code contexts; /contexts manages them. Its errors are plain text
// with the status the SDK maps (404 → NotFoundError, 502 → TimeoutError).

func (s *Server) interpreterRoutes() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "ds-sandbox's code interpreter has no route "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, http.StatusOK, "OK") })
	mux.Handle("POST /execute", s.counted(http.HandlerFunc(s.execute)))
	mux.HandleFunc("POST /contexts", s.createContext)
	mux.HandleFunc("GET /contexts", s.listContexts)
	mux.HandleFunc("POST /contexts/{id}/restart", s.restartContext)
	mux.HandleFunc("DELETE /contexts/{id}", s.deleteContext)
	s.ci = mux
}

// textError answers the interpreter's plain-text errors.
func textError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if api.CodeOf(err) == api.CodeUnsupported {
		st = http.StatusBadRequest // as E2B's interpreter answers a request it cannot serve
	}
	http.Error(w, err.Error(), st)
}

// language normalises a language as E2B's server does; only Python runs here.
func language(l string) (string, error) {
	switch l = strings.ToLower(strings.TrimSpace(l)); l {
	case "", "python", "python3":
		return "python", nil
	case "js", "javascript", "ts", "typescript", "r", "java", "bash", "deno":
		return "", api.Errorf(api.ErrUnsupported, "language %q is not supported: ds-sandbox's code contexts run Python; use commands.run for other languages", l)
	}
	return "", api.Errorf(api.ErrUnsupported, "language %q is not supported: ds-sandbox's code contexts run Python", l)
}

type executeRequest struct {
	Code      string            `json:"code"`
	ContextID string            `json:"context_id"`
	Language  string            `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

// stripQuotes drops the quotes around a repr'd string, as E2B's server does
// for text/plain.
func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// resultLine is E2B's result line: the formats we have, everything else in
// extra keyed by MIME type.
func resultLine(r *api.Result) map[string]any {
	out := map[string]any{"type": "result", "is_main_result": r.IsMainResult}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("text", stripQuotes(r.Text))
	set("html", r.HTML)
	set("markdown", r.Markdown)
	set("svg", r.SVG)
	set("png", r.PNG)
	set("jpeg", r.JPEG)
	set("pdf", r.PDF)
	set("latex", r.LaTeX)
	set("javascript", r.JavaScript)
	if len(r.JSON) > 0 {
		out["json"] = r.JSON
	}
	extra := map[string]json.RawMessage{}
	for k, v := range r.Other {
		switch k {
		case "e2b/data":
			out["data"] = v
		case "e2b/chart":
			out["chart"] = v
		default:
			extra[k] = v
		}
	}
	if len(extra) > 0 {
		out["extra"] = extra
	}
	return out
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request) {
	var req executeRequest
	if err := decodeBody(r, &req); err != nil {
		textError(w, err)
		return
	}
	if req.ContextID != "" && req.Language != "" {
		http.Error(w, "Only one of context_id or language can be provided", http.StatusBadRequest)
		return
	}
	if req.ContextID == "" {
		if _, err := language(req.Language); err != nil {
			textError(w, err)
			return
		}
	}
	rec := audit.FromContext(r.Context())
	rec.SetCode(req.Code, s.m.Config().AuditLogCode)
	// The lines go through a bounded queue (see eventstream): a slow client
	// never holds back the agent's stream, and one that stops reading for
	// eventstream.ExecWriteTimeout is cut and its cell interrupted.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	out := eventstream.New(w, eventstream.Options[line]{
		MaxQueued: eventstream.ExecMaxQueued, WriteTimeout: eventstream.ExecWriteTimeout,
		Size: line.size, Droppable: line.droppable,
		OnBroken: func(error) { cancel() },
	})
	var mu sync.Mutex // orders the first line against an error answer
	started := false
	send := func(l line) {
		mu.Lock()
		defer mu.Unlock()
		started = true
		out.Send(l)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // keepalive every 5 s, as E2B's server sends
		defer close(stopped)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				send(line{"type": "keepalive"})
			}
		}
	}()
	now := func() string { return time.Now().UTC().Format(time.RFC3339Nano) }
	count := 0
	exec, err := sandboxFrom(ctx).Stream(ctx, api.ExecuteRequest{Code: req.Code, ContextID: req.ContextID, Envs: req.EnvVars}, func(ev api.ExecEvent) {
		switch ev.Type {
		case api.EventStdout, api.EventStderr:
			send(line{"type": ev.Type, "text": ev.Text, "timestamp": now()})
		case api.EventResult:
			if ev.Result != nil {
				send(line(resultLine(ev.Result)))
			}
		case api.EventError:
			if ev.Error != nil {
				send(line{"type": "error", "name": ev.Error.Name, "value": ev.Error.Value, "traceback": ev.Error.Traceback})
			}
		case api.EventEnd:
			count = ev.ExecutionCount
		}
	})
	close(stop)
	<-stopped
	rec.SetExecution(exec)
	if err != nil && !started {
		_ = out.Close()
		if api.CodeOf(err) == api.CodeNotFound && req.ContextID != "" {
			http.Error(w, "Context "+req.ContextID+" not found", http.StatusNotFound)
			return
		}
		textError(w, err)
		return
	}
	if d := out.Dropped(); d > 0 {
		send(line{"type": "stderr", "text": fmt.Sprintf("[ds-sandbox: %d output lines were dropped because the client read them slower than the cell produced them]\n", d), "timestamp": now()})
	}
	if err != nil {
		send(line{"type": "error", "name": "UnexpectedEndOfExecution", "value": err.Error(), "traceback": ""})
	}
	if exec != nil && count == 0 {
		count = exec.ExecutionCount
	}
	if count > 0 {
		send(line{"type": "number_of_executions", "execution_count": count})
	}
	send(line{"type": "end_of_execution"})
	if werr := out.Close(); werr != nil {
		rec.Error = "the client stopped reading the stream and was cut: " + werr.Error()
	}
}

// line is one line of E2B's execution stream.
type line map[string]any

// size estimates the encoded size of l.
func (l line) size() int {
	n := 64
	for k, v := range l {
		n += len(k) + 8
		switch v := v.(type) {
		case string:
			n += len(v)
		case json.RawMessage:
			n += len(v)
		case map[string]json.RawMessage:
			for k, e := range v {
				n += len(k) + len(e)
			}
		}
	}
	return n
}

// droppable reports whether l may be dropped for a slow client: output and
// results may, errors and the final lines never.
func (l line) droppable() bool {
	switch l["type"] {
	case api.EventStdout, api.EventStderr, "result", "keepalive":
		return true
	}
	return false
}

func (s *Server) createContext(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Language string `json:"language"`
		Cwd      string `json:"cwd"`
	}
	if err := decodeBody(r, &req); err != nil {
		textError(w, err)
		return
	}
	lang, err := language(req.Language)
	if err != nil {
		textError(w, err)
		return
	}
	c, err := sandboxFrom(r.Context()).Agent().CreateContext(r.Context(), api.CreateContextRequest{Language: lang, Cwd: req.Cwd})
	if err != nil {
		textError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, c)
}

func (s *Server) listContexts(w http.ResponseWriter, r *http.Request) {
	cs, err := sandboxFrom(r.Context()).Agent().ListContexts(r.Context())
	if err != nil {
		textError(w, err)
		return
	}
	if cs == nil {
		cs = []api.Context{}
	}
	httpjson.Write(w, http.StatusOK, cs)
}

func (s *Server) restartContext(w http.ResponseWriter, r *http.Request) {
	if _, err := sandboxFrom(r.Context()).Agent().RestartContext(r.Context(), r.PathValue("id")); err != nil {
		if api.CodeOf(err) == api.CodeNotFound {
			http.Error(w, "Context "+r.PathValue("id")+" not found", http.StatusNotFound)
			return
		}
		textError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, nil)
}

func (s *Server) deleteContext(w http.ResponseWriter, r *http.Request) {
	if err := sandboxFrom(r.Context()).Agent().DeleteContext(r.Context(), r.PathValue("id")); err != nil {
		if api.CodeOf(err) == api.CodeNotFound {
			http.Error(w, "Context "+r.PathValue("id")+" not found", http.StatusNotFound)
			return
		}
		textError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, nil)
}
