package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/telemetry"

	"github.com/smelterio/smelter/internal/confload"
)

// Config is the uplinks.mqtt block of the gateway configuration.
type Config struct {
	URL          string        `yaml:"url"`       // tcp:// ssl:// tls:// ws:// wss://; comma-separated for fail-over
	ClientID     string        `yaml:"client_id"` // default: the gateway id; keys the persistent session
	Username     string        `yaml:"username"`
	PasswordEnv  string        `yaml:"password_env"`
	PasswordFile string        `yaml:"password_file"`
	TLS          secret.TLS    `yaml:"tls"`
	QoS          *int          `yaml:"qos"` // 1 (default) or 0
	Keepalive    time.Duration `yaml:"keepalive"`
	MaxInflight  int           `yaml:"max_inflight"` // QoS 1 messages published and not yet acknowledged
	Timeout      time.Duration `yaml:"timeout"`      // connect timeout and PUBACK wait per message
	// MaxPacketSize is the largest MQTT packet the broker accepts (bytes,
	// the whole PUBLISH packet: header, topic and payload). MQTT 3.1.1,
	// which the client speaks, has no way to learn it from the broker
	// (MQTT 5 sends it in CONNACK), so it is configured: Mosquitto's
	// max_packet_size / message_size_limit, EMQX's mqtt.max_packet_size
	// (1 MiB by default), AWS IoT Core's 128 KiB. Larger batches are split
	// to fit; default DefaultMaxPacketSize.
	MaxPacketSize int `yaml:"max_packet_size"`
	// Encoding is the payload format: "json" (default, the topics and
	// payloads of docs/schema.md) or "sparkplug_b" (Eclipse Sparkplug B
	// 3.0: the gateway is an edge node, each asset a device; see
	// docs/sparkplug.md).
	Encoding  string    `yaml:"encoding"`
	Sparkplug Sparkplug `yaml:"sparkplug"` // used with encoding sparkplug_b

	// Gateway and Site name the status topic and the LWT payload;
	// SetDefaults fills them from the gateway section.
	Gateway string `yaml:"-"`
	Site    string `yaml:"-"`
}

// Sparkplug is the uplinks.mqtt.sparkplug block.
type Sparkplug struct {
	GroupID    string `yaml:"group_id"`     // default: gateway.site
	EdgeNodeID string `yaml:"edge_node_id"` // default: gateway.id
	// PrimaryHostID, when set, makes the edge node wait until the host
	// application of that id reports online on spBv1.0/STATE/<id> before
	// it publishes births and data, and end its session (NDEATH,
	// disconnect, reconnect) when that host reports offline. With several
	// servers in url the reconnect goes to the next server of the list,
	// wrapping around (Sparkplug 3.0 section 5.10).
	PrimaryHostID string `yaml:"primary_host_id"`
}

// Encodings.
const (
	EncodingJSON      = "json"
	EncodingSparkplug = "sparkplug_b"
)

// Defaults.
const (
	DefaultURL         = "tcp://127.0.0.1:1883"
	DefaultQoS         = 1
	DefaultKeepalive   = 30 * time.Second
	DefaultMaxInflight = 256
	DefaultTimeout     = 5 * time.Second
	// DefaultMaxPacketSize is 1 MiB: EMQX's default and NATS's default
	// max_payload, so a batch splits the same way on both uplinks. A broker
	// that takes more (Mosquitto: unlimited by default) only sees batches
	// over 1 MiB in parts.
	DefaultMaxPacketSize = 1 << 20
	// MaxPacketSizeLimit is the largest packet MQTT can frame: a 1-byte
	// fixed header, a 4-byte remaining length of at most 268,435,455
	// (MQTT 3.1.1 section 2.2.3).
	MaxPacketSizeLimit = 1 + 4 + 268435455
	minPacketSize      = 1024
)

const field = "uplinks.mqtt"

// SetDefaults fills unset fields. gatewayID is gateway.id, site gateway.site.
func (c *Config) SetDefaults(gatewayID, site string) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Gateway == "" {
		c.Gateway = gatewayID
	}
	if c.Site == "" {
		c.Site = site
	}
	if c.ClientID == "" {
		c.ClientID = c.Gateway
	}
	if c.QoS == nil {
		q := DefaultQoS
		c.QoS = &q
	}
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.Encoding == "" {
		c.Encoding = EncodingJSON
	}
	if c.Encoding == EncodingSparkplug {
		if c.Sparkplug.GroupID == "" {
			c.Sparkplug.GroupID = c.Site
		}
		if c.Sparkplug.EdgeNodeID == "" {
			c.Sparkplug.EdgeNodeID = c.Gateway
		}
	}
}

// ResolvePaths makes relative secret and TLS file paths absolute against dir.
func (c *Config) ResolvePaths(dir string) {
	c.PasswordFile = secret.Resolve(dir, c.PasswordFile)
	c.TLS.ResolvePaths(dir)
}

// StatusTopic is the retained online/offline topic of the gateway (the LWT).
func (c *Config) StatusTopic() string {
	return telemetry.Topic(telemetry.StatusSubject(c.Site, c.Gateway))
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
	for _, r := range secret.URLProblems(c.URL, secret.URLRules{Schemes: []string{"tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss"},
		Example: "tcp://host:1883", Instead: "username and password_env or password_file"}) {
		bad(field+".url", "%s", r)
	}
	if c.ClientID == "" || len(c.ClientID) > 65535 {
		bad(field+".client_id", "required (default: gateway.id)")
	}
	if !telemetry.ValidToken(c.Gateway) {
		bad(field, "gateway id %q is not a valid token", c.Gateway)
	}
	if !telemetry.ValidToken(c.Site) {
		bad(field, "gateway site %q is not a valid token", c.Site)
	}
	if c.PasswordEnv != "" && c.PasswordFile != "" {
		bad(field+".password_env", "set password_env or password_file, not both")
	}
	if c.Username == "" && (c.PasswordEnv != "" || c.PasswordFile != "") {
		bad(field+".username", "required with password_env or password_file")
	}
	if err := c.TLS.Validate(field + ".tls"); err != nil {
		errs = append(errs, err)
	}
	if c.QoS == nil || (*c.QoS != 0 && *c.QoS != 1) {
		q := "unset"
		if c.QoS != nil {
			q = fmt.Sprint(*c.QoS)
		}
		bad(field+".qos", "%s is not 0 or 1", q)
	}
	if c.Keepalive < time.Second || c.Keepalive > 18*time.Hour {
		bad(field+".keepalive", "%v is outside 1s..18h", c.Keepalive)
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		bad(field+".max_inflight", "%d is outside 1..65535", c.MaxInflight)
	}
	if c.Timeout <= 0 {
		bad(field+".timeout", "%v must be positive", c.Timeout)
	}
	if c.MaxPacketSize < minPacketSize || c.MaxPacketSize > MaxPacketSizeLimit {
		bad(field+".max_packet_size", "%d is outside %d..%d bytes", c.MaxPacketSize, minPacketSize, MaxPacketSizeLimit)
	}
	switch c.Encoding {
	case "", EncodingJSON:
	case EncodingSparkplug:
		for _, f := range []struct{ name, v string }{{"group_id", c.Sparkplug.GroupID}, {"edge_node_id", c.Sparkplug.EdgeNodeID}} {
			if !sparkplug.ValidID(f.v) {
				bad(field+".sparkplug."+f.name, "%q must be non-empty UTF-8 without '+', '/' or '#'", f.v)
			}
		}
		if h := c.Sparkplug.PrimaryHostID; h != "" && !sparkplug.ValidID(h) {
			bad(field+".sparkplug.primary_host_id", "%q must be UTF-8 without '+', '/' or '#'", h)
		}
	default:
		bad(field+".encoding", "%q is not json or sparkplug_b", c.Encoding)
	}
	return errors.Join(errs...)
}

// CheckLocal reads what the configuration names on this machine, without
// connecting anything: the password variable or file and the TLS files
// (readable, PEM). It returns every problem, each naming its field, never a
// secret's value. New fails on the same problems.
func (c *Config) CheckLocal() error {
	var errs []error
	switch {
	case c.Username == "":
	case c.PasswordEnv != "":
		_, err := secret.FromEnv(field+".password_env", c.PasswordEnv)
		errs = append(errs, err)
	case c.PasswordFile != "":
		_, err := secret.FromFile(field+".password_file", c.PasswordFile)
		errs = append(errs, err)
	}
	if c.TLS.Needed(c.URL, "ssl://", "tls://", "mqtts://", "wss://") {
		_, err := c.TLS.Config(field + ".tls")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
