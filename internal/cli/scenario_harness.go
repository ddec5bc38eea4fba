package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"go.yaml.in/yaml/v3"
)

// harness is a scenario's daemon, client and the sandboxes made so far.
type harness struct {
	o     scenarioOptions
	rep   *ScenarioReport
	d     *loadDaemon
	state string
	c     *dssandbox.Client
	opts  dssandbox.Options
	after []func() // left by the sample being timed (samples runs them)

	mu    sync.Mutex
	live  map[string]*dssandbox.Sandbox // created and not (yet) killed
	roots []sandboxRoot                 // of every sandbox made
}

func startHarness(ctx context.Context, o scenarioOptions, rep *ScenarioReport) (*harness, error) {
	bin := o.selfPath
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	base, err := config.Load(o.configPath)
	if err != nil {
		return nil, err
	}
	conf := map[string]any{}
	if o.configPath != "" {
		b, err := os.ReadFile(o.configPath)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(b, &conf); err != nil {
			return nil, fmt.Errorf("%s: %w", o.configPath, err)
		}
		if conf == nil {
			conf = map[string]any{}
		}
	}
	opts := dssandbox.Options{Backend: o.backend, Template: o.template, Network: &dssandbox.NetworkPolicy{Policy: o.network, Whitelist: o.whitelist}}
	if o.template != "" {
		// The daemon's state directory is fresh: it finds the template
		// where the configured daemon would.
		dir, err := templateDir(base.TemplateDirs(), o.template)
		if err != nil {
			return nil, err
		}
		conf["templates_dir"] = dir
	}
	state, err := os.MkdirTemp("", "dss-bench-")
	if err != nil {
		return nil, err
	}
	os.Chmod(state, 0o711)
	rep.StateDir = state
	// The per-key quotas would refuse the bench's own clients (they share
	// the open daemon's one identity): they are not what is measured.
	delete(conf, "state_dir")
	delete(conf, "api_keys")
	delete(conf, "listen")
	conf["max_sandboxes_per_key"] = o.n + o.clients + 8
	conf["creates_per_minute"] = 0
	conf["max_streams_per_key"] = 0
	b, err := yaml.Marshal(conf)
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	confPath := filepath.Join(state, "bench.yaml")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	log := o.log
	if log == nil {
		log = io.Discard
	}
	d := &loadDaemon{bin: bin, state: state, conf: confPath, addr: addr, backend: o.backend, log: log}
	if err := d.start(); err != nil {
		os.RemoveAll(state)
		return nil, err
	}
	c, err := dssandbox.NewClient("http://"+addr, "")
	if err != nil {
		d.kill9()
		os.RemoveAll(state)
		return nil, err
	}
	if rep.Backend == "" {
		rep.Backend = defaultBackend(addr)
	}
	if rep.Backend == "local" && !o.networkSet && o.network == api.NetworkDeny {
		// The local backend cannot enforce deny (it refuses such creates);
		// its sandboxes share the host's network.
		opts.Network.Policy, rep.Network = api.NetworkAllow, api.NetworkAllow
		rep.Notes = append(rep.Notes, "network allow: the local backend cannot enforce deny (its sandboxes share the host's network)")
	}
	if n, waited := waitPoolsFull(addr, o.timeout); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("warm pools: waited %s for their %d sandboxes before measuring", waited.Round(time.Millisecond), n))
	}
	return &harness{o: o, rep: rep, d: d, state: state, c: c, opts: opts, live: map[string]*dssandbox.Sandbox{}}, nil
}

// waitPoolsFull waits (at most timeout) until every warm pool of the daemon
// at addr is full, so a scenario measures claims rather than refills. It
// returns how many pooled sandboxes there are and how long it waited.
func waitPoolsFull(addr string, timeout time.Duration) (int, time.Duration) {
	start := time.Now()
	for {
		var rz struct {
			Pools []struct {
				Size  int `json:"size"`
				Ready int `json:"ready"`
			} `json:"pools"`
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, time.Since(start)
		}
		_ = json.NewDecoder(resp.Body).Decode(&rz)
		resp.Body.Close()
		size, ready := 0, 0
		for _, p := range rz.Pools {
			size += p.Size
			ready += min(p.Ready, p.Size)
		}
		if ready >= size || time.Since(start) > timeout {
			return size, time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// defaultBackend asks the daemon at addr which backend it gives sandboxes
// that name none ("" when it does not say).
func defaultBackend(addr string) string {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var rz struct {
		DefaultBackend string `json:"default_backend"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rz)
	return rz.DefaultBackend
}

// templateDir is the first of dirs holding template id.
func templateDir(dirs []string, id string) (string, error) {
	for _, dir := range dirs {
		for _, ext := range []string{".yaml", ".yml"} {
			if _, err := os.Stat(filepath.Join(dir, id+ext)); err == nil {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("template %q: no %s.yaml or %s.yml in %s", id, id, id, strings.Join(dirs, ", "))
}

// fail counts an error; the first is kept as the sample.
func (h *harness) fail(what string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.Errors++
	if h.rep.ErrorSample == "" {
		h.rep.ErrorSample = fmt.Sprintf("%s: %v", what, err)
	}
}

// create makes a sandbox (bounded by --timeout) and notes how to find its
// processes.
func (h *harness) create(ctx context.Context) (*dssandbox.Sandbox, error) {
	cctx, cancel := context.WithTimeout(ctx, h.o.timeout)
	defer cancel()
	s, err := h.c.Create(cctx, h.opts)
	if err != nil {
		return nil, err
	}
	root, rerr := readSandboxRoot(h.state, s.ID)
	h.mu.Lock()
	h.live[s.ID] = s
	h.rep.Sandboxes++
	if rerr == nil {
		h.roots = append(h.roots, root)
	}
	if h.rep.Backend == "" {
		h.rep.Backend = root.Backend
	}
	h.mu.Unlock()
	if rerr != nil {
		if err := h.kill(ctx, s); err != nil {
			h.fail("kill", err)
		}
		return nil, rerr
	}
	return s, nil
}

// run runs code in s (bounded by --timeout) and checks that its result
// holds want.
func (h *harness) run(ctx context.Context, s *dssandbox.Sandbox, code, want string) error {
	cctx, cancel := context.WithTimeout(ctx, h.o.timeout)
	defer cancel()
	e, err := s.RunCode(cctx, code)
	switch {
	case err != nil:
		return err
	case e.Error != nil:
		return fmt.Errorf("%s: %s: %s", code, e.Error.Name, e.Error.Value)
	case !strings.Contains(e.Text(), want):
		return fmt.Errorf("%s gave %q, want %q in it", code, e.Text(), want)
	}
	return nil
}

// kill kills s; it runs on even when ctx ended (bounded by --timeout).
func (h *harness) kill(ctx context.Context, s *dssandbox.Sandbox) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.o.timeout)
	defer cancel()
	err := s.Kill(cctx)
	if errors.Is(err, api.ErrNotFound) {
		err = nil
	}
	if err == nil {
		h.mu.Lock()
		delete(h.live, s.ID)
		h.mu.Unlock()
	}
	return err
}

// close kills every sandbox of the daemon (those the bench holds, and any
// whose create answer it never got), stops the daemon and lists what is left:
// sandboxes, their processes, records, workspaces, mounts, runtime state.
func (h *harness) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.o.timeout)
	defer cancel()
	h.mu.Lock()
	live := make([]*dssandbox.Sandbox, 0, len(h.live))
	for _, s := range h.live {
		live = append(live, s)
	}
	h.mu.Unlock()
	for _, s := range live {
		if err := h.kill(ctx, s); err != nil {
			h.fail("kill "+s.ID, err)
		}
	}
	if list, err := h.c.List(ctx, nil); err != nil {
		h.fail("list", err)
	} else {
		for _, info := range list {
			s, err := h.c.Connect(ctx, info.SandboxID)
			if err == nil {
				err = h.kill(ctx, s)
			}
			if err != nil {
				h.fail("kill "+info.SandboxID, err)
			}
		}
	}
	if err := h.d.stop(); err != nil {
		h.rep.Leftovers = append(h.rep.Leftovers, "daemon: "+err.Error())
	}
	ids := make([]string, 0, len(h.roots))
	for _, r := range h.roots {
		ids = append(ids, r.ID)
	}
	h.rep.Leftovers = append(h.rep.Leftovers, leftovers(h.state, ids)...)
	procs := readProcs()
	for _, r := range h.roots {
		if r.alive(procs) {
			h.rep.Leftovers = append(h.rep.Leftovers, fmt.Sprintf("sandbox %s: its process %d (or container %q) still runs", r.ID, r.Pid, r.Container))
		}
	}
	if len(h.rep.Leftovers) == 0 {
		os.RemoveAll(h.state)
	}
}

// samples runs fn n times, interleaved with base when it is not nil, so a
// machine that gets busier midway slows both alike. Failed samples count
// as errors and are not timed.
// afterSample schedules f to run once the current sample is timed.
func (h *harness) afterSample(f func()) { h.after = append(h.after, f) }

// killQuietly kills s, counting a failure.
func (h *harness) killQuietly(ctx context.Context, s *dssandbox.Sandbox) {
	if err := h.kill(ctx, s); err != nil {
		h.fail("kill", err)
	}
}

func (h *harness) samples(ctx context.Context, n int, what string, fn func() error, baseWhat string, base func() error) (ours, baseline []time.Duration) {
	for range n {
		if ctx.Err() != nil {
			return ours, baseline
		}
		t0 := time.Now()
		err := fn()
		d := time.Since(t0)
		if err != nil {
			h.fail(what, err)
		} else {
			ours = append(ours, d)
		}
		// What a sample leaves to do (killing its sandbox) is not timed.
		for _, f := range h.after {
			f()
		}
		h.after = nil
		if base != nil {
			t0 = time.Now()
			if err := base(); err != nil {
				h.fail(baseWhat, err)
			} else {
				baseline = append(baseline, time.Since(t0))
			}
		}
	}
	return ours, baseline
}
