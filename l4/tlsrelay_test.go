package l4_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"sluice/l4"
)

// TestRelayTLSServerOutlivesIdle: a relay to a TLS server stays up past
// timeout_server while bytes keep moving. The idle deadlines are set once
// and moved when they fire; a write deadline firing on a crypto/tls
// connection breaks it for good, so a TLS side must never get one that
// fires while the connection is active.
func TestRelayTLSServerOutlivesIdle(t *testing.T) {
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS() // for its certificate only
	cert := hs.TLS.Certificates[0]
	hs.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	clientSide, relaySide := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- l4.Relay(relaySide, server, l4.RelayOptions{ClientIdle: 5 * time.Second, ServerIdle: 100 * time.Millisecond})
	}()
	clientSide.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(clientSide)
	// Paced, not synchronised: a line every 30ms for well past ServerIdle.
	for i := 0; i < 12; i++ {
		fmt.Fprintf(clientSide, "line %d\n", i)
		got, err := br.ReadString('\n')
		if err != nil || got != fmt.Sprintf("line %d\n", i) {
			t.Fatalf("line %d: %q, %v", i, got, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	clientSide.Close()
	<-done
}
