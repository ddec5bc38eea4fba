package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/dataset"
	"github.com/ds-sandbox/ds-sandbox/internal/httpjson"
)

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) error {
	list, err := s.m.ListTemplates(r.Context())
	if err != nil && len(list) == 0 {
		return err
	}
	httpjson.Write(w, http.StatusOK, nonNil(list))
	return nil
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) error {
	t, err := s.m.GetTemplate(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, t)
	return nil
}

// putTemplate stores a template as YAML in the state directory's templates/.
func (s *Server) putTemplate(w http.ResponseWriter, r *http.Request) error {
	var t api.Template
	if err := s.decode(w, r, &t); err != nil {
		return err
	}
	id := r.PathValue("id")
	if t.ID == "" {
		t.ID = id
	}
	if t.ID != id {
		return api.Errorf(api.ErrInvalid, "template id %q in the body differs from %q in the path", t.ID, id)
	}
	if err := s.m.SaveTemplate(r.Context(), t); err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, t)
	return nil
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	if err := s.m.DeleteTemplate(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request) error {
	list, err := s.m.ListWorkspaces(r.Context())
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, nonNil(list))
	return nil
}

func (s *Server) getWorkspace(w http.ResponseWriter, r *http.Request) error {
	ws, err := s.m.GetWorkspace(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, ws)
	return nil
}

func (s *Server) deleteWorkspace(w http.ResponseWriter, r *http.Request) error {
	if err := s.m.RemoveWorkspace(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// grantWorkspace lets another key use a workspace (PUT) or no longer
// (DELETE).
func (s *Server) grantWorkspace(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	auditRecord(r).Detail = map[string]string{"grantee": key}
	ws, err := s.m.GrantWorkspace(r.Context(), r.PathValue("id"), key, r.Method == http.MethodPut)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, ws)
	return nil
}

func (s *Server) listDatasets(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	list, err := s.m.ListDatasets(r.Context(), dataset.Filter{NameContains: q.Get("name_contains"), Tags: q["tag"], Format: q.Get("format")})
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, nonNil(list))
	return nil
}

func (s *Server) getDataset(w http.ResponseWriter, r *http.Request) error {
	d, err := s.m.GetDataset(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, d)
	return nil
}

// publishDataset makes a dataset visible to every key (PUT) or to its owner
// only (DELETE).
func (s *Server) publishDataset(w http.ResponseWriter, r *http.Request) error {
	d, err := s.m.PublishDataset(r.Context(), r.PathValue("name"), r.Method == http.MethodPut)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, d)
	return nil
}

type registerRequest struct {
	Source      string   `json:"source"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
}

// registerDataset registers a file or directory that is already on the
// server's host (admin keys only: it reads host paths).
func (s *Server) registerDataset(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if !filepath.IsAbs(req.Source) {
		return api.Errorf(api.ErrInvalid, "source %q must be an absolute path on the server", req.Source)
	}
	d, err := s.m.RegisterDataset(r.Context(), req.Source, req.Name, req.Description, req.Tags)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusCreated, d)
	return nil
}

// uploadDataset registers the request body as a one-file dataset
// (?filename=data.csv&description=…&tag=…).
func (s *Server) uploadDataset(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	name := r.PathValue("name")
	filename := q.Get("filename")
	if filename == "" {
		filename = name
	}
	if err := dataset.ValidateName(name); err != nil {
		return err
	}
	if err := dataset.ValidateFileName(filename); err != nil {
		return fmt.Errorf("filename: %w", err)
	}
	if s.cfg.MaxUploadMB > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxUploadMB)<<20)
	}
	tmp, err := os.MkdirTemp(s.cfg.StateDir, ".upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p := filepath.Join(tmp, filename)
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return api.Errorf(api.ErrTooLarge, "upload is larger than %d MiB (max_upload_mb)", s.cfg.MaxUploadMB)
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		return api.Errorf(api.ErrNoSpace, "upload: the server's disk is full: %v", err)
	case err != nil && r.Context().Err() == nil && errors.Is(err, io.ErrUnexpectedEOF):
		return api.Errorf(api.ErrInvalid, "upload: the body ended early: %v", err)
	case err != nil:
		return fmt.Errorf("upload: %w", err)
	}
	d, err := s.m.RegisterUpload(r.Context(), p, name, q.Get("description"), q["tag"])
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusCreated, d)
	return nil
}

func (s *Server) deleteDataset(w http.ResponseWriter, r *http.Request) error {
	if err := s.m.RemoveDataset(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
