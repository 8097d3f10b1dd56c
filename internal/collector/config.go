package collector

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/secret"
)

// Duration is a time.Duration written as "15m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string. A bad value is a
// *yaml.TypeError, so decoding goes on and every bad field is reported.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want %s, got %q", n.Line, confload.WantDuration, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// Want says what a Duration field takes, for confload's errors.
func (Duration) Want() string { return confload.WantDuration }

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
		// RateLimit limits the audit trail and history queries per client
		// (httplimit.go, docs/api.md "Rate limits").
		RateLimit HTTPRateLimit `yaml:"rate_limit"`
		// MaxStreams caps the event streams (/api/v1/events) open at
		// once, MaxStreamsPerClient those of one client (default 256, 16);
		// StreamWriteTimeout closes a stream whose client does not take
		// an event within it (default 10s). docs/api.md "Slow clients".
		MaxStreams          int      `yaml:"max_streams"`
		MaxStreamsPerClient int      `yaml:"max_streams_per_client"`
		StreamWriteTimeout  Duration `yaml:"stream_write_timeout"`
		// GatewaySilentAfter is how long a gateway may send nothing
		// before the API and the dashboard show it silent (default 30s,
		// 15s-24h; docs/api.md "Gateways").
		GatewaySilentAfter Duration `yaml:"gateway_silent_after"`
		// GatewayClockTolerance is how far a gateway's measured clock
		// offset may lie ahead of or behind the collector's clock before
		// the API and the dashboard mark it (default 2s; 0s: none marked,
		// else 500ms-24h; docs/api.md "Gateways").
		GatewayClockTolerance Duration `yaml:"gateway_clock_tolerance"`
	} `yaml:"http"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`

	// Commands, when set, runs the command service (commands_config.go,
	// docs/commands.md): audit trail, alerts on rejected commands, and
	// operators' commands.
	Commands *CommandsConfig `yaml:"commands"`

	// Sparkplug, when set, adds a Sparkplug B source (docs/sparkplug.md).
	Sparkplug *ingest.SparkplugConfig `yaml:"sparkplug"`

	// History, when set, keeps history in PostgreSQL (docs/history.md).
	History *HistoryConfig `yaml:"history"`

	// MaxFuture is how far a reading's time (or a batch's, birth's or
	// death's ts_gw) may lie ahead of the collector's clock before it is
	// replaced by the arrival time and counted (default 5m,
	// ingest.MaxFuture); a restored record's newest ts_gw beyond it is
	// restored as now. Inside it, a time later than the message's arrival
	// (its time in the stream) is set to the arrival (ingest.BoundBatch)
	// and counted in smelter_collector_clock_ahead_total. 0 turns both off, for
	// simulations whose plant clock runs ahead (smelter-demo).
	MaxFuture Duration `yaml:"max_future"`

	// ClockShiftTolerance is how far a gateway clock's lead, measured on
	// a JetStream message as its Smelter-Sent-At header minus its arrival,
	// may lie ahead before the message's ts_gw and its Modbus and NMEA
	// reading times are moved back by it (a lead behind moves nothing;
	// ingest.SentAtLead; default
	// 2s, ingest.DefaultClockShiftTolerance; 0: the default; 500ms-24h).
	// A lead beyond max_future is never applied; so a tolerance at or
	// above max_future moves nothing, and max_future 0s turns it off with
	// every other correction. docs/collector.md "A gateway's backlog".
	ClockShiftTolerance Duration `yaml:"clock_shift_tolerance"`

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
	MaxAssets int `yaml:"max_assets"`
	// MaxSignalsPerAsset bounds the signals one asset holds (rule state,
	// dashboard series, checkpoint record): a reading of a signal the asset
	// does not hold once it holds this many, and the signals of a birth
	// beyond its first this many, are refused (not evaluated, not stored),
	// counted in smelter_collector_signals_refused_total and logged.
	MaxSignalsPerAsset int           `yaml:"max_signals_per_asset"`
	Cluster            ClusterConfig `yaml:"cluster"`
	// ---- end distributed engine ----

	// MaxProcs is the Go runtime's GOMAXPROCS for smelter-collector: auto
	// (default: one P while the process uses little CPU, the runtime's
	// default once a 2 s window uses 0.70 core or more; internal/procs) or
	// a fixed 1-1024. GOMAXPROCS in the environment wins. Read once at
	// start (cmd/smelter-collector); docs/collector.md "Max procs".
	MaxProcs string `yaml:"max_procs"`

	dir string        // directory of the config file, for relative paths
	doc *confload.Doc // the decoded file, to place CheckLocal's problems; nil when built in code
}

// CheckLocal reads what the configuration names on this machine, without
// connecting or binding anything: the NATS password variable or file,
// token and creds files, the MQTT password variable, the HTTP token
// variable or file (set and not blank), the TLS files (readable, PEM) and
// the rule files (present). It returns every problem at once, placed at
// its field's line (file:line: field: reason) when the config was loaded
// from a file, never a secret's value; nil when all is there. Run fails on
// the same problems, one at a time; `smelter-collector -t` runs this.
func (c *Config) CheckLocal() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	n := c.NATS
	if n.Username != "" {
		switch {
		case n.PasswordFile != "":
			_, err := secret.FromFile("nats.password_file", c.Path(n.PasswordFile))
			add(err)
		case n.PasswordEnv != "":
			_, err := secret.FromEnv("nats.password_env", n.PasswordEnv)
			add(err)
		}
	}
	if n.TokenFile != "" {
		_, err := secret.FromFile("nats.token_file", c.Path(n.TokenFile))
		add(err)
	}
	if n.CredsFile != "" {
		err := secret.CredsFile("nats.creds_file", c.Path(n.CredsFile))
		add(err)
	}
	tlsCheck := func(t *secret.TLS, field string) {
		if t != nil {
			rt := *t
			rt.ResolvePaths(c.dir)
			_, err := rt.Config(field)
			add(err)
		}
	}
	tlsCheck(n.TLS, "nats.tls")
	if m := c.MQTT; m.Enabled {
		if m.Username != "" && m.PasswordEnv != "" {
			_, err := secret.FromEnv("mqtt.password_env", m.PasswordEnv)
			add(err)
		}
		tlsCheck(m.TLS, "mqtt.tls")
	}
	switch h := c.HTTP; {
	case h.TokenEnv != "":
		tok, err := secret.FromEnv("http.token_env", h.TokenEnv)
		if err == nil && strings.TrimSpace(tok.Reveal()) == "" {
			err = fmt.Errorf("http.token_env: environment variable %s is blank", h.TokenEnv)
		}
		add(err)
	case h.TokenFile != "":
		tok, err := secret.FromFile("http.token_file", c.Path(h.TokenFile))
		if err == nil && strings.TrimSpace(tok.Reveal()) == "" {
			err = fmt.Errorf("http.token_file: file %s is blank", c.Path(h.TokenFile))
		}
		add(err)
	}
	c.checkCommandsLocal(add)
	if c.History != nil && (c.History.DSNEnv == "") != (c.History.DSNFile == "") {
		_, err := c.historyDSN()
		add(err)
	}
	for i, f := range c.Rules.Files {
		if f == "" {
			continue // Validate says so
		}
		if strings.ContainsAny(f, "*?[") { // a glob: may match nothing (LoadRules reads what it matches)
			if _, err := filepath.Glob(c.Path(f)); err != nil {
				add(fmt.Errorf("rules.files[%d]: %s: %w", i, c.Path(f), err))
			}
			continue
		}
		if _, err := os.Stat(c.Path(f)); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			add(fmt.Errorf("rules.files[%d]: %s: %w", i, c.Path(f), err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	if c.doc == nil {
		return errors.Join(errs...)
	}
	return c.doc.Report("", errors.Join(errs...)).Sorted()
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
	// CheckpointInterval: a partition's cycles publish their alert and KPI
	// messages at once, but checkpoint the changed assets and acknowledge
	// their messages together at most this often (or once more than
	// 6 x fetch messages wait); 0 checkpoints and acknowledges every cycle. Below
	// ack_wait/2, so nothing held is redelivered.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// RecordFormat of the asset records in the state bucket: binary
	// (default) or json (what collectors before the binary form write and
	// only read: for a group whose replicas are being upgraded one by one).
	// Either is read whatever this says; empty is binary.
	RecordFormat string `yaml:"record_format"`
}

// DefaultMaxSignalsPerAsset is max_signals_per_asset's default: the largest
// class of the catalog (ship) has 28 signals, a large engine with every
// cylinder's temperatures about 100; 256 leaves room for generic assets
// that map a whole controller, and keeps the asset's checkpoint record far
// below the 1 MiB max_payload of a default nats-server (docs/collector.md,
// "Bounded memory").
const DefaultMaxSignalsPerAsset = 256

// MaxSignalsPerAssetLimit is the highest max_signals_per_asset accepted:
// at about 620 bytes per signal in the worst case the default packs allow
// (every signal with its own rule state and an active alert,
// TestRecordSizeAtSignalBound) an asset's record stays under 1 MiB.
const MaxSignalsPerAssetLimit = 1024

// maxGatewaySilentAfter bounds http.gateway_silent_after (its lower bound
// is dashboard.MinSilentAfter): a day, for gateways that report by
// exception; a longer silence is no health signal.
const maxGatewaySilentAfter = 24 * time.Hour

// clockShiftTolerance is clock_shift_tolerance, 0 meaning the default.
func (c *Config) clockShiftTolerance() time.Duration {
	if d := time.Duration(c.ClockShiftTolerance); d > 0 {
		return d
	}
	return ingest.DefaultClockShiftTolerance
}

// minClockTolerance and maxClockTolerance bound
// http.gateway_clock_tolerance (0 turns the mark off) and
// clock_shift_tolerance (0: the default): below half a second
// the delivery of live batches alone could mark a correct clock behind.
const (
	minClockTolerance = 500 * time.Millisecond
	maxClockTolerance = 24 * time.Hour
)

// Defaults returns a configuration with every default set.
func Defaults() Config {
	c := Config{DataDir: "./data", DedupWindow: 16384}
	c.NATS.Stream, c.NATS.CreateStream = "SMELTER", true
	c.MaxFuture = Duration(ingest.MaxFuture)
	c.ClockShiftTolerance = Duration(ingest.DefaultClockShiftTolerance)
	// distributed engine (issue 10): consumer and buckets derive from group
	c.Group, c.MaxAssets, c.MaxSignalsPerAsset = "smelter-collector", 20000, DefaultMaxSignalsPerAsset
	c.Cluster = ClusterConfig{Replicas: 1, AckWait: Duration(5 * time.Second), PinnedTTL: Duration(5 * time.Second),
		MemberTimeout: Duration(4 * time.Second), Fetch: 2048, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}
	c.NATS.MaxAge = Duration(168 * time.Hour)
	c.MQTT.Group = "smelter-collector"
	c.KPI.Window = Duration(15 * time.Minute)
	c.KPI.MinCoverage = 0.5
	c.HTTP.Listen = "127.0.0.1:9200"
	c.HTTP.RateLimit = HTTPRateLimit{PerSecond: DefaultHTTPRatePerSecond, Burst: DefaultHTTPRateBurst}
	c.HTTP.MaxStreams, c.HTTP.MaxStreamsPerClient = dashboard.DefaultMaxStreams, dashboard.DefaultMaxStreamsPerClient
	c.HTTP.StreamWriteTimeout = Duration(dashboard.DefaultStreamWriteTimeout)
	c.HTTP.GatewaySilentAfter = Duration(dashboard.DefaultSilentAfter)
	c.HTTP.GatewayClockTolerance = Duration(dashboard.DefaultClockTolerance)
	c.Log.Level, c.Log.Format = "info", "auto"
	return c
}

// LoadConfig reads a YAML file over the defaults and validates it. The
// error, if any, is a confload.Errors listing every problem at once as
// "file:line: field: reason" (docs/configuration.md): unknown fields and
// values of the wrong type are named by their field path, and validation
// runs on what decoded.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		c := Defaults()
		_, err = confload.ReadFile(path, &c) // the read error, worded as every loader's
		return c, err
	}
	return loadConfig(path, data)
}

// loadConfig is LoadConfig for the contents data of file path.
func loadConfig(path string, data []byte) (Config, error) {
	c := Defaults()
	c.dir = filepath.Dir(path)
	doc, err := confload.Decode(path, data, &c)
	if doc == nil {
		return c, err // not YAML: nothing else can be checked
	}
	c.doc = doc
	errs := confload.AsErrors(err)
	for _, p := range c.problems() {
		if !doc.Broken(p.field) { // a value that did not decode is reported once
			errs = append(errs, doc.Errorf(p.field, "%s", p.reason))
		}
	}
	if len(errs) > 0 {
		return c, errs.Sorted()
	}
	return c, nil
}

// urlProblems appends a problem of field for every URL of raw (a comma-
// separated list; "" is none) that carries credentials (user:password@ or
// token@, which nats.go and paho use, and which would be logged with every
// connection error and reconnect) or does not parse (secret.URLProblems);
// instead names the fields that take them. Neither the URL nor its
// credentials are quoted.
func urlProblems(ps []problem, field, raw, instead string) []problem {
	for _, r := range secret.URLProblems(raw, secret.URLRules{Scheme: "nats", Example: "nats://host:4222", Instead: instead}) {
		ps = append(ps, problem{field, r})
	}
	return ps
}

// natsCredentialFields names the settings of a nats: block that take
// credentials, for the error on a URL that carries them.
const natsCredentialFields = "username and password_env or password_file, or token_file, or creds_file"

// NATSOptions returns nats.url and the nats.go options of the nats:
// block's credentials and TLS (files resolved against the config file's
// directory), for a tool connecting as the collector does (smelter-
// collector tail); the URL is "" for the collector's embedded server.
// Errors: a password, token or credentials file or variable that cannot
// be read, TLS files that do not load; none quotes a secret.
func (c *Config) NATSOptions() (string, []nats.Option, error) {
	n := c.NATS
	opts, err := c.authOptions("nats", NATSConn{Username: n.Username, PasswordEnv: n.PasswordEnv, PasswordFile: n.PasswordFile,
		TokenFile: n.TokenFile, CredsFile: n.CredsFile, TLS: n.TLS}, nil)
	if err != nil {
		return "", nil, err
	}
	return n.URL, opts, nil
}

// CheckURL returns an error when raw (a URL or a comma-separated list of
// them) does not parse or carries credentials, naming field (as the
// configuration's check does, without quoting the URL); instead names the
// options that take credentials.
func CheckURL(field, raw, instead string) error {
	for _, p := range urlProblems(nil, field, raw, instead) {
		return fmt.Errorf("%s: %s", p.field, p.reason)
	}
	return nil
}

var (
	tokenRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	bucketRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// problem is one invalid field: its path ("nats.tls.key_file") and why.
type problem struct{ field, reason string }

// Validate checks every field. The error lists every problem, one
// "field: reason" per line (LoadConfig adds file and line).
func (c *Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, fmt.Errorf("%s: %s", p.field, p.reason))
	}
	return errors.Join(errs...)
}

// problems returns every invalid field, in the order of the file.
func (c *Config) problems() []problem {
	var ps []problem
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{field, fmt.Sprintf(format, args...)})
	}
	token := func(field, v string) {
		if !tokenRe.MatchString(v) {
			bad(field, "%q must be 1-64 of A-Z a-z 0-9 _ -", v)
		}
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Sparkplug != nil { // Sparkplug B source (docs/sparkplug.md)
		for _, e := range strings.Split(fmt.Sprint(c.Sparkplug.Validate("sparkplug")), "\n") {
			if f, r, ok := strings.Cut(e, ": "); ok {
				bad(f, "%s", r)
			}
		}
	}
	n := &c.NATS
	ps = urlProblems(ps, "nats.url", n.URL, natsCredentialFields)
	token("nats.stream", n.Stream)
	if n.Consumer != "" {
		token("nats.consumer", n.Consumer)
	}
	if n.KVBucket != "" && !bucketRe.MatchString(n.KVBucket) {
		bad("nats.kv_bucket", "%q must be 1-64 of A-Z a-z 0-9 _ -", n.KVBucket)
	}
	if n.MaxAge < 0 {
		bad("nats.max_age", "%v must not be negative", time.Duration(n.MaxAge))
	}
	if n.TokenFile != "" && n.Username != "" {
		bad("nats.token_file", "exclusive with nats.username")
	}
	if n.PasswordEnv != "" && n.PasswordFile != "" {
		bad("nats.password_env", "exclusive with nats.password_file")
	}
	if n.TLS != nil {
		ps = appendErr(ps, "nats.tls", n.TLS.Validate("nats.tls"))
	}
	if n.EmbeddedPort < 0 || n.EmbeddedPort > 65535 {
		bad("nats.embedded_port", "%d out of range 0-65535", n.EmbeddedPort)
	}
	if c.MQTT.Enabled {
		token("mqtt.group", c.MQTT.Group)
	}
	ps = urlProblems(ps, "mqtt.url", c.MQTT.URL, "username and password_env")
	if c.MQTT.TLS != nil {
		ps = appendErr(ps, "mqtt.tls", c.MQTT.TLS.Validate("mqtt.tls"))
	}
	for i, f := range c.Rules.Files {
		if f == "" {
			bad(fmt.Sprintf("rules.files[%d]", i), "empty path")
		}
	}
	k := c.kpiConfig()
	ps = appendErr(ps, "kpi", k.Validate())
	if c.DedupWindow < 64 || c.DedupWindow > 1<<22 {
		bad("dedup_window", "%d out of range 64-4194304", c.DedupWindow)
	}
	if l := c.HTTP.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil {
			bad("http.listen", "%q is not host:port (\"127.0.0.1:9200\", \":9200\"; empty: no HTTP)", l)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad("http.listen", "%q: port %q is not a number 0-65535", l, port)
		}
	}
	if c.HTTP.TokenEnv != "" && c.HTTP.TokenFile != "" {
		bad("http.token_env", "exclusive with http.token_file")
	}
	ps = c.HTTP.RateLimit.problems(ps)
	if n := c.HTTP.MaxStreams; n < 1 || n > maxHTTPStreams {
		bad("http.max_streams", "%d out of range 1-%d", n, maxHTTPStreams)
	} else if m := c.HTTP.MaxStreamsPerClient; m < 1 || m > n {
		bad("http.max_streams_per_client", "%d out of range 1-%d (http.max_streams)", m, n)
	}
	if d := time.Duration(c.HTTP.StreamWriteTimeout); d < time.Second || d > 10*time.Minute {
		bad("http.stream_write_timeout", "%s out of range 1s-10m", d)
	}
	switch d := time.Duration(c.HTTP.GatewaySilentAfter); {
	case d < dashboard.MinSilentAfter:
		bad("http.gateway_silent_after", "%s out of range %v-24h: shorter, the dashboard could show a gateway silent while it publishes "+
			"(its event stream holds a gateway's last message for up to half the threshold + 7 s)", d, dashboard.MinSilentAfter)
	case d > maxGatewaySilentAfter:
		bad("http.gateway_silent_after", "%s out of range %v-24h", d, dashboard.MinSilentAfter)
	}
	if d := time.Duration(c.HTTP.GatewayClockTolerance); d != 0 && (d < minClockTolerance || d > maxClockTolerance) {
		bad("http.gateway_clock_tolerance", "%s out of range %v-24h, or 0s (mark no clock): a live batch's delivery alone "+
			"(gateway spool, broker, collector fetch) takes up to a few hundred ms", d, minClockTolerance)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		bad("log.format", "%q is not auto, text or json", c.Log.Format)
	}
	if d := time.Duration(c.ClockShiftTolerance); d != 0 && (d < minClockTolerance || d > maxClockTolerance) {
		ps = append(ps, problem{"clock_shift_tolerance", fmt.Sprintf("%v out of range %v-24h, or 0s (the default, %v): a live message's delivery alone "+
			"(gateway spool, broker, collector fetch) takes up to a few hundred ms", d, minClockTolerance, ingest.DefaultClockShiftTolerance)})
	}
	if _, err := procs.Parse(c.MaxProcs); err != nil {
		bad("max_procs", "%v", err)
	}
	if c.MaxFuture < 0 {
		ps = append(ps, problem{"max_future", fmt.Sprintf("%v must not be negative (0 turns the check off)", time.Duration(c.MaxFuture))})
	}
	return c.historyProblems(c.commandProblems(c.clusterProblems(ps)))
}

// clusterProblems checks the distributed-engine block (issue 10).
func (c *Config) clusterProblems(ps []problem) []problem {
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{field, fmt.Sprintf(format, args...)})
	}
	k := c.Cluster
	if !groupRe.MatchString(c.Group) {
		bad("group", "%q must be 1-48 of A-Z a-z 0-9 _ - (it prefixes consumer and bucket names)", c.Group)
	}
	if c.Replica != "" && !tokenRe.MatchString(c.Replica) {
		bad("replica", "%q must be 1-64 of A-Z a-z 0-9 _ -", c.Replica)
	}
	if c.MaxAssets < 1 || c.MaxAssets > 10_000_000 {
		bad("max_assets", "%d out of range 1-10000000", c.MaxAssets)
	}
	switch {
	case c.MaxSignalsPerAsset < 1:
		bad("max_signals_per_asset", "%d out of range 1-%d: there is no unbounded setting (the bound keeps an asset's memory and checkpoint record finite); leave it out for the default %d",
			c.MaxSignalsPerAsset, MaxSignalsPerAssetLimit, DefaultMaxSignalsPerAsset)
	case c.MaxSignalsPerAsset > MaxSignalsPerAssetLimit:
		bad("max_signals_per_asset", "%d out of range 1-%d (an asset's checkpoint record must fit the server's max_payload)",
			c.MaxSignalsPerAsset, MaxSignalsPerAssetLimit)
	}
	if k.Partitions < 0 || k.Partitions > 1024 {
		bad("cluster.partitions", "%d out of range 0-1024 (0: single replica)", k.Partitions)
	}
	if k.Replicas != 1 && k.Replicas != 3 && k.Replicas != 5 {
		bad("cluster.replicas", "%d (want 1, 3 or 5)", k.Replicas)
	}
	if k.AckWait < Duration(time.Second) {
		bad("cluster.ack_wait", "%v shorter than 1s", time.Duration(k.AckWait))
	}
	if k.PinnedTTL < Duration(time.Second) {
		bad("cluster.pinned_ttl", "%v shorter than 1s", time.Duration(k.PinnedTTL))
	}
	if k.MemberTimeout < Duration(time.Second) {
		bad("cluster.member_timeout", "%v shorter than 1s", time.Duration(k.MemberTimeout))
	}
	if k.Fetch < 1 || k.Fetch > 10000 {
		bad("cluster.fetch", "%d out of range 1-10000", k.Fetch)
	}
	if k.CheckpointInterval < 0 || (k.CheckpointInterval > 0 && 2*k.CheckpointInterval > k.AckWait) {
		bad("cluster.checkpoint_interval", "%v out of range 0 to ack_wait/2 (%v): held messages would be redelivered",
			time.Duration(k.CheckpointInterval), time.Duration(k.AckWait)/2)
	}
	if k.RecordFormat != "" && k.RecordFormat != "binary" && k.RecordFormat != "json" {
		bad("cluster.record_format", "%q (want binary or json)", k.RecordFormat)
	}
	if k.Partitions > 0 && c.Sparkplug != nil {
		// one MQTT client id and one STATE per host application: replicas
		// would take each other's session, flip the STATE and ingest (and
		// alert) every message once each (docs/sparkplug.md "One replica")
		bad("sparkplug", "the Sparkplug source runs in a single collector (cluster.partitions 0); not allowed with cluster.partitions")
	}
	if k.Partitions > 0 && c.MQTT.Enabled {
		bad("mqtt.enabled", "the MQTT source has no per-asset affinity; not allowed with cluster.partitions")
	}
	return ps
}

var groupRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,48}$`)

// Warnings are settings that are valid but weaken the group's behaviour;
// smelter-collector -t prints them and Run logs them at WARN.
//
// pinned_ttl < member_timeout is a warning, not an error, because it is a
// trade-off, not a mistake (docs/collector.md, "pinned_ttl and
// member_timeout"): the server gives a pin up pinned_ttl after the last
// pull, the group a member after its lease (3/4 member_timeout). A pause
// between the two keeps the replica a member whose pins expired: its next
// fetch is refused and every partition it owns restarts from its
// checkpoint (a reload, and up to ack_wait without evaluating), nothing
// false is published (the pin is checked before publishing), and the
// takeover after a crash is no faster (it waits for member_timeout). What
// a shorter pin buys is faster planned moves: a graceful stop deletes the
// member record at once and a join moves partitions at once, and then the
// new owner waits only for the old pin, pinned_ttl. A group that restarts
// replicas often (rolling upgrades) and wants a long member_timeout (to
// ride out pauses without moving partitions) may choose it.
func (c *Config) Warnings() []string {
	var out []string
	if k := c.Cluster; k.Partitions > 0 && k.PinnedTTL < k.MemberTimeout {
		out = append(out, fmt.Sprintf("cluster.pinned_ttl %v is shorter than cluster.member_timeout %v: a replica paused for longer than pinned_ttl "+
			"but within its membership loses its pins and restarts every partition it owns (nothing false is published); the takeover after a crash "+
			"still waits for member_timeout, only planned moves (graceful stop, join) get faster; unless that is what you want, set pinned_ttl to "+
			"member_timeout or more (docs/collector.md, \"pinned_ttl and member_timeout\")", time.Duration(k.PinnedTTL), time.Duration(k.MemberTimeout)))
	}
	return out
}

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

var fieldRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\[[0-9]+\])?(\.[a-z0-9_]+(\[[0-9]+\])?)*$`)

// appendErr adds the problems of a package's Validate error: every line of
// it (errors.Join) that reads "field.path: reason" names its field, any
// other is reported against field.
func appendErr(ps []problem, field string, err error) []problem {
	if err == nil {
		return ps
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		head, reason, ok := strings.Cut(e.Error(), ": ")
		if !ok || !fieldRe.MatchString(head) {
			head, reason = field, e.Error()
		}
		ps = append(ps, problem{head, reason})
	}
	return ps
}

func (c *Config) kpiConfig() kpi.Config {
	k := kpi.Config{Window: time.Duration(c.KPI.Window), MinCoverage: c.KPI.MinCoverage, Windows: map[string]time.Duration{}}
	for cl, w := range c.KPI.Windows {
		k.Windows[cl] = time.Duration(w)
	}
	return k
}

// kpiTracker returns the KPI tracker: the configured windows, and the
// rules' plausibility gate on every input (the catalog's range, the
// birth's, then the plausibility rule of set that applies to the signal, as
// the rules engine resolves it).
func (c *Config) kpiTracker(set *rules.Set, cat *catalog.Catalog) *kpi.Tracker {
	k := c.kpiConfig()
	k.Catalog = cat
	k.Range = func(class, asset, signal string) (lo, hi *float64, ok bool) {
		for _, r := range set.Select(class, asset, signal) {
			if r.Kind == rules.KindPlausibility { // the last one wins, as in the engine
				lo, hi, ok = r.Min, r.Max, true
			}
		}
		return lo, hi, ok
	}
	return kpi.New(k)
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

// SignalBoundWarnings returns a warning for every class whose rules name
// more signals than max_signals_per_asset: an asset of the class holds
// them all the same (rule-named signals, like the class's catalog signals,
// are always held), so the bound is exceeded by design. -t prints them,
// and the collector logs them at start.
func (c Config) SignalBoundWarnings(set *rules.Set, cat *catalog.Catalog) []string {
	var out []string
	for _, class := range cat.ClassNames() {
		if names := set.NamedSignals(cat, class); len(names) > c.MaxSignalsPerAsset {
			out = append(out, fmt.Sprintf("max_signals_per_asset: %d is below the %d signals the rules name for class %s (%s): an asset of the class holds them all the same, beyond the bound",
				c.MaxSignalsPerAsset, len(names), class, strings.Join(names, ", ")))
		}
	}
	return out
}

// Procs is the max_procs setting (procs.Auto when the field is invalid:
// Validate reports it).
func (c *Config) Procs() procs.Setting {
	v, _ := procs.Parse(c.MaxProcs)
	return v
}
