package ingest

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/telemetry"
	mqttup "github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/wait"
)

func TestLoadMappingErrors(t *testing.T) {
	_, err := LoadMapping("testdata/sparkplug/bad.yaml", catalog.Default())
	es := confload.AsErrors(err)
	got := es.Error()
	for _, want := range []string{
		`testdata/sparkplug/bad.yaml:2: nodes[0].group: "plant/1" must be non-empty UTF-8 without '+', '/' or '#'`,
		`testdata/sparkplug/bad.yaml:6: nodes[0].devices[0].asset: "ac 9" is not a token`,
		`testdata/sparkplug/bad.yaml:7: nodes[0].devices[0].class: unknown equipment class "aircompressor"`,
		`testdata/sparkplug/bad.yaml:12: nodes[0].devices[1].metrics[0].unit: cannot convert "degF"`,
		`testdata/sparkplug/bad.yaml:13: nodes[0].devices[1].metrics[1].signal: class air_compressor has no signal "flow"`,
		`testdata/sparkplug/bad.yaml:14: nodes[0].devices[1].metrics[2].states: "running" is not a state of load_state`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q; got:\n%s", want, got)
		}
	}
	if len(es) != 6 {
		t.Errorf("%d errors, want 6:\n%s", len(es), got)
	}
	if _, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default()); err != nil {
		t.Fatal(err)
	}
}

// capture is a Handler that keeps every message.
type capture struct {
	mu   sync.Mutex
	msgs []captured
}

type captured struct {
	subject string
	data    []byte
}

func (c *capture) handle(_ context.Context, subject string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, captured{subject, append([]byte(nil), data...)})
	return nil
}

// decoded returns the messages of kind for asset that dec accepts.
func decoded[T any](c *capture, asset string, kind telemetry.Kind, dec func([]byte) (T, error)) []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []T
	for _, m := range c.msgs {
		if strings.HasSuffix(m.subject, "."+asset+"."+string(kind)) {
			if v, err := dec(m.data); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

func (c *capture) batches(asset string) []*telemetry.Batch {
	return decoded(c, asset, telemetry.KindData, telemetry.DecodeBatch)
}

func (c *capture) births(asset string) []*telemetry.Birth {
	return decoded(c, asset, telemetry.KindBirth, telemetry.DecodeBirth)
}

func (c *capture) deaths(asset string) int {
	return len(decoded(c, asset, telemetry.KindDeath, func(b []byte) ([]byte, error) { return b, nil }))
}

// lastAllStale checks that the last batch has n readings, all stale.
func lastAllStale(t *testing.T, bs []*telemetry.Batch, n int) {
	t.Helper()
	if len(bs) == 0 {
		t.Fatal("no batches")
	}
	rs := bs[len(bs)-1].Readings
	if len(rs) != n {
		t.Fatalf("last batch %+v, want %d stale readings", rs, n)
	}
	for _, r := range rs {
		if r.Quality != telemetry.QualityStale {
			t.Fatalf("not stale: %+v", r)
		}
	}
}

func startHost(t *testing.T, url string, cfg SparkplugConfig) (*Sparkplug, *capture) {
	t.Helper()
	mp, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.Mapping = url, "testdata/sparkplug/mapping.yaml"
	if cfg.ClientID == "" {
		cfg.ClientID = "collector-sp"
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []string{"plant"}
	}
	s, err := NewSparkplug(cfg, mp, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx, c.handle) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, c
}

// runHostLog is startHost logging to log, with a stop function (it ends
// Run and waits for it; the cleanup does the same if the test does not).
func runHostLog(t *testing.T, url string, cfg SparkplugConfig, log *slog.Logger) (stop func()) {
	t.Helper()
	mp, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.Mapping, cfg.ClientID, cfg.Groups = url, "testdata/sparkplug/mapping.yaml", "collector-sp", []string{"plant"}
	s, err := NewSparkplug(cfg, mp, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx, (&capture{}).handle) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func startBroker(t *testing.T) *brokers.MQTT {
	t.Helper()
	b, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestSparkplugFromSmelterEdgeNode: a gateway publishing Sparkplug B (the
// MQTT uplink with encoding sparkplug_b) is read back by the collector's
// Sparkplug source. The source starts after the node's births, so it asks
// for a rebirth first (tck-id-operational-behavior-host-reordering-rebirth
// in spirit: data without a birth).
func TestSparkplugFromSmelterEdgeNode(t *testing.T) {
	b := startBroker(t)
	cfg := mqttup.Config{URL: b.URL(), Encoding: mqttup.EncodingSparkplug}
	cfg.SetDefaults("gw-test", "plant")
	up, err := mqttup.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 10*time.Second, "uplink ready", up.Ready)

	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "plant", "utilities", "compressors", "_"}}
	max := 1.6
	bi, _ := telemetry.MarshalBirth(&telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-test", Seq: 1, Asset: a.ToJSON(), TSGW: 1,
		Signals: []telemetry.SignalInfo{{Signal: "discharge_pressure", Unit: "MPa", Max: &max, IntervalMS: 1000}, {Signal: "load_state", Enum: []string{"off", "unloaded", "loaded"}}}})
	send := func(envs ...telemetry.Envelope) {
		t.Helper()
		wait.For(t, 10*time.Second, "published", func() bool { return up.Publish(ctx, envs) == nil })
	}
	send(telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindBirth), MsgID: "gw-test-1", Data: bi})

	_, got := startHost(t, b.URL(), SparkplugConfig{})
	seq := uint64(2)
	wait.For(t, 15*time.Second, "a batch through the collector source", func() bool {
		batch := telemetry.Batch{Gateway: "gw-test", Seq: seq, Asset: a, TSGW: 2, Readings: []telemetry.Reading{
			{Signal: "discharge_pressure", Value: 0.72, Unit: "MPa", TS: 1700000000000},
			{Signal: "load_state", Value: 2, Text: "loaded", TS: 1700000000000, Quality: telemetry.QualityUncertain, Status: 7}}}
		seq++
		send(telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindData), MsgID: batch.MsgID(), Data: batch.AppendJSON(nil)})
		return len(got.batches("ac-1")) > 0 && len(got.births("ac-1")) > 0
	})
	birth := got.births("ac-1")[0]
	if birth.Gateway != "gw-test" || len(birth.Signals) != 2 || birth.Signals[0].Signal != "discharge_pressure" || birth.Signals[0].Unit != "MPa" ||
		birth.Signals[0].Max == nil || *birth.Signals[0].Max != 1.6 || birth.Signals[0].IntervalMS != 1000 {
		t.Fatalf("birth %+v", birth)
	}
	var last *telemetry.Batch
	for _, b := range got.batches("ac-1") {
		if len(b.Readings) == 2 {
			last = b
		}
	}
	if last == nil {
		t.Fatal("no batch with both readings")
	}
	r0, r1 := last.Readings[0], last.Readings[1]
	if r0.Signal != "discharge_pressure" || r0.Value != 0.72 || r0.Quality != telemetry.QualityGood || r0.TS != 1700000000000 ||
		r1.Signal != "load_state" || r1.Value != 2 || r1.Quality != telemetry.QualityUncertain || r1.Status != 7 {
		t.Fatalf("readings %+v", last.Readings)
	}
	// a death becomes DDEATH, then a death and stale readings in the collector
	d, _ := telemetry.MarshalDeath(&telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-test", Seq: 1000, Asset: a.ToJSON(), TSGW: 3, Reason: "x"})
	send(telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindDeath), MsgID: "gw-test-1000", Data: d})
	wait.For(t, 10*time.Second, "death", func() bool { return got.deaths("ac-1") == 1 })
	t.Run("tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-tags-stale", func(t *testing.T) {
		lastAllStale(t, got.batches("ac-1"), 2)
	})
}

// edge is a hand-driven Sparkplug edge node for the host tests.
type edge struct {
	t   *testing.T
	c   paho.Client
	seq uint64
}

func newEdge(t *testing.T, url string) *edge {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("edge-" + t.Name()).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return &edge{t: t, c: c}
}

func (e *edge) pub(topic string, p *sppb.Payload) {
	b, err := sparkplug.Encode(p)
	if err != nil {
		e.t.Fatal(err)
	}
	e.raw(topic, b)
}

func (e *edge) raw(topic string, b []byte) {
	if tok := e.c.Publish(topic, 0, false, b); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		e.t.Fatal(tok.Error())
	}
}

func (e *edge) next() *uint64 { e.seq = sparkplug.NextSeq(e.seq); v := e.seq; return &v }

func dmetric(name string, alias uint64, dt sppb.DataType, v float64, props ...any) *sppb.Payload_Metric {
	m := &sppb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(1700000000000)}
	if name != "" {
		m.Name, m.Datatype = proto.String(name), proto.Uint32(uint32(dt))
	}
	switch dt {
	case sppb.DataType_Boolean:
		m.Value = &sppb.Payload_Metric_BooleanValue{BooleanValue: v != 0}
	case sppb.DataType_Float:
		m.Value = &sppb.Payload_Metric_FloatValue{FloatValue: float32(v)}
	default:
		m.Value = &sppb.Payload_Metric_DoubleValue{DoubleValue: v}
	}
	if len(props) > 0 {
		ps := &sppb.Payload_PropertySet{}
		for i := 0; i+1 < len(props); i += 2 {
			ps.Keys = append(ps.Keys, props[i].(string))
			ps.Values = append(ps.Values, &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_String)),
				Value: &sppb.Payload_PropertyValue_StringValue{StringValue: props[i+1].(string)}})
		}
		m.Properties = ps
	}
	return m
}

// TestSparkplugHostTracksSessions drives a third-party-style edge node by
// hand: units convert through the mapping, a seq gap and an unknown alias
// are counted and answered with an NCMD rebirth request, malformed
// payloads are counted and skipped, and an NDEATH with the session's bdSeq
// marks the node's devices stale and dead.
func TestSparkplugHostTracksSessions(t *testing.T) {
	b := startBroker(t)
	ncmd := make(chan *sppb.Payload, 16)
	watcher := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("watcher"))
	if tok := watcher.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { watcher.Disconnect(0) })
	if tok := watcher.Subscribe("spBv1.0/plant/NCMD/tahu-edge-1", 1, func(_ paho.Client, m paho.Message) {
		if p, err := sparkplug.Decode(m.Payload()); err == nil {
			ncmd <- p
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	src, got := startHost(t, b.URL(), SparkplugConfig{RebirthInterval: time.Nanosecond})
	wait.For(t, 10*time.Second, "host subscribed", func() bool { return len(b.Server().Topics.Subscribers("spBv1.0/plant/NBIRTH/x").Subscriptions) > 0 })
	e := newEdge(t, b.URL())
	const node, dev = "spBv1.0/plant/%s/tahu-edge-1", "spBv1.0/plant/%s/tahu-edge-1/compressor-9"
	topic := func(f, typ string) string { return strings.Replace(f, "%s", typ, 1) }
	errs := func(reason string) float64 { return testutil.ToFloat64(src.m.Errors.WithLabelValues(reason)) }

	// data before any birth: counted, rebirth requested
	e.pub(topic(dev, "DDATA"), &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(5), Metrics: []*sppb.Payload_Metric{dmetric("", 1, 0, 1)}})
	t.Run("rebirth request on data without birth", func(t *testing.T) {
		select {
		case p := <-ncmd:
			if !sparkplug.RebirthRequested(p) || p.Seq != nil {
				t.Fatalf("NCMD %v", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no NCMD rebirth")
		}
		if errs(SPNotBorn) != 1 {
			t.Fatalf("not_born %v", errs(SPNotBorn))
		}
	})
	bd := &sppb.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sppb.DataType_Int64)), Value: &sppb.Payload_Metric_LongValue{LongValue: 3}}
	e.seq = 0
	e.pub(topic(node, "NBIRTH"), &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(0), Metrics: []*sppb.Payload_Metric{bd,
		dmetric("Node Control/Rebirth", 0, sppb.DataType_Boolean, 0), dmetric("Header/Pressure", 10, sppb.DataType_Double, 100)}})
	e.pub(topic(dev, "DBIRTH"), &sppb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: e.next(), Metrics: []*sppb.Payload_Metric{
		dmetric("Outputs/Pressure", 1, sppb.DataType_Double, 7), // bar per the mapping
		dmetric("Outputs/Temperature", 2, sppb.DataType_Float, 212, "engUnit", "degF"),
		dmetric("Outputs/Loaded", 3, sppb.DataType_Boolean, 1),
		dmetric("Other", 4, sppb.DataType_Double, 1), // not mapped
	}})
	wait.For(t, 10*time.Second, "birth and current values", func() bool { return len(got.births("ac-9")) == 1 && len(got.batches("ac-9")) == 1 })
	t.Run("units convert through the mapping and engUnit", func(t *testing.T) {
		rs := got.batches("ac-9")[0].Readings
		if len(rs) != 3 || rs[0].Signal != "discharge_pressure" || math.Abs(rs[0].Value-0.7) > 1e-9 || rs[0].Unit != "MPa" ||
			rs[1].Signal != "discharge_temp" || math.Abs(rs[1].Value-100) > 1e-9 || rs[2].Value != 2 || rs[2].Text != "loaded" {
			t.Fatalf("readings %+v", rs)
		}
		if bi := got.births("ac-9")[0]; bi.Gateway != "tahu-edge-1" || len(bi.Signals) != 3 {
			t.Fatalf("birth %+v", bi)
		}
	})
	t.Run("node-level metrics map to the device \"\" asset", func(t *testing.T) {
		e.pub(topic(node, "NDATA"), &sppb.Payload{Timestamp: proto.Uint64(2), Seq: e.next(), Metrics: []*sppb.Payload_Metric{dmetric("", 10, 0, 50)}})
		wait.For(t, 10*time.Second, "NDATA batch", func() bool { return len(got.batches("header-1")) == 2 })
		bs := got.batches("header-1")
		// 100 psi and 50 psi in MPa (1 psi = 0.00689476 MPa)
		if len(got.births("header-1")) != 1 || math.Abs(bs[0].Readings[0].Value-0.689476) > 1e-5 || math.Abs(bs[1].Readings[0].Value-0.344738) > 1e-5 {
			t.Fatalf("header batches %+v %+v", bs[0].Readings, bs[1].Readings)
		}
	})
	t.Run("malformed payload counted", func(t *testing.T) {
		e.raw(topic(dev, "DDATA"), []byte{0xff, 0xff, 0xff})
		e.raw("spBv1.0/plant/DDATA/tahu-edge-1", []byte{}) // a device type without device id
		wait.For(t, 10*time.Second, "malformed counted", func() bool { return errs(SPMalformed) == 2 })
	})
	t.Run("unknown alias counted, rebirth requested", func(t *testing.T) {
		e.pub(topic(dev, "DDATA"), &sppb.Payload{Timestamp: proto.Uint64(2), Seq: e.next(), Metrics: []*sppb.Payload_Metric{dmetric("", 99, 0, 1), dmetric("", 1, 0, 8)}})
		select {
		case <-ncmd:
		case <-time.After(10 * time.Second):
			t.Fatal("no NCMD rebirth")
		}
		if errs(SPUnknownAlias) != 1 {
			t.Fatalf("unknown_alias %v", errs(SPUnknownAlias))
		}
		wait.For(t, 10*time.Second, "the known alias still delivered", func() bool {
			bs := got.batches("ac-9")
			return len(bs) == 2 && math.Abs(bs[1].Readings[0].Value-0.8) < 1e-9
		})
	})
	t.Run("seq gap counted, rebirth requested", func(t *testing.T) {
		e.next()
		e.pub(topic(dev, "DDATA"), &sppb.Payload{Timestamp: proto.Uint64(3), Seq: e.next(), Metrics: []*sppb.Payload_Metric{dmetric("", 1, 0, 9)}})
		select {
		case <-ncmd:
		case <-time.After(10 * time.Second):
			t.Fatal("no NCMD rebirth")
		}
		if errs(SPOutOfOrder) != 1 {
			t.Fatalf("out_of_order %v", errs(SPOutOfOrder))
		}
	})
	t.Run("tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-tags-stale", func(t *testing.T) {
		old := &sppb.Payload{Metrics: []*sppb.Payload_Metric{{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sppb.DataType_Int64)), Value: &sppb.Payload_Metric_LongValue{LongValue: 2}}}}
		e.pub(topic(node, "NDEATH"), old) // an older session's will: ignored
		e.pub(topic(node, "NDEATH"), &sppb.Payload{Metrics: []*sppb.Payload_Metric{bd}})
		wait.For(t, 10*time.Second, "deaths", func() bool { return got.deaths("ac-9") == 1 && got.deaths("header-1") == 1 })
		lastAllStale(t, got.batches("header-1"), 1)
		lastAllStale(t, got.batches("ac-9"), 3)
	})
	// the edge node's own (NBIRTH) metrics are the mapping's device "" asset
	t.Run("tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline", func(t *testing.T) {
		if got.deaths("header-1") != 1 {
			t.Fatalf("%d deaths of the node's own asset", got.deaths("header-1"))
		}
	})
	t.Run("tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale", func(t *testing.T) {
		lastAllStale(t, got.batches("header-1"), 1)
		// the host's time: the NDEATH carries no timestamp
		if bs := got.batches("header-1"); time.Since(time.UnixMilli(bs[len(bs)-1].Readings[0].TS)) > time.Minute {
			t.Fatalf("stale at %d, want the host's time now", bs[len(bs)-1].Readings[0].TS)
		}
	})
}

// TestSparkplugHostState: with host_id the source publishes its STATE
// birth retained at QoS 1 and registers the offline will.
func TestSparkplugHostState(t *testing.T) {
	b := startBroker(t)
	startHost(t, b.URL(), SparkplugConfig{HostID: "smelter"})
	states := make(chan paho.Message, 4)
	w := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("w"))
	if tok := w.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { w.Disconnect(0) })
	var st sparkplug.State
	wait.For(t, 10*time.Second, "retained STATE online", func() bool {
		w.Unsubscribe("spBv1.0/STATE/smelter").WaitTimeout(time.Second)
		w.Subscribe("spBv1.0/STATE/smelter", 1, func(_ paho.Client, m paho.Message) { states <- m }).WaitTimeout(time.Second)
		select {
		case m := <-states:
			return json.Unmarshal(m.Payload(), &st) == nil && st.Online && m.Retained()
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	t.Run("tck-id-host-topic-phid-birth-payload", func(t *testing.T) {
		if !st.Online || time.Since(time.UnixMilli(st.Timestamp)) > time.Minute {
			t.Fatalf("STATE %+v", st)
		}
	})
	cl, ok := b.Server().Clients.Get("collector-sp")
	if !ok {
		t.Fatal("collector client not connected")
	}
	t.Run("tck-id-operational-behavior-host-application-connect-will-retained", func(t *testing.T) {
		var ws sparkplug.State
		if cl.Properties.Will.TopicName != "spBv1.0/STATE/smelter" || cl.Properties.Will.Qos != 1 || !cl.Properties.Will.Retain ||
			json.Unmarshal(cl.Properties.Will.Payload, &ws) != nil || ws.Online || ws.Timestamp != st.Timestamp {
			t.Fatalf("will %+v", cl.Properties.Will)
		}
	})
}

// FuzzSparkplugHandle feeds arbitrary topics and payloads to the host
// source: it must never panic.
func FuzzSparkplugHandle(f *testing.F) {
	mp, err := LoadMapping("testdata/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		f.Fatal(err)
	}
	good, _ := sparkplug.Encode(&sppb.Payload{Seq: proto.Uint64(0), Metrics: []*sppb.Payload_Metric{dmetric("bdSeq", 0, sppb.DataType_Int64, 0), dmetric("Outputs/Pressure", 1, sppb.DataType_Double, 3)}})
	f.Add("spBv1.0/plant/NBIRTH/tahu-edge-1", good)
	f.Add("spBv1.0/plant/DBIRTH/tahu-edge-1/compressor-9", good)
	f.Add("spBv1.0/plant/DDATA/tahu-edge-1/compressor-9", good)
	f.Add("spBv1.0/plant/NDEATH/tahu-edge-1", good)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		s, err := NewSparkplug(SparkplugConfig{URL: "tcp://127.0.0.1:1", ClientID: "f", Groups: []string{"plant"}, Mapping: "m"}, mp, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := func(_ context.Context, subject string, data []byte) error { return nil }
		s.Handle(context.Background(), "spBv1.0/plant/NBIRTH/tahu-edge-1", good, h)
		s.Handle(context.Background(), "spBv1.0/plant/DBIRTH/tahu-edge-1/compressor-9", good, h)
		s.Handle(context.Background(), topic, payload, h)
	})
}

// TestSparkplugMappingExample loads configs/sparkplug/mapping.yaml.
func TestSparkplugMappingExample(t *testing.T) {
	m, err := LoadMapping("../../../configs/sparkplug/mapping.yaml", catalog.Default())
	if err != nil {
		t.Fatal(err)
	}
	n, ok := m.Node("plant1", "line4-plc")
	if !ok || n.devices["Compressor 9"] == nil || n.devices[""] == nil || n.devices["Compressor 9"].metrics["Outputs/Loaded"].index[1] != 2 {
		t.Fatalf("mapping %+v", n)
	}
}
