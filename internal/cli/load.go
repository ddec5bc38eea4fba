package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/audit"
)

// The load and fault suite (`ds-sandbox bench load`): a daemon of its own
// (this binary's `serve`, on a loopback port, with a state directory of its
// own), N clients each creating a sandbox through the Go SDK's remote mode
// and running M mixed cells (a print, a pandas cell, an exception, a cell
// past its timeout), kill -9 of kernels from inside sandboxes and of the
// daemon itself midway (restarted on the same state: its sandboxes
// re-attach), then a check that nothing is left behind and that the audit
// log has a record of every request the clients got an answer to.

const loadUsage = `usage: ds-sandbox bench load [flags]

Runs the load and fault suite against a daemon it starts itself on loopback:
--clients clients × --execs mixed cells each, kill -9 of --kill-kernels kernels
and (unless --kill-daemon=false) of the daemon midway, then checks that nothing
is left behind. Prints errors, p50/p99 of cells and of first cells, and the
daemon's RSS. Exits 1 when a request failed or something was left behind.
`

// LoadReport is what `bench load` measured.
type LoadReport struct {
	Backend     string  `json:"backend"`
	Clients     int     `json:"clients"`
	Execs       int     `json:"execs_per_client"`
	Cells       int     `json:"cells"`
	Errors      int     `json:"errors"`
	ErrorSample string  `json:"error_sample,omitempty"`
	Retried     int     `json:"retried_while_daemon_down"`
	Cell        Stats   `json:"cell_ms"`
	FirstCell   Stats   `json:"create_to_first_cell_ms"`
	KernelKills int     `json:"kernel_kills"`
	DaemonKills int     `json:"daemon_kills"`
	DaemonRSSMB float64 `json:"daemon_rss_mb"`
	// Leftovers lists what remained after every sandbox was killed and the
	// daemon stopped; AuditMissing, requests answered without an audit record.
	Leftovers    []string `json:"leftovers"`
	AuditMissing int      `json:"audit_missing"`
	Seconds      float64  `json:"seconds"`
}

// loadCells are the cells the clients run in turn: what each should end as.
var loadCells = []struct {
	code    string
	timeout time.Duration
	want    string // "" = no error, else the error's name
}{
	{"print('hello')", 0, ""},
	{"import pandas as pd\npd.DataFrame({'a': range(100)}).a.sum()", 0, ""},
	{"1/0", 0, "ZeroDivisionError"},
	{"while True: pass", 1500 * time.Millisecond, api.ErrNameTimeout},
}

func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := newCommand("bench load", loadUsage, stdout, stderr)
	var (
		backend     = fl.String("backend", "", "backend of the sandboxes (default: the daemon's default)")
		clients     = fl.Int("clients", 8, "concurrent clients, one sandbox each")
		execs       = fl.Int("execs", 12, "cells per client")
		killKernels = fl.Int("kill-kernels", 2, "kernels to kill -9 from inside their sandboxes")
		killDaemon  = fl.Bool("kill-daemon", true, "kill -9 the daemon midway and restart it")
		asJSON      = fl.Bool("json", false, "print JSON")
	)
	if st, ok := fl.parse(args); !ok {
		return st
	}
	if st, ok := fl.wantArgs(0, 0); !ok {
		return st
	}
	if *clients < 1 || *clients > 1000 || *execs < 1 || *execs > 10000 || *killKernels < 0 {
		fmt.Fprintln(stderr, "ds-sandbox bench load: --clients 1..1000, --execs 1..10000, --kill-kernels >= 0")
		return exitUsage
	}
	rep, err := runLoad(ctx, loadOptions{backend: *backend, clients: *clients, execs: *execs, killKernels: *killKernels, killDaemon: *killDaemon, log: stderr})
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox bench load:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printLoad(stdout, rep)
	}
	if rep.Errors > 0 || len(rep.Leftovers) > 0 || rep.AuditMissing > 0 {
		return 1
	}
	return 0
}

func printLoad(w io.Writer, r *LoadReport) {
	fmt.Fprintf(w, "load on %s: %d clients × %d cells = %d cells in %.1f s; kernels killed %d, daemon killed %d\n",
		r.Backend, r.Clients, r.Execs, r.Cells, r.Seconds, r.KernelKills, r.DaemonKills)
	fmt.Fprintf(w, "errors: %d%s (requests retried while the daemon was down: %d)\n", r.Errors, sampleSuffix(r.ErrorSample), r.Retried)
	fmt.Fprintf(w, "cell:        p50 %.1f ms  p99 %.1f ms  (n=%d)\n", r.Cell.P50, r.Cell.P99, r.Cell.N)
	fmt.Fprintf(w, "first cell:  p50 %.1f ms  p99 %.1f ms  (create → first result, n=%d)\n", r.FirstCell.P50, r.FirstCell.P99, r.FirstCell.N)
	fmt.Fprintf(w, "daemon RSS:  %.1f MiB at the end of the load\n", r.DaemonRSSMB)
	fmt.Fprintf(w, "left behind: %d %v; audit records missing: %d\n", len(r.Leftovers), r.Leftovers, r.AuditMissing)
}

func sampleSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (first: " + s + ")"
}

type loadOptions struct {
	backend              string
	clients, execs       int
	killKernels          int
	killDaemon           bool
	log                  io.Writer
	selfPath, listenAddr string // tests: the binary and address to use
}

// loadDaemon is the daemon process under load.
type loadDaemon struct {
	bin, state, conf, addr, backend string
	log                             io.Writer
	cmd                             *exec.Cmd
}

func (d *loadDaemon) start() error {
	cmd := exec.Command(d.bin, "serve", "--listen", d.addr, "--config", d.conf)
	cmd.Env = append(os.Environ(), "SANDBOX_STATE_DIR="+d.state, "DS_SANDBOX_API_KEY=", "SANDBOX_API_KEYS=")
	if d.backend != "" {
		cmd.Env = append(cmd.Env, "SANDBOX_DEFAULT_BACKEND="+d.backend)
	}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	// A process group of its own: a Ctrl-C at the terminal reaches the
	// bench, which kills its sandboxes through the daemon, then stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return fmt.Errorf("the daemon did not answer on %s within 60 s", d.addr)
}

func (d *loadDaemon) kill9() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	_ = d.cmd.Wait()
}

func (d *loadDaemon) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		d.kill9()
		return errors.New("the daemon did not stop within 60 s of SIGTERM")
	}
}

// rssMB is the daemon's resident memory.
func (d *loadDaemon) rssMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func runLoad(ctx context.Context, o loadOptions) (*LoadReport, error) {
	bin := o.selfPath
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	state, err := os.MkdirTemp("", "dss-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(state)
	os.Chmod(state, 0o711)
	addr := o.listenAddr
	if addr == "" {
		if addr, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	log := o.log
	if log == nil {
		log = io.Discard
	}
	// The per-key quotas would refuse the load's own clients (they share
	// the open daemon's one identity): they are not what is measured here.
	conf := filepath.Join(state, "load.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "max_sandboxes_per_key: %d\ncreates_per_minute: 0\nmax_streams_per_key: 0\n", o.clients+8), 0o600); err != nil {
		return nil, err
	}
	d := &loadDaemon{bin: bin, state: state, conf: conf, addr: addr, backend: o.backend, log: log}
	if err := d.start(); err != nil {
		return nil, err
	}
	defer func() {
		if d.cmd.ProcessState == nil {
			d.kill9()
		}
	}()
	c, err := dssandbox.NewClient("http://"+addr, "")
	if err != nil {
		return nil, err
	}
	rep := &LoadReport{Backend: o.backend, Clients: o.clients, Execs: o.execs}
	start := time.Now()

	var (
		mu        sync.Mutex
		cells     []time.Duration
		firsts    []time.Duration
		ids       []string
		cellsDone int
		// answered counts, per "action sandbox-id", the requests whose
		// answers the clients got: each must have its audit record.
		answered = map[string]int{}
		// epoch counts daemon kills; down is set while the daemon is being
		// killed and restarted. A request that fails while the epoch moved
		// under it, or while the daemon is down, was cut by the fault: it
		// waits for the daemon and is sent again (counted as Retried).
		epoch int
		down  bool
		up    = sync.NewCond(&mu)
	)
	fail := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Errors++
		if rep.ErrorSample == "" {
			rep.ErrorSample = fmt.Sprintf("%s: %v", what, err)
		}
	}
	call := func(fn func() error) (cut bool, err error) {
		for attempt := 0; ; attempt++ {
			mu.Lock()
			for down {
				up.Wait()
			}
			e := epoch
			mu.Unlock()
			err = fn()
			mu.Lock()
			again := err != nil && (epoch != e || down) && attempt < 5
			if again {
				rep.Retried++
				cut = true
			}
			mu.Unlock()
			if !again {
				return cut, err
			}
		}
	}
	total := o.clients * o.execs
	kernelKillAt := map[int]bool{}
	for i := range o.killKernels {
		kernelKillAt[(i+1)*total/(o.killKernels+1)] = true
	}
	var wg sync.WaitGroup
	for ci := range o.clients {
		wg.Go(func() {
			t0 := time.Now()
			var sbx *dssandbox.Sandbox
			if _, err := call(func() (err error) { sbx, err = c.Create(ctx, dssandbox.Options{}); return err }); err != nil {
				fail("create", err)
				return
			}
			mu.Lock()
			ids = append(ids, sbx.ID)
			answered["sandbox.create "+sbx.ID]++
			mu.Unlock()
			tainted := false
			for j := range o.execs {
				cell := loadCells[(ci+j)%len(loadCells)]
				var opts []dssandbox.RunOption
				if cell.timeout > 0 {
					opts = append(opts, dssandbox.WithTimeout(cell.timeout))
				}
				t1 := time.Now()
				var e *dssandbox.Execution
				cut, err := call(func() (err error) { e, err = sbx.RunCode(ctx, cell.code, opts...); return err })
				el := time.Since(t1)
				switch {
				case err != nil:
					fail("run_code", err)
					continue
				case cut || tainted:
					// The daemon's kill cut a cell of this kernel
					// (interrupting it: an import cut midway stays broken
					// in that kernel for the cells after it, as in
					// Jupyter); only transport is judged from then on.
					tainted = true
				case e.Error != nil && e.Error.Name == api.ErrNameDeadKernel:
					// a kernel we killed: the next cell runs in a fresh one
				case cell.want == "" && e.Error != nil, cell.want != "" && (e.Error == nil || e.Error.Name != cell.want):
					fail("cell "+strconv.Quote(cell.code), fmt.Errorf("got %+v, want error %q", e.Error, cell.want))
				}
				mu.Lock()
				answered["code.execute "+sbx.ID]++
				if j == 0 {
					firsts = append(firsts, time.Since(t0))
				}
				cells = append(cells, el)
				cellsDone++
				kill := kernelKillAt[cellsDone]
				delete(kernelKillAt, cellsDone)
				mu.Unlock()
				if kill {
					// kill -9 of this sandbox's kernel, from inside it.
					// Only its own: the kernel is a child of the agent, as is
					// this command's shell ($PPID), on every backend.
					r, err := sbx.Commands.Run(ctx, "pkill -9 -P $PPID -f ipykernel")
					mu.Lock()
					if err == nil {
						answered["command.run "+sbx.ID]++
					}
					if err == nil && r.ExitCode == 0 {
						rep.KernelKills++
					}
					mu.Unlock()
				}
			}
			_, err := call(func() error { return sbx.Kill(context.WithoutCancel(ctx)) })
			if err != nil && !errors.Is(err, api.ErrNotFound) {
				fail("kill", err)
			}
			mu.Lock()
			answered["sandbox.kill "+sbx.ID]++
			mu.Unlock()
		})
	}
	if o.killDaemon {
		// Midway, with requests in flight: when half the cells ran, kill -9
		// the daemon and start it again on the same state; its sandboxes
		// re-attach.
		for {
			mu.Lock()
			n := cellsDone
			mu.Unlock()
			if n >= total/2 || ctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		down = true
		epoch++
		mu.Unlock()
		d.kill9()
		rep.DaemonKills++
		err := d.start()
		mu.Lock()
		down = false
		up.Broadcast()
		mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("restart after kill -9: %w", err)
		}
	}
	wg.Wait()
	rep.DaemonRSSMB = d.rssMB()
	rep.Seconds = time.Since(start).Seconds()
	rep.Cells, rep.Cell, rep.FirstCell = len(cells), Summarise(cells), Summarise(firsts)
	if rep.Backend == "" {
		var info struct{ Chosen string }
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			var rz map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&rz)
			resp.Body.Close()
			if b, ok := rz["default_backend"].(string); ok {
				info.Chosen = b
			}
		}
		rep.Backend = info.Chosen
	}
	if err := d.stop(); err != nil {
		rep.Leftovers = append(rep.Leftovers, "daemon: "+err.Error())
	}
	rep.Leftovers = append(rep.Leftovers, leftovers(state, ids)...)
	missing := auditMissing(filepath.Join(state, "audit.jsonl"), answered)
	rep.AuditMissing = len(missing)
	if len(missing) > 0 {
		fmt.Fprintf(log, "audit records missing: %v\n", missing)
	}
	return rep, nil
}

// leftovers lists what the load's sandboxes left on the host: records,
// workspaces, mounts and loop devices under the state directory, the oci
// backend's runtime state and bundles, and processes naming a sandbox.
func leftovers(state string, ids []string) []string {
	var out []string
	for _, sub := range []string{"sandboxes", "workspaces"} {
		ents, _ := os.ReadDir(filepath.Join(state, sub))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".lock") {
				out = append(out, filepath.Join(sub, e.Name()))
			}
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], state) {
				out = append(out, "mount "+fs[4])
			}
		}
		f.Close()
	}
	if b, err := exec.Command("losetup", "-l", "-n", "-O", "BACK-FILE").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), state) {
				out = append(out, "loop device of "+strings.TrimSpace(l))
			}
		}
	}
	// The oci backend's bundles (/run/ds-sandbox/oci-<hash of its state>)
	// and networks (/run/netns/dss-<tag>-*, nft tables dss_<tag>_*), named
	// after its state directory as the backend names them.
	ociState := filepath.Join(state, "oci")
	sum := sha256.Sum256([]byte(ociState))
	if _, err := os.Stat(filepath.Join("/run/ds-sandbox", "oci-"+hex.EncodeToString(sum[:6]))); err == nil {
		out = append(out, "oci bundle directory /run/ds-sandbox/oci-"+hex.EncodeToString(sum[:6]))
	}
	tag := hex.EncodeToString(sum[:4])
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "dss-"+tag+"-") {
				out = append(out, "netns "+e.Name())
			}
		}
	}
	if b, err := exec.Command("nft", "list", "tables").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "dss_"+tag+"_") {
				out = append(out, "nft "+strings.TrimSpace(l))
			}
		}
	}
	ociRoot := ociState
	for _, dir := range []string{filepath.Join(ociRoot, "runtime"), filepath.Join(ociRoot, "bundles")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			out = append(out, "oci "+filepath.Join(filepath.Base(dir), e.Name()))
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, state) {
			out = append(out, fmt.Sprintf("process %d: %.120s", pid, cl))
			continue
		}
		for _, id := range ids {
			if strings.Contains(cl, id) {
				out = append(out, fmt.Sprintf("process %d of sandbox %s: %.120s", pid, id, cl))
				break
			}
		}
	}
	return out
}

// auditMissing lists the requests the clients got answers to (counted per
// "action sandbox-id") that have fewer audit records than answers. (A
// daemon killed with -9 may lose the record of a request it was carrying
// out when it died; that client got no answer and sent it again, and that
// request is recorded, with its own outcome.)
func auditMissing(path string, answered map[string]int) []string {
	f, err := os.Open(path)
	if err != nil {
		return []string{"the audit log: " + err.Error()}
	}
	defer f.Close()
	recorded := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var r audit.Record
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.SandboxID != "" {
			recorded[r.Action+" "+r.SandboxID]++
		}
	}
	var missing []string
	for k, n := range answered {
		if recorded[k] < n {
			missing = append(missing, fmt.Sprintf("%s: %d answered, %d recorded", k, n, recorded[k]))
		}
	}
	slices.Sort(missing)
	return missing
}
