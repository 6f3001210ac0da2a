package stats

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// RefreshSeconds is how often the page reloads itself unless told not to.
const RefreshSeconds = 10

var (
	pageCSS  = mustRead("web/page.css")
	pageJS   = mustRead("web/page.js")
	pageTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
		"dur":   fmtDur,
		"bytes": fmtBytes,
		"num":   fmtNum,
		// gogc: GOGC=off reads back as -1.
		"gogc": func(p int64) string {
			if p < 0 {
				return "off"
			}
			return strconv.FormatInt(p, 10)
		},
		// showCode: the check's code is worth showing unless its text
		// already says it ("HTTP 500").
		"showCode": func(c *CheckResult) bool {
			return c.Code != 0 && !strings.Contains(c.Desc, strconv.Itoa(c.Code))
		},
		"row":  func(r Row) cellData { return cellData{R: r} },
		"head": func(name string, admin bool) cellData { return cellData{Name: name, Admin: admin} },
	}).ParseFS(webFS, "web/page.html"))
)

func mustRead(name string) string {
	b, err := webFS.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

type pageOptions struct {
	refresh bool
	csv     bool
	json    bool
}

type cellData struct {
	R     Row
	Name  string
	Admin bool
}

type pageData struct {
	Snap        Snapshot
	Counters    []CounterValue // the other counters not at 0
	P           ProcessInfo
	Admin       bool
	Refresh     bool
	RefreshSecs int
	Now         string
	CSS         template.CSS
	JS          template.JS
}

func (s *Server) renderPage(w http.ResponseWriter, o pageOptions) {
	snap := s.snapshot()
	d := pageData{
		Snap: snap, P: snap.Process, Admin: snap.Process.Admin,
		Refresh: o.refresh, RefreshSecs: RefreshSeconds,
		Now: time.Now().Format("2006-01-02 15:04:05 MST"),
		CSS: template.CSS(pageCSS), JS: template.JS(pageJS),
	}
	// Most of these stay at 0 on a healthy proxy: listing them all would
	// bury the few that say something.
	for _, c := range snap.Counters {
		if c.Value != 0 {
			d.Counters = append(d.Counters, c)
		}
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		s.log.Error("stats page", "err", err)
		http.Error(w, "stats page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY") // the same, for browsers before CSP 2
	w.Write(buf.Bytes())
}

// fmtDur writes seconds the way the page shows them: "42s", "3m12s",
// "5h02m", "12d3h".
func fmtDur(secs int64) string {
	d := time.Duration(secs) * time.Second
	switch {
	case secs < 60:
		return fmt.Sprintf("%ds", secs)
	case secs < 3600:
		return fmt.Sprintf("%dm%02ds", secs/60, secs%60)
	case secs < 86400:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), secs%3600/60)
	}
	return fmt.Sprintf("%dd%dh", secs/86400, secs%86400/3600)
}

// fmtBytes writes a byte count in binary units with three digits.
func fmtBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10)
	}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 {
		return fmt.Sprintf("%.1f%c", v, units[i])
	}
	return fmt.Sprintf("%.0f%c", v, units[i])
}

// fmtNum shortens large counts: 1234567 → "1.23M".
func fmtNum(n uint64) string {
	switch {
	case n < 100000:
		return strconv.FormatUint(n, 10)
	case n < 1000000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	case n < 1000000000:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2fG", float64(n)/1e9)
}
