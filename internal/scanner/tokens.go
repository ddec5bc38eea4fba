package scanner

import (
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// The token pass stands in for the seed's AST walk (scanner.py:200-274),
// which Go cannot run: it tokenizes Python (names, operators, strings,
// comments, brackets, logical lines) and recognizes the same three shapes —
// import statements, calls of a bare name, and the seed's attribute calls.
// Strings and comments are skipped, as the AST skipped them. Where it differs
// from the seed:
//   - the seed skipped its AST pass when the code did not parse; this pass
//     always runs, so invalid Python can get more findings, never fewer;
//   - f-strings are skipped whole (the AST saw calls inside their braces; the
//     patterns still see "eval(" there);
//   - an attribute call's line is that of the attribute, not of the start of
//     the expression it is called on.

type tokKind uint8

const (
	tName tokKind = iota + 1
	tOp
	tString
	tNumber
	tNewline // the end of a logical line (a newline outside brackets, or ';')
)

type token struct {
	kind tokKind
	text string // names and operators
	line int
}

// maxDotted bounds a dotted module name the import recognizer assembles; no
// module the rules name is longer.
const maxDotted = 64

// stringPrefixes are Python's string prefixes, lower-cased.
var stringPrefixes = map[string]bool{"r": true, "u": true, "b": true, "f": true, "br": true, "rb": true, "fr": true, "rf": true}

// tokenPass feeds every token of code to a recognizer that adds findings to s.
func tokenPass(code string, s *scan) {
	r := recognizer{s: s}
	n, line, depth := len(code), 1, 0
	for i := 0; i < n; {
		c := code[i]
		switch {
		case c == '\n':
			if depth == 0 {
				r.token(token{kind: tNewline, line: line})
			}
			line++
			i++
		case c == ' ' || c == '\t' || c == '\f' || c == '\r':
			i++
		case c == '\\': // line continuation (or a stray backslash)
			i++
			if i < n && code[i] == '\n' {
				line++
				i++
			}
		case c == '#':
			if j := strings.IndexByte(code[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = n
			}
		case c == '\'' || c == '"':
			start := line
			i, line = skipString(code, i, line)
			r.token(token{kind: tString, line: start})
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentPart(code[j]) {
				j++
			}
			word := code[i:j]
			if j < n && (code[j] == '\'' || code[j] == '"') && len(word) <= 2 && stringPrefixes[strings.ToLower(word)] {
				start := line
				i, line = skipString(code, j, line)
				r.token(token{kind: tString, line: start})
				continue
			}
			r.token(token{kind: tName, text: word, line: line})
			i = j
		case c >= '0' && c <= '9':
			j := i + 1
			for j < n && (isIdentPart(code[j]) || code[j] == '.') {
				j++
			}
			r.token(token{kind: tNumber, line: line})
			i = j
		default:
			switch c {
			case '(', '[', '{':
				depth++
			case ')', ']', '}':
				depth = max(0, depth-1)
			}
			if c == ';' {
				r.token(token{kind: tNewline, line: line})
			} else {
				r.token(token{kind: tOp, text: code[i : i+1], line: line})
			}
			i++
		}
	}
	r.token(token{kind: tNewline, line: line})
}

// skipString returns the offset just past the string literal whose opening
// quote is at code[i], and the line there. An unterminated single-quoted
// string ends at the newline; an unterminated triple-quoted one at the end.
func skipString(code string, i, line int) (int, int) {
	q := code[i]
	triple := strings.HasPrefix(code[i:], string([]byte{q, q, q}))
	if triple {
		i += 3
	} else {
		i++
	}
	for n := len(code); i < n; {
		switch c := code[i]; {
		case c == '\\':
			if i+1 < n && code[i+1] == '\n' {
				line++
			}
			i += 2
		case c == '\n':
			if !triple {
				return i, line
			}
			line++
			i++
		case c == q && (!triple || strings.HasPrefix(code[i:], string([]byte{q, q, q}))):
			if triple {
				return i + 3, line
			}
			return i + 1, line
		default:
			i++
		}
	}
	return len(code), line
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentPart(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// Import recognizer states.
const (
	stNone   = iota
	stImport // in `import a.b as c, d`
	stFrom   // in `from a.b` before `import`
	stSkip   // in the rest of a statement that holds nothing to recognize
)

// recognizer sees the tokens one by one with the four before each.
type recognizer struct {
	s     *scan
	prev  [4]token // prev[0] is the token just before
	state int

	// import statement being read
	stmtLine int
	dotted   strings.Builder
	tooLong  bool
	wantPart bool // the next name continues the dotted name
	alias    bool // the next name is an `as` alias
}

func (r *recognizer) token(t token) {
	r.imports(t)
	if t.kind == tOp && t.text == "(" {
		r.call()
	}
	copy(r.prev[1:], r.prev[:3])
	r.prev[0] = t
}

// stmtStart reports whether the token after prev[0] begins a statement.
func (r *recognizer) stmtStart() bool {
	p := r.prev[0]
	return p.kind == 0 || p.kind == tNewline || p.kind == tOp && p.text == ":"
}

func (r *recognizer) imports(t token) {
	switch r.state {
	case stNone:
		if t.kind == tName && (t.text == "import" || t.text == "from") && r.stmtStart() {
			r.state, r.stmtLine = stImport, t.line
			if t.text == "from" {
				r.state = stFrom
			}
			r.resetDotted()
		}
	case stImport:
		switch {
		case t.kind == tName && r.alias:
			r.alias = false
		case t.kind == tName && t.text == "as":
			r.module(false)
			r.alias = true
		case t.kind == tName && r.wantPart:
			r.addPart(t.text)
		case t.kind == tOp && t.text == ".":
			r.addPart(".")
			r.wantPart = true
		case t.kind == tOp && t.text == ",":
			r.module(false)
		default: // the end of the statement, or something we do not follow
			r.module(false)
			r.state = stNone
			if t.kind != tNewline {
				r.state = stSkip
			}
		}
	case stFrom:
		switch {
		case t.kind == tName && t.text == "import":
			r.module(true)
			r.state = stSkip
		case t.kind == tName && r.wantPart:
			r.addPart(t.text)
		case t.kind == tOp && t.text == "." && r.dotted.Len() > 0:
			r.addPart(".")
			r.wantPart = true
		default: // a relative import (from . import x) or not an import
			r.state = stSkip
		}
	}
	if r.state == stSkip && t.kind == tNewline {
		r.state = stNone
	}
}

func (r *recognizer) resetDotted() {
	r.dotted.Reset()
	r.tooLong, r.wantPart, r.alias = false, true, false
}

func (r *recognizer) addPart(s string) {
	r.wantPart = false
	if r.dotted.Len()+len(s) > maxDotted {
		r.tooLong = true
		return
	}
	r.dotted.WriteString(s)
}

// module records the dotted name read so far: `import X` matches X exactly,
// `from X.y import` its first segment.
func (r *recognizer) module(firstSegment bool) {
	name := r.dotted.String()
	tooLong := r.tooLong
	r.resetDotted()
	if tooLong || name == "" {
		return
	}
	if firstSegment {
		name, _, _ = strings.Cut(name, ".")
	}
	if cat, ok := modules[name]; ok {
		r.s.add(api.Finding{Type: cat, Line: r.stmtLine, Module: name})
	}
}

// call looks at the tokens before an opening parenthesis.
func (r *recognizer) call() {
	name, before := r.prev[0], r.prev[1]
	if name.kind != tName {
		return
	}
	if before.kind == tOp && before.text == "." {
		// The seed's _check_call: x.exec(…), x.eval(…), x.compile(…) are
		// critical; open.read/.write/.open(…) on the name open itself, high.
		switch name.text {
		case "exec", "eval", "compile":
			r.s.add(api.Finding{Type: DynamicExec, Line: name.line, Function: name.text})
		case "read", "write", "open":
			recv, beforeRecv := r.prev[2], r.prev[3]
			if recv.kind == tName && recv.text == "open" && !(beforeRecv.kind == tOp && beforeRecv.text == ".") {
				r.s.add(api.Finding{Type: DynamicExec, Severity: api.SeverityHigh, Line: name.line, Function: "open." + name.text})
			}
		}
		return
	}
	if before.kind == tName && (before.text == "def" || before.text == "class") {
		return
	}
	if cat, ok := functions[name.text]; ok {
		r.s.add(api.Finding{Type: cat, Line: name.line, Function: name.text})
	}
}
