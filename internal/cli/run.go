package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/backendset"
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
	keep, json, verbose                                                     bool
	limits                                                                  api.Limits
	uploads                                                                 []string
	outputDir                                                               string
}

const runUsage = `usage: ds-sandbox run [flags] (FILE.py | -c CODE | -)

Runs Python in a fresh sandbox of its own (embedded: no daemon needed) and
streams its output. Images the code shows are saved under the workspace's
outputs/. Exit status: 0, 1 for an error in the code (or a timeout), 2 for a
wrong use, 3 for a failure of ds-sandbox itself.
`

func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var f runFlags
	fl := newCommand("run", runUsage, stdout, stderr)
	fl.StringVar(&f.backend, "backend", "", "isolation backend: oci | docker | local (default: the configured one, auto: the strongest available; see ds-sandbox doctor)")
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
	fl.BoolVar(&f.verbose, "v", false, "print every code scanner finding in full (default: one summary line)")
	fl.StringVar(&f.code, "c", "", "code to run")
	fl.StringVar(&f.config, "config", "", "config file (YAML or JSON)")
	fl.Func("upload", "file or directory to put into the sandbox's workdir before the code runs (repeatable)", func(s string) error {
		if s == "" {
			return errors.New("empty path")
		}
		f.uploads = append(f.uploads, s)
		return nil
	})
	fl.StringVar(&f.outputDir, "output-dir", "", "copy the sandbox's outputs/ into this directory after the run")
	if st, ok := fl.parse(args); !ok {
		return st
	}
	code, err := readCode(f.code, fl.Args(), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "ds-sandbox run:", err)
		return exitUsage
	}
	for _, u := range f.uploads {
		if _, err := os.Stat(u); err != nil {
			fmt.Fprintln(stderr, "ds-sandbox run: --upload:", err)
			return exitUsage
		}
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

	m, err := manager.New(cfg, nil, backendset.New(cfg, backendset.Embedded)...)
	if err != nil {
		return 0, err
	}
	if w := m.DefaultChoice().Warning(); w != "" && f.backend == "" {
		fmt.Fprintf(stderr, "[ds-sandbox: %s]\n", w)
	}
	s, err := m.Create(ctx, req)
	if err != nil {
		return 0, err
	}
	info := s.Info()
	for _, w := range info.Warnings {
		fmt.Fprintf(stderr, "[ds-sandbox: %s]\n", w)
	}
	files := s.Agent()
	p := &printer{stdout: stdout, stderr: stderr, quiet: f.json, verbose: f.verbose, ctx: ctx, sbx: info, outDir: f.outputDir, save: func(ctx context.Context, p string, data []byte) error {
		_, err := files.WriteFile(ctx, p, bytes.NewReader(data))
		return err
	}}
	for _, u := range f.uploads {
		if err = upload(ctx, files, u, info.Workdir+"/", stderr); err != nil {
			err = fmt.Errorf("--upload %s: %w", u, err)
			break
		}
	}
	var exec *api.Execution
	if err == nil {
		exec, err = s.Execute(ctx, api.ExecuteRequest{Code: code, TimeoutMs: cellTimeout.Milliseconds()}, p.event)
	}
	if err == nil && !f.json {
		p.finish(exec, timeoutText(f.timeout, cellTimeout))
	}
	// The outputs are copied whatever the code did: a traceback is when they
	// are wanted most.
	copied := false
	if err == nil && f.outputDir != "" {
		if err = downloadTree(ctx, files, path.Join(info.Workdir, "outputs"), f.outputDir, stderr); err != nil {
			err = fmt.Errorf("--output-dir: %w", err)
		} else {
			copied = true
		}
	}

	keep := f.keep || p.saved > 0 && !copied
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if kerr := m.KillKeep(kctx, info.SandboxID, keep); kerr != nil && err == nil {
		err = kerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return 130, nil
		}
		if info.Anonymous && keep {
			fmt.Fprintf(stderr, "[workspace kept: %s]\n", info.WorkspacePath)
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
// terminal, text results printed, images saved under the workspace's outputs/
// (and copied to --output-dir after the run).
type printer struct {
	stdout, stderr io.Writer
	quiet, verbose bool
	ctx            context.Context
	sbx            api.SandboxInfo
	outDir         string // where --output-dir copies outputs/ after the run
	save           func(ctx context.Context, path string, data []byte) error
	saved          int

	// errors are the cell's error events, printed by finish: a timeout
	// prints one line instead of the interrupt's traceback.
	errors []*api.ExecutionError
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
		if !p.verbose {
			fmt.Fprintln(p.stderr, scanSummary(ev.Findings))
			break
		}
		for _, f := range ev.Findings {
			fmt.Fprintf(p.stderr, "[code scanner: line %d: %s %s: %s]\n", f.Line, f.Severity, f.Type, f.Message)
		}
	case api.EventResult:
		p.result(ev.Result)
	case api.EventError:
		if ev.Error != nil {
			p.errors = append(p.errors, ev.Error)
		}
	}
}

// finish prints the cell's errors once it ended. A one-shot run that hit
// its timeout says so in one line: the interrupt's traceback and the
// agent's "the context is kept" (true of a long-lived sandbox, not of this
// run, whose sandbox is gone) would only confuse.
func (p *printer) finish(exec *api.Execution, timeout string) {
	if exec != nil && exec.Error != nil && exec.Error.Name == api.ErrNameTimeout {
		fmt.Fprintf(p.stderr, "stopped: the run exceeded %s\n", timeout)
		return
	}
	for _, e := range p.errors {
		if e.Traceback != "" {
			fmt.Fprintln(p.stderr, strings.TrimRight(e.Traceback, "\n"))
		} else {
			fmt.Fprintf(p.stderr, "%s: %s\n", e.Name, e.Value)
		}
	}
}

// timeoutText names the timeout a run had: --timeout's, or the configured
// per-run default.
func timeoutText(flag int, d time.Duration) string {
	if flag > 0 {
		return fmt.Sprintf("--timeout %ds", flag)
	}
	return fmt.Sprintf("the per-run timeout of %ds (default_timeout_sec; --timeout N to change)", int(d/time.Second))
}

// scanSummary is the code scanner's findings in one line, most severe
// first: "[scanner: 3 findings (critical: open(); medium: import os); -v
// for details]".
func scanSummary(fs []api.Finding) string {
	bySeverity := map[string][]string{}
	for _, f := range fs {
		what := f.Type
		switch {
		case f.Module != "":
			what = "import " + f.Module
		case f.Function != "":
			what = f.Function + "()"
		}
		if !slices.Contains(bySeverity[f.Severity], what) {
			bySeverity[f.Severity] = append(bySeverity[f.Severity], what)
		}
	}
	var parts []string
	for _, sev := range []string{api.SeverityCritical, api.SeverityHigh, api.SeverityMedium} {
		if len(bySeverity[sev]) > 0 {
			parts = append(parts, sev+": "+strings.Join(bySeverity[sev], ", "))
		}
	}
	noun := "findings"
	if len(fs) == 1 {
		noun = "finding"
	}
	return fmt.Sprintf("[scanner: %d %s (%s); -v for details]", len(fs), noun, strings.Join(parts, "; "))
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
		shown := filepath.Join(p.sbx.WorkspacePath, "outputs", name)
		if p.outDir != "" {
			shown = filepath.Join(p.outDir, name)
		}
		fmt.Fprintf(p.stdout, "[%s saved: %s]\n", img.ext, shown)
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
