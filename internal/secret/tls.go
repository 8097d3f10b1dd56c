package secret

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLS is the tls: block shared by both uplinks.
type TLS struct {
	CAFile             string `yaml:"ca_file"`              // PEM bundle of CAs that sign the server; system pool when empty
	CertFile           string `yaml:"cert_file"`            // client certificate (mTLS), with key_file
	KeyFile            string `yaml:"key_file"`             // client key (mTLS), with cert_file
	ServerName         string `yaml:"server_name"`          // overrides the host name checked in the server certificate
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // disables server verification; logged as a warning
}

// Enabled reports whether any TLS setting is present.
func (t *TLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Needed reports whether a connection to urls (comma-separated) needs a
// TLS configuration: any setting is present, or a URL starts with one of
// tlsSchemes ("tls://", "wss://", ...).
func (t *TLS) Needed(urls string, tlsSchemes ...string) bool {
	if t.Enabled() {
		return true
	}
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		for _, s := range tlsSchemes {
			if strings.HasPrefix(u, s) {
				return true
			}
		}
	}
	return false
}

// ResolvePaths makes the file paths absolute against dir.
func (t *TLS) ResolvePaths(dir string) {
	t.CAFile = Resolve(dir, t.CAFile)
	t.CertFile = Resolve(dir, t.CertFile)
	t.KeyFile = Resolve(dir, t.KeyFile)
}

// Validate checks the block without touching files; field is its
// configuration key ("uplinks.nats.tls").
func (t *TLS) Validate(field string) error {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return fmt.Errorf("%s.key_file: required with cert_file", field)
	case t.KeyFile != "" && t.CertFile == "":
		return fmt.Errorf("%s.cert_file: required with key_file", field)
	}
	return nil
}

// Config reads the files and builds a client tls.Config (TLS 1.2 minimum).
// Errors name the field and the path.
func (t *TLS) Config(field string) (*tls.Config, error) {
	if err := t.Validate(field); err != nil {
		return nil, err
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit operator choice, logged as a warning by the uplinks
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: read %s: %w", field, t.CAFile, unwrapPath(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", field, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file: load %s with key %s: %w", field, t.CertFile, t.KeyFile, unwrapPath(err))
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
