package e2b

import (
	"context"
	"crypto/rand"
	"net/http"
	"sync"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// Polling watchers (CreateWatcher / GetWatcherEvents / RemoveWatcher), which
// the Python sync SDK's watch_dir uses instead of the WatchDir stream. A
// watcher outlives the request that made it: it lasts until RemoveWatcher or
// until its sandbox goes away, and buffers at most maxWatcherEvents events
// between polls (older ones are dropped).

const (
	maxWatcherEvents = 10000
	maxWatchers      = 1000
)

type watcher struct {
	sandboxID string
	w         *agentclient.DirWatch

	mu     sync.Mutex
	events []map[string]any
}

type watchers struct {
	mu sync.Mutex
	m  map[string]*watcher
}

type createWatcherResponse struct {
	WatcherID string `json:"watcherId"`
}

type watcherRequest struct {
	WatcherID string `json:"watcherId"`
}

type watcherEventsResponse struct {
	Events []map[string]any `json:"events"`
}

func (s *Server) fsCreateWatcher(r *http.Request, req *watchDirRequest) (*createWatcherResponse, error) {
	sbx := sandboxFrom(r.Context())
	s.watch.mu.Lock()
	n := len(s.watch.m)
	s.watch.mu.Unlock()
	if n >= maxWatchers {
		return nil, api.Errorf(api.ErrLimit, "%d watchers are open; remove some with RemoveWatcher", n)
	}
	wt := &watcher{sandboxID: sbx.ID()}
	// The watch lives past this request: its context is the server's, and
	// it ends with RemoveWatcher or when the sandbox's agent goes away.
	w, err := sbx.Agent().WatchDir(context.WithoutCancel(r.Context()), req.Path, req.Recursive, func(ev api.FilesystemEvent) {
		wt.mu.Lock()
		defer wt.mu.Unlock()
		if len(wt.events) >= maxWatcherEvents {
			wt.events = wt.events[1:]
		}
		wt.events = append(wt.events, map[string]any{"name": ev.Name, "type": eventType(ev.Op)})
	})
	if err != nil {
		return nil, err
	}
	wt.w = w
	id := rand.Text()
	s.watch.mu.Lock()
	s.watch.m[id] = wt
	s.watch.mu.Unlock()
	go func() { // forget a watcher whose sandbox (or agent stream) went away
		<-w.Done()
		s.watch.mu.Lock()
		if s.watch.m[id] == wt && w.Err() != nil {
			delete(s.watch.m, id)
		}
		s.watch.mu.Unlock()
	}()
	return &createWatcherResponse{WatcherID: id}, nil
}

func (s *Server) lookupWatcher(r *http.Request, id string) (*watcher, error) {
	s.watch.mu.Lock()
	wt, ok := s.watch.m[id]
	s.watch.mu.Unlock()
	if !ok || wt.sandboxID != sandboxFrom(r.Context()).ID() {
		return nil, api.Errorf(api.ErrNotFound, "watcher %q (never created, removed, or its sandbox is gone)", id)
	}
	return wt, nil
}

func (s *Server) fsGetWatcherEvents(r *http.Request, req *watcherRequest) (*watcherEventsResponse, error) {
	wt, err := s.lookupWatcher(r, req.WatcherID)
	if err != nil {
		return nil, err
	}
	wt.mu.Lock()
	evs := wt.events
	wt.events = nil
	wt.mu.Unlock()
	if evs == nil {
		evs = []map[string]any{}
	}
	return &watcherEventsResponse{Events: evs}, nil
}

func (s *Server) fsRemoveWatcher(r *http.Request, req *watcherRequest) (*empty, error) {
	wt, err := s.lookupWatcher(r, req.WatcherID)
	if err != nil {
		return nil, err
	}
	s.watch.mu.Lock()
	delete(s.watch.m, req.WatcherID)
	s.watch.mu.Unlock()
	_ = wt.w.Stop()
	return &empty{}, nil
}
