package peers

import (
	"crypto/hmac"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/conf"
	"sluice/policy"
)

// TestFallbackToProtocol1: a node with a shared rate limit, whose peer is
// an older sluice (protocol 1 only, which closes on the version 2 header),
// reconnects in protocol 1 and keeps syncing; the rate increments meant
// for that peer are dropped and counted, never sent in a frame it would
// misread.
func TestFallbackToProtocol1(t *testing.T) {
	secret := []byte("correct horse battery staple")
	sf := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(sf, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	headers := make(chan string, 16)
	go func() { // the old acceptor: version 1 of serverHandshake, then frames
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				nS := nonce()
				c.Write(append([]byte(magic), nS...))
				in := make([]byte, len(magic)+nonceLen+macLen)
				if _, err := io.ReadFull(c, in); err != nil {
					return
				}
				headers <- string(in[:len(magic)])
				if string(in[:len(magic)]) != magic {
					return // "not a sluice peer": no verdict
				}
				nC := in[len(magic) : len(magic)+nonceLen]
				if !hmac.Equal(in[len(magic)+nonceLen:], mac(secret, "sluice peers client\x00", nS, nC)) {
					c.Write([]byte{1})
					return
				}
				c.Write(append([]byte{0}, mac(secret, "sluice peers server\x00", nS, nC)...))
				r := &frameReader{key: mac(secret, "sluice peers session\x00", nS, nC), version: 1}
				for {
					if _, _, err := r.read(c, time.Now(), handler{entry: func(string, netip.Addr, string, time.Time) bool { return true }}); err != nil {
						return
					}
				}
			}()
		}
	}()

	p := policy.New(&conf.Frontend{Name: "web", Mode: conf.ModeHTTP, RateLimit: &conf.RateLimit{Requests: 10, Shared: true}})
	s, err := Start(conf.Peers{Peers: []string{ln.Addr().String()}, SecretFile: sf, FlushInterval: 10 * time.Millisecond},
		nil, nil, map[string]*policy.Limiter{"web": p.Limit}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h := <-headers; h != magicV2 {
		t.Fatalf("first header %q, want version 2", h)
	}
	if h := <-headers; h != magic {
		t.Fatalf("after the refusal: header %q, want version 1", h)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Counters.Connects.Load() == 0 || s.Counters.RatesDropped.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connects %d, rates dropped %d; want both > 0", s.Counters.Connects.Load(), s.Counters.RatesDropped.Load())
		}
		p.CheckRequest(&policy.Request{Client: netip.MustParseAddr("127.0.0.5")}, time.Now())
		time.Sleep(10 * time.Millisecond) // pacing the requests, not synchronisation
	}
	if n := s.Counters.RatesSent.Load(); n != 0 {
		t.Fatalf("%d increments sent to a protocol 1 peer", n)
	}
}
