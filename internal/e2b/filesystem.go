package e2b

import (
	"net/http"
	"strconv"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Messages of filesystem.Filesystem in proto3 JSON (proto/filesystem.proto).

type entryInfo struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	Path          string `json:"path"`
	Size          string `json:"size"` // int64: a string in proto3 JSON
	Mode          uint32 `json:"mode"`
	Permissions   string `json:"permissions"`
	Owner         string `json:"owner"`
	Group         string `json:"group"`
	ModifiedTime  string `json:"modifiedTime,omitempty"`
	SymlinkTarget string `json:"symlinkTarget,omitempty"`
}

type pathRequest struct {
	Path string `json:"path"`
}

type entryResponse struct {
	Entry entryInfo `json:"entry"`
}

type moveRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

type listDirRequest struct {
	Path  string `json:"path"`
	Depth uint32 `json:"depth"`
}

type listDirResponse struct {
	Entries []entryInfo `json:"entries"`
}

type watchDirRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

type empty struct{}

func fileType(t string) string {
	switch t {
	case api.FileTypeFile:
		return "FILE_TYPE_FILE"
	case api.FileTypeDir:
		return "FILE_TYPE_DIRECTORY"
	case api.FileTypeSymlink:
		return "FILE_TYPE_SYMLINK"
	}
	return "FILE_TYPE_UNSPECIFIED"
}

func (s *Server) entry(r *http.Request, e api.EntryInfo) entryInfo {
	user := sandboxFrom(r.Context()).Info().User
	out := entryInfo{
		Name: e.Name, Type: fileType(e.Type), Path: e.Path, Size: strconv.FormatInt(e.Size, 10),
		Mode: e.Mode, Permissions: e.Permissions, Owner: user, Group: user, SymlinkTarget: e.SymlinkTarget,
	}
	if !e.ModifiedTime.IsZero() {
		out.ModifiedTime = e.ModifiedTime.UTC().Format(time.RFC3339Nano)
	}
	return out
}

func (s *Server) fsStat(r *http.Request, req *pathRequest) (*entryResponse, error) {
	e, err := sandboxFrom(r.Context()).Agent().Stat(r.Context(), req.Path)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: s.entry(r, e)}, nil
}

// fsMakeDir is mkdir -p that reports an existing directory as
// already_exists (the SDK's makeDir then returns false) and an existing file
// as invalid_argument, as envd does.
func (s *Server) fsMakeDir(r *http.Request, req *pathRequest) (*entryResponse, error) {
	ag := sandboxFrom(r.Context()).Agent()
	if e, err := ag.Stat(r.Context(), req.Path); err == nil {
		if e.IsDir() {
			return nil, api.Errorf(api.ErrExists, "directory %s already exists", req.Path)
		}
		return nil, api.Errorf(api.ErrInvalid, "path %s exists and is not a directory", req.Path)
	} else if api.CodeOf(err) != api.CodeNotFound {
		return nil, err
	}
	e, err := ag.MakeDir(r.Context(), req.Path)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: s.entry(r, e)}, nil
}

func (s *Server) fsMove(r *http.Request, req *moveRequest) (*entryResponse, error) {
	e, err := sandboxFrom(r.Context()).Agent().Rename(r.Context(), req.Source, req.Destination)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: s.entry(r, e)}, nil
}

func (s *Server) fsListDir(r *http.Request, req *listDirRequest) (*listDirResponse, error) {
	depth := int(req.Depth)
	if depth == 0 {
		depth = 1
	}
	entries, err := sandboxFrom(r.Context()).Agent().List(r.Context(), req.Path, depth)
	if err != nil {
		return nil, err
	}
	out := &listDirResponse{Entries: make([]entryInfo, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, s.entry(r, e))
	}
	return out, nil
}

func (s *Server) fsRemove(r *http.Request, req *pathRequest) (*empty, error) {
	if err := sandboxFrom(r.Context()).Agent().Remove(r.Context(), req.Path); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func eventType(op string) string {
	switch op {
	case api.FsCreate:
		return "EVENT_TYPE_CREATE"
	case api.FsWrite:
		return "EVENT_TYPE_WRITE"
	case api.FsRemove:
		return "EVENT_TYPE_REMOVE"
	case api.FsRename:
		return "EVENT_TYPE_RENAME"
	case api.FsChmod:
		return "EVENT_TYPE_CHMOD"
	}
	return "EVENT_TYPE_UNSPECIFIED"
}

// fsWatchDir streams {start} first, then {filesystem: {name, type}} events
// and periodic {keepalive} (WatchDirResponse's oneof members sit at the top
// level in proto3 JSON), until the client goes away or the watch ends.
func (s *Server) fsWatchDir(r *http.Request, req *watchDirRequest, st *stream) error {
	ctx := r.Context()
	events := make(chan api.FilesystemEvent, 256)
	w, err := sandboxFrom(ctx).Agent().WatchDir(ctx, req.Path, req.Recursive, func(ev api.FilesystemEvent) {
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	if err := st.Send(msg{"start": msg{}}); err != nil {
		return nil
	}
	stop := make(chan struct{})
	defer close(stop)
	go st.keepalive(s.keepaliveInterval(r), msg{"keepalive": msg{}}, stop)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.Done():
			return w.Err()
		case ev := <-events:
			if err := st.Send(msg{"filesystem": msg{"name": ev.Name, "type": eventType(ev.Op)}}); err != nil {
				return nil
			}
		}
	}
}
