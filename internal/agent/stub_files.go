package agent

// STUB: replaced by the real files service (fs.go, files.go).

// FS is the sandbox's filesystem view.
type FS struct{ workdir string }

func newFS(_ []Mount, workdir string) (*FS, error) { return &FS{workdir: workdir}, nil }

// HostPath resolves a sandbox path (relative paths against the workdir) to the
// host path that backs it.
func (f *FS) HostPath(p string) (string, error) { return p, nil }

func (s *Server) registerFileRoutes() {}
