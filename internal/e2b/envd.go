package e2b

import (
	"compress/gzip"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

func (s *Server) envdRoutes() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		err := api.Errorf(api.ErrUnsupported, "%s %s is not served by ds-sandbox's envd", r.Method, r.URL.Path)
		if isConnect(r) {
			writeConnectUnaryError(w, err)
			return
		}
		writeError(w, err)
	})
	fs := "POST /filesystem.Filesystem/"
	mux.Handle(fs+"Stat", unary(s.fsStat))
	mux.Handle(fs+"MakeDir", unary(s.fsMakeDir))
	mux.Handle(fs+"Move", unary(s.fsMove))
	mux.Handle(fs+"ListDir", unary(s.fsListDir))
	mux.Handle(fs+"Remove", unary(s.fsRemove))
	mux.Handle(fs+"WatchDir", s.counted(serverStream(s.fsWatchDir)))
	mux.Handle(fs+"CreateWatcher", unary(s.fsCreateWatcher))
	mux.Handle(fs+"GetWatcherEvents", unary(s.fsGetWatcherEvents))
	mux.Handle(fs+"RemoveWatcher", unary(s.fsRemoveWatcher))
	ps := "POST /process.Process/"
	mux.Handle(ps+"Start", s.counted(serverStream(s.procStart)))
	mux.Handle(ps+"Connect", s.counted(serverStream(s.procConnect)))
	mux.Handle(ps+"List", unary(s.procList))
	mux.Handle(ps+"SendInput", unary(s.procSendInput))
	mux.Handle(ps+"SendSignal", unary(s.procSendSignal))
	mux.Handle(ps+"CloseStdin", unary(s.procCloseStdin))
	mux.Handle(ps+"Update", unary(unimplemented[empty, empty]("pseudo-terminal resize (Update)")))
	mux.Handle(ps+"StreamInput", unary(unimplemented[empty, empty]("client streaming (StreamInput)")))
	mux.Handle("GET /files", s.counted(http.HandlerFunc(s.filesGet)))
	mux.HandleFunc("POST /files", s.filesPost)
	mux.HandleFunc("GET /envs", s.envs)
	s.envd = mux
}

// counted counts a streaming call against the owner's max_streams_per_key
// (manager.Manager.AcquireStream) while it runs; over the bound it is
// refused in the call's own error shape.
func (s *Server) counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release, err := s.m.AcquireStream(r.Context())
		if err != nil {
			switch {
			case strings.HasPrefix(r.Header.Get("Content-Type"), "application/connect+json"):
				w.Header().Set("Content-Type", "application/connect+json")
				w.WriteHeader(http.StatusOK)
				(&stream{w: w}).end(err)
			case r.Header.Get("E2b-Sandbox-Port") == InterpreterPort:
				textError(w, err)
			default:
				envdError(w, err)
			}
			return
		}
		defer release()
		h.ServeHTTP(w, r)
	})
}

// envdError writes envd's REST error {code, message}.
func envdError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if api.CodeOf(err) == api.CodeInvalid && strings.Contains(err.Error(), "is a directory") {
		st = http.StatusBadRequest
	}
	httpjson.Write(w, st, errorBody{Code: st, Message: err.Error()})
}

func (s *Server) filesGet(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		envdError(w, api.Errorf(api.ErrInvalid, "path is required"))
		return
	}
	rc, err := sandboxFrom(r.Context()).Agent().ReadFile(r.Context(), p)
	if err != nil {
		envdError(w, err)
		return
	}
	defer rc.Close()
	ct := mime.TypeByExtension(path.Ext(p))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(p)}))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

type writeInfo struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// filesPost writes files: multipart parts named "file" (target = the path
// query, else the part's filename), or an octet-stream body to the path
// query. The answer is an array, one entry per file.
func (s *Server) filesPost(w http.ResponseWriter, r *http.Request) {
	ag := sandboxFrom(r.Context()).Agent()
	target := r.URL.Query().Get("path")
	var out []writeInfo
	write := func(p string, body io.Reader) error {
		if p == "" {
			return api.Errorf(api.ErrInvalid, "no target path: give ?path= or a filename on the part")
		}
		e, err := ag.WriteFile(r.Context(), p, body)
		if err != nil {
			return err
		}
		out = append(out, writeInfo{Path: e.Path, Name: e.Name, Type: "file"})
		return nil
	}
	var body io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			envdError(w, api.Errorf(api.ErrInvalid, "gzip body: %v", err))
			return
		}
		defer zr.Close()
		body = zr
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == "multipart/form-data":
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				envdError(w, api.Errorf(api.ErrInvalid, "multipart body: %v", err))
				return
			}
			if part.FormName() != "file" {
				continue
			}
			p := target
			if p == "" {
				// FileName() strips directories; the SDK puts the full path there.
				_, pp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
				p = pp["filename"]
			}
			if err := write(p, part); err != nil {
				envdError(w, err)
				return
			}
		}
	default:
		if err := write(target, body); err != nil {
			envdError(w, err)
			return
		}
	}
	if out == nil {
		out = []writeInfo{}
	}
	httpjson.Write(w, http.StatusOK, out)
}

// envs answers the sandbox's default environment (the create's envVars).
func (s *Server) envs(w http.ResponseWriter, r *http.Request) {
	res, err := sandboxFrom(r.Context()).Agent().RunCommand(r.Context(), api.ProcessRequest{Cmd: "env -0"}, nil)
	if err != nil {
		envdError(w, err)
		return
	}
	out := map[string]string{}
	for _, kv := range strings.Split(res.Stdout, "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			out[k] = v
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}
