package l7_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"sluice/conf"
	"sluice/internal/testutil"
)

// testPKI is a throwaway CA and the certificates it signs, in PEM files.
type testPKI struct {
	dir   string
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{dir: t.TempDir(), ca: ca, caKey: key, pool: pool}
}

var serial atomic.Int64

// leaf writes a certificate for names (DNS names, wildcards allowed) and
// its key, and returns the two file paths.
func (k *testPKI) leaf(t *testing.T, file string, names ...string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, &key.PublicKey, k.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(k.dir, file+".pem")
	keyFile := filepath.Join(k.dir, file+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// tlsFront returns the [[frontend.web.tls]] entries for three certificates:
// the fallback (first), a.test, and *.b.test with b.test.
func (k *testPKI) tlsFront(t *testing.T) string {
	var b strings.Builder
	for _, c := range [][]string{{"fallback", "fallback.test"}, {"a", "a.test"}, {"b", "b.test", "*.b.test"}} {
		cert, key := k.leaf(t, c[0], c[1:]...)
		fmt.Fprintf(&b, "[[frontend.web.tls]]\ncert = %q\nkey = %q\n", cert, key)
	}
	return b.String()
}

// h2Config is a one-frontend http config; frontExtra goes in the frontend
// table (before any sub-table), backends maps a backend name to its extra
// keys and server addresses.
func h2Config(frontExtra, tables string, backends map[string]h2Backend) string {
	var b strings.Builder
	b.WriteString("[global]\nhard_stop_after = \"5s\"\n\n")
	fmt.Fprintf(&b, "[frontend.web]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\n%s\n%s\n", frontExtra, tables)
	for name, be := range backends {
		fmt.Fprintf(&b, "[backend.%s]\n%s\n", name, be.extra)
		for i, a := range be.addrs {
			fmt.Fprintf(&b, "[[backend.%s.server]]\nname = \"%s%d\"\naddress = %q\n", name, name, i+1, a)
		}
	}
	return b.String()
}

type h2Backend struct {
	extra string
	addrs []string
}

// startHTTP runs h on loopback, HTTP/1.1 only or (h2c) HTTP/2 cleartext
// with prior knowledge too, and counts the connections it accepts.
func startHTTP(t *testing.T, h http.Handler, h2c bool) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &conns
}

// reporter answers with what it received, one "key=value" per line.
func reporter(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "server=%s\nproto=%s\nhost=%s\npath=%s\nxff=%s\nxfp=%s\nxfport=%s\nforwarded=%s\nbody=%s\n",
			name, r.Proto, r.Host, r.URL.RequestURI(), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Port"), r.Header.Get("Forwarded"), body)
	})
}

func fields(t *testing.T, body string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(body), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

func tlsClient(pool *x509.CertPool, serverName string, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func h2cClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestTLSPicksCertificateBySNI(t *testing.T) {
	pki := newPKI(t)
	addr, _ := startHTTP(t, reporter("s"), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", pki.tlsFront(t),
		map[string]h2Backend{"app": {addrs: []string{addr}}}))

	for _, tc := range []struct {
		desc, sni, want string
	}{
		{"exact name", "a.test", "a.test"},
		{"exact name, any case", "A.Test", "a.test"},
		{"wildcard", "x.b.test", "b.test"},
		{"name listed beside the wildcard", "b.test", "b.test"},
		{"wildcard covers one label only", "y.x.b.test", "fallback.test"},
		{"unknown name falls back to the first", "c.test", "fallback.test"},
		{"no SNI falls back to the first", "", "fallback.test"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", front, &tls.Config{
				ServerName:         tc.sni,
				InsecureSkipVerify: true, // the chosen certificate is checked below
				NextProtos:         []string{"h2", "http/1.1"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st := c.ConnectionState()
			if got := st.PeerCertificates[0].Subject.CommonName; got != tc.want {
				t.Errorf("certificate for %q is %q, want %q", tc.sni, got, tc.want)
			}
			if st.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN chose %q, want h2", st.NegotiatedProtocol)
			}
			if err := st.PeerCertificates[0].VerifyHostname(strings.ToLower(tc.sni)); tc.want != "fallback.test" && err != nil {
				t.Error(err)
			}
		})
	}

	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		c, err := tls.Dial("tcp", front, &tls.Config{ServerName: "a.test", RootCAs: pki.pool, MaxVersion: tls.VersionTLS11})
		if err == nil {
			c.Close()
			t.Fatal("handshake with TLS 1.1 succeeded")
		}
	})
	t.Run("ALPN http/1.1 only", func(t *testing.T) {
		c, err := tls.Dial("tcp", front, &tls.Config{ServerName: "a.test", RootCAs: pki.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Fatalf("ALPN chose %q", p)
		}
	})
}

func TestTLSHandshakeHasADeadline(t *testing.T) {
	pki := newPKI(t)
	addr, _ := startHTTP(t, reporter("s"), false)
	// defer_accept off: the kernel would hold the silent client a second
	// before sluice sees it (frontend/defer_test.go covers that case).
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\ntimeout_http_request = \"300ms\"\ndefer_accept = false", pki.tlsFront(t),
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	c := testutil.Dial(t, front)
	start := time.Now()
	// Never send a ClientHello: sluice must give up on its own.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read a byte from a silent TLS connection")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("connection closed after %v, want about 300ms", d)
	}
}

func TestTLSBadCertificateIsAnErrorNamingTheFile(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.leaf(t, "good", "a.test")
	garbage := filepath.Join(pki.dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	missing := filepath.Join(pki.dir, "missing.pem")
	_, otherKey := pki.leaf(t, "other", "b.test")
	for _, tc := range []struct {
		desc, cert, key, want string
	}{
		{"missing file", missing, key, missing},
		{"not PEM", garbage, key, garbage},
		{"key of another certificate", cert, otherKey, cert},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src := h2Config("default_backend = \"app\"", fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n", tc.cert, tc.key),
				map[string]h2Backend{"app": {addrs: []string{"127.0.0.1:1"}}})
			src = strings.ReplaceAll(src, "{{FRONT}}", testutil.FreeAddr(t))
			// Refused where `sluice check` refuses it, before a worker
			// starts: the same conf.Parse reads the pair.
			_, err := conf.Parse("t.toml", []byte(src))
			if err == nil {
				t.Fatal("parsed with a bad certificate")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

func TestHTTP2OverTLSToHTTP1Server(t *testing.T) {
	pki := newPKI(t)
	addr, conns := startHTTP(t, reporter("s1"), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", pki.tlsFront(t),
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	_, port, _ := net.SplitHostPort(front)

	c := tlsClient(pki.pool, "a.test", true)
	for i := range 5 {
		resp, body := get(t, c, fmt.Sprintf("https://%s/p/%d?q=1;2", front, i))
		if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
			t.Fatalf("got %s %d", resp.Proto, resp.StatusCode)
		}
		f := fields(t, body)
		want := map[string]string{
			"proto":  "HTTP/1.1",
			"path":   fmt.Sprintf("/p/%d?q=1;2", i),
			"host":   front,
			"xff":    "127.0.0.1",
			"xfp":    "https",
			"xfport": port,
		}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("%s = %q, want %q", k, f[k], v)
			}
		}
		if !strings.HasPrefix(f["forwarded"], "for=127.0.0.1;proto=https") {
			t.Errorf("forwarded = %q", f["forwarded"])
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("server saw %d connections for 5 sequential requests, want 1 (keep-alive pool)", n)
	}

	// A body both ways, streamed.
	payload := strings.Repeat("0123456789", 100_000)
	resp, err := c.Post("https://"+front+"/upload", "text/plain", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := fields(t, string(body))["body"]; got != payload {
		t.Fatalf("server got a %d-byte body, want %d", len(got), len(payload))
	}

	t.Run("HTTP/1.1 over TLS takes the lean path", func(t *testing.T) {
		resp, body := get(t, tlsClient(pki.pool, "x.b.test", false), "https://"+front+"/h1")
		if resp.Proto != "HTTP/1.1" {
			t.Fatalf("proto %s", resp.Proto)
		}
		if f := fields(t, body); f["xfp"] != "https" || f["path"] != "/h1" {
			t.Fatalf("server saw %v", f)
		}
	})
}

func TestCurlHTTP2(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	pki := newPKI(t)
	addr, _ := startHTTP(t, reporter("s1"), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", pki.tlsFront(t),
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	_, port, _ := net.SplitHostPort(front)
	caFile := filepath.Join(pki.dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw}), 0o600)

	for _, tc := range []struct{ flag, want string }{{"--http2", "2"}, {"--http1.1", "1.1"}} {
		t.Run(tc.flag, func(t *testing.T) {
			out, err := exec.Command(curl, "-sS", tc.flag, "--cacert", caFile, "--resolve", "a.test:"+port+":127.0.0.1",
				"-w", "\nversion=%{http_version}\n", "https://a.test:"+port+"/curl").CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			f := fields(t, string(out))
			if f["version"] != tc.want || f["path"] != "/curl" || f["xfp"] != "https" {
				t.Fatalf("curl %s got:\n%s", tc.flag, out)
			}
		})
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	addr, _ := startHTTP(t, reporter("s1"), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))

	resp, body := get(t, h2cClient(), "http://"+front+"/h2c")
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("proto %s", resp.Proto)
	}
	if f := fields(t, body); f["path"] != "/h2c" || f["xfp"] != "http" || f["proto"] != "HTTP/1.1" {
		t.Fatalf("server saw %v", f)
	}

	// HTTP/1.1 on the same listener: the bytes read while looking for the
	// preface are not lost, pipelined requests included.
	c := testutil.Dial(t, front)
	fmt.Fprintf(c, "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"path=/one", "path=/two"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("got %d %q, want %s", resp.StatusCode, b, want)
		}
		if want == "path=/one" && !strings.Contains(string(b), "body=hello") {
			t.Fatalf("body lost: %q", b)
		}
	}

	// A short HTTP/1.0 request that ends before the preface's length.
	c2 := testutil.Dial(t, front)
	fmt.Fprintf(c2, "GET / HTTP/1.0\r\n\r\n")
	resp2, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 request got %d", resp2.StatusCode)
	}
}

// h2Errors: the net/http side answers like the HTTP/1 path.
func TestHTTP2Errors(t *testing.T) {
	good, _ := startHTTP(t, reporter("good"), false)
	slow, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}), false)
	slowH2C, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}), true)
	closed := testutil.ClosedAddr(t)
	routes := `
[[frontend.web.route]]
path_prefix = "/retry"
backend = "retry"
[[frontend.web.route]]
path_prefix = "/dead"
backend = "dead"
[[frontend.web.route]]
path_prefix = "/slow"
backend = "slow"
[[frontend.web.route]]
path_prefix = "/h2cslow"
backend = "h2cslow"
[[frontend.web.route]]
host = "*.example.com"
header = { "X-Pick" = "yes" }
backend = "retry"
`
	_, front := testutil.Start(t, h2Config("h2c = true", routes, map[string]h2Backend{
		"retry":   {extra: "balance = \"roundrobin\"\nretries = 2", addrs: []string{closed, good}},
		"dead":    {extra: "retries = 1", addrs: []string{closed}},
		"slow":    {extra: "timeout_server = \"300ms\"", addrs: []string{slow}},
		"h2cslow": {extra: "timeout_server = \"300ms\"\nproto = \"h2c\"", addrs: []string{slowH2C}},
	}))
	c := h2cClient()
	for _, tc := range []struct {
		desc, path, host string
		hdr              map[string]string
		want             int
	}{
		{"connect failure retried on another server", "/retry", "", nil, 200},
		{"again", "/retry", "", nil, 200},
		{"connect failure everywhere", "/dead", "", nil, 503},
		{"server response timeout", "/slow", "", nil, 504},
		{"h2c server response timeout", "/h2cslow", "", nil, 504},
		{"no route, no default", "/nowhere", "", nil, 404},
		{"host and header route", "/other", "a.example.com", map[string]string{"X-Pick": "yes"}, 200},
		{"host matches, header does not", "/other", "a.example.com", map[string]string{"X-Pick": "no"}, 404},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+front+tc.path, nil)
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == 200 && !strings.Contains(string(body), "server=good") {
				t.Fatalf("body %q", body)
			}
		})
	}
}

// echoDesc is a gRPC service written without generated code: Unary echoes
// a string (or fails with NotFound for "fail"), Bidi echoes every message
// of a stream.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "sluice.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if in.Value == "fail" {
				return nil, status.Error(codes.NotFound, "no such thing")
			}
			grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary"))
			return wrapperspb.String("echo: " + in.Value), nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Bidi",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			for {
				in := new(wrapperspb.StringValue)
				err := stream.RecvMsg(in)
				if err == io.EOF {
					stream.SetTrailer(metadata.Pairs("x-trailer", "bidi"))
					return nil
				}
				if err != nil {
					return err
				}
				if err := stream.SendMsg(wrapperspb.String("echo: " + in.Value)); err != nil {
					return err
				}
			}
		},
	}},
	Metadata: "echo.proto",
}

func startGRPC(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(&echoDesc, struct{}{})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func TestGRPCThroughSluice(t *testing.T) {
	pki := newPKI(t)
	grpcAddr := startGRPC(t)
	backends := map[string]h2Backend{"grpc": {extra: "proto = \"h2c\"", addrs: []string{grpcAddr}}}
	_, tlsFront := testutil.Start(t, h2Config("default_backend = \"grpc\"", pki.tlsFront(t), backends))
	_, h2cFront := testutil.Start(t, h2Config("default_backend = \"grpc\"\nh2c = true", "", backends))

	for _, tc := range []struct {
		desc, addr string
		creds      credentials.TransportCredentials
	}{
		{"TLS", tlsFront, credentials.NewTLS(&tls.Config{RootCAs: pki.pool, ServerName: "a.test"})},
		{"h2c", h2cFront, insecure.NewCredentials()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			conn, err := grpc.NewClient("passthrough:///"+tc.addr, grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			t.Run("unary", func(t *testing.T) {
				out := new(wrapperspb.StringValue)
				var trailer metadata.MD
				if err := conn.Invoke(ctx, "/sluice.test.Echo/Unary", wrapperspb.String("hi"), out, grpc.Trailer(&trailer)); err != nil {
					t.Fatal(err)
				}
				if out.Value != "echo: hi" {
					t.Fatalf("reply %q", out.Value)
				}
				if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary" {
					t.Fatalf("trailer %v", trailer)
				}
			})
			t.Run("unary error status", func(t *testing.T) {
				err := conn.Invoke(ctx, "/sluice.test.Echo/Unary", wrapperspb.String("fail"), new(wrapperspb.StringValue))
				if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
					t.Fatalf("got %v, want NotFound", err)
				}
			})
			t.Run("bidirectional stream", func(t *testing.T) {
				stream, err := conn.NewStream(ctx, &echoDesc.Streams[0], "/sluice.test.Echo/Bidi")
				if err != nil {
					t.Fatal(err)
				}
				// Each reply must arrive before the next message is sent:
				// nothing may buffer the stream.
				for i := range 5 {
					msg := fmt.Sprintf("m%d", i)
					if err := stream.SendMsg(wrapperspb.String(msg)); err != nil {
						t.Fatal(err)
					}
					in := new(wrapperspb.StringValue)
					if err := stream.RecvMsg(in); err != nil {
						t.Fatal(err)
					}
					if in.Value != "echo: "+msg {
						t.Fatalf("reply %d is %q", i, in.Value)
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if err := stream.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
					t.Fatalf("end of stream: %v", err)
				}
				if got := stream.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "bidi" {
					t.Fatalf("trailer %v", stream.Trailer())
				}
			})
		})
	}
}

// An HTTP/1.1 client of an h2c server: the request crosses to HTTP/2 and
// the response, trailers included, comes back as HTTP/1.1 on a connection
// that stays open.
func TestHTTP1ClientToH2CServer(t *testing.T) {
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		fmt.Fprintf(w, "proto=%s\nxfp=%s\nbody=%s\n", r.Proto, r.Header.Get("X-Forwarded-Proto"), body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", fmt.Sprint(len(body)))
	}), true)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", "",
		map[string]h2Backend{"app": {extra: "proto = \"h2c\"", addrs: []string{addr}}}))

	c := testutil.Dial(t, front)
	br := bufio.NewReader(c)
	reqs := []string{
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
	}
	wantBody := []string{"hello", "abcde", ""}
	for i, raw := range reqs {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		f := fields(t, string(b))
		if f["proto"] == "HTTP/1.1" {
			t.Fatal("the request reached the h2c server as HTTP/1.1: the HTTP/1 path must hand requests for proto = \"h2c\" backends to clientConn.forwardUp")
		}
		if resp.StatusCode != 200 || f["proto"] != "HTTP/2.0" || f["body"] != wantBody[i] || f["xfp"] != "http" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		if got := resp.Trailer.Get("X-Sum"); got != fmt.Sprint(len(wantBody[i])) {
			t.Fatalf("request %d: trailer X-Sum = %q", i, got)
		}
	}
}

// Draining sends GOAWAY to HTTP/2 clients: a stream in flight finishes, no
// new stream is taken, and the connection closes by itself.
func TestHTTP2DrainSendsGOAWAY(t *testing.T) {
	release := make(chan struct{})
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done")
	}), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))

	raw := testutil.Dial(t, front)
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(raw)
	if err != nil {
		t.Fatal(err)
	}
	do := func(path string) (string, error) {
		req, _ := http.NewRequest("GET", "http://"+front+path, nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := do("/fast"); err != nil || got != "done" {
		t.Fatalf("before drain: %q %v", got, err)
	}
	slow := make(chan error, 1)
	go func() {
		got, err := do("/slow")
		if err == nil && got != "done" {
			err = fmt.Errorf("body %q", got)
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond) // the slow stream is open

	cut := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cut <- eng.Shutdown(ctx)
	}()
	deadline := time.Now().Add(3 * time.Second)
	for cc.CanTakeNewRequest() {
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY after drain")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("stream in flight: %v", err)
	}
	select {
	case n := <-cut:
		if n != 0 {
			t.Fatalf("shutdown cut %d connections, want 0", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drained HTTP/2 connection did not close")
	}
	if _, err := do("/fast"); err == nil {
		t.Fatal("new stream accepted after GOAWAY")
	}
}
