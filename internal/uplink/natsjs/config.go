package natsjs

import (
	"errors"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/streams"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Config is the uplinks.nats block of the gateway configuration.
type Config struct {
	URL          string        `yaml:"url"`           // nats:// or tls:// (ws:// wss://); comma-separated for a cluster
	Stream       string        `yaml:"stream"`        // JetStream stream name
	CreateStream *bool         `yaml:"create_stream"` // create the stream when missing (default true)
	Replicas     int           `yaml:"replicas"`      // stream replicas when created
	MaxAge       time.Duration `yaml:"max_age"`       // stream retention when created
	AuditStream  string        `yaml:"audit_stream"`  // command audit stream (docs/commands.md); checked only with a commands block
	AuditMaxAge  time.Duration `yaml:"audit_max_age"` // audit stream retention when created
	Username     string        `yaml:"username"`
	PasswordEnv  string        `yaml:"password_env"`  // environment variable holding the password
	PasswordFile string        `yaml:"password_file"` // file holding the password
	TokenFile    string        `yaml:"token_file"`    // file holding an auth token
	CredsFile    string        `yaml:"creds_file"`    // NATS credentials file (JWT + nkey seed)
	TLS          secret.TLS    `yaml:"tls"`
	MaxPending   int           `yaml:"max_pending"` // published and not yet acknowledged
	Timeout      time.Duration `yaml:"timeout"`     // PubAck timeout, also JetStream API timeout

	// Subjects the stream must capture (created with, checked against);
	// default telemetry.TelemetryStreamSubjects("*"). Not in the file:
	// tests narrow it to one site, e.g. TelemetryStreamSubjects("<site>").
	Subjects []string `yaml:"-"`
	// AuditSubjects the audit stream must capture; default
	// telemetry.AuditStreamSubjects("*"). Not in the file, as Subjects.
	AuditSubjects []string `yaml:"-"`

	// Name is the connection name shown by the server; SetDefaults derives it
	// from the gateway id.
	Name string `yaml:"-"`
}

// Defaults.
const (
	DefaultURL    = "nats://127.0.0.1:4222"
	DefaultStream = telemetry.TelemetryStream
	// DefaultAuditStream is the command audit stream's name.
	DefaultAuditStream = telemetry.AuditStream
	// DefaultAuditMaxAge keeps audit records five years (365-day years).
	DefaultAuditMaxAge = 5 * 365 * 24 * time.Hour
	DefaultReplicas    = 1
	DefaultMaxAge      = 168 * time.Hour
	DefaultMaxPending  = 256
	DefaultTimeout     = 5 * time.Second

	// DuplicateWindow is the dedup window of a stream the uplink creates.
	DuplicateWindow = streams.DuplicateWindow
)

const field = "uplinks.nats"

// SetDefaults fills unset fields.
func (c *Config) SetDefaults(gatewayID string) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.AuditStream == "" {
		c.AuditStream = DefaultAuditStream
	}
	if c.AuditMaxAge == 0 {
		c.AuditMaxAge = DefaultAuditMaxAge
	}
	if c.CreateStream == nil {
		t := true
		c.CreateStream = &t
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if len(c.Subjects) == 0 {
		c.Subjects = telemetry.TelemetryStreamSubjects("*")
	}
	if len(c.AuditSubjects) == 0 {
		c.AuditSubjects = telemetry.AuditStreamSubjects("*")
	}
	if c.Name == "" && gatewayID != "" {
		c.Name = "smelter-gateway/" + gatewayID
	}
}

// ResolvePaths makes relative secret and TLS file paths absolute against dir
// (the directory of the configuration file).
func (c *Config) ResolvePaths(dir string) {
	c.PasswordFile = secret.Resolve(dir, c.PasswordFile)
	c.TokenFile = secret.Resolve(dir, c.TokenFile)
	c.CredsFile = secret.Resolve(dir, c.CredsFile)
	c.TLS.ResolvePaths(dir)
}

// Validate checks the configuration without any I/O. Errors name the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, confload.Problemf(field, format, args...))
	}
	if strings.TrimSpace(c.URL) == "" {
		bad(field+".url", "required")
	}
	for _, r := range secret.URLProblems(c.URL, secret.URLRules{Schemes: []string{"nats", "tls", "ws", "wss"}, Example: "nats://host:4222",
		Instead: "username and password_env or password_file, or token_file, or creds_file"}) {
		bad(field+".url", "%s", r)
	}
	if c.Stream == "" {
		bad(field+".stream", "required")
	}
	if strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		bad(field+".stream", "%q must not contain spaces, '.', '*', '>', '/' or '\\'", c.Stream)
	}
	if strings.ContainsAny(c.AuditStream, " \t\r\n.*>/\\") {
		bad(field+".audit_stream", "%q must not contain spaces, '.', '*', '>', '/' or '\\'", c.AuditStream)
	}
	if c.AuditStream != "" && c.AuditStream == c.Stream {
		bad(field+".audit_stream", "%q is the telemetry stream: the audit stream needs its own (docs/commands.md)", c.AuditStream)
	}
	for _, s := range append(c.Subjects[:len(c.Subjects):len(c.Subjects)], c.AuditSubjects...) {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			bad(field, "stream subject %q is empty or holds white space", s)
		}
	}
	if c.AuditMaxAge < 0 {
		bad(field+".audit_max_age", "%v must not be negative", c.AuditMaxAge)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad(field+".replicas", "%d is outside 1..5", c.Replicas)
	}
	if c.MaxAge < 0 {
		bad(field+".max_age", "%v must not be negative", c.MaxAge)
	}
	if c.MaxAge > 0 && c.MaxAge < DuplicateWindow {
		bad(field+".max_age", "%v is shorter than the %v deduplication window", c.MaxAge, DuplicateWindow)
	}
	if c.PasswordEnv != "" && c.PasswordFile != "" {
		bad(field+".password_env", "set password_env or password_file, not both")
	}
	hasPass := c.PasswordEnv != "" || c.PasswordFile != ""
	switch {
	case c.Username != "" && !hasPass:
		bad(field+".username", "needs password_env or password_file")
	case c.Username == "" && hasPass:
		bad(field+".username", "required with password_env or password_file")
	case c.TokenFile != "" && c.Username != "":
		bad(field+".token_file", "use token_file or username/password, not both")
	case c.CredsFile != "" && (c.Username != "" || c.TokenFile != ""):
		bad(field+".creds_file", "use creds_file alone, without username or token_file")
	}
	if err := c.TLS.Validate(field + ".tls"); err != nil {
		errs = append(errs, err)
	}
	if c.MaxPending < 1 || c.MaxPending > 65536 {
		bad(field+".max_pending", "%d is outside 1..65536", c.MaxPending)
	}
	if c.Timeout <= 0 {
		bad(field+".timeout", "%v must be positive", c.Timeout)
	}
	return errors.Join(errs...)
}

// CheckLocal reads what the configuration names on this machine, without
// connecting anything: the password variable or file, the token and creds
// files, and the TLS files (readable, PEM). It returns every problem, each
// naming its field ("uplinks.nats.password_file: read /x: no such file or
// directory"), never a secret's value. New fails on the same problems.
func (c *Config) CheckLocal() error {
	var errs []error
	switch {
	case c.Username != "" && c.PasswordEnv != "":
		_, err := secret.FromEnv(field+".password_env", c.PasswordEnv)
		errs = append(errs, err)
	case c.Username != "" && c.PasswordFile != "":
		_, err := secret.FromFile(field+".password_file", c.PasswordFile)
		errs = append(errs, err)
	case c.TokenFile != "":
		_, err := secret.FromFile(field+".token_file", c.TokenFile)
		errs = append(errs, err)
	case c.CredsFile != "":
		err := secret.CredsFile(field+".creds_file", c.CredsFile)
		errs = append(errs, err)
	}
	if c.TLS.Needed(c.URL, "tls://", "wss://") {
		_, err := c.TLS.Config(field + ".tls")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
