package l7_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/backend"
	"sluice/engine"
	"sluice/internal/testutil"
)

// connectMode is one way a client reaches a server; the connect path
// (backend.Connect) is the same for all of them.
type connectMode struct {
	name  string
	front string // frontend lines: mode, TLS, h2c
	udp   bool
	// do sends one connection, request or datagram through front and
	// returns the answer; ctx ends it (the client leaves).
	// hold asks the server to hold the connection until released.
	do func(ctx context.Context, front string, hold bool) (string, error)
}

func connectModes(t *testing.T) []connectMode {
	pki := newPKI(t)
	httpDo := func(c *http.Client, scheme string) func(context.Context, string, bool) (string, error) {
		return func(ctx context.Context, front string, hold bool) (string, error) {
			path := "/"
			if hold {
				path = "/hold"
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", scheme+"://"+front+path, nil)
			req.Host = "a.test"
			resp, err := c.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.Status + " " + string(b), err
		}
	}
	h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return []connectMode{
		{name: "tcp", front: `mode = "tcp"`, do: func(ctx context.Context, front string, _ bool) (string, error) {
			// Not DialContext(ctx): a cancel that lands while the dial
			// returns (sluice accepted and queued it already) closes the
			// socket with a FIN, a half-close that keeps its place.
			c, err := net.DialTimeout("tcp", front, 10*time.Second)
			if err != nil {
				return "", err
			}
			defer c.Close()
			// Leaving is a reset: a tcp client's FIN is a half-close (it
			// may still read) and keeps its place in the queue, as
			// HAProxy keeps it (TestQueuedTCPClientThatHalfClosesIsServed).
			stop := context.AfterFunc(ctx, func() { c.(*net.TCPConn).SetLinger(0); c.Close() })
			defer stop()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "hello\n")
			return bufio.NewReader(c).ReadString('\n')
		}},
		{name: "http1", front: `mode = "http"`, do: httpDo(h1, "http")},
		{name: "h2c", front: "mode = \"http\"\nh2c = true", do: httpDo(h2cClient(), "http")},
		{name: "h2-tls", front: "mode = \"http\"\n" + pki.tlsFront(t), do: httpDo(tlsClient(pki.pool, "a.test", true), "https")},
		{name: "udp", front: `mode = "udp"`, udp: true, do: func(ctx context.Context, front string, _ bool) (string, error) {
			c, err := net.Dial("udp", front)
			if err != nil {
				return "", err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.Write([]byte("hello\n"))
			b := make([]byte, 100)
			n, err := c.Read(b)
			return string(b[:n]), err
		}},
	}
}

// connectServer starts a server for mode m that answers "live" and, for
// http and tcp, holds each connection until the test ends or release.
func connectServer(t *testing.T, m connectMode, release chan struct{}) string {
	switch m.name {
	case "udp":
		return testutil.UDPEcho(t, "live ")
	case "tcp":
		return testutil.Serve(t, "live", func(c net.Conn) {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				io.WriteString(c, "live "+line)
			}
			<-release
		}).Addr
	}
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "live")
		if r.URL.Path != "/hold" {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), false)
	return addr
}

func connectConfig(m connectMode, backendExtra, servers string) string {
	timeouts := ""
	if m.udp {
		timeouts = "timeout_udp = \"30s\"\n"
	}
	return fmt.Sprintf(`
[defaults]
timeout_client = "30s"
timeout_server = "30s"
%s
[frontend.web]
bind = ["{{FRONT}}"]
default_backend = "b"
%s

[backend.b]
%s
%s`, timeouts, m.front, backendExtra, servers)
}

// TestConnectPathEveryMode runs the connect path's rules once for every
// mode, with real servers on 127.0.0.1.
func TestConnectPathEveryMode(t *testing.T) {
	for _, m := range connectModes(t) {
		t.Run(m.name, func(t *testing.T) {
			t.Run("refused connect is retried on the other server", func(t *testing.T) { connectRetry(t, m) })
			t.Run("a client that leaves the queue is out at once", func(t *testing.T) { connectLeave(t, m) })
			t.Run("a hard stop ends a queued connection", func(t *testing.T) { connectHardStop(t, m) })
		})
	}
}

func connectRetry(t *testing.T, m connectMode) {
	release := make(chan struct{})
	defer close(release)
	live := connectServer(t, m, release)
	dead := testutil.ClosedAddr(t)
	if m.udp {
		// A UDP socket connects without the server; connecting one to
		// the broadcast address (no SO_BROADCAST) fails at once.
		dead = "255.255.255.255:9"
	}
	// The dead server is the primary, so every first attempt goes there;
	// the retry finds the backup.
	eng, front := testutil.Start(t, connectConfig(m, "retries = 1",
		fmt.Sprintf("[[backend.b.server]]\nname = \"dead\"\naddress = %q\n[[backend.b.server]]\nname = \"live\"\naddress = %q\nbackup = true\n", dead, live)))
	be := eng.Backends["b"]
	d, l := be.Server("dead"), be.Server("live")
	// Observation on, as a health check would set it.
	d.Observe(5, func(*backend.Server) {})
	l.Observe(5, func(*backend.Server) {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := m.do(ctx, front, false)
	if err != nil || !strings.Contains(got, "live") {
		t.Fatalf("answer %q, %v; want it from the live server", got, err)
	}
	if n := d.Counters.ConnErrors.Load(); n != 1 {
		t.Errorf("dead ConnErrors = %d, want 1", n)
	}
	if n := d.Counters.Retries.Load(); n != 1 {
		t.Errorf("dead Retries = %d, want 1", n)
	}
	if n := l.Counters.Sessions.Load(); n != 1 {
		t.Errorf("live Sessions = %d, want 1", n)
	}
	if n := d.ObservedErrors(); n != 1 {
		t.Errorf("dead observed errors = %d, want 1", n)
	}
	if n := be.Counters.NoServer.Load(); n != 0 {
		t.Errorf("NoServer = %d, want 0", n)
	}
}

// connectQueued starts a backend whose one server holds one connection
// (maxconn = 1), takes that slot, and starts a second client that must
// wait in the queue (udp: is refused at once).
func connectQueued(t *testing.T, m connectMode) (eng *engine.Engine, be *backend.Backend, srv *backend.Server, cancel context.CancelFunc, done chan error, release func()) {
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	live := connectServer(t, m, ch)
	eng, front := testutil.Start(t, connectConfig(m, "queue_timeout = \"30s\"",
		fmt.Sprintf("[[backend.b.server]]\nname = \"live\"\naddress = %q\nmaxconn = 1\n", live)))
	be = eng.Backends["b"]
	srv = be.Server("live")
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	holdCtx, holdCancel := context.WithCancel(context.Background())
	t.Cleanup(holdCancel)
	t.Cleanup(release)
	wg.Add(1)
	go func() { defer wg.Done(); m.do(holdCtx, front, true) }()
	testutil.WaitFor(t, "the first client on the server", 5*time.Second, func() bool { return srv.Active() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done = make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ans, err := m.do(ctx, front, true)
		if err == nil && strings.Contains(ans, "live") {
			err = fmt.Errorf("served: %q", ans)
		}
		done <- err
	}()
	if m.udp {
		return eng, be, srv, cancel, done, release
	}
	testutil.WaitFor(t, "the second client in the queue", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 1 })
	return eng, be, srv, cancel, done, release
}

func connectLeave(t *testing.T, m connectMode) {
	_, be, srv, cancel, done, _ := connectQueued(t, m)
	if m.udp {
		// udp does not queue: the flow is refused at once and counted.
		<-done
		testutil.WaitFor(t, "the refusal counted", 5*time.Second, func() bool { return be.Counters.QueueTimeouts.Load() == 1 })
		if q := be.Counters.Queued.Load(); q != 0 {
			t.Fatalf("Queued = %d: udp waited in the queue", q)
		}
		return
	}
	sessions := srv.Counters.Sessions.Load()
	cancel() // the client leaves: closes its connection, resets its stream
	testutil.WaitFor(t, "the queue to empty", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 0 })
	if n := be.Counters.QueueTimeouts.Load(); n != 0 {
		t.Fatalf("QueueTimeouts = %d: the client waited out the queue", n)
	}
	if n := srv.Active(); n != 1 {
		t.Fatalf("server active = %d, want 1 (the first client only)", n)
	}
	if n := srv.Counters.Sessions.Load(); n != sessions {
		t.Fatalf("the client that left was sent to the server (%d sessions, was %d)", n, sessions)
	}
	<-done
}

func connectHardStop(t *testing.T, m connectMode) {
	eng, be, _, _, done, release := connectQueued(t, m)
	if m.udp {
		<-done
		return // nothing queues (connectLeave checks the refusal)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no drain: a hard stop
	stopped := make(chan struct{})
	go func() { eng.Shutdown(ctx); close(stopped) }()
	testutil.WaitFor(t, "the queue to empty", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 0 })
	if n := be.Counters.QueueTimeouts.Load(); n != 0 {
		t.Fatalf("QueueTimeouts = %d: the connection waited out the queue", n)
	}
	// The held exchange ends when its server lets go.
	release()
	<-stopped
	<-done
}
