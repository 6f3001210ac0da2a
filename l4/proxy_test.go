package l4_test

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/l4"
)

func TestProxyHeaderFormat(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		desc string
		h    l4.ProxyHeader
		v1   string // exact v1 line, when Version is 1
		src  string // v2: source read back ("" for LOCAL)
	}{
		{desc: "v1 IPv4", h: l4.ProxyHeader{Version: 1, Src: ap("192.0.2.1:1000"), Dst: ap("198.51.100.2:80")}, v1: "PROXY TCP4 192.0.2.1 198.51.100.2 1000 80\r\n"},
		{desc: "v1 IPv6", h: l4.ProxyHeader{Version: 1, Src: ap("[2001:db8::1]:1000"), Dst: ap("[2001:db8::2]:80")}, v1: "PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n"},
		{desc: "v1 mixed families go as IPv6", h: l4.ProxyHeader{Version: 1, Src: ap("192.0.2.1:1000"), Dst: ap("[2001:db8::2]:80")}, v1: "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1000 80\r\n"},
		{desc: "v1 unknown client", h: l4.ProxyHeader{Version: 1}, v1: "PROXY UNKNOWN\r\n"},
		{desc: "v2 IPv4 with TLVs", h: l4.ProxyHeader{Version: 2, Src: ap("192.0.2.1:1000"), Dst: ap("198.51.100.2:443"), ALPN: "h2", Authority: "a.test", UniqueID: strings.Repeat("x", 200)}, src: "192.0.2.1:1000"},
		{desc: "v2 IPv4-mapped source is IPv4", h: l4.ProxyHeader{Version: 2, Src: ap("[::ffff:192.0.2.1]:1000"), Dst: ap("198.51.100.2:443")}, src: "192.0.2.1:1000"},
		{desc: "v2 unknown client is LOCAL", h: l4.ProxyHeader{Version: 2}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b, err := tc.h.Format()
			if err != nil {
				t.Fatal(err)
			}
			if tc.h.Version == 1 {
				if string(b) != tc.v1 {
					t.Fatalf("got %q, want %q", b, tc.v1)
				}
				return
			}
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("%x does not parse: %v", b, err)
			}
			if tc.src == "" {
				if !h.Command.IsLocal() {
					t.Fatalf("command %v, want LOCAL", h.Command)
				}
				return
			}
			if got := h.SourceAddr.String(); got != tc.src {
				t.Fatalf("source %s, want %s", got, tc.src)
			}
			tlvs, _ := h.TLVs()
			got := map[proxyproto.PP2Type]string{}
			for _, v := range tlvs {
				got[v.Type] = string(v.Value)
			}
			if got[proxyproto.PP2_TYPE_ALPN] != tc.h.ALPN || got[proxyproto.PP2_TYPE_AUTHORITY] != tc.h.Authority {
				t.Errorf("TLVs %q", got)
			}
			if id := got[proxyproto.PP2_TYPE_UNIQUE_ID]; tc.h.UniqueID != "" && (len(id) != 128 || !strings.HasPrefix(tc.h.UniqueID, id)) {
				t.Errorf("unique id %q: want the first 128 bytes", id)
			}
		})
	}
}
