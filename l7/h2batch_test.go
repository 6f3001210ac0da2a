package l7_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"sluice/internal/testutil"
)

// Responses finishing together share one flush (h2Conn.ready): none may
// be left unflushed behind another stream, a slow one included. The slow
// stream's server answers only once the client has every other response:
// a fast response held back for it would hang the test (client timeout).
// Both kinds of server: HTTP/1.1 (the lean path) and proto = "h2c"
// (h2up.go's exchangeUp).
func TestH2BatchedFlushLeavesNoStreamBehind(t *testing.T) {
	t.Run("http1 servers", func(t *testing.T) { testBatchedFlush(t, false) })
	t.Run("h2c servers", func(t *testing.T) { testBatchedFlush(t, true) })
}

func testBatchedFlush(t *testing.T, h2cServers bool) {
	release := make(chan struct{})
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
			io.WriteString(w, "slow")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, "fast "+r.URL.Path)
		}
	}), h2cServers)
	extra := ""
	if h2cServers {
		extra = "proto = \"h2c\""
	}
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {extra: extra, addrs: []string{addr}}}))
	c := h2cClient() // one connection: every stream below shares it

	slow := make(chan error, 1)
	go func() {
		resp, err := c.Get("http://" + front + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, method, want := fmt.Sprintf("/f%d", i), "GET", http.StatusOK
			switch i % 3 {
			case 1:
				path, want = "/empty", http.StatusNoContent
			case 2:
				method = "HEAD"
			}
			req, _ := http.NewRequest(method, "http://"+front+path, nil)
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				errs <- err
			case resp.StatusCode != want:
				errs <- fmt.Errorf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
			case method == "GET" && want == http.StatusOK && string(b) != "fast "+path:
				errs <- fmt.Errorf("%s: body %q", path, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("slow stream: %v", err)
	}
}
