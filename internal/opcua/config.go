package opcua

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/secret"
)

// Defaults.
const (
	DefaultSessionTimeout   = 60 * time.Second
	DefaultRequestTimeout   = 10 * time.Second
	DefaultPublishInterval  = time.Second
	DefaultKeepAlive        = 5 * time.Second
	DefaultWatchdog         = 5 * time.Second
	DefaultNamespaceCheck   = 30 * time.Second
	DefaultBackoffMin       = 500 * time.Millisecond
	DefaultBackoffMax       = 30 * time.Second
	DefaultSamplingInterval = time.Second
	DefaultQueueSize        = 1
	// DefaultMaxFuture is how far ahead of the gateway's clock a
	// SourceTimestamp may be (max_future): the collector's own tolerance
	// for future timestamps (docs/collector.md), so that what the gateway
	// publishes as the source's time, the collector takes as it is.
	DefaultMaxFuture = 5 * time.Minute
	// DefaultMaxStringBytes is the longest text value published
	// (max_string_bytes): the collector's cut of a reading's text
	// (docs/schema.md), so that a text the gateway publishes good is
	// stored whole.
	DefaultMaxStringBytes = 1024
	// MaxMaxStringBytes bounds max_string_bytes: 1 MiB, the order of
	// one uplink message.
	MaxMaxStringBytes = 1 << 20
	// DefaultOperationLimit is the batch size used when a server publishes
	// no operation limit (0 means "no limit" in OPC UA, but a batch of tens
	// of thousands of nodes is still a bad idea on small devices).
	DefaultOperationLimit = 1000
	// DefaultBufferSize is the ReceiveBufferSize and SendBufferSize the
	// gateway requests in its Hello (bytes): the largest message chunk it
	// receives and sends. A server answers with sizes no larger (OPC UA
	// Part 6, 7.1.2.4), and gopcua allocates the server's ReceiveBufferSize
	// for every chunk it reads: at the 64 KiB it asks by default that was
	// most of what an OPC UA gateway allocated (docs/benchmarks.md).
	DefaultBufferSize = 32 << 10
	// MinBufferSize and MaxBufferSize bound buffer_size: Part 6 requires at
	// least 8192 bytes (7.1.2.3); 16 MiB is far above any server's chunk.
	MinBufferSize = 8192
	MaxBufferSize = 16 << 20
)

// AuthConfig is the user identity of the session.
type AuthConfig struct {
	Mode         string `yaml:"mode"`          // anonymous (default) | username | certificate
	Username     string `yaml:"username"`      // username mode
	PasswordEnv  string `yaml:"password_env"`  // username mode: environment variable holding the password
	PasswordFile string `yaml:"password_file"` // username mode: file holding the password
	CertFile     string `yaml:"cert_file"`     // certificate mode: user certificate (DER or PEM)
	KeyFile      string `yaml:"key_file"`      // certificate mode: its RSA key (PEM or DER)
}

// CertConfig names the application instance certificate and key.
type CertConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Limits caps the batch sizes below what the server advertises (0: use the
// server's limit, or DefaultOperationLimit when it advertises none).
type Limits struct {
	MaxNodesPerRead          uint32 `yaml:"max_nodes_per_read"`
	MaxMonitoredItemsPerCall uint32 `yaml:"max_monitored_items_per_call"`
	MaxNodesPerBrowse        uint32 `yaml:"max_nodes_per_browse"`
}

// Config is one OPC UA server connection.
type Config struct {
	Endpoint        string        `yaml:"endpoint"`         // opc.tcp://host:port[/path]
	SecurityPolicy  string        `yaml:"security_policy"`  // None (default) | Basic256Sha256 | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss
	SecurityMode    string        `yaml:"security_mode"`    // None | Sign | SignAndEncrypt (default SignAndEncrypt with a policy)
	Auth            AuthConfig    `yaml:"auth"`             //
	Certificate     CertConfig    `yaml:"certificate"`      // application instance certificate; created under data_dir when empty
	DataDir         string        `yaml:"data_dir"`         // pki/own, pki/rejected live here (the gateway sets <data_dir>/opcua)
	TrustDir        string        `yaml:"trust_dir"`        // trusted server certificates (default <data_dir>/pki/trusted)
	AcceptUntrusted bool          `yaml:"accept_untrusted"` // accept any server certificate (testing only)
	SessionTimeout  time.Duration `yaml:"session_timeout"`
	RequestTimeout  time.Duration `yaml:"request_timeout"`
	PublishInterval time.Duration `yaml:"publish_interval"`
	// KeepAlive is the target keep-alive period of the subscription: the
	// server sends a keep-alive after this long without a change. The
	// publish request timeout is derived from it (subscription.go).
	KeepAlive time.Duration `yaml:"keep_alive"`
	Watchdog  time.Duration `yaml:"watchdog_interval"` // liveness read of ServerStatus.State while subscribed
	// NamespaceCheck is how often a session reads the server's
	// NamespaceArray again when a node id names a namespace (nsu=, or
	// ns=<index> above 0): a namespace added to the live server, or
	// moved, is picked up within it without a reconnect (docs/opcua.md,
	// "Namespace indexes and URIs"). 100ms..1h, default
	// DefaultNamespaceCheck.
	NamespaceCheck time.Duration `yaml:"namespace_check"`
	BackoffMin     time.Duration `yaml:"backoff_min"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
	Limits         Limits        `yaml:"limits"`
	// BufferSize is the ReceiveBufferSize and SendBufferSize (bytes,
	// MinBufferSize..MaxBufferSize, default DefaultBufferSize) of the
	// gateway's Hello: the largest message chunk either side sends. A
	// server that ignores the Hello and sends larger chunks than it
	// accepts (against Part 6, 7.1.2.4) fails to connect with "message too
	// large"; raise it to 65535 for such a server.
	BufferSize uint32 `yaml:"buffer_size"`
	// Isolation is where the device's sessions run: endpoint (default),
	// in a session worker process shared by the devices of the same
	// endpoint URL and security settings, so that a panic in gopcua (a
	// hostile server's message) costs those devices a reconnect, not the
	// gateway; process, in a worker of the device's own (a panic costs
	// only this device, at about 7.5 MB of private memory per device);
	// none, in the gateway's process. docs/opcua.md, "Session isolation".
	Isolation string `yaml:"isolation"`
	// Heartbeat re-reports unchanged subscribed values (stamped with the
	// server's last Publish answer) after this long without a change; 0
	// disables it. The gateway sets it from the device's heartbeat.
	Heartbeat time.Duration `yaml:"-"`
	// UnitCheckInterval is how often a polled point whose unit comes from
	// its node (Point.UnitFromNode) has its EngineeringUnits and EURange
	// read again, in the same Read request as its value (the Read service
	// carries no SemanticsChanged bit on most servers): UnitCheckEveryRead
	// (the default, the zero value), UnitCheckNever, or an interval of
	// 10ms..24h that relaxes it (at or below a group's poll interval every
	// read checks). docs/opcua.md, "A unit changed live on a polled point".
	UnitCheckInterval UnitCheck `yaml:"unit_check_interval"`
	// MaxFuture is how far ahead of the gateway's clock a value's
	// SourceTimestamp may be (1s..24h, default DefaultMaxFuture). A value
	// stamped further ahead, or before MinSourceTime (a server without a
	// set clock: 1970, OPC UA's zero 1601), is published with the
	// gateway's receive time instead and, when Good, Uncertain with
	// StatusSourceTimeUnsure (docs/opcua.md, "Quality rules").
	MaxFuture time.Duration `yaml:"max_future"`
	// MaxStringBytes is the longest text value (a String or
	// LocalizedText's text, in bytes of UTF-8; 1..MaxMaxStringBytes,
	// default DefaultMaxStringBytes) published. A longer one is not the
	// device's value once cut, so it is published Bad with
	// StatusStringTooLong and no text (review17 F4: a hostile server's
	// 1,000,000-byte String went whole through spool and uplink on every
	// poll).
	MaxStringBytes int `yaml:"max_string_bytes"`
}

// UnitCheck is Config.UnitCheckInterval: UnitCheckEveryRead,
// UnitCheckNever or an interval (a positive time.Duration). In YAML it is
// every_read, never or a duration such as 30s.
type UnitCheck time.Duration

const (
	// UnitCheckEveryRead checks the units with every read of a polled
	// point (YAML every_read; the default): no value is published good in
	// a unit the node no longer reports, on a server that changes a value
	// and its unit in one step. It costs ~2.6x the client time of a plain
	// read (docs/opcua.md).
	UnitCheckEveryRead UnitCheck = 0
	// UnitCheckNever never checks the units of polled points (YAML never):
	// they change only with a SemanticsChanged bit or a new session.
	UnitCheckNever UnitCheck = -1
	// Bounds of an interval (a server's unit change may be published good
	// in the old unit for up to that long).
	minUnitCheck = UnitCheck(10 * time.Millisecond)
	maxUnitCheck = UnitCheck(24 * time.Hour)
)

// wantUnitCheck is what unit_check_interval takes, in the file's words.
const wantUnitCheck = "every_read, never or a duration from 10ms to 24h such as 30s"

// UnmarshalYAML takes every_read, never or a duration ("30s"). Any other
// value, 0s and a negative duration included, is a *yaml.TypeError, so
// decoding goes on and confload reports it as "want <Want()>, got ...".
func (u *UnitCheck) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "every_read":
			*u = UnitCheckEveryRead
			return nil
		case "never":
			*u = UnitCheckNever
			return nil
		}
		if d, err := time.ParseDuration(n.Value); err == nil && d > 0 {
			*u = UnitCheck(d)
			return nil
		}
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want %s, got %q", n.Line, wantUnitCheck, n.Value)}}
}

// Want says what a UnitCheck takes, for confload's errors.
func (UnitCheck) Want() string { return wantUnitCheck }

// String is the YAML spelling: every_read, never or the duration.
func (u UnitCheck) String() string {
	switch u {
	case UnitCheckEveryRead:
		return "every_read"
	case UnitCheckNever:
		return "never"
	}
	return time.Duration(u).String()
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.SecurityPolicy == "" {
		c.SecurityPolicy = "None"
	}
	if c.SecurityMode == "" {
		if c.SecurityPolicy == "None" {
			c.SecurityMode = "None"
		} else {
			c.SecurityMode = "SignAndEncrypt"
		}
	}
	if c.Auth.Mode == "" {
		c.Auth.Mode = "anonymous"
	}
	if c.DataDir == "" {
		c.DataDir = "opcua"
	}
	if c.TrustDir == "" {
		c.TrustDir = filepath.Join(c.DataDir, "pki", "trusted")
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = DefaultPublishInterval
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Watchdog == 0 {
		c.Watchdog = DefaultWatchdog
	}
	if c.NamespaceCheck == 0 {
		c.NamespaceCheck = DefaultNamespaceCheck
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.Isolation == "" {
		c.Isolation = IsolationEndpoint
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.MaxFuture == 0 {
		c.MaxFuture = DefaultMaxFuture
	}
	if c.MaxStringBytes == 0 {
		c.MaxStringBytes = DefaultMaxStringBytes
	}
}

var policyURIs = map[string]string{
	"None":                  ua.SecurityPolicyURINone,
	"Basic256Sha256":        ua.SecurityPolicyURIBasic256Sha256,
	"Aes128_Sha256_RsaOaep": ua.SecurityPolicyURIAes128Sha256RsaOaep,
	"Aes256_Sha256_RsaPss":  ua.SecurityPolicyURIAes256Sha256RsaPss,
}

var securityModes = map[string]ua.MessageSecurityMode{
	"None":           ua.MessageSecurityModeNone,
	"Sign":           ua.MessageSecurityModeSign,
	"SignAndEncrypt": ua.MessageSecurityModeSignAndEncrypt,
}

// policyName maps a policy URI back to its short name.
func policyName(uri string) string {
	for k, v := range policyURIs {
		if v == uri {
			return k
		}
	}
	return strings.TrimPrefix(uri, "http://opcfoundation.org/UA/SecurityPolicy#")
}

// Validate checks c after SetDefaults; each error names the YAML field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, confload.Problemf(field, format, args...))
	}
	u, err := url.Parse(c.Endpoint)
	if c.Endpoint == "" {
		bad("endpoint", "missing (opc.tcp://host:port)")
	} else if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		bad("endpoint", "%q is not opc.tcp://host:port", c.Endpoint)
	}
	if _, ok := policyURIs[c.SecurityPolicy]; !ok {
		bad("security_policy", "%q is not None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss", c.SecurityPolicy)
	}
	if _, ok := securityModes[c.SecurityMode]; !ok {
		bad("security_mode", "%q is not None, Sign or SignAndEncrypt", c.SecurityMode)
	}
	if (c.SecurityPolicy == "None") != (c.SecurityMode == "None") {
		bad("security_mode", "%s does not go with security_policy %s", c.SecurityMode, c.SecurityPolicy)
	}
	switch c.Auth.Mode {
	case "anonymous":
	case "username":
		if c.Auth.Username == "" {
			bad("auth.username", "missing for auth.mode username")
		}
		if (c.Auth.PasswordEnv == "") == (c.Auth.PasswordFile == "") {
			bad("auth.password_env", "set exactly one of password_env and password_file for auth.mode username")
		}
	case "certificate":
		if c.Auth.CertFile == "" || c.Auth.KeyFile == "" {
			bad("auth.cert_file", "auth.mode certificate needs cert_file and key_file")
		}
	default:
		bad("auth.mode", "%q is not anonymous, username or certificate", c.Auth.Mode)
	}
	if (c.Certificate.CertFile == "") != (c.Certificate.KeyFile == "") {
		bad("certificate.cert_file", "set both cert_file and key_file, or neither to have one created")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
		max  time.Duration
	}{
		{"session_timeout", c.SessionTimeout, time.Second, 24 * time.Hour},
		{"request_timeout", c.RequestTimeout, 10 * time.Millisecond, 10 * time.Minute},
		{"publish_interval", c.PublishInterval, 10 * time.Millisecond, time.Hour},
		{"keep_alive", c.KeepAlive, 10 * time.Millisecond, time.Hour},
		{"watchdog_interval", c.Watchdog, 10 * time.Millisecond, time.Hour},
		{"namespace_check", c.NamespaceCheck, 100 * time.Millisecond, time.Hour},
		{"backoff_min", c.BackoffMin, time.Millisecond, time.Hour},
		{"backoff_max", c.BackoffMax, time.Millisecond, 24 * time.Hour},
		{"max_future", c.MaxFuture, time.Second, 24 * time.Hour},
	} {
		if d.v < d.min || d.v > d.max {
			bad(d.name, "%v out of range %v..%v", d.v, d.min, d.max)
		}
	}
	if c.MaxStringBytes < 1 || c.MaxStringBytes > MaxMaxStringBytes {
		bad("max_string_bytes", "%d out of range 1..%d bytes", c.MaxStringBytes, MaxMaxStringBytes)
	}
	if c.BufferSize < MinBufferSize || c.BufferSize > MaxBufferSize {
		bad("buffer_size", "%d out of range %d..%d bytes", c.BufferSize, MinBufferSize, MaxBufferSize)
	}
	if c.Isolation != IsolationEndpoint && c.Isolation != IsolationProcess && c.Isolation != IsolationNone {
		bad("isolation", "%q is not endpoint, process or none", c.Isolation)
	}
	if c.Heartbeat < 0 {
		bad("heartbeat", "%v must not be negative", c.Heartbeat)
	}
	if u := c.UnitCheckInterval; u < UnitCheckNever || u > UnitCheckEveryRead && (u < minUnitCheck || u > maxUnitCheck) {
		bad("unit_check_interval", "%v out of range: want %s", time.Duration(u), wantUnitCheck)
	}
	if c.BackoffMax < c.BackoffMin {
		bad("backoff_max", "%v below backoff_min %v", c.BackoffMax, c.BackoffMin)
	}
	return errors.Join(errs...)
}

var nodeIDForm = regexp.MustCompile(`^(ns=\d+;|nsu=[^;]+;)?(i=\d+|s=.+|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|b=.+)$`)

// Mode is how a point is acquired: ModeSubscribe (the default, the zero
// value) or ModePoll. In YAML and JSON it is its name.
type Mode uint8

// Point modes.
const (
	ModeSubscribe Mode = iota // monitored item of the device's subscription
	ModePoll                  // read every poll_interval
)

var modeNames = names{field: "mode", list: []string{ModeSubscribe: "subscribe", ModePoll: "poll"}, want: "subscribe or poll"}

// String is the mode's name ("subscribe", "poll").
func (m Mode) String() string { return modeNames.name(uint8(m), "Mode") }

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return modeNames.text(uint8(m)) }

// UnmarshalText takes subscribe or poll ("" is subscribe).
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	*m = v
	return err
}

// ParseMode returns the mode named s: subscribe, poll, or "" (subscribe).
func ParseMode(s string) (Mode, error) {
	v, err := modeNames.parse(s)
	return Mode(v), err
}

// DeadbandType is the deadband a server applies to a subscribed point's
// changes: DeadbandNone (the default, the zero value), DeadbandAbsolute
// (in device units) or DeadbandPercent (of the node's EURange). In YAML and
// JSON it is its name.
type DeadbandType uint8

// Deadband types.
const (
	DeadbandNone DeadbandType = iota
	DeadbandAbsolute
	DeadbandPercent
)

var deadbandNames = names{field: "deadband_type", list: []string{DeadbandNone: "none", DeadbandAbsolute: "absolute", DeadbandPercent: "percent"},
	want: "none, absolute or percent"}

// String is the type's name ("none", "absolute", "percent").
func (d DeadbandType) String() string { return deadbandNames.name(uint8(d), "DeadbandType") }

// MarshalText writes the type's name.
func (d DeadbandType) MarshalText() ([]byte, error) { return deadbandNames.text(uint8(d)) }

// UnmarshalText takes none, absolute or percent ("" is none).
func (d *DeadbandType) UnmarshalText(b []byte) error {
	v, err := ParseDeadbandType(string(b))
	*d = v
	return err
}

// ParseDeadbandType returns the deadband type named s: none, absolute,
// percent, or "" (none).
func ParseDeadbandType(s string) (DeadbandType, error) {
	v, err := deadbandNames.parse(s)
	return DeadbandType(v), err
}

// names are the YAML names of a one-byte enum of a point's field (index:
// the value; "" is the zero value).
type names struct {
	field string   // the YAML field, for errors
	list  []string // by value
	want  string   // what the field takes, for errors
}

func (n names) valid(v uint8) bool { return int(v) < len(n.list) }

func (n names) name(v uint8, typ string) string {
	if n.valid(v) {
		return n.list[v]
	}
	return fmt.Sprintf("%s(%d)", typ, v)
}

func (n names) text(v uint8) ([]byte, error) {
	if !n.valid(v) {
		return nil, fmt.Errorf("opcua: %s %d is not %s", n.field, v, n.want)
	}
	return []byte(n.list[v]), nil
}

func (n names) parse(s string) (uint8, error) {
	if s == "" {
		return 0, nil
	}
	for i, name := range n.list {
		if name == s {
			return uint8(i), nil
		}
	}
	return 0, confload.Problemf(n.field, "%q is not %s", s, n.want)
}

// Point is one node the driver acquires.
type Point struct {
	NodeID           string        `yaml:"node_id"`           // ns=2;s=Line1.Temp, i=2258, ns=1;g=..., nsu=<uri>;s=...
	SamplingInterval time.Duration `yaml:"sampling_interval"` // subscribe: server sampling (default 1s)
	PollInterval     time.Duration `yaml:"poll_interval"`     // poll: read period (default publish_interval)
	Deadband         float64       `yaml:"deadband"`          // absolute: device units; percent: of EURange
	// Method, when set, makes a command call this method instead of
	// writing the point's node (docs/commands.md, "OPC UA method calls").
	// NodeID may then be empty: the point is not acquired and a command's
	// outcome is at best written (nothing to read back).
	Method    *Method `yaml:"-"`
	QueueSize uint32  `yaml:"queue_size"` // subscribe: server queue (default 1)
	// Mode and DeadbandType are one byte each, and with UnitFromNode
	// share QueueSize's word: a Point is 56 bytes (88 with the two as
	// strings; a gateway keeps one per node for its life, issue 17).
	Mode         Mode         `yaml:"mode"`          // subscribe (default) | poll
	DeadbandType DeadbandType `yaml:"deadband_type"` // none (default) | absolute | percent
	// UnitFromNode asks the driver to read the node's EngineeringUnits and
	// EURange (handed over through Client.OnUnits): the gateway sets it
	// where the configuration gives no unit.
	UnitFromNode bool `yaml:"-"`
}

// Method arguments (Method.Argument).
const (
	// ArgValue calls the method with the command's value, converted to
	// the DataType of its one input argument. The default.
	ArgValue = "value"
	// ArgNone calls a method that takes no input argument (an action: a
	// fault acknowledgement): the command's value, within the write
	// block's limits, only triggers the call.
	ArgNone = "none"
)

// Method is an OPC UA method a command calls (the Call service): the
// object it is called on, the method's node and what it takes.
type Method struct {
	Object   string `yaml:"object"`   // node id of the object (ns=2;s=Compressor1)
	Method   string `yaml:"method"`   // node id of the method (ns=2;s=Compressor1.SetUnloadPressure)
	Argument string `yaml:"argument"` // value (default) | none
}

// checkNodeID reports whether s is a node id in the forms the driver
// reads (nsu= forms are resolved per session).
func checkNodeID(s string) error {
	if !nodeIDForm.MatchString(s) {
		return fmt.Errorf("%q is not [ns=<index>;|nsu=<uri>;](i=<number>|s=<string>|g=<guid>|b=<base64>)", s)
	}
	if _, rest, ok, err := nsURI(s); ok {
		if err != nil {
			return fmt.Errorf("%q: %w", s, err)
		}
		s = "ns=1;" + rest // the index is the session's
	}
	if _, err := ua.ParseNodeID(s); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	return nil
}

// SetDefaults fills unset point fields from the connection.
func (p *Point) SetDefaults(c *Config) {
	if p.SamplingInterval == 0 {
		p.SamplingInterval = DefaultSamplingInterval
	}
	if p.PollInterval == 0 {
		p.PollInterval = c.PublishInterval
	}
	if p.QueueSize == 0 {
		p.QueueSize = DefaultQueueSize
	}
	if p.Method != nil && p.Method.Argument == "" {
		m := *p.Method
		m.Argument = ArgValue
		p.Method = &m
	}
}

// compactPoints returns ps as an exact-size copy: a session worker's
// points arrive JSON-decoded, in a slice grown by appending (a third of
// it unused at 1,000 points).
func compactPoints(ps []Point) []Point {
	out := make([]Point, len(ps))
	copy(out, ps)
	return out
}

// Validate checks p after SetDefaults; errors name the YAML field.
func (p *Point) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, confload.Problemf(field, format, args...))
	}
	switch {
	case p.NodeID == "" && p.Method != nil:
		// an action point: only its method is called
	case p.NodeID == "":
		bad("node_id", "missing (a point without a node needs a write.method to call)")
	default:
		if err := checkNodeID(p.NodeID); err != nil {
			bad("node_id", "%v", err)
		}
	}
	if m := p.Method; m != nil {
		for _, f := range []struct{ field, v, what string }{{"write.method.object", m.Object, "object the method is called on"},
			{"write.method.method", m.Method, "method to call"}} {
			if f.v == "" {
				bad(f.field, "missing: the node id of the %s", f.what)
			} else if err := checkNodeID(f.v); err != nil {
				bad(f.field, "%v", err)
			}
		}
		if m.Argument != ArgValue && m.Argument != ArgNone {
			bad("write.method.argument", "%q is not value or none", m.Argument)
		}
	}
	if !modeNames.valid(uint8(p.Mode)) {
		bad("mode", "%v is not subscribe or poll", p.Mode)
	}
	if p.SamplingInterval < 0 || p.SamplingInterval > time.Hour {
		bad("sampling_interval", "%v out of range 0..1h", p.SamplingInterval)
	}
	if p.PollInterval < 10*time.Millisecond || p.PollInterval > 24*time.Hour {
		bad("poll_interval", "%v out of range 10ms..24h", p.PollInterval)
	}
	if p.QueueSize > 10000 {
		bad("queue_size", "%d above the limit 10000", p.QueueSize)
	}
	switch p.DeadbandType {
	case DeadbandNone:
		if p.Deadband != 0 {
			bad("deadband", "%v set but deadband_type is none", p.Deadband)
		}
	case DeadbandAbsolute:
		if p.Deadband < 0 {
			bad("deadband", "%v must not be negative", p.Deadband)
		}
	case DeadbandPercent:
		if p.Deadband < 0 || p.Deadband > 100 {
			bad("deadband", "%v out of range 0..100 percent", p.Deadband)
		}
	default:
		bad("deadband_type", "%v is not none, absolute or percent", p.DeadbandType)
	}
	if p.Mode == ModePoll && p.DeadbandType != DeadbandNone {
		bad("deadband_type", "%s needs mode subscribe (a polled point reports every read)", p.DeadbandType)
	}
	return errors.Join(errs...)
}

// CheckLocal reads what c names on this machine, without connecting: the
// auth password variable or file (username mode) and the auth and
// application certificate and key files (readable). It returns every
// problem, each naming its field relative to the opcua block
// ("auth.password_env: environment variable X is not set"), never a
// secret's value.
func (c *Config) CheckLocal() error {
	var errs []error
	if c.Auth.Mode == "username" {
		var err error
		switch {
		case c.Auth.PasswordEnv != "":
			_, err = secret.FromEnv("auth.password_env", c.Auth.PasswordEnv)
		case c.Auth.PasswordFile != "":
			_, err = secret.FromFile("auth.password_file", c.Auth.PasswordFile)
		}
		errs = append(errs, err)
	}
	for _, f := range []struct{ field, path string }{
		{"auth.cert_file", c.Auth.CertFile}, {"auth.key_file", c.Auth.KeyFile},
		{"certificate.cert_file", c.Certificate.CertFile}, {"certificate.key_file", c.Certificate.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			errs = append(errs, confload.Problemf(f.field, "read %s: %v", f.path, err))
			continue
		}
		_ = fh.Close()
	}
	return errors.Join(errs...)
}

// CheckLocal is Config.CheckLocal of the device's block, for gwconfig's
// Config.CheckLocal.
func (u *DeviceConfig) CheckLocal() error { return u.Config.CheckLocal() }
