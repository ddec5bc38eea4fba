package api

import (
	"encoding/json"
	"slices"
)

// Execution is the outcome of running one cell of code. A Python exception, a
// timeout or a dead kernel is reported in Error: it is a result, not a failure of
// ds-sandbox (those come back as a Go error / an HTTP error body).
type Execution struct {
	// Results holds every rich output of the cell, in the order the kernel sent them:
	// display() calls and figures first, the value of the last expression (the main
	// result) where it came.
	Results []Result `json:"results"`
	// Logs is what the cell printed, chunk by chunk as it streamed.
	Logs Logs `json:"logs"`
	// Error is set when the cell raised, timed out or killed its kernel.
	Error *ExecutionError `json:"error,omitempty"`
	// ExecutionCount is the kernel's cell counter (In[n]); 0 when the cell never ran.
	ExecutionCount int `json:"execution_count,omitempty"`
	// Notices are messages from ds-sandbox about this execution, such as "the
	// context was restarted: earlier state is gone".
	Notices []string `json:"notices,omitempty"`
	// NetworkDenials are the connections and name lookups the sandbox's
	// network policy refused while the cell ran (any process of the
	// sandbox, not only the cell's).
	NetworkDenials []NetworkDenial `json:"network_denials,omitempty"`
	// Findings are what the code scanner saw in the cell (scanner mode warn or
	// block); a blocked cell carries them with a SecurityScanFailedError.
	Findings []Finding `json:"findings,omitempty"`
	// Truncated says some output was dropped: stdout/stderr past the
	// sandbox's max_output_bytes, a result past the result bounds, or events
	// a slow reader missed. A notice says what and how much.
	Truncated bool `json:"truncated,omitempty"`
	// OOMKilled says the kernel was killed because the sandbox reached its
	// memory limit (memory_mb); Error is then a DeadKernelError saying so.
	OOMKilled bool `json:"oom_killed,omitempty"`
}

// Text returns the text/plain form of the main result (the value of the cell's
// last expression), or "" when there is none.
func (e *Execution) Text() string {
	for _, r := range e.Results {
		if r.IsMainResult {
			return r.Text
		}
	}
	return ""
}

// Logs holds a cell's output streams as the chunks the kernel sent.
type Logs struct {
	Stdout []string `json:"stdout"`
	Stderr []string `json:"stderr"`
}

// ExecutionError describes an exception raised by user code, or the timeout or
// kernel death that ended the cell.
type ExecutionError struct {
	// Name is the exception class, e.g. "ZeroDivisionError". Two names are ours:
	// "TimeoutError" (the cell ran past its timeout and was interrupted) and
	// "DeadKernelError" (the kernel process died during the cell).
	Name  string `json:"name"`
	Value string `json:"value"`
	// Traceback is the formatted traceback, lines joined with "\n".
	Traceback string `json:"traceback"`
}

// Names of the errors ds-sandbox itself reports in an Execution.
const (
	ErrNameTimeout    = "TimeoutError"
	ErrNameDeadKernel = "DeadKernelError"
	// ErrNameScanBlocked (the seed's SecurityScanFailedError): the code
	// scanner, in block mode, found something at the blocking severity and the
	// cell was not run.
	ErrNameScanBlocked = "SecurityScanFailedError"
)

// Code scanner modes, from least to most strict.
const (
	ScannerOff   = "off"   // no scan
	ScannerWarn  = "warn"  // scan, run anyway, attach the findings
	ScannerBlock = "block" // scan; a critical finding means the cell is not run
)

// ScannerModes lists the modes from least to most strict.
var ScannerModes = []string{ScannerOff, ScannerWarn, ScannerBlock}

// Severities of scanner findings, the seed's.
const (
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// Finding is one thing the code scanner saw: the seed's CodeIssue, plus a
// message. The scanner is a tripwire for obvious dangerous code, not a
// security boundary.
type Finding struct {
	// Type is the seed's category: file_write, network, subprocess,
	// dynamic_exec or system.
	Type string `json:"type"`
	// Severity is medium, high or critical.
	Severity string `json:"severity"`
	// Line is 1-based, in the cell's code.
	Line int `json:"line"`
	// Function is the called function ("system", "eval"), Module the
	// imported module ("subprocess"), whichever the finding is about.
	Function string `json:"function,omitempty"`
	Module   string `json:"module,omitempty"`
	Message  string `json:"message"`
}

// Result is one rich output: every MIME representation the kernel sent for it.
type Result struct {
	Text       string          `json:"text,omitempty"`       // text/plain
	HTML       string          `json:"html,omitempty"`       // text/html
	Markdown   string          `json:"markdown,omitempty"`   // text/markdown
	SVG        string          `json:"svg,omitempty"`        // image/svg+xml
	PNG        string          `json:"png,omitempty"`        // image/png, base64
	JPEG       string          `json:"jpeg,omitempty"`       // image/jpeg, base64
	PDF        string          `json:"pdf,omitempty"`        // application/pdf, base64
	LaTeX      string          `json:"latex,omitempty"`      // text/latex
	JSON       json.RawMessage `json:"json,omitempty"`       // application/json
	JavaScript string          `json:"javascript,omitempty"` // application/javascript
	// Other holds every MIME type not named above, keyed by MIME type.
	Other map[string]json.RawMessage `json:"other,omitempty"`
	// IsMainResult is true for the value of the cell's last expression
	// (execute_result), false for display() output.
	IsMainResult bool `json:"is_main_result"`
	// DisplayID is set for display() calls made with a display_id; a later
	// update_display_data result carries the same id.
	DisplayID string `json:"display_id,omitempty"`
}

// Formats lists the representations this result carries, in a stable order
// ("text", "html", "png", … then the MIME types of Other, sorted).
func (r *Result) Formats() []string {
	var f []string
	add := func(ok bool, name string) {
		if ok {
			f = append(f, name)
		}
	}
	add(r.Text != "", "text")
	add(r.HTML != "", "html")
	add(r.Markdown != "", "markdown")
	add(r.SVG != "", "svg")
	add(r.PNG != "", "png")
	add(r.JPEG != "", "jpeg")
	add(r.PDF != "", "pdf")
	add(r.LaTeX != "", "latex")
	add(len(r.JSON) > 0, "json")
	add(r.JavaScript != "", "javascript")
	others := make([]string, 0, len(r.Other))
	for k := range r.Other {
		others = append(others, k)
	}
	slices.Sort(others)
	return append(f, others...)
}

// ExecuteRequest asks the agent to run code in a context.
type ExecuteRequest struct {
	Code string `json:"code"`
	// ContextID names the code context; "" means the sandbox's default context.
	ContextID string `json:"context_id,omitempty"`
	// TimeoutMs bounds the cell; past it the cell is interrupted and the Execution
	// carries a TimeoutError. 0 means the sandbox's default.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// Envs are set in os.environ for this cell only.
	Envs map[string]string `json:"envs,omitempty"`
	// Network is the seed's per-run_code network override. The control plane
	// applies it (or refuses it when the backend cannot); the agent ignores it.
	Network *NetworkPolicy `json:"network,omitempty"`
	// ScannerMode makes the code scanner stricter for this cell ("warn" or
	// "block"); a mode looser than the sandbox's is refused. "" = the
	// sandbox's mode. The control plane applies it; the agent ignores it.
	ScannerMode string `json:"scanner_mode,omitempty"`
}

// Event types of an execution stream.
const (
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventResult = "result"
	EventError  = "error"
	EventNotice = "notice"
	EventEnd    = "end"
	// EventScan carries the code scanner's findings; it comes first, before
	// the cell runs (or instead, when the scanner blocks it).
	EventScan = "scan"
	// EventFailure reports a failure of ds-sandbox itself (the kernel could
	// not start, the context was deleted, …), not of the user's code: its
	// Error carries a stable error code in Name and the message in Value, and
	// clients turn it into an error (an *Error with that code).
	EventFailure = "failure"
	// EventNetworkDenied reports a connection or lookup the network policy
	// refused while the cell ran; Denial says which.
	EventNetworkDenied = "network_denied"
)

// ExecEvent is one line of an execution's NDJSON stream. The stream ends with an
// event of type "end" carrying the execution count, or with a "failure" event;
// a stream that ends with neither was cut (the sandbox died or the connection
// broke).
type ExecEvent struct {
	Type           string          `json:"type"`
	Text           string          `json:"text,omitempty"`
	Result         *Result         `json:"result,omitempty"`
	Error          *ExecutionError `json:"error,omitempty"`
	ExecutionCount int             `json:"execution_count,omitempty"`
	Denial         *NetworkDenial  `json:"denial,omitempty"`
	Findings       []Finding       `json:"findings,omitempty"`
	// Truncated marks a notice saying that output was dropped.
	Truncated bool `json:"truncated,omitempty"`
	// OOMKilled marks an error event whose kernel the sandbox's memory limit
	// killed (Execution.OOMKilled).
	OOMKilled bool `json:"oom_killed,omitempty"`
}

// Apply folds one stream event into e.
func (e *Execution) Apply(ev ExecEvent) {
	switch ev.Type {
	case EventStdout:
		e.Logs.Stdout = append(e.Logs.Stdout, ev.Text)
	case EventStderr:
		e.Logs.Stderr = append(e.Logs.Stderr, ev.Text)
	case EventResult:
		if ev.Result != nil {
			e.Results = append(e.Results, *ev.Result)
		}
	case EventError:
		e.Error = ev.Error
	case EventNotice:
		e.Notices = append(e.Notices, ev.Text)
		e.Truncated = e.Truncated || ev.Truncated
	case EventScan:
		e.Findings = append(e.Findings, ev.Findings...)
	case EventEnd:
		e.ExecutionCount = ev.ExecutionCount
	case EventNetworkDenied:
		if ev.Denial != nil {
			e.NetworkDenials = append(e.NetworkDenials, *ev.Denial)
		}
	}
}

// Context is a code context: one Jupyter kernel with its own state.
type Context struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

// CreateContextRequest asks for a new code context.
type CreateContextRequest struct {
	// Language must be "python" (or empty); nothing else is supported.
	Language string `json:"language,omitempty"`
	// Cwd is the kernel's working directory, resolved against the sandbox workdir.
	Cwd string `json:"cwd,omitempty"`
}

// SetEnvRequest sets environment variables for the rest of a sandbox's
// life: in os.environ of every running code context, in kernels started
// later, and in every command started later.
type SetEnvRequest struct {
	Envs map[string]string `json:"envs"`
}
