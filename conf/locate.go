package conf

import (
	"strconv"
	"strings"
)

// locator maps TOML key paths to the line that defines them. BurntSushi/toml
// keeps key positions private, so we scan the text ourselves. The scanner
// understands the parts of TOML that move keys around: table headers, arrays
// of tables, dotted and quoted keys, inline tables (nested, and in arrays),
// multi-line arrays and all four kinds of strings (so a "[" or "=" inside a
// string, or a line of a multi-line string, is never taken for a key). It runs
// only on text the TOML decoder accepted, so it need not report errors; on
// anything unexpected it skips ahead rather than fail.
//
// Paths are dotted; elements of arrays of tables carry their 0-based index,
// as in "backend.app.server.1.weight" for the second server's weight.
type locator struct {
	lines  map[string]int          // indexed path -> line that first mentions it
	plain  map[string][]occurrence // path without indexes -> every distinct definition, in file order
	count  map[string]int          // indexed path of an array of tables -> elements so far
	arrays map[string]bool         // indexed paths that are arrays of tables
}

// occurrence is one definition of a key: its indexed path and line.
type occurrence struct {
	key  string
	line int
}

func newLocator(src []byte) *locator {
	l := &locator{lines: map[string]int{}, plain: map[string][]occurrence{}, count: map[string]int{}, arrays: map[string]bool{}}
	s := &scan{src: src, line: 1, l: l}
	s.document()
	return l
}

// record notes that the indexed path key is defined at line, together with
// every parent table it implicitly creates.
func (l *locator) record(key string, line int) {
	parts := strings.Split(key, ".")
	for i := 1; i <= len(parts); i++ {
		p := strings.Join(parts[:i], ".")
		if _, ok := l.lines[p]; ok {
			continue
		}
		l.lines[p] = line
		if l.arrays[p] {
			continue // the array itself; its elements are the definitions
		}
		pl := l.stripIndexes(p)
		l.plain[pl] = append(l.plain[pl], occurrence{key: p, line: line})
	}
}

// markArray notes that the indexed path key is an array of tables, whose
// elements (not the array) are the definitions of its key.
func (l *locator) markArray(key string) {
	if l.arrays[key] {
		return
	}
	l.arrays[key] = true
	pl := l.stripIndexes(key)
	occ := l.plain[pl][:0]
	for _, o := range l.plain[pl] {
		if o.key != key {
			occ = append(occ, o)
		}
	}
	l.plain[pl] = occ
}

// stripIndexes removes the array indexes from an indexed path (a table
// merely named "1" keeps its name).
func (l *locator) stripIndexes(key string) string {
	parts := strings.Split(key, ".")
	kept := []string{parts[0]}
	for i := 1; i < len(parts); i++ {
		if _, err := strconv.Atoi(parts[i]); err == nil && l.arrays[strings.Join(parts[:i], ".")] {
			continue
		}
		kept = append(kept, parts[i])
	}
	return strings.Join(kept, ".")
}

// withIndexes resolves the segments of a table header so that every segment
// naming an array of tables points at its latest element.
func (l *locator) withIndexes(parts []string) string {
	out := ""
	for _, p := range parts {
		if out == "" {
			out = p
		} else {
			out += "." + p
		}
		if l.arrays[out] {
			out += "." + strconv.Itoa(l.count[out]-1)
		}
	}
	return out
}

// line returns the line of the indexed path key, or of its closest defined
// parent, or 0.
func (l *locator) line(key string) int {
	for key != "" {
		if n, ok := l.lines[key]; ok {
			return n
		}
		i := strings.LastIndex(key, ".")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// defined reports whether the indexed path key itself is in the file.
func (l *locator) defined(key string) bool {
	_, ok := l.lines[key]
	return ok
}

// nth finds the n-th (0-based) definition of a key given without array
// indexes, as toml.MetaData reports undecoded keys (once per element of an
// array of tables). It falls back to the first definition, then to the
// closest parent that has one.
func (l *locator) nth(key string, n int) occurrence {
	if occ := l.plain[key]; len(occ) > 0 {
		if n < len(occ) {
			return occ[n]
		}
		return occ[0]
	}
	for k := key; k != ""; {
		i := strings.LastIndex(k, ".")
		if i < 0 {
			break
		}
		k = k[:i]
		if occ := l.plain[k]; len(occ) > 0 {
			return occurrence{key: key, line: occ[0].line}
		}
	}
	return occurrence{key: key}
}

// atLine finds the definition of a key (given without indexes) on line n.
func (l *locator) atLine(key string, n int) (string, bool) {
	for _, o := range l.plain[key] {
		if o.line == n {
			return o.key, true
		}
	}
	return "", false
}

// scan is a small TOML reader that only tracks where keys are.
type scan struct {
	src  []byte
	i    int
	line int
	l    *locator
}

func (s *scan) eof() bool { return s.i >= len(s.src) }

func (s *scan) peek(off int) byte {
	if s.i+off < len(s.src) {
		return s.src[s.i+off]
	}
	return 0
}

// advance moves one byte ahead, counting lines.
func (s *scan) advance() {
	if s.src[s.i] == '\n' {
		s.line++
	}
	s.i++
}

// skipSpace skips blanks and, if newlines is set, newlines and comments.
func (s *scan) skipSpace(newlines bool) {
	for !s.eof() {
		switch c := s.src[s.i]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.i++
		case c == '#':
			for !s.eof() && s.src[s.i] != '\n' {
				s.i++
			}
		case c == '\n' && newlines:
			s.advance()
		default:
			return
		}
	}
}

// skipLine moves past the end of the current line.
func (s *scan) skipLine() {
	for !s.eof() && s.src[s.i] != '\n' {
		s.i++
	}
	if !s.eof() {
		s.advance()
	}
}

func (s *scan) document() {
	table := ""
	for {
		s.skipSpace(true)
		if s.eof() {
			return
		}
		start := s.i
		switch {
		case s.src[s.i] == '[' && s.peek(1) == '[':
			s.i += 2
			parts := s.key()
			s.skipSpace(false)
			if s.peek(0) == ']' && s.peek(1) == ']' {
				s.i += 2
			}
			if len(parts) > 0 {
				parent := s.l.withIndexes(parts[:len(parts)-1])
				arr := joinPath(parent, parts[len(parts)-1])
				s.l.markArray(arr)
				idx := s.l.count[arr]
				s.l.count[arr] = idx + 1
				table = arr + "." + strconv.Itoa(idx)
				s.l.record(table, s.line)
			}
		case s.src[s.i] == '[':
			s.i++
			parts := s.key()
			s.skipSpace(false)
			if s.peek(0) == ']' {
				s.i++
			}
			if len(parts) > 0 {
				table = s.l.withIndexes(parts)
				s.l.record(table, s.line)
			}
		default:
			s.keyValue(table)
		}
		if s.i == start { // nothing understood: never loop forever
			s.skipLine()
		}
	}
}

// keyValue reads `key = value` and records the key (and any keys inside an
// inline-table value) under table.
func (s *scan) keyValue(table string) {
	line := s.line
	parts := s.key()
	s.skipSpace(false)
	if len(parts) == 0 || s.peek(0) != '=' {
		return
	}
	s.i++
	key := joinPath(table, strings.Join(parts, "."))
	s.l.record(key, line)
	s.skipSpace(false)
	s.value(key)
}

// key reads a possibly dotted, possibly quoted key and returns its segments.
func (s *scan) key() []string {
	var parts []string
	for {
		s.skipSpace(false)
		if s.eof() {
			return parts
		}
		switch c := s.src[s.i]; {
		case c == '"' || c == '\'':
			str, ok := s.str()
			if !ok {
				return parts
			}
			parts = append(parts, str)
		case isBare(c):
			j := s.i
			for j < len(s.src) && isBare(s.src[j]) {
				j++
			}
			parts = append(parts, string(s.src[s.i:j]))
			s.i = j
		default:
			return parts
		}
		s.skipSpace(false)
		if s.peek(0) != '.' {
			return parts
		}
		s.i++
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value skips one value; inline tables and arrays of them record their keys
// under path.
func (s *scan) value(path string) {
	if s.eof() {
		return
	}
	switch c := s.src[s.i]; c {
	case '"', '\'':
		s.str()
	case '{':
		s.i++
		for {
			s.skipSpace(true)
			if s.eof() {
				return
			}
			switch s.src[s.i] {
			case '}':
				s.i++
				return
			case ',':
				s.i++
				continue
			}
			start := s.i
			s.keyValue(path)
			if s.i == start {
				s.i++
			}
		}
	case '[':
		s.i++
		idx := 0
		for {
			s.skipSpace(true)
			if s.eof() {
				return
			}
			switch s.src[s.i] {
			case ']':
				s.i++
				return
			case ',':
				s.i++
				continue
			case '{':
				s.l.markArray(path)
				elem := path + "." + strconv.Itoa(idx)
				s.l.record(elem, s.line)
				s.value(elem)
			default:
				start := s.i
				s.value(path + "." + strconv.Itoa(idx))
				if s.i == start {
					s.i++
				}
			}
			idx++
		}
	default:
		// A number, boolean or date: up to the next separator.
		for !s.eof() {
			c := s.src[s.i]
			if c == ',' || c == ']' || c == '}' || c == '\n' || c == '#' {
				return
			}
			s.i++
		}
	}
}

// str reads a basic, literal or multi-line string and returns its text
// (escapes are kept as written, which is enough for key names).
func (s *scan) str() (string, bool) {
	q := s.src[s.i]
	if s.peek(1) == q && s.peek(2) == q {
		s.i += 3
		start := s.i
		for !s.eof() {
			if s.src[s.i] == '\\' && q == '"' && s.i+1 < len(s.src) {
				s.advance()
				s.advance()
				continue
			}
			if s.src[s.i] == q && s.peek(1) == q && s.peek(2) == q {
				// Up to two more quotes may belong to the content.
				for s.peek(3) == q {
					s.i++
				}
				text := string(s.src[start:s.i])
				s.i += 3
				return text, true
			}
			s.advance()
		}
		return "", false
	}
	s.i++
	start := s.i
	for !s.eof() {
		c := s.src[s.i]
		switch {
		case c == '\\' && q == '"':
			s.i += 2
			continue
		case c == q:
			text := string(s.src[start:s.i])
			s.i++
			return text, true
		case c == '\n':
			return "", false
		}
		s.i++
	}
	if s.i > len(s.src) {
		s.i = len(s.src)
	}
	return "", false
}

func joinPath(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}
