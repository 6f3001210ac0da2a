package conf

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// locator maps TOML key paths to the line that defines them. BurntSushi/toml
// keeps key positions private, so we scan the text ourselves: table headers
// and `key =` lines are enough to point an operator at the right line.
//
// Paths are dotted; elements of arrays of tables carry their index, as in
// "backend.app.server.1.weight".
type locator struct {
	lines map[string]int
	plain map[string]int // same keys with array indexes removed
	count map[string]int // array-of-tables counters, by path without index
}

func newLocator(src []byte) *locator {
	l := &locator{lines: map[string]int{}, plain: map[string]int{}, count: map[string]int{}}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(line, "[["):
			end := strings.Index(line, "]]")
			if end < 0 {
				continue
			}
			p := joinKey(splitKey(line[2:end]))
			idx := l.count[p]
			l.count[p] = idx + 1
			table = p + "." + strconv.Itoa(idx)
			l.set(table, n)
			l.set(p, n)
		case line[0] == '[':
			end := strings.Index(line, "]")
			if end < 0 {
				continue
			}
			table = l.withIndexes(splitKey(line[1:end]))
			l.set(table, n)
		default:
			eq := strings.Index(line, "=")
			if eq < 0 {
				continue
			}
			key := joinKey(splitKey(line[:eq]))
			if key == "" {
				continue
			}
			if table != "" {
				key = table + "." + key
			}
			l.set(key, n)
		}
	}
	return l
}

// withIndexes resolves a plain table header like [backend.app.server.x] so
// that segments naming an array of tables point at its latest element.
func (l *locator) withIndexes(parts []string) string {
	var out []string
	plain := ""
	for _, p := range parts {
		if plain == "" {
			plain = p
		} else {
			plain += "." + p
		}
		out = append(out, p)
		if c, ok := l.count[plain]; ok {
			out = append(out, strconv.Itoa(c-1))
		}
	}
	return strings.Join(out, ".")
}

func (l *locator) set(key string, line int) {
	if _, ok := l.lines[key]; !ok {
		l.lines[key] = line
	}
	var kept []string
	for _, p := range strings.Split(key, ".") {
		if _, err := strconv.Atoi(p); err != nil {
			kept = append(kept, p)
		}
	}
	if p := strings.Join(kept, "."); p != "" {
		if _, ok := l.plain[p]; !ok {
			l.plain[p] = line
		}
	}
}

// plainLine finds a key given without array indexes (as toml.MetaData
// reports undecoded keys).
func (l *locator) plainLine(key string) int {
	for key != "" {
		if n, ok := l.plain[key]; ok {
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

// line returns the line of key, or of its closest defined parent, or 0.
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

// splitKey splits a dotted TOML key, honouring quoted segments.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, strings.TrimSpace(cur.String()))
	return parts
}

func joinKey(parts []string) string { return strings.Join(parts, ".") }
