// Package scanner is a port of the seed's code scanner (security/scanner.py):
// regular expressions over the raw source and a Python-aware pass over its
// tokens that stands in for the seed's AST walk. It reports findings — a
// category, a severity and a line — for code that deletes files, runs
// commands, opens sockets, evaluates strings or exits the interpreter.
//
// It is a tripwire for accidental and obvious dangerous code, not a security
// boundary: a determined author evades a pattern scanner trivially
// (getattr(__builtins__, "ev"+"al"), a base64 blob, a .pth file). Isolation is
// what contains code; the scanner only makes the obvious visible, or refuses
// it in block mode.
//
// Scan is pure (no I/O), deterministic and linear in the size of the code: the
// expressions are RE2 (Go's regexp runs in time linear in its input) and the
// token pass reads each byte a bounded number of times. The findings it keeps
// are bounded too (MaxFindings); Blocking is decided over all of them.
package scanner

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// Categories of findings: the seed's issue types.
const (
	FileWrite   = "file_write"
	Network     = "network"
	Subprocess  = "subprocess"
	DynamicExec = "dynamic_exec"
	System      = "system"
)

// severity is the seed's SEVERITY_MAP; weight its PATTERN_WEIGHTS.
var (
	severity = map[string]string{
		FileWrite: api.SeverityHigh, Network: api.SeverityMedium, Subprocess: api.SeverityHigh,
		DynamicExec: api.SeverityCritical, System: api.SeverityHigh,
	}
	weight = map[string]float64{
		FileWrite: 0.4, Network: 0.3, Subprocess: 0.5, DynamicExec: 0.6, System: 0.5,
	}
	// harm says, per category, what the code can do.
	harm = map[string]string{
		FileWrite:   "delete, move or create files and directories",
		Network:     "open network connections",
		Subprocess:  "start other processes",
		DynamicExec: "run code built at run time",
		System:      "run shell commands, exit the interpreter or start the debugger",
	}
)

// MaxFindings bounds the findings a Report keeps; the rest are counted in
// Omitted.
const MaxFindings = 100

// maxTracked bounds the distinct (line, category) pairs Scan remembers; past
// it, further findings are only counted (and still decide Blocking).
const maxTracked = 10000

// Report is the outcome of one scan.
type Report struct {
	// Findings are the deduplicated findings, ordered by line, at most
	// MaxFindings of them.
	Findings []api.Finding
	// Omitted counts findings beyond MaxFindings (past an internal bound the
	// count includes duplicates).
	Omitted int
	// Blocking is true when some finding is at the blocking severity
	// (critical): the seed escalated exactly those to its "secure" backend.
	Blocking bool
	// Risk is the seed's score, min(1, 1 - 1/(1 + 0.5·Σ weights)) over the
	// tracked findings; the seed called code with Risk < 0.3 safe.
	Risk float64
}

// BlockingSeverity is the severity at which block mode refuses to run code.
const BlockingSeverity = api.SeverityCritical

// pattern is one of the seed's DANGEROUS_PATTERNS. The function named in a
// finding is the last dotted part of the first group.
type pattern struct {
	category string
	re       *regexp.Regexp
	last     map[string]struct{} // the names a match can end with (not for network)
}

// patterns are the seed's DANGEROUS_PATTERNS (scanner.py:88-94), applied to
// the raw source, comments and strings included, as the seed did. All five
// are valid RE2 unchanged except network, which is fixed: the seed's
// `\b(socket\.|urllib\.|requests\.|http\.client\.)\s*\(` only matched text
// like "requests.(" and so never fired; ours matches a call of anything in
// those modules ("requests.get(", "urllib.request.urlopen(").
var patterns = []pattern{
	{FileWrite, regexp.MustCompile(`\b(os\.remove|os\.rmdir|os\.unlink|shutil\.rmtree|shutil\.move)\s*\(`),
		names("remove", "rmdir", "unlink", "rmtree", "move")},
	{Network, regexp.MustCompile(`\b((?:socket|urllib|requests|http\.client)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*\(`), nil},
	{Subprocess, regexp.MustCompile(`\b(subprocess\.(Popen|call|run|check_call|check_output))\s*\(`),
		names("Popen", "call", "run", "check_call", "check_output")},
	{DynamicExec, regexp.MustCompile(`\b(exec|eval|compile|__import__)\s*\(`),
		names("exec", "eval", "compile", "__import__")},
	{System, regexp.MustCompile(`\b(os\.system|sys\.exit|pdb\.set_trace)\s*\(`),
		names("system", "exit", "set_trace")},
}

func names(n ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(n))
	for _, s := range n {
		m[s] = struct{}{}
	}
	return m
}

// modules are the seed's MODULE_PATTERNS (scanner.py:35-46): `import X` with
// X exactly one of these, or `from X.y import …` whose first segment is.
var modules = map[string]string{
	"os": FileWrite, "shutil": FileWrite,
	"socket": Network, "urllib": Network, "requests": Network, "http": Network, "http.client": Network,
	"subprocess": Subprocess,
	"pdb":        System, "sys": System,
}

// functions are the seed's DANGEROUS_FUNCTIONS (scanner.py:49-55): calls of a
// bare name.
var functions = map[string]string{
	"remove": FileWrite, "rmdir": FileWrite, "unlink": FileWrite, "rename": FileWrite, "mkdir": FileWrite, "makedirs": FileWrite,
	"socket": Network, "create_connection": Network,
	"Popen": Subprocess, "call": Subprocess, "run": Subprocess, "check_call": Subprocess, "check_output": Subprocess,
	"exec": DynamicExec, "eval": DynamicExec, "compile": DynamicExec, "__import__": DynamicExec, "open": DynamicExec,
	"system": System, "exit": System, "exitfunc": System, "excepthook": System,
}

// Scan scans Python source.
func Scan(code string) Report {
	s := scan{seen: make(map[key]int)}
	lines := lineCounter{code: code}
	patternPass(code, func(category string, off int, function string) {
		s.add(api.Finding{Type: category, Line: lines.at(off), Function: function})
	})
	tokenPass(code, &s)
	return s.report()
}

type key struct {
	line     int
	category string
}

// scan accumulates findings: the first per (line, category) wins, and the
// patterns run before the token pass, as in the seed — except that a later,
// more severe finding replaces it (the seed's open.read rule is "high" where
// a bare open() on the same line is "critical"), so a cell is never blocked
// for a finding it does not list.
type scan struct {
	found    []api.Finding
	seen     map[key]int // index in found
	weights  float64     // Σ weights
	overflow int
	blocking bool
}

func (s *scan) add(f api.Finding) {
	if f.Severity == "" {
		f.Severity = severity[f.Type]
	}
	if f.Severity == BlockingSeverity {
		s.blocking = true
	}
	k := key{f.Line, f.Type}
	if i, ok := s.seen[k]; ok {
		if old := s.found[i]; f.Severity == BlockingSeverity && old.Severity != BlockingSeverity {
			s.weights += weightOf(f) - weightOf(old)
			s.found[i] = f
		}
		return
	}
	if len(s.seen) >= maxTracked {
		s.overflow++
		return
	}
	s.seen[k] = len(s.found)
	s.weights += weightOf(f)
	s.found = append(s.found, f)
}

func weightOf(f api.Finding) float64 {
	if f.Type == DynamicExec && f.Severity == api.SeverityHigh {
		return 0.4 // the seed's open.read/.write/.open rule
	}
	return weight[f.Type]
}

func (s *scan) report() Report {
	r := Report{Blocking: s.blocking, Omitted: s.overflow}
	r.Risk = min(1, 1-1/(1+0.5*s.weights))
	slices.SortStableFunc(s.found, func(a, b api.Finding) int { return cmp.Compare(a.Line, b.Line) })
	if len(s.found) > MaxFindings {
		r.Omitted += len(s.found) - MaxFindings
		s.found = s.found[:MaxFindings]
	}
	for i := range s.found {
		s.found[i].Message = describe(s.found[i])
	}
	r.Findings = s.found
	return r
}

func describe(f api.Finding) string {
	switch {
	case f.Module != "":
		return "imports " + f.Module + ", which can " + harm[f.Type]
	case f.Function == "open" || strings.HasPrefix(f.Function, "open."):
		// The seed lists open among its dynamic_exec functions.
		return "calls " + f.Function + "(): opens a file, which the seed's rules rate " + f.Severity + " (dynamic_exec)"
	case f.Function != "":
		return "calls " + f.Function + "(), which can " + harm[f.Type]
	}
	return "can " + harm[f.Type]
}

// lineCounter turns increasing byte offsets into 1-based line numbers,
// counting each newline once.
type lineCounter struct {
	code string
	off  int // offsets before off are counted
	line int // newlines before off
}

func (l *lineCounter) at(off int) int {
	if off > l.off {
		l.line += strings.Count(l.code[l.off:off], "\n")
		l.off = off
	}
	return l.line + 1
}
