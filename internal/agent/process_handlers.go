package agent

import (
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// registerProcessRoutes serves the process service (see the package doc).
func (s *Server) registerProcessRoutes() {
	s.mux.HandleFunc("POST /processes", s.handleStartProcess)
	s.mux.HandleFunc("GET /processes", s.handleListProcesses)
	s.mux.HandleFunc("GET /processes/{pid}/stream", s.handleStreamProcess)
	s.mux.HandleFunc("POST /processes/{pid}/stdin", s.handleStdin)
	s.mux.HandleFunc("POST /processes/{pid}/signal", s.handleSignal)
}

// handleStartProcess starts a command. Background: answers api.ProcessInfo at
// once. Foreground: streams "start", the output as it comes and "end"; a
// client that hangs up kills the command.
func (s *Server) handleStartProcess(w http.ResponseWriter, r *http.Request) {
	var req api.ProcessRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Background {
		p, _, err := s.procs.start(req, false)
		if err != nil {
			writeError(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, p.info)
		return
	}
	p, sub, err := s.procs.start(req, true)
	if err != nil {
		writeError(w, err)
		return
	}
	defer p.detach(sub)
	nd := newNDJSON(w)
	err = nd.Send(api.ProcessEvent{Type: api.ProcStart, PID: p.pid})
	if err == nil {
		err = p.stream(r.Context(), sub, func(ev api.ProcessEvent) error { return nd.Send(ev) })
	}
	if err != nil {
		s.log.Debug("foreground process stream ended early; killing the process", "pid", p.pid, "err", err)
		p.killTree()
	}
}

func (s *Server) handleListProcesses(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, s.procs.list())
}

// handleStreamProcess streams a process's output from now on (plus output
// nobody has read yet) and its end; for a finished process, just that.
func (s *Server) handleStreamProcess(w http.ResponseWriter, r *http.Request) {
	p, err := s.processOf(r)
	if err != nil {
		writeError(w, err)
		return
	}
	sub := p.attach()
	defer p.detach(sub)
	nd := newNDJSON(w)
	if err := nd.rc.Flush(); err != nil {
		return
	}
	_ = p.stream(r.Context(), sub, func(ev api.ProcessEvent) error { return nd.Send(ev) })
}

func (s *Server) handleStdin(w http.ResponseWriter, r *http.Request) {
	p, err := s.processOf(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req api.StdinRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := p.writeStdin(r.Context(), req.Data, req.Close); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleSignal(w http.ResponseWriter, r *http.Request) {
	p, err := s.processOf(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req api.SignalRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sig, err := parseSignal(req.Signal)
	if err != nil {
		writeError(w, err)
		return
	}
	if sig == syscall.SIGKILL {
		if p.finished() {
			writeError(w, api.Errorf(api.ErrNotFound, "process %d has already exited", p.pid))
			return
		}
		p.killTree()
	} else if err := p.signal(sig); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) processOf(r *http.Request) (*process, error) {
	v := r.PathValue("pid")
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return nil, api.Errorf(api.ErrInvalid, "process id %q is not a positive number", v)
	}
	return s.procs.get(pid)
}

// signals are the signals a client may send, by name.
var signals = map[string]syscall.Signal{
	"SIGTERM": syscall.SIGTERM,
	"SIGKILL": syscall.SIGKILL,
	"SIGINT":  syscall.SIGINT,
	"SIGHUP":  syscall.SIGHUP,
	"SIGQUIT": syscall.SIGQUIT,
}

// parseSignal accepts "SIGTERM", "sigterm" and "TERM".
func parseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if sig, ok := signals[n]; ok {
		return sig, nil
	}
	return 0, api.Errorf(api.ErrInvalid, "signal %q is not one of SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGQUIT", name)
}
