package conf

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The TOML decoder stops at the first value of the wrong type, so a file
// with three of them showed one. Parse therefore decodes the document into
// a generic tree first, checks every value's type here against rawFile
// (the struct it will decode into), reports each mismatch with its line
// and key and removes it, and only then decodes what is left into rawFile:
// that decode cannot fail on a type, and validation goes on to find every
// other problem of the file.

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// typeCheckTable checks the keys of table m (at dotted path, "" at the top)
// against struct t and deletes those of the wrong type. Keys t does not
// have are left for the unknown-key report.
func (v *validator) typeCheckTable(path string, m map[string]any, t reflect.Type) {
	fields := tomlFields(t)
	for _, k := range sortedKeys(m) {
		key := k
		if path != "" {
			key = path + "." + k
		}
		ft, ok := fields[k]
		if !ok {
			// The decoder would take "Mode" for mode (it matches keys
			// regardless of case): refused, as HAProxy refuses "Mode",
			// so that one spelling of each key reaches the tools that
			// read the file.
			if want := foldedField(fields, k); want != "" {
				v.errf(key, "keys are written in lower case: %s, not %s (docs/reference.md)", want, k)
				delete(m, k)
			}
			continue
		}
		if !v.typeCheckValue(key, m[k], ft) {
			delete(m, k)
		}
	}
}

// foldedField is the field of fields that k names when case is ignored,
// or "".
func foldedField(fields map[string]reflect.Type, k string) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return name
		}
	}
	return ""
}

// typeCheckValue reports whether val may decode into t; when it may not,
// the problem is recorded at key.
func (v *validator) typeCheckValue(key string, val any, t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	want := ""
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshalerType):
		if _, ok := val.(string); !ok {
			want = "string"
		}
	case t.Kind() == reflect.String:
		if _, ok := val.(string); !ok {
			want = "string"
		}
	case t.Kind() == reflect.Bool:
		if _, ok := val.(bool); !ok {
			want = "bool"
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		if _, ok := val.(int64); !ok {
			want = "integer"
		}
	case t.Kind() == reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			want = "map"
			break
		}
		v.typeCheckTable(key, m, t)
	case t.Kind() == reflect.Map:
		m, ok := val.(map[string]any)
		if !ok {
			want = "map"
			break
		}
		for _, name := range sortedKeys(m) {
			if !v.typeCheckValue(key+"."+name, m[name], t.Elem()) {
				delete(m, name)
			}
		}
	case t.Kind() == reflect.Slice:
		return v.typeCheckList(key, val, t)
	}
	if want == "" {
		return true
	}
	msg := fmt.Sprintf("must be %s, not %s", tomlKind(want), valueKind(val))
	if want == "string" {
		msg += ` (durations and addresses are quoted: write "5s", not 5)`
	}
	v.typeErr(key, "%s", msg)
	return false
}

// typeErr records a type mismatch at key.
func (v *validator) typeErr(key, format string, args ...any) {
	v.errf(key, format, args...)
	if v.badType == nil {
		v.badType = map[string]bool{}
	}
	v.badType[key] = true
}

// typeCheckList checks a list value, or an array of tables.
func (v *validator) typeCheckList(key string, val any, t reflect.Type) bool {
	elem := t.Elem()
	for elem.Kind() == reflect.Pointer {
		elem = elem.Elem()
	}
	if tables, ok := val.([]map[string]any); ok { // [[array.of.tables]]
		if elem.Kind() != reflect.Struct {
			v.typeErr(key, "must be an array of values like [\"a\", \"b\"], not [[tables]]")
			return false
		}
		for i, m := range tables {
			v.typeCheckTable(key+"."+strconv.Itoa(i), m, elem)
		}
		return true
	}
	list, ok := val.([]any)
	if !ok {
		hint := ""
		if s, ok := val.(string); ok {
			hint = fmt.Sprintf(" (a list of one: [%q])", s)
		}
		v.typeErr(key, "must be an array, not %s%s", valueKind(val), hint)
		return false
	}
	for i, x := range list {
		if elem.Kind() == reflect.Struct { // an inline array of tables
			m, ok := x.(map[string]any)
			if !ok {
				v.typeErr(key, "entry %d must be a table, not %s", i+1, valueKind(x))
				return false
			}
			v.typeCheckTable(key+"."+strconv.Itoa(i), m, elem)
			continue
		}
		if _, isStr := x.(string); elem.Kind() == reflect.String && !isStr {
			v.typeErr(key, "entry %d must be a string, not %s (quote it)", i+1, valueKind(x))
			return false
		}
	}
	return true
}

// valueKind names the type of a decoded TOML value as a config author
// thinks of it.
func valueKind(val any) string {
	switch val.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "true or false"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date/time"
	}
	return fmt.Sprintf("%T", val)
}

// tomlFields maps the TOML key names of struct t to their types.
func tomlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		out[name] = f.Type
	}
	return out
}

// decodeChecked decodes src into raw after the type check: it returns the
// metadata of the decode of what is left (for the unknown keys).
func (v *validator) decodeChecked(doc map[string]any, raw *rawFile) (toml.MetaData, error) {
	v.typeCheckTable("", doc, reflect.TypeFor[rawFile]())
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return toml.MetaData{}, err
	}
	return toml.NewDecoder(&buf).Decode(raw)
}

// keysAt lists the keys valid in the table at the dotted path parts (as
// md.Undecoded gives them: names of named tables included, no array
// indexes), or nil when that is not a table with fixed keys.
func keysAt(parts []string) []string {
	t := reflect.TypeFor[rawFile]()
	for i := 0; i < len(parts); {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			ft, ok := tomlFields(t)[parts[i]]
			if !ok {
				return nil
			}
			t = ft
			i++
		case reflect.Map:
			t = t.Elem() // parts[i] is a name
			i++
		case reflect.Slice:
			t = t.Elem() // an array of tables: parts[i] is a key of an element
			if _, err := strconv.Atoi(parts[i]); err == nil {
				i++
			}
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for k := range tomlFields(t) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// nearest returns the key of keys closest to k in edit distance when it is
// close enough to be a misspelling, else "".
func nearest(k string, keys []string) string {
	best, bestD := "", 0
	for _, c := range keys {
		d := levenshtein(k, c)
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(2, len(k)/3) {
		return ""
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
