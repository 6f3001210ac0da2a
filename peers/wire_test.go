package peers

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"sluice/backend"
)

type entry struct {
	backend, id string
	client      netip.Addr
	used        time.Time
}

func handshake(t *testing.T, cs, ss []byte) (*frameWriter, *frameReader, error, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	type res struct {
		r   *frameReader
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := serverHandshake(s, ss)
		if err != nil {
			s.Close()
		}
		ch <- res{r, err}
	}()
	w, cerr := clientHandshake(c, cs)
	if cerr != nil {
		c.Close()
	}
	sr := <-ch
	return w, sr.r, cerr, sr.err
}

func TestHandshake(t *testing.T) {
	secret := []byte("0123456789abcdef")
	w, r, cerr, serr := handshake(t, secret, secret)
	if cerr != nil || serr != nil {
		t.Fatalf("same secret: client %v, server %v", cerr, serr)
	}
	if !bytes.Equal(w.key, r.key) {
		t.Fatal("session keys differ")
	}
	_, _, cerr, serr = handshake(t, secret, []byte("0123456789abcdeX"))
	if !errors.Is(cerr, errAuth) || !errors.Is(serr, errAuth) {
		t.Fatalf("different secrets: client %v, server %v; want both errAuth", cerr, serr)
	}
}

func TestFrames(t *testing.T) {
	key := []byte("session key")
	now := time.Unix(5000, 0)
	batch := []change{
		{backend: "app", e: backend.StickyEntry{Client: netip.MustParseAddr("10.0.0.7"), ServerID: "abc", LastUsed: now.Add(-1500 * time.Millisecond)}},
		{backend: "api", e: backend.StickyEntry{Client: netip.MustParseAddr("2001:db8::1"), ServerID: "def", LastUsed: now}},
	}
	var wire bytes.Buffer
	w := &frameWriter{key: key}
	if err := w.write(&wire, batch, now); err != nil {
		t.Fatal(err)
	}
	first := append([]byte(nil), wire.Bytes()...)
	if err := w.write(&wire, nil, now); err != nil { // heartbeat
		t.Fatal(err)
	}
	var got []entry
	apply := func(b string, c netip.Addr, id string, used time.Time) bool {
		got = append(got, entry{b, id, c, used})
		return true
	}
	r := &frameReader{key: key}
	later := now.Add(time.Second) // the receiver's clock when it reads
	if n, err := r.read(&wire, later, apply); err != nil || n != 2 {
		t.Fatalf("read: %d, %v", n, err)
	}
	want := []entry{
		{"app", "abc", netip.MustParseAddr("10.0.0.7"), later.Add(-1500 * time.Millisecond)},
		{"api", "def", netip.MustParseAddr("2001:db8::1"), later},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n, err := r.read(&wire, later, apply); err != nil || n != 0 {
		t.Fatalf("heartbeat: %d, %v", n, err)
	}

	for _, tc := range []struct {
		desc  string
		frame func() []byte
	}{
		{"replayed frame", func() []byte { return first }},
		{"altered frame", func() []byte {
			b := append([]byte(nil), first...)
			b[10] ^= 1
			return b
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := &frameReader{key: key, seq: 2}
			if tc.desc == "altered frame" {
				r.seq = 0
			}
			n, err := r.read(bytes.NewReader(tc.frame()), later, apply)
			if !errors.Is(err, errAuth) || n != 0 {
				t.Fatalf("got %d, %v; want errAuth and nothing applied", n, err)
			}
		})
	}
}
