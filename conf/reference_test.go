package conf

import (
	"bufio"
	"bytes"
	"encoding"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// The configuration reference (docs/reference.md) lists keys in tables whose
// header row starts with "| key |"; each row's first cell is one full dotted
// key in backquotes. NAME stands for a frontend's or backend's name; arrays
// of tables ([[frontend.NAME.tls]], [[frontend.NAME.route]],
// [[backend.NAME.server]]) add their name without an index:
// `backend.NAME.server.weight`.
const (
	referencePath = "../docs/reference.md"
	readmePath    = "../README.md"
	firstExample  = "../examples/tcp.toml"
)

// acceptedKeys lists every key the decoder accepts, derived from rawFile,
// the struct Parse decodes into: a key it does not hold is what
// md.Undecoded reports as unknown, so this is the same source of truth.
func acceptedKeys() map[string]bool {
	out := map[string]bool{}
	walkKeys(reflect.TypeOf(rawFile{}), "", out)
	return out
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func walkKeys(t reflect.Type, prefix string, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous { // the decoder inlines unexported embedded structs too
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			walkKeys(ft, prefix, out) // BurntSushi/toml inlines embedded structs
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := prefix + name
		elem := ft
		if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
			elem = ft.Elem()
			for elem.Kind() == reflect.Pointer {
				elem = elem.Elem()
			}
		}
		switch {
		case reflect.PointerTo(ft).Implements(textUnmarshaler):
			out[key] = true // a value decoded from its text (a typed name, a duration)
		case ft.Kind() == reflect.Struct:
			walkKeys(ft, key+".", out) // a table
		case ft.Kind() == reflect.Map && elem.Kind() == reflect.Struct:
			walkKeys(elem, key+".NAME.", out) // named tables: [frontend.NAME]
		case ft.Kind() == reflect.Slice && elem.Kind() == reflect.Struct:
			walkKeys(elem, key+".", out) // an array of tables: [[...server]]
		default:
			out[key] = true // a value: scalar, list or a table of strings
		}
	}
}

var keyCell = regexp.MustCompile("^`([a-z0-9_.A-Z]+)`$")

// referenceKeys reads the keys of the reference's key tables, with the line
// each is on; problems collects rows that break the notation and repeats.
func referenceKeys(t *testing.T) (keys map[string]int, problems []string) {
	t.Helper()
	src, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("the configuration reference: %v", err)
	}
	keys = map[string]int{}
	inTable := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := strings.TrimSpace(cells[0])
		switch {
		case first == "key":
			inTable = true
			continue
		case !inTable || strings.HasPrefix(first, "---"):
			continue
		}
		m := keyCell.FindStringSubmatch(first)
		if m == nil {
			problems = append(problems, fmt.Sprintf("docs/reference.md:%d: first cell %q is not one key in backquotes like `frontend.NAME.maxconn`", n, first))
			continue
		}
		if prev, dup := keys[m[1]]; dup {
			problems = append(problems, fmt.Sprintf("docs/reference.md:%d: %s is listed again (first on line %d); list each key once", n, m[1], prev))
			continue
		}
		keys[m[1]] = n
	}
	return keys, problems
}

// TestReferenceListsEveryKey fails for each key the decoder accepts that the
// reference does not list, and each key listed that the decoder refuses.
func TestReferenceListsEveryKey(t *testing.T) {
	accepted := acceptedKeys()
	if len(accepted) < 50 || !accepted["backend.NAME.server.weight"] || !accepted["frontend.NAME.route.header"] {
		t.Fatalf("acceptedKeys found %d keys, without the ones every file has; the walk over rawFile is broken", len(accepted))
	}
	listed, problems := referenceKeys(t)
	for _, p := range problems {
		t.Error(p)
	}
	var missing, extra []string
	for k := range accepted {
		if _, ok := listed[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k, line := range listed {
		if !accepted[k] {
			extra = append(extra, fmt.Sprintf("docs/reference.md:%d: %s", line, k))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, k := range missing {
		t.Errorf("%s is accepted by the decoder but not in docs/reference.md: add a row for it", k)
	}
	for _, k := range extra {
		t.Errorf("%s is in the reference but the decoder refuses it (unknown key): fix or remove the row", k)
	}
}

// TestReadmeFirstConfigurationIsTCPExample keeps the README's first
// configuration the same bytes as examples/tcp.toml, which tests and users
// run.
func TestReadmeFirstConfigurationIsTCPExample(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(firstExample)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(readme, []byte("\n```toml\n"))
	if !ok {
		t.Fatal("README.md has no ```toml block")
	}
	got, _, ok := bytes.Cut(rest, []byte("\n```\n"))
	if !ok {
		t.Fatal("README.md's first ```toml block does not end")
	}
	got = append(got, '\n')
	if bytes.Equal(got, want) {
		if _, err := Parse(firstExample, want); err != nil {
			t.Errorf("%s does not load: %v", firstExample, err)
		}
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("README.md's first ```toml block differs from %s at its line %d:\nREADME:  %q\nexample: %q\n(paste the example into the README unchanged)", firstExample, i+1, g, w)
		}
	}
	t.Fatalf("README.md's first ```toml block differs from %s", firstExample)
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinksResolve checks that every relative link of the README and
// docs/ names a file of this repository, so a clone has every page the
// docs point to.
func TestDocLinksResolve(t *testing.T) {
	pages, _ := filepath.Glob("../docs/*.md")
	pages = append(pages, readmePath)
	for _, page := range pages {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(src), -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path := filepath.Join(filepath.Dir(page), target)
			if target == "" {
				path = page // an anchor of the page itself
			}
			rel, err := filepath.Rel("..", path)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links %s, outside the repository: a clone does not have it", page, m[1])
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links %s, which does not exist", page, m[1])
				continue
			}
			if _, anchor, ok := strings.Cut(m[1], "#"); ok && strings.HasSuffix(path, ".md") && !anchors(t, path)[anchor] {
				t.Errorf("%s links %s, but %s has no heading with that anchor", page, m[1], rel)
			}
		}
	}
}

// anchors lists the heading anchors of a markdown page as GitHub makes
// them: lower case, punctuation dropped, spaces to hyphens.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fence := false
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteByte('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}

// TestUnknownKeyPointsAtReference: the message for an unknown key sends the
// reader to the reference, a file every clone has.
func TestUnknownKeyPointsAtReference(t *testing.T) {
	_, err := Parse("f.toml", []byte("[global]\ncolour = \"blue\"\n"))
	if err == nil || !strings.Contains(err.Error(), "docs/reference.md") {
		t.Fatalf("unknown key: got %v, want a message naming docs/reference.md", err)
	}
	if _, err := os.Stat(referencePath); err != nil {
		t.Fatal(err)
	}
}
