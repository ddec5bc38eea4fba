package agent

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

func TestRunCommand(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	if _, err := a.c.MakeDir(t.Context(), "sub"); err != nil {
		t.Fatal(err)
	}
	subHost, err := filepath.EvalSymlinks(filepath.Join(a.workspace, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  api.ProcessRequest
		want api.CommandResult
	}{
		{"exit code and streams", api.ProcessRequest{Cmd: "echo hi; echo err >&2; exit 3"},
			api.CommandResult{ExitCode: 3, Stdout: "hi\n", Stderr: "err\n"}},
		{"envs", api.ProcessRequest{Cmd: `echo "$FOO-$BAR"`, Envs: map[string]string{"FOO": "1", "BAR": "two words"}},
			api.CommandResult{Stdout: "1-two words\n"}},
		{"cwd relative", api.ProcessRequest{Cmd: "pwd -P", Cwd: "sub"}, api.CommandResult{Stdout: subHost + "\n"}},
		{"cwd absolute", api.ProcessRequest{Cmd: "pwd -P", Cwd: "/home/user/sub"}, api.CommandResult{Stdout: subHost + "\n"}},
		{"stdin is empty", api.ProcessRequest{Cmd: "cat; echo done"}, api.CommandResult{Stdout: "done\n"}},
		{"utf-8 kept whole", api.ProcessRequest{Cmd: `printf 'h\xc3\xa9llo \xe2\x82\xac'`}, api.CommandResult{Stdout: "héllo €"}},
		{"user is the sandbox's", api.ProcessRequest{Cmd: "true", User: "user"}, api.CommandResult{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var types []string
			got, err := a.c.RunCommand(t.Context(), tc.req, func(ev api.ProcessEvent) { types = append(types, ev.Type) })
			if err != nil {
				t.Fatalf("RunCommand: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if len(types) < 2 || types[0] != api.ProcStart || types[len(types)-1] != api.ProcEnd {
				t.Errorf("event types = %v; want start … end", types)
			}
		})
	}
}

func TestRunCommandTimeout(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	start := time.Now()
	res, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "echo before; sleep 30", TimeoutMs: 300}, nil)
	if err != nil {
		t.Fatalf("RunCommand: %v", err)
	}
	if res.ExitCode != -1 || res.Error != "timed out after 300ms" || res.Stdout != "before\n" {
		t.Errorf("result = %+v", res)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestRunCommandStreams: output reaches the client while the command still
// runs, not when it ends.
func TestRunCommandStreams(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	var runningAtFirstOutput, sawOutput bool
	res, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "echo a; sleep 1; echo b", Tag: "streams"}, func(ev api.ProcessEvent) {
		if ev.Type != api.ProcStdout || sawOutput {
			return
		}
		sawOutput = true
		ps, err := a.c.ListProcesses(t.Context())
		runningAtFirstOutput = err == nil && slices.ContainsFunc(ps, func(p api.ProcessInfo) bool { return p.Tag == "streams" })
	})
	if err != nil || res.Stdout != "a\nb\n" {
		t.Fatalf("RunCommand = %+v, %v", res, err)
	}
	if !runningAtFirstOutput {
		t.Error("the first output arrived after the command had ended")
	}
}

// TestRunCommandBackgroundChild: a command that leaves a child holding its
// stdout ends without waiting for it, and the child's later writes neither
// show up nor kill it (SIGPIPE).
func TestRunCommandBackgroundChild(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	marker := filepath.Join(a.workspace, "marker")
	res, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "(sleep 8; echo late; touch " + marker + ") & echo fg"}, nil)
	if err != nil || res.ExitCode != 0 || res.Stdout != "fg\n" {
		t.Fatalf("RunCommand = %+v, %v", res, err)
	}
	// Had it waited for the child's stdout to close, the child would have
	// written its marker first.
	if _, err := os.Stat(marker); err == nil {
		t.Error("RunCommand waited for the background child")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the background child did not survive writing to its stdout")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunCommandClientGoneKills(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx, cancel := context.WithCancel(t.Context())
	var pid int
	_, err := a.c.RunCommand(ctx, api.ProcessRequest{Cmd: "sleep 1000"}, func(ev api.ProcessEvent) {
		if ev.Type == api.ProcStart {
			pid = ev.PID
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitGone(t, pid)
}

// waitGone waits until pid has exited (a zombie counts as gone).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBackgroundProcess(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	info, err := a.c.StartProcess(ctx, api.ProcessRequest{Cmd: "echo ready; cat", Stdin: true, Tag: "cat", Envs: map[string]string{"K": "v"}})
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	want := api.ProcessInfo{PID: info.PID, Cmd: "echo ready; cat", Tag: "cat", Cwd: "/home/user", Envs: map[string]string{"K": "v"}}
	if diff := cmp.Diff(want, info); diff != "" {
		t.Errorf("info (-want +got):\n%s", diff)
	}
	ps, err := a.c.ListProcesses(ctx)
	if err != nil || !slices.ContainsFunc(ps, func(p api.ProcessInfo) bool { return p.PID == info.PID }) {
		t.Fatalf("ListProcesses = %+v, %v", ps, err)
	}

	echoed := make(chan struct{})
	var once sync.Once
	type result struct {
		res api.CommandResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		var seen strings.Builder
		res, err := a.c.ConnectProcess(ctx, info.PID, func(ev api.ProcessEvent) {
			seen.WriteString(ev.Data)
			if strings.Contains(seen.String(), "hello\n") {
				once.Do(func() { close(echoed) })
			}
		})
		done <- result{res, err}
	}()
	if err := a.c.SendStdin(ctx, info.PID, "hello\n", false); err != nil {
		t.Fatalf("SendStdin: %v", err)
	}
	select {
	case <-echoed:
	case <-time.After(10 * time.Second):
		t.Fatal("cat did not echo")
	}
	if err := a.c.SendStdin(ctx, info.PID, "", true); err != nil {
		t.Fatalf("close stdin: %v", err)
	}
	r := <-done
	// "ready" was printed before anyone connected: the backlog delivers it.
	if r.err != nil || r.res.ExitCode != 0 || r.res.Stdout != "ready\nhello\n" {
		t.Fatalf("ConnectProcess = %+v, %v", r.res, r.err)
	}
	// Finished: gone from the list, but a late wait still gets the end.
	ps, _ = a.c.ListProcesses(ctx)
	if slices.ContainsFunc(ps, func(p api.ProcessInfo) bool { return p.PID == info.PID }) {
		t.Errorf("finished process still listed: %+v", ps)
	}
	res, err := a.c.ConnectProcess(ctx, info.PID, nil)
	if err != nil || res.ExitCode != 0 || res.Stdout != "" {
		t.Errorf("late ConnectProcess = %+v, %v", res, err)
	}
	wantErr(t, "stdin after exit", a.c.SendStdin(ctx, info.PID, "x", false), api.ErrNotFound)
}

func TestKillProcess(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	info, err := a.c.StartProcess(ctx, api.ProcessRequest{Cmd: "sleep 1000"})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "stdin without stdin", a.c.SendStdin(ctx, info.PID, "x", false), api.ErrInvalid)
	if err := a.c.Kill(ctx, info.PID); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	res, err := a.c.ConnectProcess(ctx, info.PID, nil)
	if err != nil || res.ExitCode != -1 || !strings.Contains(res.Error, "killed by signal 9") {
		t.Fatalf("ConnectProcess after kill = %+v, %v", res, err)
	}
	wantErr(t, "kill after exit", a.c.Kill(ctx, info.PID), api.ErrNotFound)
}

func TestSignalProcess(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	info, err := a.c.StartProcess(ctx, api.ProcessRequest{Cmd: `trap 'echo got TERM; exit 7' TERM; echo armed; while :; do sleep 0.05; done`})
	if err != nil {
		t.Fatal(err)
	}
	armed := make(chan struct{})
	var once sync.Once
	done := make(chan api.CommandResult, 1)
	go func() {
		res, _ := a.c.ConnectProcess(ctx, info.PID, func(ev api.ProcessEvent) {
			if strings.Contains(ev.Data, "armed") {
				once.Do(func() { close(armed) })
			}
		})
		done <- res
	}()
	<-armed
	wantErr(t, "bad signal", a.c.Signal(ctx, info.PID, "SIGSEGV"), api.ErrInvalid)
	if err := a.c.Signal(ctx, info.PID, "TERM"); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	if res := <-done; res.ExitCode != 7 || !strings.Contains(res.Stdout, "got TERM") {
		t.Errorf("result = %+v", res)
	}
}

func TestProcessBadRequests(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	writeString(t, a, "file.txt", "")
	for _, tc := range []struct {
		name string
		req  api.ProcessRequest
		want error
	}{
		{"empty cmd", api.ProcessRequest{Cmd: "  "}, api.ErrInvalid},
		{"negative timeout", api.ProcessRequest{Cmd: "true", TimeoutMs: -1}, api.ErrInvalid},
		{"missing cwd", api.ProcessRequest{Cmd: "true", Cwd: "nope"}, api.ErrNotFound},
		{"cwd is a file", api.ProcessRequest{Cmd: "true", Cwd: "file.txt"}, api.ErrInvalid},
		{"cwd outside", api.ProcessRequest{Cmd: "true", Cwd: "/etc"}, api.ErrPermission},
		{"cwd synthesized", api.ProcessRequest{Cmd: "true", Cwd: "/home"}, api.ErrPermission},
		{"bad env name", api.ProcessRequest{Cmd: "true", Envs: map[string]string{"A=B": "x"}}, api.ErrInvalid},
		{"background via RunCommand", api.ProcessRequest{Cmd: "true", Background: true}, api.ErrInvalid},
	} {
		_, err := a.c.RunCommand(ctx, tc.req, nil)
		wantErr(t, tc.name, err, tc.want)
	}
	for _, tc := range []struct{ name, body, msg string }{
		{"malformed JSON", `{"cmd": `, "request body"},
		{"unknown field", `{"cmd":"true","bogus":1}`, `unknown field "bogus"`},
		{"empty body", ``, "request body is empty"},
	} {
		err := a.post(ctx, "/processes", strings.NewReader(tc.body))
		wantErr(t, tc.name, err, api.ErrInvalid)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: message %v does not say %q", tc.name, err, tc.msg)
		}
	}
	const nopid = 1 << 30
	_, err := a.c.ConnectProcess(ctx, nopid, nil)
	wantErr(t, "connect unknown pid", err, api.ErrNotFound)
	wantErr(t, "signal unknown pid", a.c.Signal(ctx, nopid, "SIGTERM"), api.ErrNotFound)
	wantErr(t, "stdin unknown pid", a.c.SendStdin(ctx, nopid, "", true), api.ErrNotFound)
	err = a.post(ctx, "/processes/abc/signal", strings.NewReader(`{"signal":"SIGTERM"}`))
	wantErr(t, "signal pid abc", err, api.ErrInvalid)
}

// TestBackgroundOutputBounded: a process that prints far more than the
// backlog holds while nobody listens costs bounded memory; the reader learns
// what was dropped and gets the tail.
func TestBackgroundOutputBounded(t *testing.T) {
	t.Parallel()
	a := newLocalAgent(t)
	ctx := t.Context()
	info, err := a.c.StartProcess(ctx, api.ProcessRequest{Cmd: "head -c 5000000 /dev/zero | tr '\\0' a; echo END"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.s.procs.get(info.PID)
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	res, err := a.c.ConnectProcess(ctx, info.PID, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("ConnectProcess = %v, %v", res.ExitCode, err)
	}
	if len(res.Stdout) > maxQueuedOutput+1024 || !strings.Contains(res.Stdout, "bytes of stdout dropped") || !strings.HasSuffix(res.Stdout, "aaaaEND\n") {
		t.Errorf("stdout: %d bytes, starting %q", len(res.Stdout), res.Stdout[:min(len(res.Stdout), 120)])
	}
}

func TestOutQueueBounds(t *testing.T) {
	t.Parallel()
	var q outQueue
	chunk := []byte(strings.Repeat("x", 1000))
	for range 3000 {
		q.push(api.ProcStdout, chunk)
		q.push(api.ProcStderr, []byte("e"))
	}
	if q.size[0] > maxQueuedOutput || len(q.chunks) > maxQueuedChunks {
		t.Fatalf("queue holds %d stdout bytes in %d chunks", q.size[0], len(q.chunks))
	}
	evs := q.drain()
	if evs[0].Type != api.ProcStdout || !strings.Contains(evs[0].Data, "dropped") {
		t.Errorf("first event %+v is not a drop marker", evs[0])
	}
	if !q.empty() {
		t.Error("drain left output behind")
	}
}

func TestCompleteUTF8(t *testing.T) {
	t.Parallel()
	euro := "€" // 3 bytes
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"abc", 3}, {"a" + euro, 4}, {"a" + euro[:1], 1}, {"a" + euro[:2], 1}, {"a\xff", 2},
	} {
		if got := completeUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("completeUTF8(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestResolveUser(t *testing.T) {
	t.Parallel()
	lookup := func(name string) (*user.User, error) {
		if name == "nobody" {
			return &user.User{Username: "nobody", Uid: "65534", Gid: "65534", HomeDir: "/nonexistent"}, nil
		}
		return nil, user.UnknownUserError(name)
	}
	for _, tc := range []struct {
		name, user string
		euid       int
		wantUID    int // -1: runs as the agent
		want       error
	}{
		{"default", "", 1000, -1, nil},
		{"the sandbox user", "user", 1000, -1, nil},
		{"other user as non-root", "nobody", 1000, 0, api.ErrUnsupported},
		{"other user as root", "nobody", 0, 65534, nil},
		{"unknown user as root", "ghost", 0, 0, api.ErrInvalid},
	} {
		as, err := resolveUser(tc.user, "user", tc.euid, lookup)
		wantErr(t, tc.name, err, tc.want)
		if tc.want != nil {
			continue
		}
		if uid := -1; as != nil {
			uid = int(as.uid)
			if uid != tc.wantUID {
				t.Errorf("%s: uid %d, want %d", tc.name, uid, tc.wantUID)
			}
		} else if tc.wantUID != -1 {
			t.Errorf("%s: runs as the agent, want uid %d", tc.name, tc.wantUID)
		}
	}
	_, err := resolveUser("nobody", "user", 1000, lookup)
	if err == nil || !strings.Contains(err.Error(), "this sandbox runs as uid 1000") {
		t.Errorf("message = %v", err)
	}
}

func TestRunAsOtherUser(t *testing.T) {
	t.Parallel()
	testenv.Require(t, "root", os.Geteuid() == 0, "switching users needs root")
	_, err := user.Lookup("nobody")
	testenv.RequireNoError(t, "a user nobody", err)
	a := startAgent(t, Config{Workdir: "/", User: "user"})
	res, err := a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "id -un; echo $HOME", User: "nobody"}, nil)
	if err != nil || res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "nobody\n") {
		t.Fatalf("RunCommand as nobody = %+v, %v", res, err)
	}
	_, err = a.c.RunCommand(t.Context(), api.ProcessRequest{Cmd: "true", User: "no-such-user-xyz"}, nil)
	wantErr(t, "unknown user", err, api.ErrInvalid)
}

func TestParseSignal(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "kill": syscall.SIGKILL, "sigint": syscall.SIGINT, " HUP": syscall.SIGHUP} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "SIGSEGV", "9", "SIGSTOP"} {
		if _, err := parseSignal(in); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("parseSignal(%q) = %v, want ErrInvalid", in, err)
		}
	}
}
