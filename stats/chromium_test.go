package stats_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/backend"
)

// chromium finds Debian's headless-capable browser, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (Debian: apt-get install -y chromium); the end-to-end page test needs it")
	return ""
}

// runChromium runs a headless browser with the flags the project uses
// and returns its standard output.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--user-data-dir=" + t.TempDir(), "--disable-dev-shm-usage"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestChromiumRendersPage loads the stats page in headless Chromium, checks
// the DOM after its script ran, and saves a screenshot
// (to $SLUICE_STATS_SCREENSHOT as well when set: that is how docs/stats.png
// is made). The page without JavaScript is the served HTML itself, checked
// by TestPageIsSelfContained: headless Chromium's --dump-dom needs scripts
// on.
func TestChromiumRendersPage(t *testing.T) {
	bin := chromium(t)
	e := start(t, trafficConfig(t))
	sendHTTP(t, e.front, "/", "/", "/", "/status/404", "/status/503", "/status/301", "/")
	sendTCP(t, e.eng.Config.Frontend("tcp").Bind[0], 4, 50000)
	app := e.eng.Backends["app"]
	app.Server("a").SetLastCheck(backend.CheckResult{At: time.Now(), OK: true, Desc: "L7OK", Code: 200, Duration: 2 * time.Millisecond})
	app.Server("b").SetLastCheck(backend.CheckResult{At: time.Now(), OK: false, Desc: "HTTP 500", Code: 500, Duration: 4 * time.Millisecond})
	app.Server("b").SetProgress(1, 3)
	echo := e.eng.Backends["echo"].Server("e1")
	echo.SetLastCheck(backend.CheckResult{At: time.Now(), OK: true, Desc: "L4OK", Duration: 300 * time.Microsecond})
	eventually(t, "connections closed", func() error { return expect(e.eng.Front.Current(), 0, "open connections") })
	page := e.url("/;norefresh")

	t.Run("with JavaScript", func(t *testing.T) {
		dom := string(runChromium(t, bin, "--dump-dom", page))
		rows := parseRows(t, dom)
		for id, want := range map[string]string{
			"row:sv:app/a": "no check", "row:sv:app/b": "UP 1/3", "row:sv:echo/e1": "no check", "row:fe:web": "OPEN", "row:be:app": "UP",
		} {
			if got := rows[id].Cells["status"]; got != want {
				t.Errorf("%s status %q, want %q", id, got, want)
			}
		}
		if got := rows["row:fe:web"].Cells["hrsp_2xx"]; got != "4" {
			t.Errorf("web 2xx %q, want 4", got)
		}
		for _, want := range []string{`<body class="admin js">`, `id="tokform"`, `<span id="tokstate">no token yet</span>`} {
			if !strings.Contains(dom, want) {
				t.Errorf("rendered DOM lacks %s (did the script run?)", want)
			}
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		// A down server and a drained one make the colours visible.
		app.Server("a").SetUp(false)
		app.Server("a").SetLastCheck(backend.CheckResult{At: time.Now(), OK: false, Desc: "connection refused", Duration: time.Millisecond})
		echo.SetAdmin(backend.AdminDrain)
		shot := filepath.Join(t.TempDir(), "stats.png")
		runChromium(t, bin, "--hide-scrollbars", "--window-size=1280,900", "--screenshot="+shot, page)
		png, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("screenshot is not a PNG of a page (%d bytes)", len(png))
		}
		if dst := os.Getenv("SLUICE_STATS_SCREENSHOT"); dst != "" {
			if err := os.WriteFile(dst, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot saved to %s", dst)
		}
	})
}
