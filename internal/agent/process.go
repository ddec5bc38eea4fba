package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
)

const (
	// finishedRetention is how long a finished background process stays
	// connectable (its end event, and output nobody has read yet).
	finishedRetention = 2 * time.Minute
	// maxFinished bounds the finished background processes kept; the oldest go
	// first.
	maxFinished = 32
	// killAllWait bounds how long killAll waits for killed processes to be reaped.
	killAllWait = 5 * time.Second
)

// processTable owns the processes started through the API. Every process has a
// waiter goroutine (tracked by wg) that reaps it and ends its streams; killAll
// is the table's exit.
//
// Locking: mu guards procs and closed; it is taken before a process's own mu,
// never after.
type processTable struct {
	cfg   *Config
	fs    *FS
	env   *environ // the commands' environment (cfg.Env, extended by POST /env)
	log   *slog.Logger
	shell string
	// wrap is the prlimit(1) command line that sets cfg.Limits before the
	// shell starts (nil: none needed, or prlimit is not installed).
	wrap []string
	euid int

	mu        sync.Mutex
	procs     map[int]*process      // running, and finished background ones for a while
	lingering map[*os.File]struct{} // output pipes still held by descendants of finished processes
	closed    bool
	wg        sync.WaitGroup
}

func newProcessTable(cfg *Config, fs *FS) *processTable {
	shell := "/bin/sh"
	if _, err := os.Stat("/bin/bash"); err == nil {
		shell = "/bin/bash"
	}
	t := &processTable{cfg: cfg, fs: fs, log: cfg.Logger, shell: shell, euid: os.Geteuid(),
		procs: map[int]*process{}, lingering: map[*os.File]struct{}{}}
	t.wrap = cfg.Limits.wrapper()
	return t
}

// start validates req and starts its command. With attach, the returned
// subscriber sees all of the process's output; otherwise output is kept in the
// process's backlog until a stream attaches.
func (t *processTable) start(req api.ProcessRequest, attach bool) (*process, *subscriber, error) {
	if strings.TrimSpace(req.Cmd) == "" {
		return nil, nil, api.Errorf(api.ErrInvalid, "process: cmd is empty")
	}
	if req.TimeoutMs < 0 || req.TimeoutMs > maxTimeout.Milliseconds() {
		return nil, nil, api.Errorf(api.ErrInvalid, "process: timeout_ms %d must be between 0 (none) and %d", req.TimeoutMs, maxTimeout.Milliseconds())
	}
	cwd, hostCwd, err := t.cwd(req.Cwd)
	if err != nil {
		return nil, nil, err
	}
	as, err := resolveUser(req.User, t.cfg.User, t.euid, lookupUser)
	if err != nil {
		return nil, nil, err
	}
	env, err := commandEnv(t.env.get(), as, req.Envs)
	if err != nil {
		return nil, nil, err
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout == 0 && !req.Background {
		timeout = t.cfg.DefaultTimeout
	}

	// With prlimit(1) the limits are in place before the shell runs; without
	// it they are set right after it started.
	argv := append(slices.Clone(t.wrap), t.shell, "-c", req.Cmd)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = hostCwd, env
	cmd.SysProcAttr = sysProcAttr(as.credential())
	pipes, err := newProcPipes(req.Stdin)
	if err != nil {
		return nil, nil, fmt.Errorf("process: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes.childStdin(), pipes.outW, pipes.errW

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		pipes.closeAll()
		return nil, nil, api.Errorf(api.ErrUnavailable, "process: the agent is shutting down")
	}
	t.purgeLocked(time.Now())
	if err := cmd.Start(); err != nil {
		pipes.closeAll()
		if errors.Is(err, fs.ErrPermission) {
			return nil, nil, api.Errorf(api.ErrPermission, "process: start: %v", err)
		}
		return nil, nil, fmt.Errorf("process: start %s: %w", t.shell, err)
	}
	if err := t.cfg.Limits.applyUnless(t.wrap != nil, cmd.Process.Pid); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		pipes.closeAll()
		return nil, nil, fmt.Errorf("process: %w", err)
	}
	pipes.closeChildEnds()
	p := &process{
		pid:        cmd.Process.Pid,
		cmd:        cmd,
		background: req.Background,
		timeout:    timeout,
		hasStdin:   req.Stdin,
		stdin:      pipes.inW,
		subs:       map[*subscriber]struct{}{},
		done:       make(chan struct{}),
		info: api.ProcessInfo{
			Cmd: req.Cmd, Tag: req.Tag, Cwd: cwd, Envs: maps.Clone(req.Envs),
		},
	}
	p.info.PID = p.pid
	var sub *subscriber
	if attach {
		sub = p.attach()
	}
	// A finished process of the same (reused) pid is replaced.
	t.procs[p.pid] = p
	t.wg.Add(1)
	go t.run(p, pipes.outR, pipes.errR)
	return p, sub, nil
}

// cwd resolves a request's working directory: its sandbox and host paths.
func (t *processTable) cwd(p string) (string, string, error) {
	sandbox, err := t.fs.clean(p)
	if err != nil {
		return "", "", err
	}
	host, err := t.fs.HostPath(sandbox)
	if err != nil {
		return "", "", err
	}
	fi, err := os.Stat(host)
	if err != nil {
		return "", "", fmt.Errorf("process: cwd: %w", fileError(sandbox, err))
	}
	if !fi.IsDir() {
		return "", "", api.Errorf(api.ErrInvalid, "process: cwd %s is not a directory", sandbox)
	}
	return sandbox, host, nil
}

// commandEnv is base, then the target user's identity (when switching), then
// the request's variables; later entries win.
func commandEnv(base []string, as *runAs, envs map[string]string) ([]string, error) {
	env := slices.Clone(base)
	if as != nil {
		env = append(env, "HOME="+as.home, "USER="+as.name, "LOGNAME="+as.name)
	}
	for _, k := range slices.Sorted(maps.Keys(envs)) {
		v := envs[k]
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return nil, api.Errorf(api.ErrInvalid, "process: environment variable %q: names must be non-empty without '=' or NUL, values without NUL", k)
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// runAs is another user a command runs as; nil means the agent's own user.
type runAs struct {
	name      string
	home      string
	uid, gid  uint32
	groupsIDs []uint32
}

func (a *runAs) credential() *syscall.Credential {
	if a == nil {
		return nil
	}
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groupsIDs}
}

// resolveUser decides whom a command runs as. "" and the sandbox's own user
// run as the agent. Another user needs an agent running as root (euid 0):
// otherwise the request is refused rather than silently run as someone else.
// An unknown user is api.ErrInvalid.
func resolveUser(name, sandboxUser string, euid int, lookup func(string) (*user.User, error)) (*runAs, error) {
	if name == "" || name == sandboxUser {
		return nil, nil
	}
	if euid != 0 {
		return nil, api.Errorf(api.ErrUnsupported, "running as user %s needs an agent running as root; this sandbox runs as uid %d", name, euid)
	}
	u, err := lookup(name)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalid, "user %q does not exist in the sandbox (%v)", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, api.Errorf(api.ErrUnsupported, "user %q has a non-numeric uid/gid %s/%s", name, u.Uid, u.Gid)
	}
	as := &runAs{name: u.Username, home: u.HomeDir, uid: uint32(uid), gid: uint32(gid)}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			as.groupsIDs = append(as.groupsIDs, uint32(n))
		}
	}
	if len(as.groupsIDs) == 0 {
		as.groupsIDs = []uint32{as.gid}
	}
	return as, nil
}

// lookupUser finds a user by name, or by numeric id.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			return user.LookupId(name)
		}
	}
	return u, err
}

// get returns the process of pid, running or recently finished.
func (t *processTable) get(pid int) (*process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.purgeLocked(time.Now())
	p, ok := t.procs[pid]
	if !ok {
		return nil, api.Errorf(api.ErrNotFound, "process %d", pid)
	}
	return p, nil
}

// list describes the running processes, by pid.
func (t *processTable) list() []api.ProcessInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.purgeLocked(time.Now())
	out := []api.ProcessInfo{}
	for _, p := range t.procs {
		if !p.finished() {
			out = append(out, p.info)
		}
	}
	slices.SortFunc(out, func(a, b api.ProcessInfo) int { return a.PID - b.PID })
	return out
}

// finishedLocked records that p ended: a foreground process is forgotten (its
// stream already has the end), a background one kept for a while.
func (t *processTable) finishedLocked(p *process) {
	if t.procs[p.pid] != p {
		return
	}
	if !p.background {
		delete(t.procs, p.pid)
		return
	}
	t.purgeLocked(time.Now())
}

// purgeLocked forgets finished processes past their retention, and the oldest
// beyond maxFinished.
func (t *processTable) purgeLocked(now time.Time) {
	var finished []*process
	for pid, p := range t.procs {
		if !p.finished() {
			continue
		}
		if now.Sub(p.finishedAt) > finishedRetention {
			delete(t.procs, pid)
			continue
		}
		finished = append(finished, p)
	}
	if len(finished) <= maxFinished {
		return
	}
	slices.SortFunc(finished, func(a, b *process) int { return a.finishedAt.Compare(b.finishedAt) })
	for _, p := range finished[:len(finished)-maxFinished] {
		delete(t.procs, p.pid)
	}
}

// killAll kills every running process with everything it started, and waits
// (boundedly) until they are reaped; then it stops reading the output pipes
// that survivors hold. When the agent is the child subreaper,
// every remaining descendant of the agent dies too — daemons that left their
// process group and parent, whose ancestry now leads to the agent (the code
// contexts, the agent's only other children, are stopped before this).
// Processes started afterwards are refused.
func (t *processTable) killAll() {
	t.mu.Lock()
	t.closed = true
	var running []*process
	for _, p := range t.procs {
		if !p.finished() {
			running = append(running, p)
		}
	}
	t.mu.Unlock()
	for _, p := range running {
		p.killTree()
	}
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }() // exits once the waiters are: the processes were SIGKILLed
	select {
	case <-done:
	case <-time.After(killAllWait):
		t.log.Warn("processes not reaped after SIGKILL", "wait", killAllWait)
	}
	if isSubreaper() {
		killDescendants(os.Getpid())
	}
	// Pipes still held by survivors (daemons that escaped without a
	// subreaper): stop reading them, so their pump goroutines end.
	t.mu.Lock()
	for f := range t.lingering {
		_ = f.Close()
	}
	t.mu.Unlock()
}

// procPipes are the pipes of one process's stdio. The parent reads stdout and
// stderr itself (not through exec.Cmd's copying goroutines), so waiting for the
// process never waits for a daemon that inherited the pipes.
type procPipes struct {
	outR, outW, errR, errW *os.File
	inR, inW               *os.File // nil unless stdin is kept open
}

func newProcPipes(stdin bool) (*procPipes, error) {
	p := &procPipes{}
	var err error
	if p.outR, p.outW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if p.errR, p.errW, err = os.Pipe(); err != nil {
		p.closeAll()
		return nil, err
	}
	if stdin {
		if p.inR, p.inW, err = os.Pipe(); err != nil {
			p.closeAll()
			return nil, err
		}
	}
	return p, nil
}

// childStdin is the process's stdin: the pipe, or nil (/dev/null).
func (p *procPipes) childStdin() io.Reader {
	if p.inR == nil {
		return nil
	}
	return p.inR
}

func (p *procPipes) closeChildEnds() {
	for _, f := range []*os.File{p.outW, p.errW, p.inR} {
		if f != nil {
			f.Close()
		}
	}
}

func (p *procPipes) closeAll() {
	p.closeChildEnds()
	for _, f := range []*os.File{p.outR, p.errR, p.inW} {
		if f != nil {
			f.Close()
		}
	}
}
