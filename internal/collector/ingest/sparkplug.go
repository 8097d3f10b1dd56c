package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// SparkplugConfig is the collector's sparkplug block: a Sparkplug B host
// application that subscribes to spBv1.0/<group>/# for each group and
// maps edge nodes, devices and metrics to Smelter assets and signals
// through the mapping file (docs/sparkplug.md).
type SparkplugConfig struct {
	URL          string     `yaml:"url"` // tcp:// ssl:// tls:// ws:// wss://
	ClientID     string     `yaml:"client_id"`
	Username     string     `yaml:"username"`
	PasswordEnv  string     `yaml:"password_env"`
	PasswordFile string     `yaml:"password_file"`
	TLS          secret.TLS `yaml:"tls"`
	Groups       []string   `yaml:"groups"`  // Sparkplug group ids to subscribe to
	Mapping      string     `yaml:"mapping"` // the mapping file
	// HostID, when set, makes the collector a Sparkplug host application
	// that publishes its STATE (retained, spBv1.0/STATE/<host_id>), so edge
	// nodes configured with it as primary host publish only while it is
	// online.
	HostID string `yaml:"host_id"`
	// RebirthInterval is the least time between two rebirth requests to one
	// edge node (default 5s).
	RebirthInterval time.Duration `yaml:"rebirth_interval"`
	// ReorderTimeout is how long a seq gap of an edge node may stay open
	// before the host asks for a rebirth (the specification's Reorder
	// Timeout, Sparkplug 3.0 section 5.9; default 2s): the messages after
	// the gap are held, in arrival order, until the missing one arrives
	// (then all are handled in seq order) or the timeout elapses (then they
	// are handled as they came and a rebirth is requested). At most
	// maxHeld messages per node are held; one more ends the wait early.
	ReorderTimeout time.Duration `yaml:"reorder_timeout"`
}

// maxHeld bounds the messages held per edge node during a Reorder
// Timeout: a full seq cycle (0-255) cannot be told apart from a new one.
const maxHeld = 255

// DefaultReorderTimeout is ReorderTimeout's default.
const DefaultReorderTimeout = 2 * time.Second

// Validate checks the block without I/O; errors name the field under
// prefix (e.g. "sparkplug").
func (c *SparkplugConfig) Validate(prefix string) error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("%s.url: required", prefix))
	}
	if c.ClientID == "" {
		errs = append(errs, fmt.Errorf("%s.client_id: required", prefix))
	}
	if len(c.Groups) == 0 {
		errs = append(errs, fmt.Errorf("%s.groups: at least one Sparkplug group id", prefix))
	}
	for i, g := range c.Groups {
		if !sparkplug.ValidID(g) {
			errs = append(errs, fmt.Errorf("%s.groups[%d]: %q must be non-empty UTF-8 without '+', '/' or '#'", prefix, i, g))
		}
	}
	if c.Mapping == "" {
		errs = append(errs, fmt.Errorf("%s.mapping: required (the mapping file)", prefix))
	}
	if c.HostID != "" && !sparkplug.ValidID(c.HostID) {
		errs = append(errs, fmt.Errorf("%s.host_id: %q must be UTF-8 without '+', '/' or '#'", prefix, c.HostID))
	}
	if c.PasswordEnv != "" && c.PasswordFile != "" {
		errs = append(errs, fmt.Errorf("%s.password_env: set password_env or password_file, not both", prefix))
	}
	if c.ReorderTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.reorder_timeout: %v is negative", prefix, c.ReorderTimeout))
	}
	if c.RebirthInterval < 0 {
		errs = append(errs, fmt.Errorf("%s.rebirth_interval: %v is negative", prefix, c.RebirthInterval))
	}
	if err := c.TLS.Validate(prefix + ".tls"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Mapping is a decoded Sparkplug mapping file: which edge nodes, devices
// and metrics are which Smelter gateways, assets and signals.
type Mapping struct {
	Nodes []MappedNode `yaml:"nodes"`

	index map[string]*MappedNode // "<group>/<node>"
}

// MappedNode is one edge node.
type MappedNode struct {
	Group    string         `yaml:"group"`
	EdgeNode string         `yaml:"edge_node"`
	Gateway  string         `yaml:"gateway"` // the Smelter gateway id of its messages; default: edge_node when it is a token
	Path     []string       `yaml:"path"`    // ISA-95 path of its assets: enterprise, site, area, line, cell
	Devices  []MappedDevice `yaml:"devices"`

	devices map[string]*MappedDevice
}

// MappedDevice is one Sparkplug device (or, with Device "", the edge
// node's own metrics) as one Smelter asset.
type MappedDevice struct {
	Device  string         `yaml:"device"`
	Asset   string         `yaml:"asset"`
	Class   string         `yaml:"class"`
	Metrics []MappedMetric `yaml:"metrics"`

	metrics map[string]*MappedMetric
}

// MappedMetric is one Sparkplug metric as one canonical signal.
type MappedMetric struct {
	Name   string `yaml:"name"`   // the Sparkplug metric name
	Signal string `yaml:"signal"` // the catalog signal of the class
	// Unit is the metric's unit when its birth has no engUnit property
	// (or to override it); values are converted to the catalog's unit.
	Unit string `yaml:"unit"`
	// States maps the metric's integer (or boolean: 0, 1) values to the
	// labels of a state signal, e.g. {0: unloaded, 1: loaded}; the reading
	// then carries the catalog's index of that label. A value not listed
	// gives a bad reading.
	States map[int64]string `yaml:"states"`

	target string        // the catalog's unit
	index  map[int64]int // States as catalog indexes
}

// LoadMapping reads and checks a mapping file against the catalog. Errors
// are confload.Errors, each "file:line: field: reason".
func LoadMapping(file string, cat *catalog.Catalog) (*Mapping, error) {
	var m Mapping
	doc, err := confload.ReadFile(file, &m)
	if err != nil {
		return nil, err
	}
	var errs confload.Errors
	bad := func(path, format string, a ...any) { errs = append(errs, doc.Errorf(path, format, a...)) }
	m.index = map[string]*MappedNode{}
	if len(m.Nodes) == 0 {
		bad("nodes", "at least one edge node")
	}
	for i := range m.Nodes {
		n := &m.Nodes[i]
		p := fmt.Sprintf("nodes[%d]", i)
		if !sparkplug.ValidID(n.Group) {
			bad(p+".group", "%q must be non-empty UTF-8 without '+', '/' or '#'", n.Group)
		}
		if !sparkplug.ValidID(n.EdgeNode) {
			bad(p+".edge_node", "%q must be non-empty UTF-8 without '+', '/' or '#'", n.EdgeNode)
		}
		if n.Gateway == "" {
			n.Gateway = n.EdgeNode
		}
		if err := telemetry.CheckPath(n.Path); err != nil {
			bad(p+".path", "%v", err)
		}
		if !telemetry.ValidToken(n.Gateway) {
			bad(p+".gateway", "%q is not a token of 1-64 [A-Za-z0-9_-] (required when edge_node is not one)", n.Gateway)
		}
		key := n.Group + "/" + n.EdgeNode
		if _, dup := m.index[key]; dup {
			bad(p+".edge_node", "%s is mapped twice", key)
		}
		m.index[key] = n
		n.devices = map[string]*MappedDevice{}
		assets := map[string]bool{}
		for j := range n.Devices {
			d := &n.Devices[j]
			dp := fmt.Sprintf("%s.devices[%d]", p, j)
			if d.Device != "" && !sparkplug.ValidID(d.Device) {
				bad(dp+".device", "%q has '+', '/' or '#'", d.Device)
			}
			if _, dup := n.devices[d.Device]; dup {
				bad(dp+".device", "%q is mapped twice", d.Device)
			}
			n.devices[d.Device] = d
			if !telemetry.ValidToken(d.Asset) {
				bad(dp+".asset", "%q is not a token of 1-64 [A-Za-z0-9_-]", d.Asset)
			} else if assets[d.Asset] {
				bad(dp+".asset", "%q is mapped twice on this edge node", d.Asset)
			}
			assets[d.Asset] = true
			if _, ok := cat.Class(d.Class); !ok {
				bad(dp+".class", "unknown equipment class %q (known: %v)", d.Class, cat.ClassNames())
				continue
			}
			d.metrics = map[string]*MappedMetric{}
			signals := map[string]int{} // signal -> metrics index
			for k := range d.Metrics {
				mm := &d.Metrics[k]
				mp := fmt.Sprintf("%s.metrics[%d]", dp, k)
				if mm.Name == "" {
					bad(mp+".name", "required")
				}
				if _, dup := d.metrics[mm.Name]; dup {
					bad(mp+".name", "%q is mapped twice", mm.Name)
				}
				d.metrics[mm.Name] = mm
				if first, dup := signals[mm.Signal]; dup && mm.Signal != "" {
					// two metrics feeding one signal would alternate its value
					bad(mp+".signal", "%q is already the signal of %s.metrics[%d]", mm.Signal, dp, first)
				} else {
					signals[mm.Signal] = k
				}
				if !telemetry.ValidSignal(mm.Signal) {
					bad(mp+".signal", "%q must be 1-%d letters, digits, '_' or '-' (docs/schema.md, \"Bounds\")", mm.Signal, telemetry.MaxSignalLen)
					continue
				}
				sig, err := cat.Lookup(d.Class, mm.Signal)
				if err != nil {
					bad(mp+".signal", "%v", err)
					continue
				}
				mm.target = sig.Unit
				if len(mm.States) > 0 {
					if !sig.IsState() {
						bad(mp+".states", "signal %s is not a state signal", mm.Signal)
					}
					mm.index = map[int64]int{}
					for v, label := range mm.States {
						i := slices.Index(sig.States, label)
						if i < 0 && sig.IsState() {
							bad(mp+".states", "%q is not a state of %s (states: %v)", label, mm.Signal, sig.States)
						}
						mm.index[v] = i
					}
				}
				if mm.Unit != "" && sig.Unit != "" {
					if _, err := units.Convert(mm.Unit, sig.Unit); err != nil {
						bad(mp+".unit", "%v", err)
					}
				} else if mm.Unit != "" {
					if _, ok := units.Canonical(mm.Unit); !ok {
						bad(mp+".unit", "unknown unit %q", mm.Unit)
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &m, nil
}

// Node returns the mapping of group/edge node.
func (m *Mapping) Node(group, node string) (*MappedNode, bool) {
	n, ok := m.index[group+"/"+node]
	return n, ok
}

// SparkplugMetrics are the Sparkplug source's counters.
type SparkplugMetrics struct {
	Messages *prometheus.CounterVec // by Sparkplug message type
	Errors   *prometheus.CounterVec // by reason
	Rebirths prometheus.Counter
	// Ignored counts messages of edge nodes and devices the mapping does
	// not name, by reason (unmapped_node, unmapped_device): they are not
	// tracked, so invented ids cost no memory.
	Ignored *prometheus.CounterVec
	// Nodes is the number of edge nodes tracked now: at most the mapping's.
	Nodes prometheus.Gauge
}

// Reasons counted in smelter_collector_sparkplug_ignored_total.
const (
	SPUnmappedNode   = "unmapped_node"
	SPUnmappedDevice = "unmapped_device"
)

// Reasons counted in smelter_collector_sparkplug_errors_total.
const (
	SPMalformed    = "malformed"     // the topic or payload does not decode
	SPUnknownAlias = "unknown_alias" // a data metric whose alias no birth defined
	SPOutOfOrder   = "out_of_order"  // a seq that is not the previous one plus 1
	SPNotBorn      = "not_born"      // a message of an edge node or device without a birth in this session
	SPUnit         = "unit"          // a metric whose unit does not convert to its signal's
	SPHandler      = "handler"       // the collector could not take a derived message
)

// NewSparkplugMetrics creates the counters and registers them with reg
// (nil: not registered).
func NewSparkplugMetrics(reg prometheus.Registerer) *SparkplugMetrics {
	m := &SparkplugMetrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_sparkplug_messages_total",
			Help: "Sparkplug B messages received, by message type."}, []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_sparkplug_errors_total",
			Help: "Sparkplug B problems, by reason: malformed, unknown_alias, out_of_order, not_born, unit, handler."}, []string{"reason"}),
		Rebirths: prometheus.NewCounter(prometheus.CounterOpts{Name: "smelter_collector_sparkplug_rebirth_requests_total",
			Help: "NCMD Node Control/Rebirth requests sent to edge nodes (after a seq gap, an unknown alias or a message without a birth)."}),
	}
	m.Ignored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smelter_collector_sparkplug_ignored_total",
		Help: "Sparkplug B messages of edge nodes or devices not in the mapping (not tracked), by reason: unmapped_node, unmapped_device."}, []string{"reason"})
	m.Nodes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "smelter_collector_sparkplug_nodes",
		Help: "Sparkplug B edge nodes tracked now (at most the mapping's)."})
	for _, r := range []string{SPMalformed, SPUnknownAlias, SPOutOfOrder, SPNotBorn, SPUnit, SPHandler} {
		m.Errors.WithLabelValues(r)
	}
	for _, r := range []string{SPUnmappedNode, SPUnmappedDevice} {
		m.Ignored.WithLabelValues(r)
	}
	for _, t := range []sparkplug.MessageType{sparkplug.NBIRTH, sparkplug.NDATA, sparkplug.NDEATH, sparkplug.DBIRTH, sparkplug.DDATA, sparkplug.DDEATH} {
		m.Messages.WithLabelValues(string(t)) // present (0) before the first message
	}
	if reg != nil {
		reg.MustRegister(m.Messages, m.Errors, m.Rebirths, m.Ignored, m.Nodes)
	}
	return m
}

// Sparkplug is the collector's Sparkplug B source: a host application
// that tracks edge node and device births (bdSeq, seq, alias tables),
// requests a rebirth on a seq gap, an unknown alias or data without a
// birth, and hands Smelter births, batches and deaths derived through the
// mapping to a Handler. Create it with NewSparkplug, start it with Run.
type Sparkplug struct {
	cfg     SparkplugConfig
	mapping *Mapping
	log     *slog.Logger
	m       *SparkplugMetrics
	now     func() time.Time

	mu    sync.Mutex // guards nodes and seqs (message handlers run one at a time; Run resets)
	nodes map[string]*spNode
	seqs  map[string]uint64 // next telemetry seq per Smelter gateway
}

type spNode struct {
	group, id   string
	mapped      *MappedNode
	born        bool
	bdSeq       uint64
	seq         uint64
	aliases     map[uint64]*spMetric // node-level metrics
	names       map[string]*spMetric
	devices     map[string]*spDevice
	lastRebirth time.Time
	gapSince    time.Time // a seq gap opened then; zero: none
	held        []heldMsg // messages after the gap, in arrival order
}

// heldMsg is a message held during a Reorder Timeout.
type heldMsg struct {
	tp    sparkplug.Topic
	topic string
	p     *sppb.Payload
}

type spDevice struct {
	id      string
	mapped  *MappedDevice
	born    bool
	aliases map[uint64]*spMetric
	names   map[string]*spMetric
}

type spMetric struct {
	name     string
	datatype uint32
	mapped   *MappedMetric // nil: not mapped, ignored
	conv     units.Conversion
	unitOK   bool
}

// NewSparkplug checks cfg and returns the source. It does no I/O; the
// mapping is loaded by the caller (LoadMapping).
func NewSparkplug(cfg SparkplugConfig, mapping *Mapping, log *slog.Logger, m *SparkplugMetrics) (*Sparkplug, error) {
	if err := cfg.Validate("sparkplug"); err != nil {
		return nil, err
	}
	if mapping == nil {
		return nil, errors.New("sparkplug: no mapping")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewSparkplugMetrics(nil)
	}
	if cfg.ReorderTimeout == 0 { // tck-id-operational-behavior-host-reordering-param
		cfg.ReorderTimeout = DefaultReorderTimeout
	}
	if cfg.RebirthInterval == 0 {
		cfg.RebirthInterval = 5 * time.Second
	}
	return &Sparkplug{cfg: cfg, mapping: mapping, log: log.With("source", "sparkplug"), m: m, now: time.Now,
		nodes: map[string]*spNode{}, seqs: map[string]uint64{}}, nil
}

// Run connects (re-connecting with backoff), subscribes to every group,
// publishes the host application's STATE when HostID is set, and feeds h
// until ctx ends. It returns nil on ctx done.
func (s *Sparkplug) Run(ctx context.Context, h Handler) error {
	o := mqtt.NewClientOptions()
	for _, b := range strings.Split(s.cfg.URL, ",") {
		o.AddBroker(strings.TrimSpace(b))
	}
	o.SetClientID(s.cfg.ClientID).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false)
	o.SetOrderMatters(true) // one message at a time, in order: seq tracking needs it
	o.SetConnectTimeout(10 * time.Second)
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username)
		var pw secret.Secret
		var err error
		switch {
		case s.cfg.PasswordEnv != "":
			pw, err = secret.FromEnv("sparkplug.password_env", s.cfg.PasswordEnv)
		case s.cfg.PasswordFile != "":
			pw, err = secret.FromFile("sparkplug.password_file", s.cfg.PasswordFile)
		}
		if err != nil {
			return err
		}
		o.SetPassword(pw.Reveal())
	}
	if s.cfg.TLS.Needed(s.cfg.URL, "ssl://", "tls://", "mqtts://", "wss://") {
		tc, err := s.cfg.TLS.Config("sparkplug.tls")
		if err != nil {
			return err
		}
		o.SetTLSConfig(tc)
	}
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		if err := s.session(ctx, *o, h); err != nil && ctx.Err() == nil {
			d := bo.Next()
			s.log.Warn("sparkplug connection", "err", err, "retry_in", d.Round(time.Millisecond))
			backoff.Sleep(ctx, d)
		}
	}
	return nil
}

// session serves one connection until it is lost or ctx ends.
func (s *Sparkplug) session(ctx context.Context, o mqtt.ClientOptions, h Handler) error {
	ts := s.now().UnixMilli()
	if s.cfg.HostID != "" { // tck-id-operational-behavior-host-application-connect-will
		will, _ := json.Marshal(sparkplug.State{Online: false, Timestamp: ts})
		o.SetBinaryWill(sparkplug.StateTopic(s.cfg.HostID), will, 1, true)
	}
	lost := make(chan error, 1)
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	c := mqtt.NewClient(&o)
	t := c.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return nil
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Disconnect(250)
	// a new session knows no births: every node is asked again
	s.mu.Lock()
	for _, n := range s.nodes {
		s.flush(ctx, n, h) // held through the lost connection: used, not dropped
	}
	clear(s.nodes)
	s.m.Nodes.Set(0)
	s.mu.Unlock()
	subs := map[string]byte{}
	for _, g := range s.cfg.Groups {
		subs[sparkplug.Namespace+"/"+g+"/#"] = 1
	}
	if s.cfg.HostID != "" {
		subs[sparkplug.StateTopic(s.cfg.HostID)] = 1
	}
	// An offline STATE from another client is answered by the session loop,
	// not in the handler: with SetOrderMatters the handler runs on paho's
	// router, and a PUBACK the broker sends after a few publishes (its copy
	// of this birth, group traffic) waits behind them, in a pipeline only
	// that router drains: every message and the connection-lost notice
	// were held for the 10 s publish timeout (CI failure of session 7).
	reassert := make(chan struct{}, 1)
	handle := func(c mqtt.Client, m mqtt.Message) {
		if m.Topic() == sparkplug.StateTopic(s.cfg.HostID) {
			// tck-id-message-flow-hid-sparkplug-state-message-delivered
			var st sparkplug.State
			// not while stopping: then the offline STATE is the host's own death
			if json.Unmarshal(m.Payload(), &st) == nil && !st.Online && ctx.Err() == nil {
				select {
				case reassert <- struct{}{}:
				default: // one answer pending is enough
				}
			}
			return
		}
		s.requestRebirth(c, s.Handle(ctx, m.Topic(), m.Payload(), h))
	}
	if st := c.SubscribeMultiple(subs, handle); !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return fmt.Errorf("subscribe: %w", errors.Join(st.Error(), errors.New("no SUBACK")))
	}
	if s.cfg.HostID != "" {
		s.publishState(c, true, ts) // tck-id-host-topic-phid-birth-required
	}
	s.log.Info("sparkplug host connected", "groups", s.cfg.Groups, "host_id", s.cfg.HostID)
	// Reorder Timeouts are checked four times per timeout
	tick := time.NewTicker(max(s.cfg.ReorderTimeout/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.requestRebirth(c, s.Expire(ctx, h))
		case <-reassert:
			s.publishState(c, true, ts)
		case <-ctx.Done():
			if s.cfg.HostID != "" {
				// tck-id-operational-behavior-host-application-termination,
				// tck-id-host-topic-phid-death-payload-timestamp-disconnect-clean:
				// the session's timestamp, as its will and birth carry
				s.publishState(c, false, ts)
			}
			return nil
		case err := <-lost:
			return fmt.Errorf("connection lost: %w", err)
		}
	}
}

// requestRebirth publishes a Node Control/Rebirth NCMD on each topic.
func (s *Sparkplug) requestRebirth(c mqtt.Client, topics []string) {
	for _, req := range topics {
		p, err := sparkplug.Encode(sparkplug.RebirthRequest(s.now().UnixMilli()))
		if err == nil {
			c.Publish(req, 0, false, p) // tck-id-payloads-ncmd-qos
		}
	}
}

func (s *Sparkplug) publishState(c mqtt.Client, online bool, ts int64) {
	p, _ := json.Marshal(sparkplug.State{Online: online, Timestamp: ts})
	t := c.Publish(sparkplug.StateTopic(s.cfg.HostID), 1, true, p)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		s.log.Warn("sparkplug STATE not acknowledged", "err", t.Error())
	}
}

// Handle processes one Sparkplug message: it updates the edge node's
// state, hands derived Smelter messages to h, and returns the NCMD topics
// of edge nodes to ask for a rebirth. It never panics on bad input:
// problems are counted and logged.
func (s *Sparkplug) Handle(ctx context.Context, topic string, payload []byte, h Handler) (rebirth []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tp, err := sparkplug.ParseTopic(topic)
	if err != nil {
		s.bad(SPMalformed, topic, err)
		return nil
	}
	s.m.Messages.WithLabelValues(string(tp.Type)).Inc()
	if tp.Type == sparkplug.NCMD || tp.Type == sparkplug.DCMD {
		return nil // commands of other hosts
	}
	p, err := sparkplug.Decode(payload)
	if err != nil {
		s.bad(SPMalformed, topic, err)
		return nil
	}
	key := tp.Group + "/" + tp.Node
	n := s.nodes[key]
	if n == nil {
		mn, ok := s.mapping.Node(tp.Group, tp.Node)
		if !ok {
			// not tracked: the nodes kept are bounded by the mapping, and
			// the host commands no edge node it does not map
			s.m.Ignored.WithLabelValues(SPUnmappedNode).Inc()
			return nil
		}
		n = &spNode{group: tp.Group, id: tp.Node, mapped: mn}
		s.nodes[key] = n
		s.m.Nodes.Set(float64(len(s.nodes)))
	}
	ask := false
	switch tp.Type {
	case sparkplug.NBIRTH:
		s.flush(ctx, n, h) // what the last session sent, before the new one
		if !s.nodeBirth(ctx, n, topic, p, h) {
			return s.ask(n)
		}
		return nil
	case sparkplug.NDEATH:
		bd, ok := sparkplug.BdSeq(p)
		if !ok || !n.born || bd != n.bdSeq {
			return nil // an old session's will: the current one is alive
		}
		s.flush(ctx, n, h)
		s.nodeDeath(ctx, n, "sparkplug NDEATH: edge node offline", h)
		return nil
	}
	if !n.born {
		s.bad(SPNotBorn, topic, errors.New("no NBIRTH in this session"))
		return s.ask(n)
	}
	if p.Seq == nil {
		s.bad(SPMalformed, topic, errors.New("no seq"))
		ask = true
	} else if *p.Seq != sparkplug.NextSeq(n.seq) {
		// tck-id-operational-behavior-host-reordering-start: hold it
		if n.gapSince.IsZero() {
			n.gapSince = s.now()
		}
		n.held = append(n.held, heldMsg{tp: tp, topic: topic, p: p})
		if len(n.held) > maxHeld {
			return s.endWait(ctx, n, h)
		}
		return nil
	}
	if ask { // no seq: handled, and a rebirth is due
		s.dispatch(ctx, n, tp, topic, p, h)
		return s.ask(n)
	}
	n.seq = *p.Seq
	ask = s.dispatch(ctx, n, tp, topic, p, h)
	// tck-id-operational-behavior-host-reordering-success: the held
	// messages that now follow in seq order are handled; the gap closes
	// when none is left
	for progressed := true; progressed && len(n.held) > 0; {
		progressed = false
		for i, m := range n.held {
			if m.p.GetSeq() == sparkplug.NextSeq(n.seq) {
				n.held = slices.Delete(n.held, i, i+1)
				n.seq = m.p.GetSeq()
				ask = s.dispatch(ctx, n, m.tp, m.topic, m.p, h) || ask
				progressed = true
				break
			}
		}
	}
	if len(n.held) == 0 {
		n.gapSince = time.Time{}
	}
	if ask {
		return s.ask(n)
	}
	return nil
}

// Expire ends the Reorder Timeouts that elapsed: the held messages are
// handled as they came and the NCMD topics of those edge nodes are
// returned, to ask for a rebirth
// (tck-id-operational-behavior-host-reordering-rebirth).
func (s *Sparkplug) Expire(ctx context.Context, h Handler) (rebirth []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, n := range s.nodes {
		if !n.gapSince.IsZero() && now.Sub(n.gapSince) >= s.cfg.ReorderTimeout {
			rebirth = append(rebirth, s.endWait(ctx, n, h)...)
		}
	}
	return rebirth
}

// endWait handles the held messages of n in arrival order, counts the gap
// and asks for a rebirth.
func (s *Sparkplug) endWait(ctx context.Context, n *spNode, h Handler) []string {
	if len(n.held) > 0 {
		s.bad(SPOutOfOrder, n.held[0].topic, fmt.Errorf("seq %d after %d: no message in between within %v", n.held[0].p.GetSeq(), n.seq, s.cfg.ReorderTimeout))
	}
	s.flush(ctx, n, h)
	return s.ask(n)
}

// flush handles the held messages of n in arrival order and closes its gap.
func (s *Sparkplug) flush(ctx context.Context, n *spNode, h Handler) {
	held := n.held
	n.held, n.gapSince = nil, time.Time{}
	for _, m := range held {
		n.seq = m.p.GetSeq()
		s.dispatch(ctx, n, m.tp, m.topic, m.p, h)
	}
}

// dispatch handles a data, birth or death message of a born node whose seq
// has been taken; true: a rebirth is due.
func (s *Sparkplug) dispatch(ctx context.Context, n *spNode, tp sparkplug.Topic, topic string, p *sppb.Payload, h Handler) (ask bool) {
	if !n.born {
		return true // a held message after the node died
	}
	if tp.Type.DeviceLevel() && n.mapped.devices[tp.Device] == nil {
		// the seq above still counts; the device itself is not tracked
		s.m.Ignored.WithLabelValues(SPUnmappedDevice).Inc()
		tp.Type = ""
	}
	switch tp.Type {
	case sparkplug.DBIRTH:
		ask = !s.deviceBirth(ctx, n, tp.Device, topic, p, h) || ask
	case sparkplug.DDEATH:
		if d := n.devices[tp.Device]; d != nil && d.born {
			d.born = false
			s.deviceDeath(ctx, n, d, "sparkplug DDEATH", h)
		}
	case sparkplug.NDATA:
		ask = s.data(ctx, n, nil, topic, p, h) || ask
	case sparkplug.DDATA:
		d := n.devices[tp.Device]
		if d == nil || !d.born {
			s.bad(SPNotBorn, topic, errors.New("no DBIRTH for the device"))
			ask = true
			break
		}
		ask = s.data(ctx, n, d, topic, p, h) || ask
	}
	return ask
}

func (s *Sparkplug) bad(reason, topic string, err error) {
	s.m.Errors.WithLabelValues(reason).Inc()
	s.log.Warn("sparkplug message", "reason", reason, "topic", topic, "err", err)
}

// ask returns the node's NCMD topic unless a rebirth was requested less
// than RebirthInterval ago.
func (s *Sparkplug) ask(n *spNode) []string {
	now := s.now()
	if now.Sub(n.lastRebirth) < s.cfg.RebirthInterval {
		return nil
	}
	n.lastRebirth = now
	s.m.Rebirths.Inc()
	return []string{sparkplug.NodeTopic(n.group, sparkplug.NCMD, n.id)}
}

// nodeBirth takes an NBIRTH; false: it is refused (counted, logged), the
// node is not born and a rebirth is due.
func (s *Sparkplug) nodeBirth(ctx context.Context, n *spNode, topic string, p *sppb.Payload, h Handler) bool {
	n.born = false
	bd, ok := sparkplug.BdSeq(p)
	if !ok || p.Seq == nil || *p.Seq > 255 {
		s.bad(SPMalformed, topic, errors.New("NBIRTH without bdSeq or with a seq outside 0..255"))
		return true // a rebirth would bring the same
	}
	md := n.mapped.devices[""]
	aliases, names, err := s.metricTable(topic, p, md)
	if err != nil {
		s.bad(SPMalformed, topic, err)
		return false
	}
	n.born, n.bdSeq, n.seq = true, bd, *p.Seq
	n.devices = map[string]*spDevice{} // devices re-birth after an NBIRTH
	n.aliases, n.names = aliases, names
	if md != nil {
		s.emitBirth(ctx, n, md, n.names, p, h)
	}
	return true
}

// deviceBirth takes a DBIRTH of a mapped device; false: it is refused
// (counted, logged), the device is not born and a rebirth is due.
func (s *Sparkplug) deviceBirth(ctx context.Context, n *spNode, id, topic string, p *sppb.Payload, h Handler) bool {
	md := n.mapped.devices[id]
	aliases, names, err := s.metricTable(topic, p, md)
	if err != nil {
		s.bad(SPMalformed, topic, err)
		delete(n.devices, id)
		return false
	}
	n.devices[id] = &spDevice{id: id, mapped: md, born: true, aliases: aliases, names: names}
	s.emitBirth(ctx, n, md, names, p, h)
	return true
}

// metricTable reads the metric definitions of a birth. A name or an alias
// defined twice is an error (tck-id-payloads-alias-uniqueness): data by
// that alias could not tell its metrics apart.
func (s *Sparkplug) metricTable(topic string, p *sppb.Payload, md *MappedDevice) (map[uint64]*spMetric, map[string]*spMetric, error) {
	seenName, seenAlias := make(map[string]bool, len(p.Metrics)), make(map[uint64]string, len(p.Metrics))
	for _, m := range p.Metrics {
		if seenName[m.GetName()] {
			return nil, nil, fmt.Errorf("metric %q is defined twice in the birth", m.GetName())
		}
		seenName[m.GetName()] = true
		if m.Alias == nil {
			continue
		}
		if other, dup := seenAlias[*m.Alias]; dup {
			return nil, nil, fmt.Errorf("alias %d is defined twice in the birth (metrics %q and %q)", *m.Alias, other, m.GetName())
		}
		seenAlias[*m.Alias] = m.GetName()
	}
	aliases, names := map[uint64]*spMetric{}, map[string]*spMetric{}
	for _, m := range p.Metrics {
		sm := &spMetric{name: m.GetName(), datatype: m.GetDatatype()}
		if md != nil {
			sm.mapped = md.metrics[sm.name]
		}
		if sm.mapped != nil {
			from := sm.mapped.Unit
			if from == "" {
				if v, ok := sparkplug.Property(m, sparkplug.PropEngUnit); ok {
					from, _ = sparkplug.PropString(v)
				}
			}
			sm.conv, sm.unitOK = units.Identity, true
			if from != "" && sm.mapped.target != "" {
				c, err := units.Convert(from, sm.mapped.target)
				if err != nil {
					s.bad(SPUnit, topic, fmt.Errorf("metric %q: %w", sm.name, err))
					sm.unitOK = false
				}
				sm.conv = c
			}
		}
		names[sm.name] = sm
		if m.Alias != nil {
			aliases[*m.Alias] = sm
		}
	}
	return aliases, names, nil
}

func (s *Sparkplug) asset(n *spNode, md *MappedDevice) telemetry.Asset {
	return telemetry.Asset{ID: md.Asset, Class: md.Class, Path: n.mapped.Path}
}

func (s *Sparkplug) nextSeq(gateway string) uint64 {
	v := s.seqs[gateway]
	if v == 0 {
		v = uint64(s.now().UnixMicro()) // a restart continues above the last run
	}
	s.seqs[gateway] = v + 1
	return v
}

func (s *Sparkplug) hand(ctx context.Context, subject string, data []byte, h Handler) {
	if err := h(ctx, subject, data); err != nil {
		s.bad(SPHandler, subject, err)
	}
}

func (s *Sparkplug) emitBirth(ctx context.Context, n *spNode, md *MappedDevice, names map[string]*spMetric, p *sppb.Payload, h Handler) {
	a := s.asset(n, md)
	bi := telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: n.mapped.Gateway, Seq: s.nextSeq(n.mapped.Gateway), Asset: a.ToJSON(),
		TSGW: int64(p.GetTimestamp()), Protocol: "sparkplug"}
	if bi.TSGW <= 0 {
		bi.TSGW = s.now().UnixMilli()
	}
	for _, m := range p.Metrics {
		sm := names[m.GetName()]
		if sm == nil || sm.mapped == nil || !sm.unitOK {
			continue
		}
		si := telemetry.SignalInfo{Signal: sm.mapped.Signal, Unit: sm.mapped.target, Src: src(n, md, sm.name)}
		if v, ok := sparkplug.Property(m, sparkplug.PropEngLow); ok {
			if f, ok := sparkplug.PropNumber(v); ok {
				f = sm.conv.Apply(f)
				si.Min = &f
			}
		}
		if v, ok := sparkplug.Property(m, sparkplug.PropEngHigh); ok {
			if f, ok := sparkplug.PropNumber(v); ok {
				f = sm.conv.Apply(f)
				si.Max = &f
			}
		}
		if v, ok := sparkplug.Property(m, sparkplug.PropInterval); ok {
			if f, ok := sparkplug.PropNumber(v); ok && f > 0 && f < math.MaxInt32 {
				si.IntervalMS = int64(f)
			}
		}
		bi.Signals = append(bi.Signals, si)
	}
	data, err := telemetry.MarshalBirth(&bi)
	if err != nil {
		s.bad(SPHandler, "birth", err)
		return
	}
	s.hand(ctx, telemetry.AssetSubject(a, telemetry.KindBirth), data, h)
	// a birth carries current values
	s.emitData(ctx, n, md, names, nil, p, h)
}

func src(n *spNode, md *MappedDevice, metric string) string {
	if md.Device == "" {
		return "sparkplug:" + n.group + "/" + n.id + "/" + metric
	}
	return "sparkplug:" + n.group + "/" + n.id + "/" + md.Device + "/" + metric
}

// data handles NDATA (d nil) and DDATA; it reports whether an unknown alias
// calls for a rebirth.
func (s *Sparkplug) data(ctx context.Context, n *spNode, d *spDevice, topic string, p *sppb.Payload, h Handler) (ask bool) {
	aliases, names := n.aliases, n.names
	var md *MappedDevice
	if n.mapped != nil {
		md = n.mapped.devices[""]
	}
	if d != nil {
		aliases, names, md = d.aliases, d.names, d.mapped
	}
	for _, m := range p.Metrics {
		if m.Name == nil && aliases[m.GetAlias()] == nil || m.Name != nil && names[m.GetName()] == nil {
			s.bad(SPUnknownAlias, topic, fmt.Errorf("metric %q alias %d is in no birth", m.GetName(), m.GetAlias()))
			ask = true
		}
	}
	if md != nil {
		s.emitData(ctx, n, md, names, aliases, p, h)
	}
	return ask
}

// emitData hands the mapped metrics of p as batches (live and historical
// apart). aliases nil: p is a birth, metrics go by name.
func (s *Sparkplug) emitData(ctx context.Context, n *spNode, md *MappedDevice, names map[string]*spMetric, aliases map[uint64]*spMetric, p *sppb.Payload, h Handler) {
	a := s.asset(n, md)
	var live, hist []telemetry.Reading
	for _, m := range p.Metrics {
		sm := names[m.GetName()]
		if m.Name == nil && aliases != nil {
			sm = aliases[m.GetAlias()]
		}
		if sm == nil || sm.mapped == nil || !sm.unitOK {
			continue
		}
		if aliases == nil && m.GetIsNull() {
			continue // a birth without a current value
		}
		r := reading(m, sm, p)
		r.Src = src(n, md, sm.name)
		if m.GetIsHistorical() {
			hist = append(hist, r)
		} else {
			live = append(live, r)
		}
	}
	for i, rs := range [][]telemetry.Reading{live, hist} {
		if len(rs) == 0 {
			continue
		}
		b := telemetry.Batch{Gateway: n.mapped.Gateway, Seq: s.nextSeq(n.mapped.Gateway), Asset: a, TSGW: int64(p.GetTimestamp()),
			Historical: i == 1, Readings: rs}
		if b.TSGW <= 0 {
			b.TSGW = s.now().UnixMilli()
		}
		s.hand(ctx, telemetry.AssetSubject(a, telemetry.KindData), b.AppendJSON(nil), h)
	}
}

// reading maps one metric value to a Smelter reading.
func reading(m *sppb.Payload_Metric, sm *spMetric, p *sppb.Payload) telemetry.Reading {
	r := telemetry.Reading{Signal: sm.mapped.Signal, Unit: sm.mapped.target, TS: int64(m.GetTimestamp())}
	if r.TS <= 0 {
		r.TS = int64(p.GetTimestamp())
	}
	switch sparkplug.MetricQuality(m) {
	case sparkplug.QualityBad:
		r.Quality = telemetry.QualityBad
	case sparkplug.QualityStale:
		r.Quality = telemetry.QualityStale
	}
	// smelterQuality "uncertain" comes with Quality 0 (192 from gateways
	// before review13 F8): the value is there and read
	if v, ok := sparkplug.Property(m, sparkplug.PropUncertain); ok && (r.Quality == telemetry.QualityGood || r.Quality == telemetry.QualityBad) {
		if q, _ := sparkplug.PropString(v); q == "uncertain" {
			r.Quality = telemetry.QualityUncertain
		}
	}
	if v, ok := sparkplug.Property(m, sparkplug.PropStatus); ok {
		if f, ok := sparkplug.PropNumber(v); ok && f >= 0 && f <= math.MaxUint32 {
			r.Status = uint32(f)
		}
	}
	if !r.Quality.HasValue() {
		return r
	}
	if f, ok := sparkplug.MetricNumber(m); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
		if sm.mapped.index != nil {
			i, ok := sm.mapped.index[int64(f)]
			if !ok || f != math.Trunc(f) {
				r.Quality = telemetry.QualityBad
				return r
			}
			r.Value, r.Text, r.Unit = float64(i), sm.mapped.States[int64(f)], ""
			return r
		}
		r.Value = sm.conv.Apply(f)
		return r
	}
	if sv, ok := m.Value.(*sppb.Payload_Metric_StringValue); ok {
		r.Text, r.NoValue, r.Unit = sv.StringValue, true, ""
		return r
	}
	r.Quality = telemetry.QualityBad // null, or a type Smelter does not read
	return r
}

func (s *Sparkplug) deviceDeath(ctx context.Context, n *spNode, d *spDevice, reason string, h Handler) {
	if d.mapped == nil {
		return
	}
	s.death(ctx, n, d.mapped, d.names, reason, h)
}

// death marks the asset's signals stale and hands a death.
func (s *Sparkplug) death(ctx context.Context, n *spNode, md *MappedDevice, names map[string]*spMetric, reason string, h Handler) {
	a := s.asset(n, md)
	now := s.now().UnixMilli()
	var rs []telemetry.Reading
	for _, sm := range names {
		if sm.mapped != nil && sm.unitOK {
			rs = append(rs, telemetry.Reading{Signal: sm.mapped.Signal, Unit: sm.mapped.target, Quality: telemetry.QualityStale, TS: now,
				Src: src(n, md, sm.name)})
		}
	}
	if len(rs) > 0 {
		b := telemetry.Batch{Gateway: n.mapped.Gateway, Seq: s.nextSeq(n.mapped.Gateway), Asset: a, TSGW: now, Readings: rs}
		s.hand(ctx, telemetry.AssetSubject(a, telemetry.KindData), b.AppendJSON(nil), h)
	}
	data, err := telemetry.MarshalDeath(&telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: n.mapped.Gateway,
		Seq: s.nextSeq(n.mapped.Gateway), Asset: a.ToJSON(), TSGW: now, Reason: reason})
	if err == nil {
		s.hand(ctx, telemetry.AssetSubject(a, telemetry.KindDeath), data, h)
	}
}

// nodeDeath: tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-tags-stale.
func (s *Sparkplug) nodeDeath(ctx context.Context, n *spNode, reason string, h Handler) {
	n.born = false
	if n.mapped != nil {
		if md := n.mapped.devices[""]; md != nil {
			s.death(ctx, n, md, n.names, reason, h)
		}
	}
	for _, d := range n.devices {
		if d.born {
			d.born = false
			s.deviceDeath(ctx, n, d, reason, h)
		}
	}
}
