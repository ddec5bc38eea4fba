package agentclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ReadFile opens the file at path (relative paths are against the workdir) and
// streams its bytes; the caller closes the reader. Errors: api.ErrNotFound,
// api.ErrPermission (outside the sandbox), api.ErrInvalid (a directory).
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, "/files", pathQuery(path), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteFile streams r into the file at path, creating parent directories, and
// replaces the file atomically once r is exhausted. It returns the new entry.
func (c *Client) WriteFile(ctx context.Context, path string, r io.Reader) (api.EntryInfo, error) {
	var e api.EntryInfo
	// A plain io.Reader wrapper keeps net/http from special-casing (and
	// buffering) known reader types: the body is streamed chunk by chunk.
	err := c.do(ctx, http.MethodPut, "/files", pathQuery(path), struct{ io.Reader }{r}, &e)
	return e, err
}

// Remove deletes the file, or the directory and everything in it, at path.
func (c *Client) Remove(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodDelete, "/files", pathQuery(path), nil, nil)
}

// Stat describes the entry at path (a symlink itself, not its target).
func (c *Client) Stat(ctx context.Context, path string) (api.EntryInfo, error) {
	var e api.EntryInfo
	err := c.do(ctx, http.MethodGet, "/files/stat", pathQuery(path), nil, &e)
	return e, err
}

// Exists reports whether something exists at path.
func (c *Client) Exists(ctx context.Context, path string) (bool, error) {
	_, err := c.Stat(ctx, path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, api.ErrNotFound):
		return false, nil
	}
	return false, err
}

// List returns the entries below the directory at path, down to depth levels
// (0 or 1: its children; at most 32), sorted by path.
func (c *Client) List(ctx context.Context, path string, depth int) ([]api.EntryInfo, error) {
	q := pathQuery(path)
	if depth > 0 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out []api.EntryInfo
	err := c.do(ctx, http.MethodGet, "/files/list", q, nil, &out)
	return out, err
}

// MakeDir creates the directory at path and its parents; an existing directory
// is fine, an existing file is api.ErrExists.
func (c *Client) MakeDir(ctx context.Context, path string) (api.EntryInfo, error) {
	var e api.EntryInfo
	err := c.do(ctx, http.MethodPost, "/files/mkdir", pathQuery(path), nil, &e)
	return e, err
}

// Rename moves from to to and returns the entry at to. It creates no parent
// directories and replaces nothing (an existing destination is api.ErrExists).
func (c *Client) Rename(ctx context.Context, from, to string) (api.EntryInfo, error) {
	var e api.EntryInfo
	err := c.do(ctx, http.MethodPost, "/files/rename", nil, api.RenameRequest{From: from, To: to}, &e)
	return e, err
}

// DirWatch is a running watch started by WatchDir.
type DirWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
	once   sync.Once
}

// WatchDir watches the directory at path (and, when recursive, every
// directory below it, including ones created later) and calls fn for each
// change, from one goroutine, in order.
//
// It returns once the agent has the watch in place: every change made after
// WatchDir returns is reported. Stop the watch with DirWatch.Stop or by
// cancelling ctx; both end the server side's stream too.
func (c *Client) WatchDir(ctx context.Context, path string, recursive bool, fn func(api.FilesystemEvent)) (*DirWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	q := pathQuery(path)
	q.Set("recursive", strconv.FormatBool(recursive))
	resp, err := c.send(ctx, http.MethodGet, "/files/watch", q, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &DirWatch{cancel: cancel, done: make(chan struct{})}
	go func() { // exits when the stream ends: Stop or ctx cancels the request
		defer close(w.done)
		defer cancel()
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev api.FilesystemEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				w.err = fmt.Errorf("agent: watch %s: bad event: %w", path, err)
				return
			}
			fn(ev)
		}
		switch {
		case ctx.Err() != nil:
		case sc.Err() != nil:
			w.err = fmt.Errorf("agent: watch %s: %v: %w", path, sc.Err(), api.ErrUnavailable)
		default:
			w.err = fmt.Errorf("agent: watch %s: the agent ended the stream (directory removed or agent stopping): %w", path, api.ErrUnavailable)
		}
	}()
	return w, nil
}

// Stop ends the watch and waits until fn will not be called again. It returns
// the error that ended the watch before Stop, if any.
func (w *DirWatch) Stop() error {
	w.once.Do(w.cancel)
	<-w.done
	return w.err
}

// Done is closed when the watch has ended (Stop, ctx, or the agent's side).
func (w *DirWatch) Done() <-chan struct{} { return w.done }

// Err is why the watch ended on its own (nil while running or after Stop).
func (w *DirWatch) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

func pathQuery(p string) url.Values { return url.Values{"path": {p}} }
