package agent

import (
	"io"
	"net/http"
	"strconv"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

// registerFileRoutes serves the files service (see the package doc).
func (s *Server) registerFileRoutes() {
	s.mux.HandleFunc("GET /files", s.handleReadFile)
	s.mux.HandleFunc("PUT /files", s.handleWriteFile)
	s.mux.HandleFunc("DELETE /files", s.handleRemoveFile)
	s.mux.HandleFunc("GET /files/stat", s.handleStat)
	s.mux.HandleFunc("GET /files/list", s.handleList)
	s.mux.HandleFunc("POST /files/mkdir", s.handleMakeDir)
	s.mux.HandleFunc("POST /files/rename", s.handleRename)
	s.mux.HandleFunc("GET /files/watch", s.handleWatch)
}

// handleReadFile streams a regular file's bytes; nothing is buffered beyond
// io.Copy's buffer (or the kernel's, with sendfile).
func (s *Server) handleReadFile(w http.ResponseWriter, r *http.Request) {
	file, fi, _, err := s.fs.openRead(r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer file.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// Files of /proc and the like report size 0 but have content: stream them
	// chunked. Others announce their size; a file that shrinks meanwhile ends
	// the response early, which the client sees as an unexpected EOF.
	if size := fi.Size(); size > 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.CopyN(w, file, size)
		return
	}
	_, _ = io.Copy(w, file)
}

// handleWriteFile streams the request body into the file (see FS.writeFile).
func (s *Server) handleWriteFile(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		writeError(w, api.Errorf(api.ErrInvalid, "write: the path query parameter is required"))
		return
	}
	e, err := s.fs.writeFile(p, r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, e)
}

// handleRemoveFile removes a file or a directory tree. The path is required:
// an empty path would otherwise mean the whole workdir.
func (s *Server) handleRemoveFile(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		writeError(w, api.Errorf(api.ErrInvalid, "remove: the path query parameter is required"))
		return
	}
	if err := s.fs.remove(p); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleStat(w http.ResponseWriter, r *http.Request) {
	e, err := s.fs.stat(r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, e)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	depth := 1
	if d := q.Get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > maxListDepth {
			writeError(w, api.Errorf(api.ErrInvalid, "list: depth %q must be a number from 1 to %d", d, maxListDepth))
			return
		}
		depth = n
	}
	entries, err := s.fs.list(q.Get("path"), depth)
	if err != nil {
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, entries)
}

func (s *Server) handleMakeDir(w http.ResponseWriter, r *http.Request) {
	e, err := s.fs.makeDir(r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, e)
}

func (s *Server) handleRename(w http.ResponseWriter, r *http.Request) {
	var req api.RenameRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	e, err := s.fs.rename(req.From, req.To)
	if err != nil {
		writeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, e)
}

// handleWatch streams the changes below a directory until the client hangs
// up. The response headers are sent only once the watch is in place, so a
// client that has them misses no later change.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	recursive := false
	if v := q.Get("recursive"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, api.Errorf(api.ErrInvalid, "watch: recursive %q must be true or false", v))
			return
		}
		recursive = b
	}
	dw, err := s.fs.watch(q.Get("path"), recursive, s.log)
	if err != nil {
		writeError(w, err)
		return
	}
	defer dw.close()
	nd := newNDJSON(w)
	if err := nd.rc.Flush(); err != nil {
		return
	}
	dw.run(r.Context(), func(ev api.FilesystemEvent) error { return nd.Send(ev) })
}
