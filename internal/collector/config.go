package collector

import (
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/secret"
)

// Duration is a time.Duration written as "15m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s or 15m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// NATSConfig selects the NATS broker. An empty URL starts an embedded
// nats-server with JetStream.
type NATSConfig struct {
	URL          string      `yaml:"url"`
	Stream       string      `yaml:"stream"`
	CreateStream bool        `yaml:"create_stream"`
	MaxAge       Duration    `yaml:"max_age"`
	Consumer     string      `yaml:"consumer"`
	KVBucket     string      `yaml:"kv_bucket"`
	Username     string      `yaml:"username"`
	PasswordEnv  string      `yaml:"password_env"`
	PasswordFile string      `yaml:"password_file"`
	TokenFile    string      `yaml:"token_file"`
	CredsFile    string      `yaml:"creds_file"`
	TLS          *secret.TLS `yaml:"tls"`
	EmbeddedPort int         `yaml:"embedded_port"` // 0: random
}

// MQTTConfig enables the MQTT source (and alert/KPI mirroring).
type MQTTConfig struct {
	Enabled     bool        `yaml:"enabled"`
	URL         string      `yaml:"url"` // empty with enabled: embedded broker
	Group       string      `yaml:"group"`
	ClientID    string      `yaml:"client_id"`
	Username    string      `yaml:"username"`
	PasswordEnv string      `yaml:"password_env"`
	TLS         *secret.TLS `yaml:"tls"`
}

// RulesConfig selects rule files.
type RulesConfig struct {
	Defaults *bool    `yaml:"defaults"` // embedded default packs, default true
	Files    []string `yaml:"files"`    // loaded after the defaults; globs allowed
}

// KPIConfig sets KPI windows.
type KPIConfig struct {
	Window      Duration            `yaml:"window"`
	Windows     map[string]Duration `yaml:"windows"`
	MinCoverage float64             `yaml:"min_coverage"`
}

// Config is the collector configuration (configs/collector.yaml).
type Config struct {
	DataDir     string      `yaml:"data_dir"`
	NATS        NATSConfig  `yaml:"nats"`
	MQTT        MQTTConfig  `yaml:"mqtt"`
	Rules       RulesConfig `yaml:"rules"`
	KPI         KPIConfig   `yaml:"kpi"`
	DedupWindow int         `yaml:"dedup_window"`
	HTTP        struct {
		Listen string `yaml:"listen"`
		// TokenEnv / TokenFile name where the bearer token of the HTTP API
		// and dashboard is read from; unset: no authentication.
		TokenEnv  string `yaml:"token_env"`
		TokenFile string `yaml:"token_file"`
	} `yaml:"http"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`

	dir string // directory of the config file, for relative paths
}

// Defaults returns a configuration with every default set.
func Defaults() Config {
	c := Config{DataDir: "./data", DedupWindow: 16384}
	c.NATS.Stream, c.NATS.CreateStream, c.NATS.Consumer, c.NATS.KVBucket = "SMELTER", true, "smelter-collector", "smelter_alerts"
	c.NATS.MaxAge = Duration(168 * time.Hour)
	c.MQTT.Group = "smelter-collector"
	c.KPI.Window = Duration(15 * time.Minute)
	c.KPI.MinCoverage = 0.5
	c.HTTP.Listen = "127.0.0.1:9200"
	c.Log.Level, c.Log.Format = "info", "auto"
	return c
}

// LoadConfig reads a YAML file over the defaults and validates it.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	if _, err := confload.ReadFile(path, &c); err != nil {
		return c, err
	}
	c.dir = filepath.Dir(path)
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var (
	tokenRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	bucketRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Validate checks every field; errors name the field.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("data_dir: must not be empty")
	case !tokenRe.MatchString(c.NATS.Stream):
		return fmt.Errorf("nats.stream: %q must be 1-64 of A-Z a-z 0-9 _ -", c.NATS.Stream)
	case !tokenRe.MatchString(c.NATS.Consumer):
		return fmt.Errorf("nats.consumer: %q must be 1-64 of A-Z a-z 0-9 _ -", c.NATS.Consumer)
	case !bucketRe.MatchString(c.NATS.KVBucket):
		return fmt.Errorf("nats.kv_bucket: %q must be 1-64 of A-Z a-z 0-9 _ -", c.NATS.KVBucket)
	case c.NATS.EmbeddedPort < 0 || c.NATS.EmbeddedPort > 65535:
		return fmt.Errorf("nats.embedded_port: %d out of range 0-65535", c.NATS.EmbeddedPort)
	case c.NATS.TokenFile != "" && c.NATS.Username != "":
		return fmt.Errorf("nats.token_file: exclusive with nats.username")
	case c.NATS.PasswordEnv != "" && c.NATS.PasswordFile != "":
		return fmt.Errorf("nats.password_env: exclusive with nats.password_file")
	case c.NATS.MaxAge < 0:
		return fmt.Errorf("nats.max_age: must not be negative")
	case c.MQTT.Enabled && !tokenRe.MatchString(c.MQTT.Group):
		return fmt.Errorf("mqtt.group: %q must be 1-64 of A-Z a-z 0-9 _ -", c.MQTT.Group)
	case c.HTTP.TokenEnv != "" && c.HTTP.TokenFile != "":
		return fmt.Errorf("http.token_env: exclusive with http.token_file")
	case c.DedupWindow < 64 || c.DedupWindow > 1<<22:
		return fmt.Errorf("dedup_window: %d out of range 64-4194304", c.DedupWindow)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		return fmt.Errorf("log.format: %q (want auto, text or json)", c.Log.Format)
	}
	if c.NATS.TLS != nil {
		if err := c.NATS.TLS.Validate("nats.tls"); err != nil {
			return err
		}
	}
	if c.MQTT.TLS != nil {
		if err := c.MQTT.TLS.Validate("mqtt.tls"); err != nil {
			return err
		}
	}
	k := c.kpiConfig()
	if err := k.Validate(); err != nil {
		return err
	}
	for i, f := range c.Rules.Files {
		if f == "" {
			return fmt.Errorf("rules.files[%d]: empty path", i)
		}
	}
	return nil
}

func (c *Config) kpiConfig() kpi.Config {
	k := kpi.Config{Window: time.Duration(c.KPI.Window), MinCoverage: c.KPI.MinCoverage, Windows: map[string]time.Duration{}}
	for cl, w := range c.KPI.Windows {
		k.Windows[cl] = time.Duration(w)
	}
	return k
}

// Path resolves p against the config file's directory.
func (c *Config) Path(p string) string { return secret.Resolve(c.dir, p) }

// LoadRules reads the default packs and the configured rule files. Errors
// name the rule file, line and reason.
func (c *Config) LoadRules(cat *catalog.Catalog) (*rules.Set, error) {
	withDefaults := c.Rules.Defaults == nil || *c.Rules.Defaults
	files := make([]string, len(c.Rules.Files))
	for i, f := range c.Rules.Files {
		files[i] = c.Path(f)
	}
	return rules.Load(cat, withDefaults, files...)
}
