package collector

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/secret"
)

// CommandsConfig is the collector's command service (docs/commands.md,
// "The collector's command service"): the audit trail and the alerts on
// rejected commands from the audit stream, and, with seed_file and
// operators, commands sent by operators through the HTTP API.
type CommandsConfig struct {
	// SeedFile holds the user nkey seed (S...) that signs commands; mode
	// 0600 or stricter. Required with operators.
	SeedFile string `yaml:"seed_file"`
	// NATS is the command identity's connection (user commander in
	// deploy/nats/smelter-accounts.conf), separate from ingest; an empty
	// url means the collector's own NATS server.
	NATS NATSConn `yaml:"nats"`
	// Operators may send commands, each with a bearer token of its own;
	// the name is the command's requester and is shown in the audit.
	Operators []Operator `yaml:"operators"`
	// AuditStream is the JetStream stream holding the gateways' audit
	// records (smelter.v1.*.*.*.audit); default SMELTER_AUDIT.
	AuditStream string `yaml:"audit_stream"`
	// AuditConsumer is the durable consumer the group's replicas share to
	// raise alerts on rejected commands; default "<group>-audit".
	AuditConsumer string `yaml:"audit_consumer"`
	// Timeout bounds the wait for a gateway's result (default 15s).
	Timeout Duration `yaml:"timeout"`
	// Lifetime is expires_at - issued_at of a command (default 1m; the
	// gateways' commands.max_lifetime must allow it).
	Lifetime Duration `yaml:"lifetime"`
	// AlertHold: an alert on a rejected command stays active this long,
	// then clears (default 15m).
	AlertHold Duration `yaml:"alert_hold"`
}

// NATSConn is a NATS connection's address and credentials (the command
// identity's; nats: takes the same fields for ingest).
type NATSConn struct {
	URL          string      `yaml:"url"`
	Username     string      `yaml:"username"`
	PasswordEnv  string      `yaml:"password_env"`
	PasswordFile string      `yaml:"password_file"`
	TokenFile    string      `yaml:"token_file"`
	CredsFile    string      `yaml:"creds_file"`
	TLS          *secret.TLS `yaml:"tls"`
}

// Operator is one person or service allowed to command.
type Operator struct {
	Name      string `yaml:"name"`
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
}

// Defaults of the commands block.
const (
	DefaultAuditStream     = "SMELTER_AUDIT"
	DefaultCommandTimeout  = 15 * time.Second
	DefaultCommandLifetime = time.Minute
	DefaultAlertHold       = 15 * time.Minute
)

// commands returns the commands block with its defaults filled (nil: no
// commands block).
func (c *Config) commands() *CommandsConfig {
	if c.Commands == nil {
		return nil
	}
	k := *c.Commands
	if k.AuditStream == "" {
		k.AuditStream = DefaultAuditStream
	}
	if k.AuditConsumer == "" {
		k.AuditConsumer = c.Group + "-audit"
	}
	if k.Timeout == 0 {
		k.Timeout = Duration(DefaultCommandTimeout)
	}
	if k.Lifetime == 0 {
		k.Lifetime = Duration(DefaultCommandLifetime)
	}
	if k.AlertHold == 0 {
		k.AlertHold = Duration(DefaultAlertHold)
	}
	return &k
}

// commandProblems checks the commands block.
func (c *Config) commandProblems(ps []problem) []problem {
	k := c.commands()
	if k == nil {
		return ps
	}
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{"commands." + field, fmt.Sprintf(format, args...)})
	}
	ps = urlProblems(ps, "commands.nats.url", k.NATS.URL, natsCredentialFields)
	if !tokenRe.MatchString(k.AuditStream) {
		bad("audit_stream", "%q must be 1-64 of A-Z a-z 0-9 _ -", k.AuditStream)
	}
	if !tokenRe.MatchString(k.AuditConsumer) {
		bad("audit_consumer", "%q must be 1-64 of A-Z a-z 0-9 _ -", k.AuditConsumer)
	}
	for _, d := range []struct {
		f      string
		v      Duration
		lo, hi time.Duration
	}{{"timeout", k.Timeout, time.Second, 5 * time.Minute}, {"lifetime", k.Lifetime, time.Second, time.Hour},
		{"alert_hold", k.AlertHold, time.Second, 7 * 24 * time.Hour}} {
		if time.Duration(d.v) < d.lo || time.Duration(d.v) > d.hi {
			bad(d.f, "%v out of range %v-%v", time.Duration(d.v), d.lo, d.hi)
		}
	}
	if len(k.Operators) > 0 && k.SeedFile == "" {
		bad("seed_file", "missing: operators need the seed that signs their commands")
	}
	if k.SeedFile != "" && len(k.Operators) == 0 {
		bad("operators", "missing: a seed_file without operators signs nothing (give each operator a name and a token_env or token_file)")
	}
	n := k.NATS
	if n.TokenFile != "" && n.Username != "" {
		bad("nats.token_file", "exclusive with commands.nats.username")
	}
	if n.PasswordEnv != "" && n.PasswordFile != "" {
		bad("nats.password_env", "exclusive with commands.nats.password_file")
	}
	if n.TLS != nil {
		ps = appendErr(ps, "commands.nats.tls", n.TLS.Validate("commands.nats.tls"))
	}
	seen := map[string]int{}
	for i, o := range k.Operators {
		f := fmt.Sprintf("operators[%d]", i)
		switch {
		case !tokenRe.MatchString(o.Name):
			bad(f+".name", "%q must be 1-64 of A-Z a-z 0-9 _ - (it is the commands' requester)", o.Name)
		case seen[o.Name] > 0:
			bad(f+".name", "%q already names operators[%d]", o.Name, seen[o.Name]-1)
		}
		seen[o.Name] = i + 1
		switch {
		case o.TokenEnv == "" && o.TokenFile == "":
			bad(f, "give token_env or token_file: the operator's bearer token")
		case o.TokenEnv != "" && o.TokenFile != "":
			bad(f+".token_env", "exclusive with token_file")
		}
	}
	return ps
}

// checkCommandsLocal is CheckLocal for the commands block: the seed file
// (present, mode 0600, a user seed), the commander's password and files,
// and every operator token (set, not blank, unlike the viewer token).
func (c *Config) checkCommandsLocal(add func(error)) {
	k := c.commands()
	if k == nil {
		return
	}
	if k.SeedFile != "" {
		_, err := command.LoadSeed("commands.seed_file", c.Path(k.SeedFile))
		add(err)
	}
	_, err := c.authOptions("commands.nats", k.NATS, nil)
	add(err)
	viewer, _ := c.viewerToken() // its own problems are reported by CheckLocal
	_, err = c.operatorTokens(k, viewer)
	add(err)
}

// placed prefixes "collector: " to a field's error and places it at the
// field's line (file:line) when the config was loaded from a file.
func (c *Config) placed(err error) error {
	if c.doc == nil {
		return fmt.Errorf("collector: %w", err)
	}
	return fmt.Errorf("collector: %w", c.doc.Report("", err))
}

// operatorTokens reads every operator's token: token -> name. A blank
// token, two operators with one token, or an operator token equal to the
// viewer token is an error (naming fields, never a token).
func (c *Config) operatorTokens(k *CommandsConfig, viewer string) (map[string]string, error) {
	out := map[string]string{}
	for i, o := range k.Operators {
		f := fmt.Sprintf("commands.operators[%d]", i)
		var tok secret.Secret
		var err error
		if o.TokenEnv != "" {
			tok, err = secret.FromEnv(f+".token_env", o.TokenEnv)
		} else {
			tok, err = secret.FromFile(f+".token_file", c.Path(o.TokenFile))
		}
		if err != nil {
			return nil, err
		}
		t := strings.TrimSpace(tok.Reveal())
		switch {
		case t == "":
			return nil, fmt.Errorf("%s: operator %s's token is blank: %w", f, o.Name, secret.ErrMissing)
		case t == viewer:
			return nil, fmt.Errorf("%s: operator %s's token is the viewers' (http.token_env/http.token_file): give operators tokens of their own", f, o.Name)
		case out[t] != "":
			return nil, fmt.Errorf("%s: operator %s's token is operator %s's too: give each operator a token of its own", f, o.Name, out[t])
		}
		out[t] = o.Name
	}
	return out, nil
}

// authOptions returns the nats.Options of a connection's credentials and
// TLS (files resolved against the config's directory); field prefixes
// errors ("nats", "commands.nats"). log, when set, warns of disabled TLS
// verification.
func (c *Config) authOptions(field string, a NATSConn, log *slog.Logger) ([]nats.Option, error) {
	var opts []nats.Option
	if a.Username != "" {
		var pw secret.Secret
		var err error
		switch {
		case a.PasswordFile != "":
			pw, err = secret.FromFile(field+".password_file", c.Path(a.PasswordFile))
		case a.PasswordEnv != "":
			pw, err = secret.FromEnv(field+".password_env", a.PasswordEnv)
		}
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.Username, pw.Reveal()))
	}
	if a.TokenFile != "" {
		tok, err := secret.FromFile(field+".token_file", c.Path(a.TokenFile))
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok.Reveal()))
	}
	if a.CredsFile != "" {
		if err := secret.CredsFile(field+".creds_file", c.Path(a.CredsFile)); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(c.Path(a.CredsFile)))
	}
	if a.TLS != nil {
		rt := *a.TLS
		rt.ResolvePaths(c.dir)
		if rt.InsecureSkipVerify && log != nil {
			log.Warn("TLS server verification disabled", "field", field+".tls.insecure_skip_verify")
		}
		tc, err := rt.Config(field + ".tls")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}
