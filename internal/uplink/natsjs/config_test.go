package natsjs

import (
	"github.com/smelterio/smelter/internal/telemetry"

	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/secret"
)

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

func tlsCA(ca string) secret.TLS { return secret.TLS{CAFile: ca} }

func tlsFiles(ca, cert, key string) secret.TLS {
	return secret.TLS{CAFile: ca, CertFile: cert, KeyFile: key}
}

func TestConfigYAMLAndDefaults(t *testing.T) {
	src := `
url: tls://a:4222,tls://b:4222
stream: PLANT
create_stream: false
replicas: 3
max_age: 24h
username: smelter
password_env: PW
tls: {ca_file: ca.pem, server_name: nats.example, insecure_skip_verify: false}
max_pending: 64
timeout: 2s
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	c.SetDefaults("gw-1")
	c.ResolvePaths("/etc/smelter")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Stream != "PLANT" || *c.CreateStream || c.Replicas != 3 || c.MaxAge != 24*time.Hour ||
		c.TLS.CAFile != "/etc/smelter/ca.pem" || c.TLS.ServerName != "nats.example" || c.MaxPending != 64 ||
		c.Timeout != 2*time.Second || c.Name != "smelter-gateway/gw-1" {
		t.Fatalf("decoded %+v", c)
	}

	var d Config
	d.SetDefaults("gw")
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.URL != DefaultURL || d.Stream != DefaultStream || !*d.CreateStream || d.Replicas != 1 ||
		d.MaxAge != DefaultMaxAge || d.MaxPending != 256 || d.Timeout != 5*time.Second {
		t.Fatalf("defaults %+v", d)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad scheme", func(c *Config) { c.URL = "http://x:1" }, `uplinks.nats.url: scheme "http"`},
		{"not a url", func(c *Config) { c.URL = "nats://" }, "uplinks.nats.url:"},
		{"creds in url", func(c *Config) { c.URL = "nats://u:p@h:1" }, "uplinks.nats.url: credentials"},
		{"stream with dot", func(c *Config) { c.Stream = "A.B" }, "uplinks.nats.stream:"},
		{"replicas", func(c *Config) { c.Replicas = 7 }, "uplinks.nats.replicas: 7"},
		{"max_age below dedup window", func(c *Config) { c.MaxAge = time.Minute }, "uplinks.nats.max_age: 1m0s is shorter"},
		{"both password sources", func(c *Config) { c.Username, c.PasswordEnv, c.PasswordFile = "u", "E", "f" }, "uplinks.nats.password_env: set password_env or password_file"},
		{"user without password", func(c *Config) { c.Username = "u" }, "uplinks.nats.username: needs password_env"},
		{"password without user", func(c *Config) { c.PasswordEnv = "E" }, "uplinks.nats.username: required"},
		{"token and user", func(c *Config) { c.Username, c.PasswordEnv, c.TokenFile = "u", "E", "t" }, "uplinks.nats.token_file:"},
		{"creds and token", func(c *Config) { c.CredsFile, c.TokenFile = "c", "t" }, "uplinks.nats.creds_file:"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, "uplinks.nats.tls.key_file: required"},
		{"max_pending", func(c *Config) { c.MaxPending = -1 }, "uplinks.nats.max_pending: -1"},
		{"timeout", func(c *Config) { c.Timeout = -time.Second }, "uplinks.nats.timeout:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			c.SetDefaults("gw")
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	cases := []struct {
		filter string
		want   bool
	}{
		{"smelter.v1.>", true},
		{"smelter.>", true},
		{">", true},
		{"*.v1.>", true},
		{"smelter.*.>", true},
		{"smelter.v1.*", false},
		{"smelter.v1.*.*.*.*", false},
		{"smelter.v1.plant.>", false},
		{"smelter.v2.>", false},
		{"smelter", false},
		{"other.>", false},
	}
	for _, tc := range cases {
		if got := telemetry.Covers(tc.filter, "smelter.v1.>"); got != tc.want {
			t.Errorf("Covers(%q, smelter.v1.>) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}

// TestDefaultStreamsDoNotOverlap: the default telemetry and audit
// subjects never collide (JetStream would refuse the second stream).
func TestDefaultStreamsDoNotOverlap(t *testing.T) {
	if over := overlapping(telemetry.TelemetryStreamSubjects("*"), telemetry.AuditStreamSubjects("*")); over != "" {
		t.Fatalf("default telemetry subject %s overlaps the audit stream", over)
	}
}

// TestValidateReportsEveryProblem: Validate returns every problem, not the
// first (review finding 4), each a field of its own.
func TestValidateReportsEveryProblem(t *testing.T) {
	var c Config
	c.URL = "http://x:1"
	c.SetDefaults("gw")
	c.MaxAge = time.Minute
	c.Replicas = 9
	c.Username = "u"
	c.Timeout = -time.Second
	err := c.Validate()
	for _, want := range []string{"uplinks.nats.url: scheme", "uplinks.nats.max_age: 1m0s is shorter", "uplinks.nats.replicas: 9",
		"uplinks.nats.username: needs password_env", "uplinks.nats.timeout: -1s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// TestCheckLocal: the secrets and TLS files a configuration names are read
// (no connection): a missing password file, an unset variable, a CA file
// that is not PEM are reported with their field, never a value.
func TestCheckLocal(t *testing.T) {
	dir := t.TempDir()
	pw, ca := dir+"/pw", dir+"/ca.pem"
	if err := writeFile(pw, "s3cret-value\n"); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(ca, "not a certificate s3cret-value"); err != nil {
		t.Fatal(err)
	}
	c := Config{URL: "tls://h:4222", Username: "u", PasswordFile: pw, TLS: tlsCA(ca)}
	err := c.CheckLocal()
	if err == nil || !strings.Contains(err.Error(), "uplinks.nats.tls.ca_file: "+ca+" holds no PEM certificate") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("got %v", err)
	}
	c = Config{URL: "nats://h:4222", Username: "u", PasswordFile: dir + "/missing"}
	if err := c.CheckLocal(); err == nil || !strings.Contains(err.Error(), "uplinks.nats.password_file: read "+dir+"/missing") {
		t.Fatalf("got %v", err)
	}
	c = Config{URL: "nats://h:4222", Username: "u", PasswordEnv: "SMELTER_TEST_SURELY_UNSET"}
	if err := c.CheckLocal(); err == nil || !strings.Contains(err.Error(), "uplinks.nats.password_env: environment variable SMELTER_TEST_SURELY_UNSET is not set") {
		t.Fatalf("got %v", err)
	}
	c = Config{URL: "nats://h:4222", Username: "u", PasswordFile: pw}
	if err := c.CheckLocal(); err != nil {
		t.Fatalf("readable password file: %v", err)
	}
}
