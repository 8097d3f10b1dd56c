// Package brokertest holds helpers for tests that talk to real brokers: an
// in-memory test PKI (CA, server and client certificates written as PEM files)
// and a TCP proxy that can cut every connection abruptly to simulate a network
// failure.
package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority with one server certificate
// (valid for 127.0.0.1, ::1 and "localhost") and one client certificate,
// all written as PEM files into a test temp directory.
type PKI struct {
	Dir            string
	CAFile         string
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string
	ClientKeyFile  string

	CAPool     *x509.CertPool
	ServerCert tls.Certificate
	ClientCert tls.Certificate
	// NameOnlyCert is a server certificate for "localhost" alone (no IP
	// address): a client that reaches the server by its IP address must
	// verify it under the name.
	NameOnlyCert tls.Certificate
}

// NewPKI generates the CA and certificates; files are removed with the test.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("brokertest: ca key: %v", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smelter test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("brokertest: ca cert: %v", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("brokertest: parse ca: %v", err)
	}
	p := &PKI{Dir: dir, CAPool: x509.NewCertPool()}
	p.CAPool.AddCert(caCert)
	p.CAFile = filepath.Join(dir, "ca.pem")
	writePEM(t, p.CAFile, "CERTIFICATE", caDER)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool, ips ...net.IP) (tls.Certificate, string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("brokertest: key: %v", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = ips
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("brokertest: cert %s: %v", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("brokertest: marshal key: %v", err)
		}
		certFile := filepath.Join(dir, cn+".pem")
		keyFile := filepath.Join(dir, cn+".key")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatalf("brokertest: load %s: %v", cn, err)
		}
		return c, certFile, keyFile
	}
	p.ServerCert, p.ServerCertFile, p.ServerKeyFile = issue(2, "server", x509.ExtKeyUsageServerAuth, true, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	p.ClientCert, p.ClientCertFile, p.ClientKeyFile = issue(3, "client", x509.ExtKeyUsageClientAuth, false)
	p.NameOnlyCert, _, _ = issue(4, "server-name-only", x509.ExtKeyUsageServerAuth, true)
	return p
}

// ServerTLS returns a server configuration; with requireClientCert the
// server demands a client certificate signed by the CA (mTLS).
func (p *PKI) ServerTLS(requireClientCert bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.ServerCert}}
	if requireClientCert {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.CAPool
	}
	return c
}

// ClientTLS returns a client configuration trusting the CA, presenting the
// client certificate.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.CAPool, Certificates: []tls.Certificate{p.ClientCert}}
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("brokertest: write %s: %v", path, err)
	}
}
