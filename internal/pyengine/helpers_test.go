//go:build linux

package pyengine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ds-sandbox/ds-sandbox/internal/jupyter"
	"github.com/ds-sandbox/ds-sandbox/internal/testenv"
)

const python = "/usr/bin/python3"

// TestMain needs Debian's Python with IPython and the data-science stack
// (skip locally, fail under CI).
func TestMain(m *testing.M) {
	out, err := exec.Command(python, "-c", "import IPython, matplotlib_inline, numpy, pandas, matplotlib").CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	testenv.MainRequire(python+" with IPython, matplotlib-inline, numpy, pandas", err)
	if err := becomeReaper(); err != nil {
		fmt.Fprintln(os.Stderr, "become a child subreaper:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// The test process is a child subreaper, as the agent is: forked engines
// (orphans once the zygote's intermediate child exits) and whatever a cell
// leaves behind become its children. Engine reaps the engines it watches;
// reapOrphans reaps the rest, except the processes os/exec waits for
// (registered through Started/Reaped). Without it they would wait for
// init, which here reaps lazily, and a fork bomb's zombies would keep its
// cgroup full.
var own = struct {
	sync.Mutex
	pids map[int]bool
}{pids: map[int]bool{}}

func ownStarted(pid int) error {
	own.Lock()
	defer own.Unlock()
	own.pids[pid] = true
	return nil
}

func ownReaped(pid int) {
	own.Lock()
	defer own.Unlock()
	delete(own.pids, pid)
}

func becomeReaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		tick := time.NewTicker(time.Second)
		for {
			select {
			case <-sig:
			case <-tick.C:
			}
			reapOrphans()
		}
	}()
	return nil
}

func reapOrphans() {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(field)
			stat, err := os.ReadFile("/proc/" + field + "/stat")
			if err != nil {
				continue
			}
			// The state follows the last ')' of the command name.
			i := strings.LastIndexByte(string(stat), ')')
			if i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z' {
				continue
			}
			own.Lock()
			mine := own.pids[pid]
			own.Unlock()
			if !mine {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			}
		}
	}
}

// testEnv is an environment with a private HOME and IPYTHONDIR.
func testEnv(t testing.TB, extra ...string) []string {
	t.Helper()
	home := t.TempDir()
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home,
		"IPYTHONDIR=" + filepath.Join(home, ".ipython"), "LANG=C.UTF-8"}
	return append(env, extra...)
}

// startEngine starts a cold engine closed at the end of the test.
func startEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.Env == nil {
		cfg.Env = testEnv(t)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 2 * time.Minute // a loaded machine
	}
	cfg.Started, cfg.Reaped = ownStarted, ownReaped
	e, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// outputs collects a cell's outputs.
type outputs struct {
	mu  sync.Mutex
	all []jupyter.Output
}

func (o *outputs) add(out jupyter.Output) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, out)
}

func (o *outputs) list() []jupyter.Output {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]jupyter.Output(nil), o.all...)
}

// stream joins the text of one stream.
func (o *outputs) stream(name string) string {
	var b strings.Builder
	for _, out := range o.list() {
		if out.Type == "stream" && out.Name == name {
			b.WriteString(out.Text)
		}
	}
	return b.String()
}

// of returns the outputs of one type.
func (o *outputs) of(typ string) []jupyter.Output {
	var r []jupyter.Output
	for _, out := range o.list() {
		if out.Type == typ {
			r = append(r, out)
		}
	}
	return r
}

type executor interface {
	Execute(context.Context, jupyter.ExecuteRequest, func(jupyter.Output)) (*jupyter.Reply, error)
}

// run executes code (stored in history) and fails the test on a machinery
// error.
func run(t testing.TB, e executor, code string) (*jupyter.Reply, *outputs) {
	t.Helper()
	o := &outputs{}
	r, err := e.Execute(context.Background(), jupyter.ExecuteRequest{Code: code, StoreHistory: true}, o.add)
	if err != nil {
		t.Fatalf("Execute(%q): %v", code, err)
	}
	return r, o
}

// eval runs code whose last line prints one value and returns stdout
// trimmed, failing the test if the cell failed.
func eval(t testing.TB, e executor, code string) string {
	t.Helper()
	r, o := run(t, e, code)
	if r.Status != "ok" {
		t.Fatalf("cell %q: %s %s: %s\n%s", code, r.Status, r.EName, r.EValue, strings.Join(r.Traceback, "\n"))
	}
	return strings.TrimSpace(o.stream("stdout"))
}

// text returns a MIME value as a string.
func text(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("MIME value %s is not a string: %v", raw, err)
	}
	return s
}
