// Command manpage writes sluice(1) in roff from the CLI's own help, so the
// man page says what the binary says: the general usage (`sluice help`)
// becomes NAME, SYNOPSIS and one section per "heading:" block, and each
// command's `-h` output its own OPTIONS subsection.
//
//	go run ./packaging/manpage -bin bin/sluice -version 1.2.3 > sluice.1
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

func main() {
	bin := flag.String("bin", "bin/sluice", "the sluice binary whose help to turn into a man page")
	version := flag.String("version", "", "version for the page footer (default: `BIN version`)")
	date := flag.String("date", "", "date for the page footer, YYYY-MM-DD (default: SOURCE_DATE_EPOCH, else today)")
	flag.Parse()
	if err := run(os.Stdout, *bin, *version, *date); err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, bin, version, date string) error {
	general, err := help(bin, "help")
	if err != nil {
		return err
	}
	if version == "" {
		v, err := help(bin, "version")
		if err != nil {
			return err
		}
		version = strings.TrimPrefix(strings.TrimSpace(v), "sluice ")
	}
	if date == "" {
		date = pageDate()
	}
	sub := map[string]string{}
	for _, c := range Commands(general) {
		// A command that does not know -h could start doing its work:
		// the timeout bounds that, and only output listing flags is used.
		out, _ := help(bin, c, "-h")
		if flagHead.MatchString(out) || strings.HasPrefix(out, "usage:") {
			sub[c] = out
		}
	}
	_, err = io.WriteString(w, Roff(general, sub, version, date))
	return err
}

// help runs the binary with args and returns what it printed (stdout then
// stderr); the exit status is ignored since `-h` exits 2 by convention.
func help(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		return "", err
	}
	return out.String(), nil
}

// pageDate honours SOURCE_DATE_EPOCH so a package build is reproducible.
func pageDate() string {
	t := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			t = time.Unix(sec, 0)
		}
	}
	return t.UTC().Format("2006-01-02")
}

var (
	heading  = regexp.MustCompile(`^([A-Za-z][A-Za-z ]*):\s*$`)
	entry    = regexp.MustCompile(`^  ([a-z][a-z-]*)`)                      // "  run -f FILE" in a heading's block
	flagHead = regexp.MustCompile(`(?m)^ {1,4}(-{1,2}[A-Za-z][\w-]*)(.*)$`) // "  -f string" from package flag
)

// Commands lists, once each, the first word of the entries under the general usage's
// "commands:" heading.
func Commands(general string) []string {
	var out []string
	seen := map[string]bool{}
	in := false
	for _, l := range strings.Split(general, "\n") {
		if m := heading.FindStringSubmatch(l); m != nil {
			in = m[1] == "commands"
			continue
		}
		if m := entry.FindStringSubmatch(l); in && m != nil && !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

// Roff renders the general usage and each command's -h output (by command
// name) as a man(7) page.
func Roff(general string, sub map[string]string, version, date string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH SLUICE 1 %s %s \"User Commands\"\n", quote(date), quote("sluice "+version))
	b.WriteString(".SH NAME\nsluice \\- HAProxy-style layer-4/layer-7 load balancer\n")
	lines := strings.Split(strings.TrimRight(general, "\n"), "\n")
	if len(lines) > 0 && strings.HasPrefix(lines[0], "usage: ") {
		b.WriteString(".SH SYNOPSIS\n")
		b.WriteString(synopsis(strings.TrimPrefix(lines[0], "usage: ")))
		lines = lines[1:]
	}
	var commands []string
	var para []string // plain lines waiting to be written as one paragraph
	flush := func() {
		if len(para) > 0 {
			b.WriteString(".PP\n" + text(strings.Join(para, " ")) + "\n")
			para = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			flush()
		case heading.MatchString(l):
			flush()
			name := heading.FindStringSubmatch(l)[1]
			fmt.Fprintf(&b, ".SH %s\n", strings.ToUpper(name))
			if name == "commands" {
				commands = Commands(general)
			}
		case strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   "):
			flush()
			// An entry: its head up to two spaces, then its description,
			// continued on the lines indented deeper than the head.
			head, desc, _ := strings.Cut(strings.TrimSpace(l), "  ")
			var body []string
			if d := strings.TrimSpace(desc); d != "" {
				body = append(body, d)
			}
			col := -1 // the description's column, from its first line
			if desc != "" {
				col = len(l) - len(strings.TrimLeft(desc, " "))
			}
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "   ") {
				i++
				n := lines[i]
				ind := len(n) - len(strings.TrimLeft(n, " "))
				if col < 0 {
					col = ind
				}
				if ind > col { // deeper: a sub-list, kept one per line
					body = append(body, "\n"+strings.TrimSpace(n))
				} else {
					body = append(body, strings.TrimSpace(n))
				}
			}
			b.WriteString(".TP\n" + synopsis(head))
			b.WriteString(entryBody(body) + "\n")
		default:
			para = append(para, strings.TrimSpace(l))
		}
	}
	flush()
	wrote := false
	for _, c := range commands {
		out, ok := sub[c]
		if !ok {
			continue
		}
		if !wrote {
			b.WriteString(".SH OPTIONS\n")
			wrote = true
		}
		fmt.Fprintf(&b, ".SS sluice %s\n", escape(c))
		b.WriteString(flags(out))
	}
	b.WriteString(".SH FILES\n.TP\n.I /etc/sluice/sluice.toml\nthe configuration file every command reads by default (\\fB\\-f\\fR)\n")
	b.WriteString(".SH SEE ALSO\n.BR haproxy (1),\n.BR systemctl (1);\n" +
		"the configuration reference, operations and architecture notes in the project's docs/ directory.\n")
	return b.String()
}

// entryBody joins an entry's description lines: flowing text, with each
// deeper-indented line ("\n"-prefixed) on a line of its own.
func entryBody(body []string) string {
	var b strings.Builder
	for i, s := range body {
		if strings.HasPrefix(s, "\n") {
			b.WriteString("\n.br\n" + text(s[1:]))
			continue
		}
		if i > 0 && !strings.HasPrefix(body[i-1], "\n") {
			b.WriteString(" ")
		} else if i > 0 {
			b.WriteString("\n.br\n")
		}
		b.WriteString(text(s))
	}
	return b.String()
}

// flags renders a command's -h output: flag entries from package flag
// as tagged paragraphs, a "usage:" line in bold, anything else verbatim.
func flags(out string) string {
	var b strings.Builder
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var verbatim []string
	flushV := func() {
		if len(verbatim) > 0 {
			b.WriteString(".PP\n.nf\n" + strings.Join(verbatim, "\n") + "\n.fi\n")
			verbatim = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "Usage of "), strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "usage: "):
			flushV()
			b.WriteString(".PP\n" + synopsis(strings.TrimPrefix(l, "usage: ")))
		case flagHead.MatchString(l):
			flushV()
			m := flagHead.FindStringSubmatch(l)
			arg, desc := m[2], ""
			if a, d, ok := strings.Cut(arg, "\t"); ok { // "-x\tusage": one-letter bool
				arg, desc = a, strings.TrimSpace(d)
			}
			arg = strings.TrimSpace(arg)
			var more []string
			if desc != "" {
				more = append(more, desc)
			}
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "    ") {
				i++
				more = append(more, strings.TrimSpace(lines[i]))
			}
			head := "\\fB" + escape(m[1]) + "\\fR"
			if arg != "" {
				head += " \\fI" + escape(arg) + "\\fR"
			}
			b.WriteString(".TP\n" + head + "\n" + text(strings.Join(more, " ")) + "\n")
		default:
			verbatim = append(verbatim, text(l))
		}
	}
	flushV()
	return b.String()
}

// synopsis sets a command line: words in bold, UPPER-CASE placeholders and
// <placeholders> in italics.
func synopsis(s string) string {
	var parts []string
	for _, w := range strings.Fields(s) {
		core := strings.Trim(w, "[]|.")
		switch {
		case core != "" && (strings.ToUpper(core) == core && strings.ToLower(core) != core ||
			strings.HasPrefix(core, "<")):
			parts = append(parts, strings.Replace(escape(w), escape(core), "\\fI"+escape(core)+"\\fR", 1))
		default:
			parts = append(parts, "\\fB"+escape(w)+"\\fR")
		}
	}
	return strings.Join(parts, " ") + "\n"
}

// text escapes running text; a line must not start with a control character.
func text(s string) string {
	s = escape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = "\\&" + s
	}
	return s
}

func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

func quote(s string) string { return `"` + strings.ReplaceAll(escape(s), `"`, `""`) + `"` }
