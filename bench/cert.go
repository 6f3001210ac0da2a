package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsFiles is the certificate every h2tls and tls balancer serves: the same ECDSA
// P-256 key for all, so the handshakes cost them the same.
type tlsFiles struct {
	Cert, Key string // PEM certificate and key (sluice, nginx)
	Pem       string // both in one file (HAProxy's crt)
}

// writeCert makes a self-signed certificate for 127.0.0.1 in dir (mode
// h2tls and tls: the balancers serve it; mode tlsbe: the servers do).
func writeCert(dir string) (tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Its own CA too: mode tlsbe's balancers verify the servers
		// against this certificate (ca_file, ca-file).
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tlsFiles{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tlsFiles{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	f := tlsFiles{Cert: filepath.Join(dir, "bench.crt"), Key: filepath.Join(dir, "bench.key"), Pem: filepath.Join(dir, "bench.pem")}
	for path, data := range map[string][]byte{f.Cert: certPEM, f.Key: keyPEM, f.Pem: append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return tlsFiles{}, err
		}
	}
	return f, nil
}
