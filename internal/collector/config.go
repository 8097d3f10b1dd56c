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

	// ---- distributed engine (issue 10; docs/collector.md) ----

	// Group names this collector's consumers and KV buckets: "<group>" (or
	// "<group>-p<N>" per partition), "<group>_state", "<group>_members".
	// Collectors of one group are replicas of each other; a second group on
	// the same NATS consumes everything independently.
	Group string `yaml:"group"`
	// Replica is this instance's member id in its group; default the host
	// name plus a hash of data_dir (stable across restarts).
	Replica string `yaml:"replica"`
	// MaxAssets bounds the assets one collector tracks (rules, KPIs and the
	// dashboard's live store); batches of further assets are counted in
	// smelter_collector_assets_rejected_total and skipped.
	MaxAssets int           `yaml:"max_assets"`
	Cluster   ClusterConfig `yaml:"cluster"`
	// ---- end distributed engine ----

	dir string // directory of the config file, for relative paths
}

// ClusterConfig runs a collector as one of several replicas of its group.
type ClusterConfig struct {
	// Partitions splits the stream into N subject-mapped partitions with
	// one pinned-client consumer each (nats-server >= 2.11); 0 runs the
	// group as a single replica on one durable consumer (any JetStream).
	Partitions int `yaml:"partitions"`
	// Replicas of the stream and KV buckets the collector creates (1 or 3
	// on a cluster).
	Replicas int `yaml:"replicas"`
	// AckWait of the consumers: a batch delivered to a replica that died is
	// redelivered after it.
	AckWait Duration `yaml:"ack_wait"`
	// PinnedTTL: a partition whose replica stopped pulling is handed to
	// another after it (the takeover time).
	PinnedTTL Duration `yaml:"pinned_ttl"`
	// MemberTimeout: a replica not heard of for this long leaves the
	// partition assignment.
	MemberTimeout Duration `yaml:"member_timeout"`
	// Fetch is the pull batch: messages handled, published and checkpointed
	// together before they are acknowledged.
	Fetch int `yaml:"fetch"`
}

// Defaults returns a configuration with every default set.
func Defaults() Config {
	c := Config{DataDir: "./data", DedupWindow: 16384}
	c.NATS.Stream, c.NATS.CreateStream = "SMELTER", true
	// distributed engine (issue 10): consumer and buckets derive from group
	c.Group, c.MaxAssets = "smelter-collector", 20000
	c.Cluster = ClusterConfig{Replicas: 1, AckWait: Duration(5 * time.Second), PinnedTTL: Duration(5 * time.Second),
		MemberTimeout: Duration(4 * time.Second), Fetch: 2048}
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
	case c.NATS.Consumer != "" && !tokenRe.MatchString(c.NATS.Consumer):
		return fmt.Errorf("nats.consumer: %q must be 1-64 of A-Z a-z 0-9 _ -", c.NATS.Consumer)
	case c.NATS.KVBucket != "" && !bucketRe.MatchString(c.NATS.KVBucket):
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
	if err := c.validateCluster(); err != nil {
		return err
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

// validateCluster checks the distributed-engine block (issue 10).
func (c *Config) validateCluster() error {
	k := c.Cluster
	switch {
	case !groupRe.MatchString(c.Group):
		return fmt.Errorf("group: %q must be 1-48 of A-Z a-z 0-9 _ - (it prefixes consumer and bucket names)", c.Group)
	case c.Replica != "" && !tokenRe.MatchString(c.Replica):
		return fmt.Errorf("replica: %q must be 1-64 of A-Z a-z 0-9 _ -", c.Replica)
	case c.MaxAssets < 1 || c.MaxAssets > 10_000_000:
		return fmt.Errorf("max_assets: %d out of range 1-10000000", c.MaxAssets)
	case k.Partitions < 0 || k.Partitions > 1024:
		return fmt.Errorf("cluster.partitions: %d out of range 0-1024 (0: single replica)", k.Partitions)
	case k.Replicas != 1 && k.Replicas != 3 && k.Replicas != 5:
		return fmt.Errorf("cluster.replicas: %d (want 1, 3 or 5)", k.Replicas)
	case k.AckWait < Duration(time.Second):
		return fmt.Errorf("cluster.ack_wait: %v shorter than 1s", time.Duration(k.AckWait))
	case k.PinnedTTL < Duration(time.Second):
		return fmt.Errorf("cluster.pinned_ttl: %v shorter than 1s", time.Duration(k.PinnedTTL))
	case k.MemberTimeout < Duration(time.Second):
		return fmt.Errorf("cluster.member_timeout: %v shorter than 1s", time.Duration(k.MemberTimeout))
	case k.Fetch < 1 || k.Fetch > 10000:
		return fmt.Errorf("cluster.fetch: %d out of range 1-10000", k.Fetch)
	case k.Partitions > 0 && c.MQTT.Enabled:
		return fmt.Errorf("mqtt.enabled: the MQTT source has no per-asset affinity; not allowed with cluster.partitions")
	}
	return nil
}

var groupRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,48}$`)

// consumerName is the durable consumer of partition p (-1: single replica).
func (c *Config) consumerName(p int) string {
	if p < 0 {
		if c.NATS.Consumer != "" {
			return c.NATS.Consumer
		}
		return c.Group
	}
	return fmt.Sprintf("%s-p%d", c.Group, p)
}

// stateBucket is the KV bucket of per-asset rule and KPI state.
func (c *Config) stateBucket() string {
	if c.NATS.KVBucket != "" {
		return c.NATS.KVBucket
	}
	return c.Group + "_state"
}

// membersBucket is the KV bucket replicas announce themselves in.
func (c *Config) membersBucket() string { return c.Group + "_members" }
