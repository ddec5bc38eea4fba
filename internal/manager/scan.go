package manager

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
	"github.com/ds-sandbox/ds-sandbox/internal/scanner"
)

// scanned is what the code scanner made of one cell.
type scanned struct {
	findings []api.Finding
	notices  []string
	first    []api.ExecEvent // the scan (and notice) events, sent before the cell's own
	// blocked is the whole Execution of a cell the scanner refused to run;
	// nil when the cell runs.
	blocked *api.Execution
}

// scanCell runs the code scanner on req.Code under the strictest of the
// configuration's mode, the sandbox's (fixed when it was created) and
// req.ScannerMode, and clears req.ScannerMode (the agent has no use for it).
// Asking one execution for a looser mode than the sandbox's is
// api.ErrPermission, an unknown mode api.ErrInvalid. Under block, a finding
// at the blocking severity (critical) makes a blocked Execution — the cell
// is not run — and emits api.EventCodeBlocked, which the daemon audits with
// outcome "blocked".
func (s *Sandbox) scanCell(req *api.ExecuteRequest) (scanned, error) {
	if err := scanner.ValidateMode(req.ScannerMode); err != nil {
		return scanned{}, err
	}
	mode := scanner.Stricter(s.m.cfg.ScannerMode, s.Info().ScannerMode)
	if req.ScannerMode != "" && scanner.Stricter(req.ScannerMode, mode) != req.ScannerMode {
		return scanned{}, api.Errorf(api.ErrPermission,
			"scanner_mode %q is looser than this sandbox's %q: one execution may only make the code scanner stricter (off < warn < block)",
			req.ScannerMode, mode)
	}
	mode = scanner.Stricter(mode, req.ScannerMode)
	req.ScannerMode = ""
	if mode == api.ScannerOff {
		return scanned{}, nil
	}
	rep := scanner.Scan(req.Code)
	sc := scanned{findings: rep.Findings}
	if len(rep.Findings) > 0 {
		sc.first = append(sc.first, api.ExecEvent{Type: api.EventScan, Findings: rep.Findings})
	}
	if rep.Omitted > 0 {
		n := fmt.Sprintf("the code scanner found %d more findings than the %d listed", rep.Omitted, len(rep.Findings))
		sc.notices = append(sc.notices, n)
		sc.first = append(sc.first, api.ExecEvent{Type: api.EventNotice, Text: n})
	}
	if mode == api.ScannerBlock && rep.Blocking {
		sc.blocked = &api.Execution{
			Results: []api.Result{}, Logs: api.Logs{Stdout: []string{}, Stderr: []string{}},
			Error: blockedError(rep), Notices: sc.notices, Findings: rep.Findings,
		}
		s.m.codeBlocked(s, req.Code, rep)
	}
	return sc, nil
}

// before returns onEvent preceded, at its first call, by the scanner's
// events: an execution the agent refuses at once (an unknown context) then
// still fails before its stream begins. Calls must not overlap (Execute
// serializes them).
func (sc *scanned) before(onEvent func(api.ExecEvent)) func(api.ExecEvent) {
	if onEvent == nil || len(sc.first) == 0 {
		return onEvent
	}
	first := sc.first
	return func(ev api.ExecEvent) {
		for _, f := range first {
			onEvent(f)
		}
		first = nil
		onEvent(ev)
	}
}

// deliverBlocked sends a blocked cell's events: scan, error, end.
func (sc *scanned) deliverBlocked(onEvent func(api.ExecEvent)) {
	if onEvent == nil {
		return
	}
	for _, ev := range sc.first {
		onEvent(ev)
	}
	onEvent(api.ExecEvent{Type: api.EventError, Error: sc.blocked.Error})
	onEvent(api.ExecEvent{Type: api.EventEnd})
}

// attach puts the findings (and the scanner's notices) on a cell's Execution.
func (sc *scanned) attach(exec *api.Execution) {
	if exec == nil {
		return
	}
	exec.Findings = sc.findings
	exec.Notices = append(slices.Clone(sc.notices), exec.Notices...)
}

// blockedError describes a blocked cell by its first blocking finding (all
// of them are in Execution.Findings).
func blockedError(rep scanner.Report) *api.ExecutionError {
	var first api.Finding
	n := 0
	for _, f := range rep.Findings {
		if f.Severity == scanner.BlockingSeverity {
			if n == 0 {
				first = f
			}
			n++
		}
	}
	value := "the code scanner (scanner_mode block) refused this cell; nothing ran"
	if n > 0 {
		value = fmt.Sprintf("the code scanner (scanner_mode block) refused this cell: line %d: %s (%s, %s)", first.Line, first.Message, first.Type, first.Severity)
		if n > 1 {
			value += fmt.Sprintf(", and %d more %s findings", n-1, scanner.BlockingSeverity)
		}
		value += "; nothing ran"
	}
	return &api.ExecutionError{Name: api.ErrNameScanBlocked, Value: value}
}

// codeBlocked logs and emits a blocked cell (the daemon audits the event).
func (m *Manager) codeBlocked(s *Sandbox, code string, rep scanner.Report) {
	sum := sha256.Sum256([]byte(code))
	var types []string
	for _, f := range rep.Findings {
		if f.Severity == scanner.BlockingSeverity && !slices.Contains(types, f.Type) {
			types = append(types, f.Type)
		}
	}
	info := s.Info()
	m.log.Info("code scanner blocked a cell", "sandbox_id", info.SandboxID, "findings", len(rep.Findings)+rep.Omitted)
	m.emit(api.EventCodeBlocked, info.SandboxID, info.Owner, map[string]string{
		"findings":    strconv.Itoa(len(rep.Findings) + rep.Omitted),
		"types":       strings.Join(types, ","),
		"code_sha256": hex.EncodeToString(sum[:]),
		"code_size":   strconv.Itoa(len(code)),
	})
}
