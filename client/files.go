package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// Files reads and writes a sandbox's filesystem, as the sandbox's code sees it.
// Relative paths resolve against the workdir; a path that leaves the sandbox's
// filesystem (on the local backend: its workspace) is refused with
// ErrPermission.
type Files struct {
	c *agentclient.Client
}

// Read returns a file's contents.
func (f *Files) Read(ctx context.Context, path string) ([]byte, error) {
	rc, err := f.c.ReadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// ReadStream returns a file's contents as a stream, for files too large to hold
// in memory. The caller closes it.
func (f *Files) ReadStream(ctx context.Context, path string) (io.ReadCloser, error) {
	return f.c.ReadFile(ctx, path)
}

// Write writes data to path, creating parent directories, replacing the file
// atomically.
func (f *Files) Write(ctx context.Context, path string, data []byte) (EntryInfo, error) {
	return f.c.WriteFile(ctx, path, bytes.NewReader(data))
}

// WriteStream writes everything r yields to path without holding it in memory.
func (f *Files) WriteStream(ctx context.Context, path string, r io.Reader) (EntryInfo, error) {
	return f.c.WriteFile(ctx, path, r)
}

// WriteEntry is one file of WriteMany.
type WriteEntry struct {
	Path string
	Data []byte
}

// WriteMany writes several files; it stops at the first error, which names the
// file.
func (f *Files) WriteMany(ctx context.Context, entries []WriteEntry) ([]EntryInfo, error) {
	out := make([]EntryInfo, 0, len(entries))
	for _, e := range entries {
		info, err := f.c.WriteFile(ctx, e.Path, bytes.NewReader(e.Data))
		if err != nil {
			return out, fmt.Errorf("write %s: %w", e.Path, err)
		}
		out = append(out, info)
	}
	return out, nil
}

// List lists a directory. depth 1 (or 0) lists its entries; larger depths
// descend into subdirectories.
func (f *Files) List(ctx context.Context, path string, depth int) ([]EntryInfo, error) {
	if depth <= 0 {
		depth = 1
	}
	return f.c.List(ctx, path, depth)
}

// Exists reports whether path exists.
func (f *Files) Exists(ctx context.Context, path string) (bool, error) {
	return f.c.Exists(ctx, path)
}

// GetInfo describes a file or directory.
func (f *Files) GetInfo(ctx context.Context, path string) (EntryInfo, error) {
	return f.c.Stat(ctx, path)
}

// MakeDir creates a directory and its parents.
func (f *Files) MakeDir(ctx context.Context, path string) (EntryInfo, error) {
	return f.c.MakeDir(ctx, path)
}

// Remove removes a file or a directory tree.
func (f *Files) Remove(ctx context.Context, path string) error {
	return f.c.Remove(ctx, path)
}

// Rename moves a file or directory.
func (f *Files) Rename(ctx context.Context, from, to string) (EntryInfo, error) {
	return f.c.Rename(ctx, from, to)
}

// Upload copies a local file into the sandbox at remotePath, streaming it.
func (f *Files) Upload(ctx context.Context, localPath, remotePath string) (EntryInfo, error) {
	fh, err := os.Open(localPath)
	if err != nil {
		return EntryInfo{}, fmt.Errorf("upload: %w", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.IsDir() {
		return EntryInfo{}, api.Errorf(api.ErrInvalid, "upload: %s is a directory", localPath)
	}
	return f.c.WriteFile(ctx, remotePath, fh)
}

// Download copies a sandbox file to localPath, streaming it; local parent
// directories are created. A partial download leaves no file behind.
func (f *Files) Download(ctx context.Context, remotePath, localPath string) error {
	rc, err := f.c.ReadFile(ctx, remotePath)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(localPath), 0o755); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(localPath), "."+filepath.Base(localPath)+".part-*")
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), localPath)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("download %s: %w", remotePath, err)
	}
	return nil
}

// WatchHandle stops a directory watch.
type WatchHandle struct {
	stop func() error
}

// Stop ends the watch; no event is delivered after it returns.
func (h *WatchHandle) Stop() error { return h.stop() }

// WatchDir calls fn for every change under path (and its subdirectories when
// recursive) until Stop is called or ctx is done. Events made after WatchDir
// returns are not missed.
func (f *Files) WatchDir(ctx context.Context, path string, recursive bool, fn func(FilesystemEvent)) (*WatchHandle, error) {
	stop, err := f.c.WatchDir(ctx, path, recursive, fn)
	if err != nil {
		return nil, err
	}
	return &WatchHandle{stop: stop.Stop}, nil
}
