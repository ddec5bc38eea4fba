package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

// DensityResult is what `bench density` measured: N idle sandboxes that each
// ran dsCell, their memory counted two ways, beside one ipykernel (started
// by jupyter_client) and one bare python3 after the same cell.
type DensityResult struct {
	N int `json:"n"`
	// PSSPerSandboxMiB is the PSS of every process of the N sandboxes,
	// summed, divided by N; PSSSandboxMiB is the spread of each sandbox's
	// own sum. Processes counts the processes summed.
	PSSPerSandboxMiB float64 `json:"pss_per_sandbox_mib"`
	PSSSandboxMiB    Stats   `json:"pss_sandbox_mib"`
	Processes        int     `json:"processes"`
	// FoundBy says how they were found: "cgroup" (the sandbox's own, oci),
	// "container cgroup" (docker), "process tree" (local: the agent's).
	FoundBy []string `json:"found_by"`
	// DaemonTreeMiB is the PSS of the daemon and of every descendant of it
	// that is in no sandbox (zygotes, pooled or shared engine processes
	// the daemon runs itself), DaemonTreeProcesses their number; it is
	// not in PSSPerSandboxMiB. PSSWithDaemonTreeMiB adds it, / N: an upper
	// bound that holds whatever the daemon shares between sandboxes.
	DaemonTreeMiB        float64 `json:"daemon_tree_pss_mib"`
	DaemonTreeProcesses  int     `json:"daemon_tree_processes"`
	PSSWithDaemonTreeMiB float64 `json:"pss_per_sandbox_with_daemon_tree_mib"`
	// MemAvailableDropPerSandboxMiB is how much MemAvailable fell from
	// before the first create to after the last, divided by N. Other
	// programs on the machine move it too.
	MemAvailableDropPerSandboxMiB float64 `json:"memavailable_drop_per_sandbox_mib"`
	// The baselines: the PSS of one ipykernel that ran dsCell (the kernel
	// process, started by jupyter_client) and of a bare python3 that ran it.
	BaselineKernelPSSMiB float64 `json:"baseline_ipykernel_pss_mib"`
	BaselinePythonPSSMiB float64 `json:"baseline_python_pss_mib"`
	RatioPSS             float64 `json:"ratio_pss_to_ipykernel"`
	RatioMemAvailable    float64 `json:"ratio_memavailable_to_ipykernel"`
	// PerMachine24GiB is how many such sandboxes 24 GiB holds, by PSS and by
	// the MemAvailable drop.
	Per24GiBPSS          int `json:"per_24gib_by_pss"`
	Per24GiBMemAvailable int `json:"per_24gib_by_memavailable"`
}

// densitySettle is how long the sandboxes idle before they are measured
// (the kernels' post-cell work ends; not a tuning knob).
const densitySettle = 2 * time.Second

func benchDensity(ctx context.Context, h *harness) error {
	d := &DensityResult{N: h.o.n}
	h.rep.Density = d
	before, err := meminfoKB("MemAvailable")
	if err != nil {
		return err
	}
	var sandboxes []*dssandbox.Sandbox
	for i := range h.o.n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s, err := h.create(ctx)
		if err != nil {
			h.fail(fmt.Sprintf("create %d", i), err)
			continue
		}
		sandboxes = append(sandboxes, s)
		if err := h.run(ctx, s, dsCell, "4950"); err != nil {
			h.fail("pandas cell", err)
		}
	}
	if len(sandboxes) == 0 {
		return fmt.Errorf("no sandbox was created (first error: %s)", h.rep.ErrorSample)
	}
	select {
	case <-time.After(densitySettle):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := meminfoKB("MemAvailable")
	if err != nil {
		return err
	}
	procs := readProcs()
	h.mu.Lock()
	roots := append([]sandboxRoot(nil), h.roots...)
	h.mu.Unlock()
	var total int64
	counted := map[int]bool{}
	var each []float64 // MiB
	for _, r := range roots {
		pids, how, err := r.processes(procs, h.d.cmd.Process.Pid)
		if err == nil && len(pids) == 0 {
			err = fmt.Errorf("sandbox %s: no process found", r.ID)
		}
		var kb int64
		if err == nil {
			kb, err = pssOf(pids)
		}
		if err != nil {
			h.fail("PSS", err)
			continue
		}
		d.Processes += len(pids)
		if !slices.Contains(d.FoundBy, how) {
			d.FoundBy = append(d.FoundBy, how)
		}
		total += kb
		for _, pid := range pids {
			counted[pid] = true
		}
		each = append(each, float64(kb)/1024)
	}
	n := float64(len(sandboxes))
	d.N = len(sandboxes)
	d.PSSPerSandboxMiB = float64(total) / 1024 / n
	daemon := h.d.cmd.Process.Pid
	var outside []int
	for _, pid := range append([]int{daemon}, descendantsOf(procs, daemon)...) {
		if !counted[pid] {
			outside = append(outside, pid)
		}
	}
	if kb, err := pssOf(outside); err != nil {
		h.fail("PSS of the daemon's processes", err)
	} else {
		d.DaemonTreeMiB, d.DaemonTreeProcesses = float64(kb)/1024, len(outside)
		d.PSSWithDaemonTreeMiB = float64(total+kb) / 1024 / n
	}
	d.PSSSandboxMiB = summariseValues(each)
	d.MemAvailableDropPerSandboxMiB = float64(before-after) / 1024 / n
	for _, s := range sandboxes {
		if err := h.kill(ctx, s); err != nil {
			h.fail("kill", err)
		}
	}
	// The baselines run alone, after the sandboxes are gone: pages they
	// shared with our kernels would lower their PSS.
	if d.BaselineKernelPSSMiB, err = baselinePSS(ctx, h.o, true); err != nil {
		h.fail("ipykernel baseline", err)
	}
	if d.BaselinePythonPSSMiB, err = baselinePSS(ctx, h.o, false); err != nil {
		h.fail("python baseline", err)
	}
	d.RatioPSS = ratio(d.PSSPerSandboxMiB, d.BaselineKernelPSSMiB)
	d.RatioMemAvailable = ratio(d.MemAvailableDropPerSandboxMiB, d.BaselineKernelPSSMiB)
	if d.PSSPerSandboxMiB > 0 {
		d.Per24GiBPSS = int(24 * 1024 / d.PSSPerSandboxMiB)
	}
	if d.MemAvailableDropPerSandboxMiB > 0 {
		d.Per24GiBMemAvailable = int(24 * 1024 / d.MemAvailableDropPerSandboxMiB)
	}
	return nil
}

// kernelPSSPy starts an ipykernel with jupyter_client, runs the cell in it,
// prints the kernel's pid and waits for its stdin to close.
const kernelPSSPy = `import json, os, sys
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
from jupyter_client.manager import KernelManager
km = KernelManager(kernel_name="python3")
km.start_kernel()
try:
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    r = kc.execute_interactive(sys.argv[1], store_history=False, output_hook=lambda m: None, timeout=300)
    if r["content"]["status"] != "ok":
        sys.exit("the cell failed in the kernel: " + r["content"]["status"])
    print(km.provisioner.pid, flush=True)
    sys.stdin.read()
    kc.stop_channels()
finally:
    km.shutdown_kernel(now=True)
`

// pythonPSSPy runs the cell in a bare python3, prints its pid and waits.
const pythonPSSPy = `import os, sys
exec(sys.argv[1])
print(os.getpid(), flush=True)
sys.stdin.read()
`

// baselinePSS is the PSS, in MiB, of one ipykernel (kernel) or bare
// python3 that ran dsCell, with its descendants, measured after the same
// settling time as the sandboxes.
func baselinePSS(ctx context.Context, o scenarioOptions, kernel bool) (float64, error) {
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	script := pythonPSSPy
	if kernel {
		script = kernelPSSPy
	}
	cmd := exec.CommandContext(cctx, o.python, "-c", script, dsCell)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var errb limitedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		stdin.Close() // the script ends (and shuts its kernel down)
		_ = cmd.Wait()
	}()
	line, err := readLine(cctx, stdout)
	if err != nil {
		return 0, fmt.Errorf("%v (stderr: %.600s)", err, errb.String())
	}
	var pid int
	if err := json.Unmarshal([]byte(line), &pid); err != nil || pid <= 0 {
		return 0, fmt.Errorf("want a pid, got %q (stderr: %.600s)", line, errb.String())
	}
	select {
	case <-time.After(densitySettle):
	case <-cctx.Done():
		return 0, cctx.Err()
	}
	pids := append([]int{pid}, descendantsOf(readProcs(), pid)...)
	kb, err := pssOf(pids)
	if err != nil {
		return 0, err
	}
	if kb == 0 {
		return 0, fmt.Errorf("process %d ended before it was measured", pid)
	}
	return float64(kb) / 1024, nil
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

func printDensity(w io.Writer, d *DensityResult) {
	fmt.Fprintf(w, "%d idle sandboxes after the pandas cell (%d processes, found by %s)\n", d.N, d.Processes, strings.Join(d.FoundBy, ", "))
	fmt.Fprintf(w, "%-58s %9s %9s %12s\n", "memory per sandbox", "MiB", "ratio", "per 24 GiB")
	per := func(mib float64) string {
		if mib <= 0 {
			return "-"
		}
		return fmt.Sprintf("≈ %d", int(24*1024/mib))
	}
	fmt.Fprintf(w, "%-58s %9.1f %9.2f %12s\n", "PSS of its processes (sum over all / N)", d.PSSPerSandboxMiB, d.RatioPSS, per(d.PSSPerSandboxMiB))
	fmt.Fprintf(w, "%-58s %9.1f %9.2f %12s\n", fmt.Sprintf("  + the daemon's own tree (procs %d, %.1f MiB) / N", d.DaemonTreeProcesses, d.DaemonTreeMiB),
		d.PSSWithDaemonTreeMiB, ratio(d.PSSWithDaemonTreeMiB, d.BaselineKernelPSSMiB), per(d.PSSWithDaemonTreeMiB))
	fmt.Fprintf(w, "%-58s %9.1f %9.2f %12s\n", "MemAvailable drop / N (others move it too)", d.MemAvailableDropPerSandboxMiB, d.RatioMemAvailable, per(d.MemAvailableDropPerSandboxMiB))
	fmt.Fprintf(w, "%-58s %9.1f %9s %12s\n", "baseline: one ipykernel after the cell (PSS)", d.BaselineKernelPSSMiB, "1.00", per(d.BaselineKernelPSSMiB))
	fmt.Fprintf(w, "%-58s %9.1f %9.2f %12s\n", "baseline: a bare python3 after the cell (PSS)", d.BaselinePythonPSSMiB, ratio(d.BaselinePythonPSSMiB, d.BaselineKernelPSSMiB), per(d.BaselinePythonPSSMiB))
	fmt.Fprintf(w, "PSS of one sandbox: p50 %.1f MiB, max %.1f MiB (n=%d)\n", d.PSSSandboxMiB.P50, d.PSSSandboxMiB.Max, d.PSSSandboxMiB.N)
}
