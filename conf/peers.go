package conf

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Peers is the [peers] section: stick-table synchronisation with the other
// box of a pair, or with every other node of a group (a full mesh: each
// node lists all the others). Entries of every sticky = "source" table are
// pushed to each address in Peers and received on Bind; both ends prove they
// hold the secret in SecretFile.
type Peers struct {
	Bind       string   // host:port to receive peers' entries on; "" = only push
	Peers      []string // host:port of each peer's bind; empty = only receive
	SecretFile string   // file with the shared secret (never sent on the wire)
	// FlushInterval is the longest a new entry waits before it is sent in a
	// batch.
	FlushInterval time.Duration
}

// Enabled reports whether the section is configured.
func (p Peers) Enabled() bool { return p.Bind != "" || len(p.Peers) > 0 }

type rawPeers struct {
	Bind          string   `toml:"bind"`
	Peers         []string `toml:"peers"`
	SecretFile    string   `toml:"secret_file"`
	FlushInterval string   `toml:"flush_interval"`
}

// DefaultPeersFlushInterval batches entries for this long at most.
const DefaultPeersFlushInterval = 100 * time.Millisecond

// MinPeerSecret is the shortest accepted shared secret, in bytes.
const MinPeerSecret = 16

// peers checks the [peers] section; binds holds the addresses already taken
// ("tcp host:port" -> key) and gets the peers' one.
func (v *validator) peers(rp rawPeers, binds map[string]string) Peers {
	p := Peers{Peers: rp.Peers, SecretFile: rp.SecretFile,
		FlushInterval: v.dur("peers.flush_interval", rp.FlushInterval, DefaultPeersFlushInterval)}
	if rp.Bind != "" {
		if addrs := v.bindAddrs("peers.bind", rp.Bind); len(addrs) > 0 {
			p.Bind = addrs[0]
			if prev, dup := binds["tcp "+p.Bind]; dup {
				v.errf("peers.bind", "address %s is already bound by %s (line %d)", p.Bind, prev, v.loc.line(prev))
			} else {
				binds["tcp "+p.Bind] = "peers.bind"
			}
		}
	}
	seen := map[string]bool{}
	for i, a := range rp.Peers {
		host, port, err := net.SplitHostPort(a)
		switch {
		case err != nil || host == "":
			v.errf("peers.peers", "entry %d %q is not host:port like \"10.0.0.2:7070\"", i+1, a)
		case !validPort(port):
			v.errf("peers.peers", "entry %d %q has a bad port %q; use a number from 1 to 65535", i+1, a, port)
		case seen[a]:
			v.errf("peers.peers", "entry %d %q is listed twice", i+1, a)
		case p.Bind != "" && a == p.Bind:
			v.errf("peers.peers", "entry %d %q is this node's own peers.bind; list the other nodes' addresses", i+1, a)
		}
		seen[a] = true
	}
	if p.FlushInterval == 0 && rp.FlushInterval != "" {
		v.errf("peers.flush_interval", "must be more than 0, like \"100ms\"")
	}
	if rp.Bind == "" && len(rp.Peers) == 0 {
		if rp.SecretFile != "" {
			v.errf("peers.secret_file", "a secret without peers.bind or peers.peers does nothing; add them or remove [peers]")
		}
		return p
	}
	if rp.SecretFile == "" {
		v.errf("peers", "[peers] needs secret_file: a file holding a shared secret of at least %d bytes, the same on every node", MinPeerSecret)
		return p
	}
	// Read by the worker, whose working directory need not be the file's.
	p.SecretFile = v.besideConfig(rp.SecretFile)
	if _, err := ReadPeerSecret(p.SecretFile); err != nil {
		v.errf("peers.secret_file", "%v", err)
	} else {
		v.secretMode("peers.secret_file", p.SecretFile)
	}
	return p
}

// ReadPeerSecret reads a peers secret file: its content without surrounding
// white space, at least MinPeerSecret bytes.
func ReadPeerSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinPeerSecret {
		return nil, fmt.Errorf("%s holds %d bytes of secret; use at least %d (for example: head -c 32 /dev/urandom | base64 > FILE, copied to both nodes)", path, len(s), MinPeerSecret)
	}
	return []byte(s), nil
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}
