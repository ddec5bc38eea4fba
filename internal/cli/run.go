package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backends"
	"github.com/ds-sandbox/ds-sandbox/internal/config"
	"github.com/ds-sandbox/ds-sandbox/internal/manager"
)

// maxCodeSize bounds a program read from a file or stdin (JSON escaping may
// grow it up to six times on the wire; the agent takes 16 MiB bodies).
const maxCodeSize = 2 << 20

// Exit statuses of run: 1 is a Python error (or timeout) in the user's code,
// 2 a usage error, 3 a failure of ds-sandbox itself.
const (
	exitPythonError = 1
	exitUsage       = 2
	exitFailure     = 3
)

type runFlags struct {
	backend, template, network, whitelist, workspace, config, code, scanner string
	timeout                                                                 int
	keep, json                                                              bool
	limits                                                                  api.Limits
}

func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var f runFlags
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: ds-sandbox run [flags] (FILE.py | -c CODE | -)")
		fl.PrintDefaults()
	}
	fl.StringVar(&f.backend, "backend", "", "isolation backend (default: the configured one, local)")
	fl.StringVar(&f.template, "template", "", "template id")
	fl.IntVar(&f.timeout, "timeout", 0, "seconds the code may run (default: the configured per-run timeout)")
	fl.StringVar(&f.network, "network", "", "network policy: allow | deny | whitelist")
	fl.StringVar(&f.whitelist, "whitelist", "", "comma-separated destinations allowed under --network whitelist")
	fl.StringVar(&f.workspace, "workspace", "", "named workspace to run in (kept afterwards)")
	fl.StringVar(&f.scanner, "scanner-mode", "", "code scanner: off | warn | block (only stricter than the configured one, warn by default)")
	fl.IntVar(&f.limits.MemoryMB, "memory-mb", 0, "memory limit in MiB (default: the template's or configured one)")
	fl.IntVar(&f.limits.CPUCount, "cpus", 0, "CPU quota in CPUs")
	fl.IntVar(&f.limits.PidsLimit, "pids-limit", 0, "maximum tasks (processes and threads)")
	fl.IntVar(&f.limits.MaxOpenFiles, "max-open-files", 0, "open-file limit of the sandbox's processes")
	fl.Int64Var(&f.limits.MaxOutputBytes, "max-output-bytes", 0, "output one execution may return (the rest is dropped, marked truncated)")
	fl.IntVar(&f.limits.DiskQuotaMB, "disk-quota-mb", 0, "workspace size limit in MiB (a new workspace only)")
	fl.BoolVar(&f.keep, "keep", false, "keep the workspace after the run")
	fl.BoolVar(&f.json, "json", false, "print the Execution as JSON instead of streaming output")
	fl.StringVar(&f.code, "c", "", "code to run")
	fl.StringVar(&f.config, "config", "", "config file (YAML or JSON)")
	if err := fl.Parse(args); err != nil {
		return exitUsage
	}
	code, err := readCode(f.code, fl.Args(), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox run:", err)
		return exitUsage
	}
	status, err := run(ctx, f, code, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox run:", err)
		return exitFailure
	}
	return status
}

func readCode(inline string, args []string, stdin io.Reader) (string, error) {
	switch {
	case inline != "" && len(args) > 0:
		return "", errors.New("give either -c CODE or a file, not both")
	case inline != "":
		return inline, nil
	case len(args) == 0:
		return "", errors.New("nothing to run: give FILE.py, -c CODE, or - for stdin")
	case len(args) > 1:
		return "", fmt.Errorf("one file at a time (got %d arguments)", len(args))
	}
	var r io.Reader = stdin
	if args[0] != "-" {
		fh, err := os.Open(args[0])
		if err != nil {
			return "", err
		}
		defer fh.Close()
		r = fh
	}
	b, err := io.ReadAll(io.LimitReader(r, maxCodeSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxCodeSize {
		return "", fmt.Errorf("program is larger than %d MiB; put large data in files instead", maxCodeSize>>20)
	}
	return string(b), nil
}

func run(ctx context.Context, f runFlags, code string, stdout, stderr io.Writer) (int, error) {
	cfg, err := config.Load(f.config)
	if err != nil {
		return 0, err
	}
	req := api.CreateSandboxRequest{Backend: f.backend, Template: f.template, WorkspaceID: f.workspace, ScannerMode: f.scanner,
		MemoryMB: f.limits.MemoryMB, CPUCount: f.limits.CPUCount, PidsLimit: f.limits.PidsLimit, MaxOpenFiles: f.limits.MaxOpenFiles,
		MaxOutputBytes: f.limits.MaxOutputBytes, DiskQuotaMB: f.limits.DiskQuotaMB}
	if f.network != "" || f.whitelist != "" {
		policy := f.network
		if policy == "" {
			policy = api.NetworkWhitelist
		}
		req.Network = &api.NetworkPolicy{Policy: policy, Whitelist: splitList(f.whitelist)}
	}
	cellTimeout := time.Duration(cfg.DefaultTimeoutSec) * time.Second
	if f.timeout < 0 || f.timeout > int(manager.MaxTimeout/time.Second) {
		return 0, fmt.Errorf("--timeout %d: want 1..%d seconds", f.timeout, int(manager.MaxTimeout/time.Second))
	}
	if f.timeout > 0 {
		cellTimeout = time.Duration(f.timeout) * time.Second
	}
	// The sandbox lives as long as the cell may, plus room to start and stop.
	req.TimeoutSeconds = int(min(cellTimeout+2*time.Minute, manager.MaxTimeout) / time.Second)

	m, err := manager.New(cfg, nil, backends.New(cfg, backends.Embedded)...)
	if err != nil {
		return 0, err
	}
	s, err := m.Create(ctx, req)
	if err != nil {
		return 0, err
	}
	info := s.Info()
	p := &printer{stdout: stdout, stderr: stderr, quiet: f.json, ctx: ctx, sbx: info, save: func(ctx context.Context, p string, data []byte) error {
		_, err := s.Agent().WriteFile(ctx, p, bytes.NewReader(data))
		return err
	}}
	exec, err := s.Execute(ctx, api.ExecuteRequest{Code: code, TimeoutMs: cellTimeout.Milliseconds()}, p.event)

	keep := f.keep || p.saved > 0
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if kerr := m.KillKeep(kctx, info.SandboxID, keep); kerr != nil && err == nil {
		err = kerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return 130, nil
		}
		return 0, err
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(exec); err != nil {
			return 0, err
		}
	} else if info.Anonymous && keep {
		fmt.Fprintf(stderr, "[workspace kept: %s]\n", info.WorkspacePath)
	}
	if exec.Error != nil {
		return exitPythonError, nil
	}
	return 0, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// printer shows an execution's events as they arrive: output streams to the
// terminal, text results printed, images saved under the workspace's outputs/.
type printer struct {
	stdout, stderr io.Writer
	quiet          bool
	ctx            context.Context
	sbx            api.SandboxInfo
	save           func(ctx context.Context, path string, data []byte) error
	saved          int
}

func (p *printer) event(ev api.ExecEvent) {
	if p.quiet {
		return
	}
	switch ev.Type {
	case api.EventStdout:
		io.WriteString(p.stdout, ev.Text)
	case api.EventStderr:
		io.WriteString(p.stderr, ev.Text)
	case api.EventNotice:
		fmt.Fprintf(p.stderr, "[ds-sandbox: %s]\n", ev.Text)
	case api.EventNetworkDenied:
		if d := ev.Denial; d != nil {
			fmt.Fprintf(p.stderr, "[ds-sandbox: network policy denied %s: %s]\n", d.Target(), d.Reason)
		}
	case api.EventScan:
		for _, f := range ev.Findings {
			fmt.Fprintf(p.stderr, "[code scanner: line %d: %s %s: %s]\n", f.Line, f.Severity, f.Type, f.Message)
		}
	case api.EventResult:
		p.result(ev.Result)
	case api.EventError:
		e := ev.Error
		if e.Traceback != "" {
			fmt.Fprintln(p.stderr, strings.TrimRight(e.Traceback, "\n"))
		} else {
			fmt.Fprintf(p.stderr, "%s: %s\n", e.Name, e.Value)
		}
	}
}

func (p *printer) result(r *api.Result) {
	images := []struct {
		data, ext string
		b64       bool
	}{{r.PNG, "png", true}, {r.JPEG, "jpg", true}, {r.SVG, "svg", false}, {r.PDF, "pdf", true}}
	for _, img := range images {
		if img.data == "" {
			continue
		}
		data := []byte(img.data)
		if img.b64 {
			var err error
			if data, err = base64.StdEncoding.DecodeString(img.data); err != nil {
				fmt.Fprintf(p.stderr, "[result: bad base64 %s: %v]\n", img.ext, err)
				return
			}
		}
		p.saved++
		name := fmt.Sprintf("result-%s-%d.%s", time.Now().Format("20060102-150405"), p.saved, img.ext)
		sandboxPath := path.Join(p.sbx.Workdir, "outputs", name)
		if err := p.save(p.ctx, sandboxPath, data); err != nil {
			p.saved--
			fmt.Fprintf(p.stderr, "[result: could not save %s: %v]\n", img.ext, err)
			return
		}
		fmt.Fprintf(p.stdout, "[%s saved: %s]\n", img.ext, filepath.Join(p.sbx.WorkspacePath, "outputs", name))
		return
	}
	switch {
	case r.Text != "":
		fmt.Fprintln(p.stdout, r.Text)
	case r.Markdown != "":
		fmt.Fprintln(p.stdout, r.Markdown)
	case r.HTML != "":
		fmt.Fprintln(p.stdout, r.HTML)
	default:
		fmt.Fprintf(p.stdout, "[result: %s]\n", strings.Join(r.Formats(), ", "))
	}
}
