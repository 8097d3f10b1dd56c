// Package uapki creates and loads the X.509 material OPC UA needs: RSA
// application instance certificates (self-signed, with the application URI
// in the subject alternative name) and the SHA-1 thumbprints OPC UA uses to
// name certificates.
package uapki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // OPC UA names certificates by their SHA-1 thumbprint
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeyBits is the RSA key size of generated certificates (the minimum every
// supported policy, including Aes256_Sha256_RsaPss, accepts).
const KeyBits = 2048

// Generate creates a self-signed application instance certificate for
// appURI, valid for hosts (DNS names or IP addresses). It returns the DER
// certificate and its key.
func Generate(commonName, appURI string, hosts []string, validFor time.Duration) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, nil, fmt.Errorf("uapki: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("uapki: serial: %w", err)
	}
	u, err := url.Parse(appURI)
	if err != nil {
		return nil, nil, fmt.Errorf("uapki: application uri %q: %w", appURI, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Smelter"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("uapki: create certificate: %w", err)
	}
	return der, key, nil
}

// Thumbprint is the hex SHA-1 of a DER certificate, the name OPC UA tools use.
func Thumbprint(der []byte) string {
	s := sha1.Sum(der) //nolint:gosec // identification, not security
	return hex.EncodeToString(s[:])
}

// ParseCertificate accepts a DER or PEM certificate and returns the DER.
func ParseCertificate(data []byte) ([]byte, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pem block %q is not a CERTIFICATE", b.Type)
		}
		data = b.Bytes
	}
	if _, err := x509.ParseCertificate(data); err != nil {
		return nil, err
	}
	return data, nil
}

// LoadCertificate reads a DER or PEM certificate file.
func LoadCertificate(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	der, err := ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return der, nil
}

// LoadKey reads a PEM (PKCS#1 or PKCS#8) or DER RSA private key file.
func LoadKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil {
		data = b.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(data); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not an RSA private key (PKCS#1 or PKCS#8)", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, OPC UA needs RSA", path, k)
	}
	return rk, nil
}

// lockWait bounds how long LoadOrCreate waits for another process's lock
// file before declaring it stale (left by a process killed mid-creation).
const lockWait = 30 * time.Second

// LoadOrCreate loads the certificate and key at certPath/keyPath, or creates
// both (PEM, key mode 0600) when neither exists. It reports whether it created them.
//
// Creation happens once per pair even when many devices of one gateway, or
// several processes sharing the data dir, start at the same moment: an
// exclusively created lock file (certPath + ".lock", O_CREATE|O_EXCL)
// orders every caller, goroutine or process, and whoever comes second
// loads what the first wrote. The certificate and key
// are written to temporary files and renamed into place, so no caller ever
// reads a half-written pair.
func LoadOrCreate(certPath, keyPath, commonName, appURI string, hosts []string) ([]byte, *rsa.PrivateKey, bool, error) {
	if der, key, ok, err := loadPair(certPath, keyPath); ok || err != nil {
		return der, key, false, err
	}
	unlock, err := lockFile(certPath + ".lock")
	if err != nil {
		return nil, nil, false, err
	}
	defer unlock()
	// Another process may have created the pair while we waited.
	if der, key, ok, err := loadPair(certPath, keyPath); ok || err != nil {
		return der, key, false, err
	}
	der, key, err := Generate(commonName, appURI, hosts, 10*365*24*time.Hour)
	if err != nil {
		return nil, nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return nil, nil, false, fmt.Errorf("uapki: %w", err)
	}
	kb := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// The key first: a certificate on disk always has its key beside it.
	if err := writeAtomic(keyPath, kb, 0o600); err != nil {
		return nil, nil, false, fmt.Errorf("uapki: write key: %w", err)
	}
	if err := WriteCertificate(certPath, der); err != nil {
		return nil, nil, false, err
	}
	return der, key, true, nil
}

// loadPair loads an existing pair: ok is false (and err nil) when neither
// file exists yet.
func loadPair(certPath, keyPath string) ([]byte, *rsa.PrivateKey, bool, error) {
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	if errC == nil && errK == nil {
		der, err := LoadCertificate(certPath)
		if err != nil {
			return nil, nil, false, err
		}
		key, err := LoadKey(keyPath)
		if err != nil {
			return nil, nil, false, err
		}
		return der, key, true, nil
	}
	if errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist) {
		return nil, nil, false, nil
	}
	if errors.Is(errC, os.ErrNotExist) {
		// A creator writes the key first; a key alone is either being
		// completed right now (we hold or waited for the lock) or left by
		// a crash: never guess, name both files.
		return nil, nil, false, fmt.Errorf("uapki: %s exists without %s; remove it to have a new pair created, or provide both", keyPath, certPath)
	}
	return nil, nil, false, fmt.Errorf("uapki: only one of %s and %s exists; provide both or neither", certPath, keyPath)
}

// lockFile creates path exclusively, waiting (polling) while another
// process holds it; a lock older than lockWait is taken as stale and
// removed. unlock removes it.
func lockFile(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("uapki: %w", err)
	}
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
			_ = f.Close()
			return func() { _ = os.Remove(path) }, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("uapki: lock %s: %w", path, err)
		}
		if st, serr := os.Stat(path); serr == nil && time.Since(st.ModTime()) > lockWait {
			_ = os.Remove(path) // stale: its creator died mid-creation
			continue
		}
		time.Sleep(20 * time.Millisecond) // another caller is creating the pair; no event to wait on
	}
}

// writeAtomic writes data to a temporary file beside path and renames it
// into place.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, mode)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// WriteCertificate writes a DER certificate as PEM when path ends in .pem or
// .crt, as DER otherwise, creating the directory.
func WriteCertificate(path string, der []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("uapki: %w", err)
	}
	data := der
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".pem" || ext == ".crt" {
		data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if err := writeAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("uapki: write certificate: %w", err)
	}
	return nil
}

// Describe returns "CN=..., thumbprint ..." for messages.
func Describe(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "unparseable certificate, thumbprint " + Thumbprint(der)
	}
	return fmt.Sprintf("subject %q, thumbprint %s", c.Subject.String(), Thumbprint(der))
}
