package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/agentclient"
)

// eventLog collects watch events for a test.
type eventLog chan api.FilesystemEvent

// waitFor waits until an event with op at path arrives.
func (l eventLog) waitFor(t *testing.T, op, path string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-l:
			if ev.Op == op && ev.Path == path {
				return
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", op, path)
		}
	}
}

func startWatch(t *testing.T, a *testAgent, p string, recursive bool) (*agentclient.DirWatch, eventLog) {
	t.Helper()
	l := make(eventLog, 1024)
	w, err := a.c.WatchDir(t.Context(), p, recursive, func(ev api.FilesystemEvent) { l <- ev })
	if err != nil {
		t.Fatalf("WatchDir %s: %v", p, err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w, l
}

func TestWatchEvents(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	if _, err := a.c.MakeDir(t.Context(), "w"); err != nil {
		t.Fatal(err)
	}
	_, l := startWatch(t, a, "w", false)
	host := filepath.Join(a.workspace, "w", "f.txt")
	if err := os.WriteFile(host, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, api.FsCreate, "/home/user/w/f.txt")
	l.waitFor(t, api.FsWrite, "/home/user/w/f.txt")
	if err := os.Remove(host); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, api.FsRemove, "/home/user/w/f.txt")
}

func TestWatchRecursive(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	writeString(t, a, "r/old/keep.txt", "")
	_, l := startWatch(t, a, "/home/user/r", true)

	writeString(t, a, "r/old/changed.txt", "x") // in a directory that existed before
	l.waitFor(t, api.FsCreate, "/home/user/r/old/changed.txt")

	// A file in a directory created after the watch started, written right
	// away: reported whether it beat the new watch or not.
	if err := os.MkdirAll(filepath.Join(a.workspace, "r/new/deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.workspace, "r/new/deeper/f.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, api.FsCreate, "/home/user/r/new/deeper/f.txt")
	if err := os.WriteFile(filepath.Join(a.workspace, "r/new/later.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, api.FsCreate, "/home/user/r/new/later.txt")
}

func TestWatchRefused(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	writeString(t, a, "file.txt", "")
	for _, tc := range []struct {
		path string
		want error
	}{
		{"file.txt", api.ErrInvalid},
		{"missing", api.ErrNotFound},
		{"/home", api.ErrUnsupported},
		{"/etc", api.ErrPermission},
	} {
		_, err := a.c.WatchDir(t.Context(), tc.path, false, func(api.FilesystemEvent) {})
		wantErr(t, "watch "+tc.path, err, tc.want)
	}
}

// TestWatchStopEndsServerSide checks that stopping a watch ends the agent's
// stream: no watch goroutine (the handler's loop, fsnotify's reader) is left.
// Not parallel: it counts the process's goroutines.
func TestWatchStopEndsServerSide(t *testing.T) {
	a := newLocalAgent(t)
	if err := a.c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for _, recursive := range []bool{false, true} {
		l := make(eventLog, 16)
		w, err := a.c.WatchDir(t.Context(), "", recursive, func(ev api.FilesystemEvent) {
			select {
			case l <- ev:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		writeString(t, a, "s.txt", "x")
		l.waitFor(t, api.FsCreate, "/home/user/s.txt")
		if watchGoroutines() == 0 {
			t.Fatal("no watch goroutine while watching: the check below would prove nothing")
		}
		if err := w.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for watchGoroutines() > 0 || runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after stopping; watch goroutines %d\n%s",
				before, runtime.NumGoroutine(), watchGoroutines(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func watchGoroutines() int {
	buf := make([]byte, 1<<20)
	s := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(s, "agent.(*dirWatch).run") + strings.Count(s, "fsnotify.(*inotify).readEvents")
}

func TestWatchEndsWhenDirectoryRemoved(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	if _, err := a.c.MakeDir(t.Context(), "doomed"); err != nil {
		t.Fatal(err)
	}
	w, _ := startWatch(t, a, "doomed", false)
	if err := a.c.Remove(t.Context(), "doomed"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
		wantErr(t, "watch of a removed dir", w.Err(), api.ErrUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end after its directory was removed")
	}
}
