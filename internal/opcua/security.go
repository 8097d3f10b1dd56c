package opcua

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/secret"
)

// ErrUntrusted is wrapped by the error for a server certificate that is not
// in trust_dir.
var ErrUntrusted = errors.New("server certificate not trusted")

// UntrustedError names the certificate and where to put it.
type UntrustedError struct {
	Endpoint   string
	Thumbprint string
	Subject    string
	TrustDir   string
	Saved      string // copy of the refused certificate, "" if it could not be written
}

func (e *UntrustedError) Error() string {
	src := "the server certificate"
	if e.Saved != "" {
		src = e.Saved
	}
	return fmt.Sprintf("opcua: %s: server certificate %s (thumbprint %s) is not trusted: copy %s into trust_dir %s to trust it, or set accept_untrusted: true",
		e.Endpoint, e.Subject, e.Thumbprint, src, e.TrustDir)
}

func (e *UntrustedError) Unwrap() error { return ErrUntrusted }

// checkTrust accepts der when it is in trust_dir (or accept_untrusted is set).
func checkTrust(cfg *Config, der []byte, log *slog.Logger) error {
	if len(der) == 0 {
		return fmt.Errorf("opcua: %s: the endpoint offers no server certificate", cfg.Endpoint)
	}
	if cfg.AcceptUntrusted {
		log.Warn("accepting an untrusted server certificate (accept_untrusted: true)", "thumbprint", uapki.Thumbprint(der))
		return nil
	}
	entries, err := os.ReadDir(cfg.TrustDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("opcua: trust_dir %s: %w", cfg.TrustDir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		c, err := uapki.LoadCertificate(filepath.Join(cfg.TrustDir, e.Name()))
		if err != nil {
			continue // not a certificate; other files may live here
		}
		if bytes.Equal(c, der) {
			return nil
		}
	}
	ue := &UntrustedError{Endpoint: cfg.Endpoint, Thumbprint: uapki.Thumbprint(der), TrustDir: cfg.TrustDir}
	ue.Subject = strings.TrimPrefix(uapki.Describe(der), "subject ")
	if i := strings.Index(ue.Subject, ", thumbprint"); i >= 0 {
		ue.Subject = ue.Subject[:i]
	}
	saved := filepath.Join(cfg.DataDir, "pki", "rejected", ue.Thumbprint+".der")
	if err := uapki.WriteCertificate(saved, der); err == nil {
		ue.Saved = saved
	}
	return ue
}

// appCert loads or creates the application instance certificate.
func appCert(cfg *Config, log *slog.Logger) ([]byte, *rsa.PrivateKey, error) {
	if cfg.Certificate.CertFile != "" {
		der, err := uapki.LoadCertificate(cfg.Certificate.CertFile)
		if err != nil {
			return nil, nil, fmt.Errorf("opcua: certificate.cert_file: %w", err)
		}
		key, err := uapki.LoadKey(cfg.Certificate.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("opcua: certificate.key_file: %w", err)
		}
		return der, key, nil
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	certPath := filepath.Join(cfg.DataDir, "pki", "own", "cert.der")
	keyPath := filepath.Join(cfg.DataDir, "pki", "own", "key.pem")
	der, key, created, err := uapki.LoadOrCreate(certPath, keyPath, "smelter-gateway", "urn:smelter:gateway:"+host, []string{host, "localhost"})
	if err != nil {
		return nil, nil, fmt.Errorf("opcua: application certificate: %w", err)
	}
	if created {
		log.Info("created the application instance certificate; servers that check clients must trust it",
			"cert", certPath, "thumbprint", uapki.Thumbprint(der))
	}
	return der, key, nil
}

var tokenTypes = map[string]ua.UserTokenType{
	"anonymous":   ua.UserTokenTypeAnonymous,
	"username":    ua.UserTokenTypeUserName,
	"certificate": ua.UserTokenTypeCertificate,
}

// options resolves everything a connection needs: the endpoint (from
// GetEndpoints when a certificate is involved), trust, the application
// certificate and the user identity. It does network I/O.
func options(ctx context.Context, cfg *Config, log *slog.Logger) ([]opcua.Option, error) {
	policy := policyURIs[cfg.SecurityPolicy]
	mode := securityModes[cfg.SecurityMode]
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.RequestTimeout(cfg.RequestTimeout),
		opcua.DialTimeout(cfg.RequestTimeout),
		opcua.SessionTimeout(cfg.SessionTimeout),
		opcua.ApplicationName("smelter-gateway"),
		opcua.ProductURI("urn:smelter"),
		opcua.SessionName("smelter-gateway"),
	}
	switch cfg.Auth.Mode {
	case "username":
		var pw secret.Secret
		var err error
		if cfg.Auth.PasswordEnv != "" {
			pw, err = secret.FromEnv("auth.password_env", cfg.Auth.PasswordEnv)
		} else {
			pw, err = secret.FromFile("auth.password_file", cfg.Auth.PasswordFile)
		}
		if err != nil {
			return nil, fmt.Errorf("opcua: %w", err)
		}
		opts = append(opts, opcua.AuthUsername(cfg.Auth.Username, pw.Reveal()))
	case "certificate":
		der, err := uapki.LoadCertificate(cfg.Auth.CertFile)
		if err != nil {
			return nil, fmt.Errorf("opcua: auth.cert_file: %w", err)
		}
		key, err := uapki.LoadKey(cfg.Auth.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("opcua: auth.key_file: %w", err)
		}
		opts = append(opts, opcua.AuthCertificate(der), opcua.AuthPrivateKey(key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	if policy == ua.SecurityPolicyURINone && cfg.Auth.Mode == "anonymous" {
		return append(opts, opcua.SecurityPolicy(policy), opcua.SecurityMode(mode)), nil
	}
	gctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(gctx, cfg.Endpoint, opcua.DialTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("opcua: get endpoints of %s: %w", cfg.Endpoint, err)
	}
	ep := selectEndpoint(eps, policy, mode, tokenTypes[cfg.Auth.Mode])
	if ep == nil {
		return nil, fmt.Errorf("opcua: %s offers no endpoint with security_policy %s, security_mode %s and auth.mode %s (offered: %s)",
			cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode, cfg.Auth.Mode, describeEndpoints(eps))
	}
	if err := checkTrust(cfg, ep.ServerCertificate, log); err != nil {
		return nil, err
	}
	if policy != ua.SecurityPolicyURINone {
		der, key, err := appCert(cfg, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opcua.Certificate(der), opcua.PrivateKey(key))
	}
	opts = append(opts, opcua.SecurityPolicy(policy), opcua.SecurityMode(mode),
		opcua.SecurityFromEndpoint(ep, tokenTypes[cfg.Auth.Mode]))
	return opts, nil
}

// selectEndpoint picks the endpoint with the policy and mode that offers the
// token type.
func selectEndpoint(eps []*ua.EndpointDescription, policy string, mode ua.MessageSecurityMode, tok ua.UserTokenType) *ua.EndpointDescription {
	for _, ep := range eps {
		if ep.SecurityPolicyURI != policy || ep.SecurityMode != mode {
			continue
		}
		for _, t := range ep.UserIdentityTokens {
			if t.TokenType == tok {
				return ep
			}
		}
	}
	return nil
}

func describeEndpoints(eps []*ua.EndpointDescription) string {
	var out []string
	for _, ep := range eps {
		var toks []string
		for _, t := range ep.UserIdentityTokens {
			toks = append(toks, tokenName(t.TokenType))
		}
		out = append(out, fmt.Sprintf("%s/%s [%s]", policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), strings.Join(toks, " ")))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func modeName(m ua.MessageSecurityMode) string {
	for k, v := range securityModes {
		if v == m {
			return k
		}
	}
	return m.String()
}

func tokenName(t ua.UserTokenType) string {
	for k, v := range tokenTypes {
		if v == t {
			return k
		}
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "UserTokenType"))
}
