package scanner

import "strings"

// patternPass applies the patterns to code with the result of
// FindAll over the whole text, pattern by pattern, but without running five
// unanchored searches over megabytes: every match of every pattern is
// `\b NAME \s* (` with NAME made of word characters and dots, so it ends at a
// "(" and starts inside the run of [\w.] just before that parenthesis and its
// white space. For each "(" whose name could be one a pattern knows, the
// pattern runs on that window only. Windows do not overlap (no window holds
// another "("), the byte before a window is never a word byte (so \b means
// what it does in the whole text), and each byte is in at most one window, so
// the pass stays linear with a small constant. scanner_test.go checks it
// against the plain FindAll.
//
// hit is called for each match, in order of offset, with the offset of its
// start and the function it names (the last dotted part of its first group).
func patternPass(code string, hit func(category string, off int, function string)) {
	for off := 0; off < len(code); {
		j := strings.IndexByte(code[off:], '(')
		if j < 0 {
			return
		}
		paren := off + j
		off = paren + 1
		nameEnd := paren
		for nameEnd > 0 && isSpace(code[nameEnd-1]) {
			nameEnd--
		}
		start := nameEnd
		for start > 0 && (isWord(code[start-1]) || code[start-1] == '.') {
			start--
		}
		if start == nameEnd {
			continue
		}
		name := code[start:nameEnd]
		last := name[strings.LastIndexByte(name, '.')+1:]
		window := code[start : paren+1]
		for i := range patterns {
			p := &patterns[i]
			if !p.candidate(name, last) {
				continue
			}
			m := p.re.FindStringSubmatchIndex(window)
			if m == nil {
				continue
			}
			matched := window[m[2]:m[3]]
			hit(p.category, start+m[0], matched[strings.LastIndexByte(matched, '.')+1:])
		}
	}
}

// candidate reports whether a name before "(" could match p (a cheap
// necessary condition; the expression decides).
func (p *pattern) candidate(name, last string) bool {
	if p.category == Network {
		return strings.Contains(name, "socket.") || strings.Contains(name, "urllib.") ||
			strings.Contains(name, "requests.") || strings.Contains(name, "http.client.")
	}
	_, ok := p.last[last]
	return ok
}

// isSpace is RE2's \s.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

// isWord is RE2's \w.
func isWord(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
