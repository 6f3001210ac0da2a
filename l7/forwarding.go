package l7

// The forwarding headers sluice writes on every request to a server, in
// the order written. Incoming ones of these names are replaced: the client
// does not choose them, and the list headers (X-Forwarded-For, Forwarded)
// are its values joined with ours appended.
const (
	fwdFor = iota
	fwdProto
	fwdPort
	fwdForwarded
	numFwd
)

var fwdNames = [numFwd]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port", "Forwarded"}

// isForwarding reports whether name is one of the headers sluice writes:
// the forwarding ones, and those of the client certificate (tls_client.go).
func isForwarding(name []byte) bool {
	for _, n := range fwdNames {
		if equalFold(name, n) {
			return true
		}
	}
	return isClientCertHeader(name)
}

// appendForwardValue appends the value of forwarding header which for
// request v from the client of info, whose address as text is ip. Both
// paths call it: HTTP/1 into its head buffer (no allocation), net/http
// into a small stack buffer.
func (p *Proxy) appendForwardValue(b []byte, which int, v *reqView, info *ConnInfo, ip string) []byte {
	proto := "http"
	if info.TLS {
		proto = "https"
	}
	switch which {
	case fwdFor:
		b = v.appendValues(b, fwdNames[fwdFor])
		b = append(b, ip...)
	case fwdProto:
		b = append(b, proto...)
	case fwdPort:
		b = append(b, p.Port...)
	case fwdForwarded:
		b = v.appendValues(b, fwdNames[fwdForwarded])
		b = append(b, "for="...)
		if a := info.Client.Addr(); a.Is6() && !a.Is4In6() {
			b = append(b, "\"["...)
			b = append(b, ip...)
			b = append(b, "]\""...)
		} else {
			b = append(b, ip...)
		}
		b = append(b, ";proto="...)
		b = append(b, proto...)
		if isHostChars(v.host) {
			b = append(b, ";host=\""...)
			b = append(b, v.host...)
			b = append(b, '"')
		}
	}
	return b
}

// appendValues appends every non-empty value of the header named (in
// canonical form), each followed by ", ": the list an element of our own
// is then appended to.
func (v *reqView) appendValues(b []byte, name string) []byte {
	for _, f := range v.m.fields {
		// One the client listed in Connection is not forwarded.
		if len(f.value) > 0 && equalFold(f.name, name) && !v.m.hopByHop(f.name) {
			b = append(b, f.value...)
			b = append(b, ", "...)
		}
	}
	return b
}
