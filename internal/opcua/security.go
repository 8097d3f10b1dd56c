package opcua

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"
	"github.com/gopcua/opcua/uasc"

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

// dialPlan is everything a connection needs, resolved before dialing: the
// client options (channel security, application certificate, timeouts) and
// the session configuration (identity token for the chosen endpoint).
type dialPlan struct {
	opts    []opcua.Option
	session *uasc.SessionConfig
}

// options resolves everything a connection needs: the endpoint (always from
// GetEndpoints, so the identity token carries the server's policy id),
// trust, the application certificate and the user identity. It does
// network I/O. requestTimeout is the secure channel's default request
// timeout (the driver raises it above the keep-alive interval, see timing).
func options(ctx context.Context, cfg *Config, log *slog.Logger, requestTimeout time.Duration) (*dialPlan, error) {
	policy := policyURIs[cfg.SecurityPolicy]
	mode := securityModes[cfg.SecurityMode]
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.RequestTimeout(requestTimeout),
		opcua.SessionTimeout(cfg.SessionTimeout),
		opcua.ApplicationName("smelter-gateway"),
		opcua.ProductURI("urn:smelter"),
		opcua.SessionName("smelter-gateway"),
	}
	opts = append(opts, dialOptions(cfg)...)
	sess := opcua.DefaultSessionConfig()
	sess.SessionName = "smelter-gateway"
	sess.SessionTimeout = cfg.SessionTimeout
	sess.ClientDescription.ApplicationName = ua.NewLocalizedText("smelter-gateway")
	sess.ClientDescription.ProductURI = "urn:smelter"
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
		sess.UserIdentityToken = &ua.UserNameIdentityToken{UserName: cfg.Auth.Username}
		sess.AuthPassword = pw.Reveal()
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
		sess.UserIdentityToken = &ua.X509IdentityToken{CertificateData: der}
	default:
		opts = append(opts, opcua.AuthAnonymous())
		sess.UserIdentityToken = &ua.AnonymousIdentityToken{}
	}
	gctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(gctx, cfg.Endpoint, dialOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("opcua: get endpoints of %s: %w", cfg.Endpoint, err)
	}
	tok := tokenTypes[cfg.Auth.Mode]
	ep := selectEndpoint(eps, policy, mode, tok)
	if ep == nil {
		return nil, fmt.Errorf("opcua: %s offers no endpoint with security_policy %s, security_mode %s and auth.mode %s (offered: %s)",
			cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode, cfg.Auth.Mode, describeEndpoints(eps))
	}
	// The server certificate matters whenever something is encrypted with
	// it: the channel, or a password on a None channel.
	if policy != ua.SecurityPolicyURINone || cfg.Auth.Mode != "anonymous" {
		if err := checkTrust(cfg, ep.ServerCertificate, log); err != nil {
			return nil, err
		}
	}
	if policy != ua.SecurityPolicyURINone {
		der, key, err := appCert(cfg, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opcua.Certificate(der), opcua.PrivateKey(key))
		// The ApplicationDescription must name the certificate's URI
		// (Part 4, 5.6.2: BadCertificateUriInvalid otherwise).
		if c, err := x509.ParseCertificate(der); err == nil && len(c.URIs) > 0 {
			sess.ClientDescription.ApplicationURI = c.URIs[0].String()
		}
	}
	// The identity token names the policy id the server gave the token
	// type on this endpoint (Part 4, 7.41), as SecurityFromEndpoint does.
	for _, t := range ep.UserIdentityTokens {
		if t.TokenType != tok {
			continue
		}
		switch it := sess.UserIdentityToken.(type) {
		case *ua.AnonymousIdentityToken:
			it.PolicyID = t.PolicyID
		case *ua.UserNameIdentityToken:
			it.PolicyID = t.PolicyID
		case *ua.X509IdentityToken:
			it.PolicyID = t.PolicyID
		}
		sess.AuthPolicyURI = t.SecurityPolicyURI
		if sess.AuthPolicyURI == "" {
			sess.AuthPolicyURI = ep.SecurityPolicyURI
		}
		break
	}
	opts = append(opts, opcua.SecurityPolicy(policy), opcua.SecurityMode(mode),
		opcua.SecurityFromEndpoint(ep, tok))
	return &dialPlan{opts: opts, session: sess}, nil
}

// connect opens a session with the configuration's security and identity.
//
// It dials, creates and activates the session itself instead of calling
// gopcua's Client.Connect: Connect also starts gopcua's connection monitor
// and publish loop, and that monitor treats every service fault the secure
// channel reports (BadTimeout on a Publish, BadTooManyOperations on a Read)
// as a lost connection and tears the session down (v0.8.0 and v0.9.0 alike,
// upstream PR #904). Without them, a service fault is the error of the one
// request it answers; the driver runs its own publish loop (subscription.go)
// and judges the connection by its own requests.
func connect(ctx context.Context, cfg *Config, log *slog.Logger, requestTimeout time.Duration) (*opcua.Client, error) {
	plan, err := options(ctx, cfg, log, requestTimeout)
	if err != nil {
		return nil, err
	}
	cl, err := opcua.NewClient(cfg.Endpoint, plan.opts...)
	if err != nil {
		return nil, fmt.Errorf("opcua: client options: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	fail := func(step string, err error) error {
		closeClient(cl)
		return fmt.Errorf("opcua: %s %s (%s/%s, auth %s): %w", step, cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode, cfg.Auth.Mode, err)
	}
	if err := cl.Dial(cctx); err != nil {
		return nil, fail("connect", err)
	}
	s, err := cl.CreateSession(cctx, plan.session)
	if err == nil && s == nil {
		// gopcua logs a bad server signature and returns neither.
		err = errors.New("the server's session signature does not verify")
	}
	if err != nil {
		return nil, fail("create session on", err)
	}
	if err := cl.ActivateSession(cctx, s); err != nil {
		return nil, fail("activate session on", err)
	}
	return cl, nil
}

func closeClient(cl *opcua.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = cl.Close(ctx)
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

// dialOptions are the connection's dial timeout (request_timeout) and the
// buffer sizes of its Hello (buffer_size), for discovery and sessions
// alike, in a dialer of the connection's own: gopcua's ReceiveBufferSize
// and SendBufferSize options write into the Acknowledge its default dialer
// points to, uacp.DefaultClientACK, one for the whole process (a data
// race between two connects, and one device's size in every other's Hello).
func dialOptions(cfg *Config) []opcua.Option {
	return []opcua.Option{opcua.Dialer(&uacp.Dialer{
		Dialer: &net.Dialer{Timeout: cfg.RequestTimeout},
		// MaxMessageSize and MaxChunkCount 0: what the server wants, as
		// gopcua's default
		ClientACK: &uacp.Acknowledge{ReceiveBufSize: cfg.BufferSize, SendBufSize: cfg.BufferSize},
	})}
}
