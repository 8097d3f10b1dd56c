package mqtt

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// packet is one packet a client sent to the broker, as the broker read it.
type packet struct {
	client  string
	typ     byte
	topic   string
	qos     byte
	retain  bool
	payload []byte
	connect packets.ConnectParams
	filters packets.Subscriptions
	at      time.Time // when the broker read it (monotonic: orders packets across brokers)
}

// recorder is a mochi hook recording every packet clients send, in order.
type recorder struct {
	mochi.HookBase
	mu   sync.Mutex
	pkts []packet
}

func (r *recorder) ID() string { return "recorder" }
func (r *recorder) Provides(b byte) bool {
	return b == mochi.OnPacketRead
}

func (r *recorder) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	p := packet{client: cl.ID, typ: pk.FixedHeader.Type, topic: pk.TopicName, qos: pk.FixedHeader.Qos,
		retain: pk.FixedHeader.Retain, payload: bytes.Clone(pk.Payload), at: time.Now()}
	if pk.FixedHeader.Type == packets.Subscribe {
		p.filters = append(p.filters, pk.Filters...)
	}
	if pk.FixedHeader.Type == packets.Connect {
		p.client = pk.Connect.ClientIdentifier
		p.connect = pk.Connect
		p.connect.WillPayload = bytes.Clone(pk.Connect.WillPayload)
	}
	r.mu.Lock()
	r.pkts = append(r.pkts, p)
	r.mu.Unlock()
	return pk, nil
}

// subscriptions returns the filters client subscribed to, with their QoS.
func (r *recorder) subscriptions(client string) map[string]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]byte{}
	for _, p := range r.pkts {
		if p.client == client && p.typ == packets.Subscribe {
			for _, f := range p.filters {
				out[f.Filter] = f.Qos
			}
		}
	}
	return out
}

// count returns how many packets of type typ client sent.
func (r *recorder) count(client string, typ byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pkts {
		if p.client == client && p.typ == typ {
			n++
		}
	}
	return n
}

// of returns the CONNECT and PUBLISH packets of client, in order.
func (r *recorder) of(client string) []packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []packet
	for _, p := range r.pkts {
		if p.client == client && (p.typ == packets.Connect || p.typ == packets.Publish) {
			out = append(out, p)
		}
	}
	return out
}

func decode(t *testing.T, b []byte) *sppb.Payload {
	t.Helper()
	p, err := sparkplug.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func metricByName(p *sppb.Payload, name string) *sppb.Payload_Metric {
	for _, m := range p.GetMetrics() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

func fptr(v float64) *float64 { return &v }

var (
	ac1 = telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "plant", "u", "c", "_"}}
	ac2 = telemetry.Asset{ID: "ac-2", Class: "air_compressor", Path: []string{"acme", "plant", "u", "c", "_"}}
)

func birthEnv(t *testing.T, a telemetry.Asset, seq uint64) telemetry.Envelope {
	t.Helper()
	b, err := telemetry.MarshalBirth(&telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-test", Seq: seq, Asset: a.ToJSON(), TSGW: 1700000000000,
		Signals: []telemetry.SignalInfo{
			{Signal: "discharge_pressure", Unit: "MPa", Min: fptr(0), Max: fptr(1.6), IntervalMS: 1000, Src: "modbus:1:hr:0"},
			{Signal: "load_state", Enum: []string{"off", "unloaded", "loaded"}, IntervalMS: 1000},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindBirth), MsgID: telemetry.MsgID("gw-test", seq), Data: b}
}

func batchEnv(a telemetry.Asset, seq uint64, rs ...telemetry.Reading) telemetry.Envelope {
	// gateway time now: a batch from before the session began is backlog (historical)
	b := telemetry.Batch{Gateway: "gw-test", Seq: seq, Asset: a, TSGW: time.Now().UnixMilli(), Readings: rs}
	return telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindData), MsgID: b.MsgID(), Data: b.AppendJSON(nil)}
}

func deathEnv(t *testing.T, a telemetry.Asset, seq uint64) telemetry.Envelope {
	t.Helper()
	b, err := telemetry.MarshalDeath(&telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw-test", Seq: seq, Asset: a.ToJSON(), TSGW: 1700000000000, Reason: "no answer"})
	if err != nil {
		t.Fatal(err)
	}
	return telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindDeath), MsgID: telemetry.MsgID("gw-test", seq), Data: b}
}

func startRecorded(t *testing.T) (*brokers.MQTT, *recorder) {
	t.Helper()
	b := startMQTT(t, brokers.MQTTOptions{})
	rec := &recorder{}
	if err := b.Server().AddHook(rec, nil); err != nil {
		t.Fatal(err)
	}
	return b, rec
}

func spConfig(url string) Config {
	return Config{URL: url, Encoding: EncodingSparkplug, Timeout: 5 * time.Second}
}

func publishOK(t *testing.T, u *Uplink, msgs ...telemetry.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	wait.For(t, 10*time.Second, "publish accepted", func() bool {
		err = u.Publish(ctx, msgs)
		return err == nil
	})
}

// TestSparkplugEdgeNodeConformance runs the gateway as a Sparkplug edge
// node against an embedded broker that records every packet, and checks
// the specification's normative statements an edge node touches, one
// subtest per TCK assertion id (docs/sparkplug.md lists them).
func TestSparkplugEdgeNodeConformance(t *testing.T) {
	b, rec := startRecorded(t)
	r := runUplink(t, spConfig(b.URL()), nil)
	u := r.u
	wait.For(t, 10*time.Second, "connected", u.Ready)

	good := telemetry.Reading{Signal: "discharge_pressure", Value: 0.71, Unit: "MPa", Quality: telemetry.QualityGood, TS: 1700000000100, Src: "modbus:1:hr:0"}
	bad := telemetry.Reading{Signal: "load_state", Quality: telemetry.QualityBad, TS: 1700000000100, Status: 2}
	stale := telemetry.Reading{Signal: "discharge_pressure", Quality: telemetry.QualityStale, TS: 1700000000200}
	// two polls of ac-2 in one batch, the later first
	later, earlier := good, good
	later.TS, earlier.TS = 1700000000050, 1700000000040
	publishOK(t, u, birthEnv(t, ac1, 1), batchEnv(ac1, 2, good, bad), batchEnv(ac2, 3, good), batchEnv(ac1, 4, stale), deathEnv(t, ac1, 5),
		batchEnv(ac2, 6, later, earlier))
	// enough data for seq to wrap
	var many []telemetry.Envelope
	for i := range 300 {
		g := good
		g.Value = float64(i)
		many = append(many, batchEnv(ac2, uint64(10+i), g))
	}
	publishOK(t, u, many...)

	const client = "gw-test"
	pk := rec.of(client)
	if len(pk) < 2 || pk[0].typ != packets.Connect {
		t.Fatalf("recorded %d packets; first not CONNECT", len(pk))
	}
	conn := pk[0].connect
	pubs := pk[1:]
	types := func(ps []packet) []sparkplug.MessageType {
		var out []sparkplug.MessageType
		for _, p := range ps {
			tp, err := sparkplug.ParseTopic(p.topic)
			if err != nil {
				t.Fatalf("topic %q: %v", p.topic, err)
			}
			out = append(out, tp.Type)
		}
		return out
	}
	ts := types(pubs)

	t.Run("tck-id-principles-persistence-clean-session-311", func(t *testing.T) {
		if !conn.Clean {
			t.Fatal("CONNECT without Clean Session")
		}
	})
	runAll(t, []string{"tck-id-message-flow-edge-node-birth-publish-will-message", "tck-id-payloads-ndeath-will-message"}, func(t *testing.T) {
		if !conn.WillFlag {
			t.Fatal("CONNECT without a will")
		}
	})
	runAll(t, []string{"tck-id-message-flow-edge-node-birth-publish-will-message-topic", "tck-id-topics-ndeath-topic"}, func(t *testing.T) {
		if conn.WillTopic != "spBv1.0/plant/NDEATH/gw-test" {
			t.Fatalf("will topic %q", conn.WillTopic)
		}
	})
	will := decode(t, conn.WillPayload)
	runAll(t, []string{"tck-id-payloads-ndeath-will-message-qos", "tck-id-message-flow-edge-node-birth-publish-will-message-qos"}, func(t *testing.T) {
		if conn.WillQos != 1 {
			t.Fatalf("will QoS %d", conn.WillQos)
		}
	})
	runAll(t, []string{"tck-id-payloads-ndeath-will-message-retain", "tck-id-message-flow-edge-node-birth-publish-will-message-will-retained"}, func(t *testing.T) {
		if conn.WillRetain {
			t.Fatal("will retained")
		}
	})
	runAll(t, []string{"tck-id-topics-ndeath-payload", "tck-id-message-flow-edge-node-birth-publish-will-message-payload"}, func(t *testing.T) {
		if len(will.Metrics) != 1 || will.Metrics[0].GetName() != "bdSeq" || will.Metrics[0].GetDatatype() != uint32(sppb.DataType_Int64) {
			t.Fatalf("NDEATH metrics %v", will.Metrics)
		}
	})
	runAll(t, []string{"tck-id-topics-ndeath-seq", "tck-id-payloads-ndeath-seq"}, func(t *testing.T) {
		if will.Seq != nil {
			t.Fatal("NDEATH has a seq")
		}
	})
	runAll(t, []string{"tck-id-principles-birth-certificates-order", "tck-id-message-flow-edge-node-birth-publish-connect"}, func(t *testing.T) {
		if ts[0] != sparkplug.NBIRTH {
			t.Fatalf("first message %s", ts[0])
		}
	})
	nbirth := decode(t, pubs[0].payload)
	t.Run("tck-id-topics-nbirth-topic", func(t *testing.T) {
		if pubs[0].topic != "spBv1.0/plant/NBIRTH/gw-test" {
			t.Fatalf("topic %q", pubs[0].topic)
		}
	})
	runAll(t, []string{"tck-id-topics-nbirth-seq-num", "tck-id-payloads-sequence-num-req-nbirth"}, func(t *testing.T) {
		if nbirth.Seq == nil || *nbirth.Seq != 0 {
			t.Fatalf("NBIRTH seq %v", nbirth.Seq)
		}
	})
	t.Run("tck-id-topics-nbirth-timestamp", func(t *testing.T) {
		if d := time.Since(time.UnixMilli(int64(nbirth.GetTimestamp()))); d < 0 || d > time.Minute {
			t.Fatalf("NBIRTH timestamp %d is %v from now", nbirth.GetTimestamp(), d)
		}
	})
	runAll(t, []string{"tck-id-topics-nbirth-bdseq-matching", "tck-id-topics-nbirth-bdseq-included", "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-bdSeq", "tck-id-payloads-nbirth-bdseq-repeat"}, func(t *testing.T) {
		bd, ok := sparkplug.BdSeq(nbirth)
		wbd, _ := sparkplug.BdSeq(will)
		if !ok || bd != wbd || bd != 0 {
			t.Fatalf("NBIRTH bdSeq %d (%v), will's %d; the first connection's must be 0", bd, ok, wbd)
		}
	})
	runAll(t, []string{"tck-id-topics-nbirth-rebirth-metric", "tck-id-operational-behavior-data-commands-rebirth-name", "tck-id-operational-behavior-data-commands-rebirth-datatype", "tck-id-operational-behavior-data-commands-rebirth-value", "tck-id-payloads-nbirth-rebirth-req"}, func(t *testing.T) {
		m := metricByName(nbirth, "Node Control/Rebirth")
		if m == nil || m.GetDatatype() != uint32(sppb.DataType_Boolean) || m.GetBooleanValue() || m.IsNull != nil && *m.IsNull {
			t.Fatalf("rebirth metric %v", m)
		}
	})
	t.Run("tck-id-operational-behavior-data-commands-rebirth-name-aliases", func(t *testing.T) {
		if m := metricByName(nbirth, "Node Control/Rebirth"); m.Alias != nil {
			t.Fatal("rebirth metric has an alias")
		}
	})
	for _, id := range []string{"tck-id-topics-nbirth-mqtt", "tck-id-topics-dbirth-mqtt", "tck-id-topics-ddata-mqtt", "tck-id-topics-ddeath-mqtt"} {
		t.Run(id, func(t *testing.T) {
			want := sparkplug.MessageType(upper(id[len("tck-id-topics-") : len(id)-len("-mqtt")]))
			n := 0
			for i, p := range pubs {
				if ts[i] == want {
					n++
					if p.qos != 0 || p.retain {
						t.Fatalf("%s at QoS %d retain %v", p.topic, p.qos, p.retain)
					}
				}
			}
			if n == 0 {
				t.Fatalf("no %s published", want)
			}
		})
	}
	// seq: 0 at NBIRTH, then +1 per message, 255 -> 0
	runAll(t, []string{"tck-id-payloads-sequence-num-incrementing", "tck-id-payloads-sequence-num-always-included"}, func(t *testing.T) {
		var prev uint64
		wrapped := false
		for i, p := range pubs {
			pl := decode(t, p.payload)
			if pl.Seq == nil {
				t.Fatalf("message %d (%s) has no seq", i, ts[i])
			}
			if i > 0 && *pl.Seq != sparkplug.NextSeq(prev) {
				t.Fatalf("message %d (%s): seq %d after %d", i, ts[i], *pl.Seq, prev)
			}
			if i > 0 && *pl.Seq == 0 {
				wrapped = true
			}
			prev = *pl.Seq
		}
		if !wrapped {
			t.Fatal("seq never wrapped")
		}
	})
	// Statements the specification repeats per message type: each id runs
	// the check on the messages of its type.
	perType := []struct {
		ids []string
		typ sparkplug.MessageType
	}{
		{[]string{"tck-id-payloads-nbirth-qos", "tck-id-payloads-nbirth-retain", "tck-id-message-flow-edge-node-birth-publish-nbirth-qos",
			"tck-id-message-flow-edge-node-birth-publish-nbirth-retained", "tck-id-message-flow-edge-node-birth-publish-nbirth-topic",
			"tck-id-payloads-nbirth-timestamp", "tck-id-payloads-nbirth-seq", "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-seq",
			"tck-id-message-flow-edge-node-birth-publish-nbirth-payload"}, sparkplug.NBIRTH},
		{[]string{"tck-id-payloads-dbirth-qos", "tck-id-payloads-dbirth-retain", "tck-id-message-flow-device-birth-publish-dbirth-qos",
			"tck-id-message-flow-device-birth-publish-dbirth-retained", "tck-id-topics-dbirth-topic", "tck-id-message-flow-device-birth-publish-dbirth-topic",
			"tck-id-message-flow-device-birth-publish-dbirth-match-edge-node-topic", "tck-id-message-flow-device-birth-publish-dbirth-payload",
			"tck-id-topics-dbirth-timestamp", "tck-id-payloads-dbirth-timestamp", "tck-id-topics-dbirth-seq", "tck-id-payloads-dbirth-seq",
			"tck-id-payloads-dbirth-seq-inc", "tck-id-message-flow-device-birth-publish-dbirth-payload-seq"}, sparkplug.DBIRTH},
		{[]string{"tck-id-payloads-ddata-qos", "tck-id-payloads-ddata-retain", "tck-id-topics-ddata-topic", "tck-id-topics-ddata-timestamp",
			"tck-id-payloads-ddata-timestamp", "tck-id-topics-ddata-seq-num", "tck-id-payloads-ddata-seq", "tck-id-payloads-ddata-seq-inc"}, sparkplug.DDATA},
		{[]string{"tck-id-topics-ddeath-topic", "tck-id-payloads-ddeath-timestamp", "tck-id-topics-ddeath-seq-num",
			"tck-id-payloads-ddeath-seq", "tck-id-payloads-ddeath-seq-inc", "tck-id-payloads-ddeath-seq-number"}, sparkplug.DDEATH},
	}
	for _, pt := range perType {
		for _, id := range pt.ids {
			t.Run(id, func(t *testing.T) {
				n := 0
				for i, p := range pubs {
					if ts[i] != pt.typ {
						continue
					}
					n++
					tp, _ := sparkplug.ParseTopic(p.topic)
					pl := decode(t, p.payload)
					switch {
					case p.qos != 0 || p.retain:
						t.Fatalf("%s at QoS %d retain %v", p.topic, p.qos, p.retain)
					case tp.Group != "plant" || tp.Node != "gw-test" || tp.Type.DeviceLevel() != (tp.Device != ""):
						t.Fatalf("topic %s", p.topic)
					case pl.Timestamp == nil || time.Since(time.UnixMilli(int64(*pl.Timestamp))) > time.Minute:
						t.Fatalf("%s payload timestamp %v", p.topic, pl.Timestamp)
					case pl.Seq == nil || *pl.Seq > 255:
						t.Fatalf("%s seq %v", p.topic, pl.Seq)
					case i == 0 && *pl.Seq != 0:
						t.Fatalf("NBIRTH seq %d", *pl.Seq)
					case i > 0 && *pl.Seq != sparkplug.NextSeq(*decode(t, pubs[i-1].payload).Seq):
						t.Fatalf("%s seq %d does not follow the previous message's", p.topic, *pl.Seq)
					}
				}
				if n == 0 {
					t.Fatalf("no %s published", pt.typ)
				}
			})
		}
	}
	t.Run("tck-id-message-flow-device-birth-publish-nbirth-wait", func(t *testing.T) {
		if i := slices.Index(ts, sparkplug.DBIRTH); i < slices.Index(ts, sparkplug.NBIRTH) {
			t.Fatal("DBIRTH before NBIRTH")
		}
	})
	t.Run("tck-id-message-flow-edge-node-ncmd-subscribe", func(t *testing.T) {
		if q, ok := rec.subscriptions(client)["spBv1.0/plant/NCMD/gw-test"]; !ok || q != 1 {
			t.Fatalf("NCMD subscription %v QoS %d", ok, q)
		}
	})
	t.Run("tck-id-payloads-ndeath-bdseq", func(t *testing.T) {
		bd, _ := sparkplug.BdSeq(nbirth)
		if wbd, ok := sparkplug.BdSeq(will); !ok || wbd != bd {
			t.Fatalf("will bdSeq %d, NBIRTH %d", wbd, bd)
		}
	})
	t.Run("tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq", func(t *testing.T) {
		m := will.Metrics[0]
		if m.GetDatatype() != uint32(sppb.DataType_Int64) || m.GetLongValue() != 0 {
			t.Fatalf("will bdSeq %v", m)
		}
	})

	runAll(t, []string{"tck-id-topics-nbirth-metrics", "tck-id-topics-nbirth-metric-reqs", "tck-id-operational-behavior-data-publish-nbirth",
		"tck-id-operational-behavior-data-publish-nbirth-values"}, func(t *testing.T) {
		for _, m := range nbirth.Metrics {
			if m.Name == nil || m.Datatype == nil || (m.Value == nil) != m.GetIsNull() {
				t.Fatalf("NBIRTH metric %v: name, datatype and a value (or is_null) required", m)
			}
		}
		if len(nbirth.Metrics) != 2 {
			t.Fatalf("NBIRTH has %d metrics; the node has bdSeq and Node Control/Rebirth", len(nbirth.Metrics))
		}
	})
	runAll(t, []string{"tck-id-topic-structure"}, func(t *testing.T) {
		for _, p := range pubs {
			if _, err := sparkplug.ParseTopic(p.topic); err != nil || !strings.HasPrefix(p.topic, "spBv1.0/plant/") {
				t.Fatalf("topic %q: %v", p.topic, err)
			}
		}
	})
	runAll(t, []string{"tck-id-payloads-metric-propertyvalue-type-req", "tck-id-payloads-metric-propertyvalue-type-type",
		"tck-id-payloads-metric-propertyvalue-type-value"}, func(t *testing.T) {
		n := 0
		for i, p := range pubs {
			if ts[i] != sparkplug.DBIRTH {
				continue
			}
			for _, m := range decode(t, p.payload).Metrics {
				for _, v := range m.GetProperties().GetValues() {
					n++
					if v.Type == nil || v.GetType() < 1 || v.GetType() > uint32(sppb.DataType_PropertySetList) {
						t.Fatalf("%s property type %v", m.GetName(), v.Type)
					}
				}
			}
		}
		if n == 0 {
			t.Fatal("no DBIRTH properties")
		}
	})
	dbirth1 := -1
	for i, p := range pubs {
		if ts[i] == sparkplug.DBIRTH && p.topic == "spBv1.0/plant/DBIRTH/gw-test/ac-1" {
			dbirth1 = i
			break
		}
	}
	if dbirth1 < 0 {
		t.Fatal("no DBIRTH for ac-1")
	}
	db := decode(t, pubs[dbirth1].payload)
	t.Run("tck-id-topics-dbirth-metrics", func(t *testing.T) {
		m := metricByName(db, "discharge_pressure")
		if m == nil || m.GetDatatype() != uint32(sppb.DataType_Double) || !m.GetIsNull() {
			t.Fatalf("DBIRTH discharge_pressure %v (no value known yet: is_null)", m)
		}
		if u, _ := sparkplug.Property(m, "engUnit"); u == nil || u.GetStringValue() != "MPa" {
			t.Fatalf("engUnit %v", u)
		}
		if h, _ := sparkplug.Property(m, "engHigh"); h == nil || h.GetDoubleValue() != 1.6 {
			t.Fatalf("engHigh %v", h)
		}
		if l, _ := sparkplug.Property(m, "engLow"); l == nil || l.GetDoubleValue() != 0 {
			t.Fatalf("engLow %v", l)
		}
	})
	// The ids in every topic the node published: UTF-8, no MQTT wildcard
	// or level separator (the parser splits on '/', so a device id with
	// one would not come back whole).
	ids := func(t *testing.T, f func(tp sparkplug.Topic) string) {
		t.Helper()
		n := 0
		for _, p := range pubs {
			tp, err := sparkplug.ParseTopic(p.topic)
			if err != nil {
				t.Fatal(err)
			}
			id := f(tp)
			if id == "" {
				continue
			}
			n++
			if !utf8.ValidString(id) || strings.ContainsAny(id, "+#/\x00") || !sparkplug.ValidID(id) {
				t.Fatalf("id %q in topic %q", id, p.topic)
			}
		}
		if n == 0 {
			t.Fatal("no topic carried the id")
		}
	}
	t.Run("tck-id-intro-group-id-string", func(t *testing.T) { ids(t, func(tp sparkplug.Topic) string { return tp.Group }) })
	t.Run("tck-id-intro-edge-node-id-string", func(t *testing.T) { ids(t, func(tp sparkplug.Topic) string { return tp.Node }) })
	runAll(t, []string{"tck-id-intro-device-id-string", "tck-id-intro-device-id-chars"}, func(t *testing.T) {
		ids(t, func(tp sparkplug.Topic) string { return tp.Device })
		devs := map[string]bool{}
		for _, p := range pubs {
			if tp, _ := sparkplug.ParseTopic(p.topic); tp.Device != "" {
				devs[tp.Device] = true
			}
		}
		if !devs["ac-1"] || !devs["ac-2"] || len(devs) != 2 {
			t.Fatalf("device ids %v, want the asset ids ac-1 and ac-2", devs)
		}
	})
	runAll(t, []string{"tck-id-operational-behavior-data-publish-dbirth-order", "tck-id-operational-behavior-data-publish-nbirth-order"}, func(t *testing.T) {
		// metric values in chronological order in every birth and data message
		n := 0
		for _, p := range pubs {
			ms := decode(t, p.payload).Metrics
			if !slices.IsSortedFunc(ms, func(a, b *sppb.Payload_Metric) int { return cmp.Compare(a.GetTimestamp(), b.GetTimestamp()) }) {
				t.Fatalf("%s: metric timestamps out of order", p.topic)
			}
			if len(ms) > 1 && ms[0].GetTimestamp() != ms[1].GetTimestamp() {
				n++
			}
		}
		if n == 0 {
			t.Fatal("no message with metrics of two instants")
		}
	})
	t.Run("tck-id-topics-ddata-payload", func(t *testing.T) {
		// the first DDATA of ac-1 carries both readings of its first batch
		// (discharge_pressure and load_state), by their DBIRTH aliases
		i := slices.IndexFunc(pubs, func(p packet) bool { return p.topic == "spBv1.0/plant/DDATA/gw-test/ac-1" })
		if i < 0 {
			t.Fatal("no DDATA for ac-1")
		}
		want := map[uint64]bool{metricByName(db, "discharge_pressure").GetAlias(): true, metricByName(db, "load_state").GetAlias(): true}
		got := map[uint64]bool{}
		for _, m := range decode(t, pubs[i].payload).Metrics {
			got[m.GetAlias()] = true
		}
		if len(got) != 2 || !got[metricByName(db, "discharge_pressure").GetAlias()] || !got[metricByName(db, "load_state").GetAlias()] {
			t.Fatalf("DDATA aliases %v, want %v", got, want)
		}
		for j, p := range pubs {
			if ts[j] == sparkplug.DDATA && len(decode(t, p.payload).Metrics) == 0 {
				t.Fatalf("DDATA %d without metrics", j)
			}
		}
	})
	t.Run("tck-id-payloads-alias-birth-requirement", func(t *testing.T) {
		for _, m := range db.Metrics {
			if m.Name == nil || m.Alias == nil {
				t.Fatalf("DBIRTH metric without name or alias: %v", m)
			}
		}
	})
	runAll(t, []string{"tck-id-payloads-metric-datatype-req", "tck-id-payloads-metric-datatype-value-type", "tck-id-payloads-metric-datatype-value"}, func(t *testing.T) {
		for _, m := range db.Metrics {
			if m.Datatype == nil || m.GetDatatype() < 1 || m.GetDatatype() > uint32(sppb.DataType_DateTimeArray) {
				t.Fatalf("DBIRTH metric %s datatype %v", m.GetName(), m.Datatype)
			}
		}
	})
	t.Run("tck-id-payloads-name-birth-data-requirement", func(t *testing.T) {
		for i, p := range pubs {
			if ts[i] == sparkplug.DBIRTH || ts[i] == sparkplug.DDATA || ts[i] == sparkplug.NBIRTH {
				for _, m := range decode(t, p.payload).Metrics {
					if m.Timestamp == nil {
						t.Fatalf("%s metric without timestamp", ts[i])
					}
				}
			}
		}
	})
	aliases := map[uint64]string{}
	t.Run("tck-id-payloads-alias-uniqueness", func(t *testing.T) {
		for i, p := range pubs {
			if ts[i] != sparkplug.DBIRTH {
				continue
			}
			tp, _ := sparkplug.ParseTopic(p.topic)
			for _, m := range decode(t, p.payload).Metrics {
				key := tp.Device + "/" + m.GetName()
				if k, ok := aliases[m.GetAlias()]; ok && k != key {
					t.Fatalf("alias %d for %s and %s", m.GetAlias(), k, key)
				}
				aliases[m.GetAlias()] = key
			}
		}
	})
	// the DDATA that follows ac-1's DBIRTH
	dd := decode(t, pubs[dbirth1+1].payload)
	runAll(t, []string{"tck-id-payloads-alias-data-cmd-requirement", "tck-id-payloads-name-requirement"}, func(t *testing.T) {
		if ts[dbirth1+1] != sparkplug.DDATA || len(dd.Metrics) != 2 {
			t.Fatalf("after DBIRTH: %s with %d metrics", ts[dbirth1+1], len(dd.Metrics))
		}
		for _, m := range dd.Metrics {
			if m.Name != nil || m.Alias == nil {
				t.Fatalf("DDATA metric %v", m)
			}
		}
	})
	t.Run("tck-id-payloads-metric-datatype-not-req", func(t *testing.T) {
		for _, m := range dd.Metrics {
			if m.Datatype != nil {
				t.Fatal("DDATA metric with datatype")
			}
		}
	})
	t.Run("tck-id-payloads-propertyset-quality-value-value", func(t *testing.T) {
		if q := sparkplug.MetricQuality(dd.Metrics[0]); q != sparkplug.QualityGood || dd.Metrics[0].GetDoubleValue() != 0.71 {
			t.Fatalf("good reading: quality %d value %v", q, dd.Metrics[0].GetDoubleValue())
		}
		m := dd.Metrics[1]
		q, _ := sparkplug.Property(m, "Quality")
		if q == nil || q.GetType() != uint32(sppb.DataType_Int32) || q.GetIntValue() != 0 || !m.GetIsNull() {
			t.Fatalf("bad reading: quality %v null %v", q, m.GetIsNull())
		}
		if s, _ := sparkplug.Property(m, "statusCode"); s == nil || s.GetLongValue() != 2 {
			t.Fatalf("raw status %v", s)
		}
	})
	runAll(t, []string{"tck-id-payloads-timestamp-in-UTC", "tck-id-payloads-metric-timestamp-in-UTC"}, func(t *testing.T) {
		if dd.Metrics[0].GetTimestamp() != 1700000000100 {
			t.Fatalf("metric timestamp %d, want the reading's UTC ms", dd.Metrics[0].GetTimestamp())
		}
	})
	t.Run("tck-id-operational-behavior-device-ddeath", func(t *testing.T) {
		i := slices.Index(ts, sparkplug.DDEATH)
		if i < 0 || pubs[i].topic != "spBv1.0/plant/DDEATH/gw-test/ac-1" {
			t.Fatalf("no DDEATH for ac-1 (%v)", i)
		}
		// the stale reading before it carries Quality 500
		st := decode(t, pubs[i-1].payload).Metrics[0]
		if q := sparkplug.MetricQuality(st); q != sparkplug.QualityStale || !st.GetIsNull() {
			t.Fatalf("stale reading quality %d", q)
		}
	})
	runAll(t, []string{"tck-id-operational-behavior-data-publish-dbirth", "tck-id-topics-dbirth-metric-reqs"}, func(t *testing.T) {
		// ac-2 sent data without a birth: a DBIRTH listing its metric comes first
		i := slices.IndexFunc(pubs, func(p packet) bool { return p.topic == "spBv1.0/plant/DBIRTH/gw-test/ac-2" })
		j := slices.IndexFunc(pubs, func(p packet) bool { return p.topic == "spBv1.0/plant/DDATA/gw-test/ac-2" })
		if i < 0 || j < i || metricByName(decode(t, pubs[i].payload), "discharge_pressure") == nil {
			t.Fatalf("ac-2 DBIRTH at %d, DDATA at %d", i, j)
		}
	})

	// Rebirth on NCMD: NBIRTH with the same bdSeq, then DBIRTHs.
	host := subscribe(t, b.URL(), "host", true, "", nil)
	req, _ := sparkplug.Encode(sparkplug.RebirthRequest(time.Now().UnixMilli()))
	if tok := host.c.Publish("spBv1.0/plant/NCMD/gw-test", 0, false, req); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	n0 := len(pubs)
	wait.For(t, 10*time.Second, "rebirth", func() bool { return len(rec.of(client)) > n0+2 })
	publishOK(t, u, batchEnv(ac2, 400, good))
	pk = rec.of(client)
	re := pk[n0+1:]
	rts := types(re)
	runAll(t, []string{"tck-id-operational-behavior-data-commands-rebirth-action-2", "tck-id-operational-behavior-data-commands-rebirth-action-1"}, func(t *testing.T) {
		if rts[0] != sparkplug.NBIRTH || rts[1] != sparkplug.DBIRTH || re[1].topic != "spBv1.0/plant/DBIRTH/gw-test/ac-2" {
			t.Fatalf("after NCMD: %v", rts)
		}
		// ac-1 is dead: no DBIRTH for it
		for _, p := range re {
			if p.topic == "spBv1.0/plant/DBIRTH/gw-test/ac-1" {
				t.Fatal("DBIRTH for a dead device")
			}
		}
	})
	t.Run("tck-id-operational-behavior-data-commands-rebirth-action-3", func(t *testing.T) {
		bd, _ := sparkplug.BdSeq(decode(t, re[0].payload))
		if bd != 0 {
			t.Fatalf("rebirth bdSeq %d, want the connection's 0", bd)
		}
	})
	t.Run("tck-id-operational-behavior-data-publish-dbirth-values", func(t *testing.T) {
		m := metricByName(decode(t, re[1].payload), "discharge_pressure")
		if m.GetIsNull() || m.GetDoubleValue() != 299 {
			t.Fatalf("rebirth DBIRTH value %v, want the last value 299", m)
		}
	})

	// A lost connection: a new CONNECT with bdSeq+1, births before data.
	n1 := len(pk)
	b.DropClient(client)
	publishOK(t, u, batchEnv(ac2, 401, good))
	pk = rec.of(client)
	after := pk[n1:]
	ci := slices.IndexFunc(after, func(p packet) bool { return p.typ == packets.Connect })
	if ci < 0 {
		t.Fatal("no reconnect recorded")
	}
	t.Run("tck-id-topics-nbirth-bdseq-increment", func(t *testing.T) {
		bd, _ := sparkplug.BdSeq(decode(t, after[ci].connect.WillPayload))
		if bd != 1 {
			t.Fatalf("second CONNECT's bdSeq %d", bd)
		}
	})
	runAll(t, []string{"tck-id-payloads-dbirth-order", "tck-id-payloads-ddata-order"}, func(t *testing.T) {
		at := types(after[ci+1:])
		if len(at) < 3 || at[0] != sparkplug.NBIRTH || at[1] != sparkplug.DBIRTH || at[len(at)-1] != sparkplug.DDATA {
			t.Fatalf("after reconnect: %v", at)
		}
		bd, _ := sparkplug.BdSeq(decode(t, after[ci+1].payload))
		if bd != 1 {
			t.Fatalf("NBIRTH bdSeq %d after reconnect", bd)
		}
	})

	// Intentional disconnect: NDEATH before DISCONNECT.
	r.shutdown(t)()
	pk = rec.of(client)
	runAll(t, []string{"tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath", "tck-id-payloads-ndeath-will-message-publisher", "tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt311", "tck-id-operational-behavior-edge-node-intentional-disconnect-packet"}, func(t *testing.T) {
		last := pk[len(pk)-1]
		if last.topic != "spBv1.0/plant/NDEATH/gw-test" {
			t.Fatalf("last message %q", last.topic)
		}
		bd, _ := sparkplug.BdSeq(decode(t, last.payload))
		if bd != 1 {
			t.Fatalf("NDEATH bdSeq %d", bd)
		}
	})
}

// runAll runs f as a subtest under each TCK assertion id the specification
// states the checked behaviour with (it repeats statements per section).
func runAll(t *testing.T, ids []string, f func(t *testing.T)) {
	t.Helper()
	for _, id := range ids {
		t.Run(id, f)
	}
}

func upper(s string) string { return string(bytes.ToUpper([]byte(s))) }

// TestSparkplugPrimaryHost: with primary_host_id the node waits for the
// host's STATE online before its births, ends the session when the host
// goes offline and re-births when it returns.
func TestSparkplugPrimaryHost(t *testing.T) {
	b, rec := startRecorded(t)
	cfg := spConfig(b.URL())
	cfg.Sparkplug.PrimaryHostID = "scada"
	r := runUplink(t, cfg, nil)
	host := subscribe(t, b.URL(), "scada-host", true, "", nil)
	state := func(online bool, ts int64) {
		p, _ := json.Marshal(sparkplug.State{Online: online, Timestamp: ts})
		if tok := host.c.Publish(sparkplug.StateTopic("scada"), 1, true, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	wait.For(t, 10*time.Second, "subscribed to the host's STATE", func() bool {
		_, ok := rec.subscriptions("gw-test")[sparkplug.StateTopic("scada")]
		return ok
	})
	ctx := context.Background()
	t.Run("tck-id-message-flow-edge-node-birth-publish-phid-wait-id", func(t *testing.T) {
		// the host is known by the last token of its STATE topic: the node
		// listens to spBv1.0/STATE/scada alone, so no other host's STATE
		// reaches it
		for f := range rec.subscriptions("gw-test") {
			if strings.HasPrefix(f, "spBv1.0/STATE/") && f != "spBv1.0/STATE/scada" {
				t.Fatalf("subscribed to %q", f)
			}
		}
	})
	// handled runs f (a STATE publish) and waits until the node has handled
	// the message: paho acknowledges a QoS 1 message after its handler
	// returns, so the node's PUBACK is the sync point
	handled := func(f func()) {
		t.Helper()
		n := rec.count("gw-test", packets.Puback)
		f()
		wait.For(t, 10*time.Second, "STATE handled", func() bool { return rec.count("gw-test", packets.Puback) > n })
	}
	noBirth := func(t *testing.T) {
		t.Helper()
		for _, p := range rec.of("gw-test") {
			if p.typ == packets.Publish {
				t.Fatalf("published %s before an online STATE", p.topic)
			}
		}
	}
	t.Run("tck-id-message-flow-edge-node-birth-publish-phid-wait-online", func(t *testing.T) {
		handled(func() { state(false, 500) })
		noBirth(t)
	})
	t.Run("tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp", func(t *testing.T) {
		handled(func() { state(true, 400) }) // older than the offline at 500
		noBirth(t)
	})
	t.Run("tck-id-message-flow-edge-node-birth-publish-phid-wait", func(t *testing.T) {
		if err := r.u.Publish(ctx, []telemetry.Envelope{batchEnv(ac1, 1, telemetry.Reading{Signal: "x", TS: 1})}); err == nil {
			t.Fatal("published before the primary host was online")
		}
		for _, p := range rec.of("gw-test") {
			if p.typ == packets.Publish {
				t.Fatalf("published %s before the host was online", p.topic)
			}
		}
	})
	state(true, 1000)
	wait.For(t, 10*time.Second, "NBIRTH after host online", func() bool {
		return slices.ContainsFunc(rec.of("gw-test"), func(p packet) bool { return p.topic == "spBv1.0/plant/NBIRTH/gw-test" })
	})
	publishOK(t, r.u, batchEnv(ac1, 2, telemetry.Reading{Signal: "discharge_pressure", Value: 1, TS: 2}))
	t.Run("tck-id-operational-behavior-edge-node-termination-host-offline-timestamp", func(t *testing.T) {
		n := len(rec.of("gw-test"))
		state(false, 999) // older than the online message: ignored
		publishOK(t, r.u, batchEnv(ac1, 3, telemetry.Reading{Signal: "discharge_pressure", Value: 1, TS: 3}))
		if slices.ContainsFunc(rec.of("gw-test")[n:], func(p packet) bool { return p.typ == packets.Connect || p.topic == "spBv1.0/plant/NDEATH/gw-test" }) {
			t.Fatal("session ended on a stale offline STATE")
		}
	})
	nOff := len(rec.of("gw-test"))
	endedAfterOffline := func() bool {
		ps := rec.of("gw-test")[nOff:]
		i := slices.IndexFunc(ps, func(p packet) bool { return p.topic == "spBv1.0/plant/NDEATH/gw-test" })
		return i >= 0 && slices.ContainsFunc(ps[i:], func(p packet) bool { return p.typ == packets.Connect })
	}
	t.Run("tck-id-operational-behavior-edge-node-termination-host-offline", func(t *testing.T) {
		state(false, 2000)
		wait.For(t, 10*time.Second, "NDEATH and reconnect", endedAfterOffline)
	})
	t.Run("tck-id-message-flow-edge-node-birth-publish-phid-offline", func(t *testing.T) {
		// the same offline STATE: NDEATH, DISCONNECT, a new connection
		if !endedAfterOffline() {
			t.Fatal("no NDEATH and reconnect after the offline STATE")
		}
	})
	t.Run("tck-id-operational-behavior-edge-node-birth-sequence-wait", func(t *testing.T) {
		n := len(rec.of("gw-test"))
		state(true, 3000)
		wait.For(t, 10*time.Second, "rebirth when the host returns", func() bool {
			return slices.ContainsFunc(rec.of("gw-test")[n:], func(p packet) bool { return p.topic == "spBv1.0/plant/NBIRTH/gw-test" })
		})
		publishOK(t, r.u, batchEnv(ac1, 4, telemetry.Reading{Signal: "discharge_pressure", Value: 1, TS: 4}))
	})
}

// TestSparkplugConfig loads configs/sparkplug/gateway-uplink.yaml and checks
// the encoding's validation.
func TestSparkplugConfig(t *testing.T) {
	data, err := os.ReadFile("../../../configs/sparkplug/gateway-uplink.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		MQTT Config `yaml:"mqtt"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	f.MQTT.SetDefaults("gw-jinan-01", "jinan")
	if err := f.MQTT.Validate(); err != nil {
		t.Fatal(err)
	}
	if f.MQTT.Encoding != EncodingSparkplug || f.MQTT.Sparkplug.PrimaryHostID != "scada-primary" {
		t.Fatalf("decoded %+v", f.MQTT)
	}
	var d Config
	d.Encoding = EncodingSparkplug
	d.SetDefaults("gw-1", "plant")
	if d.Sparkplug.GroupID != "plant" || d.Sparkplug.EdgeNodeID != "gw-1" {
		t.Fatalf("defaults %+v", d.Sparkplug)
	}
	var j Config
	j.SetDefaults("gw-1", "plant")
	if j.Encoding != EncodingJSON {
		t.Fatalf("default encoding %q", j.Encoding)
	}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Encoding = "xml" }, `uplinks.mqtt.encoding: "xml" is not json or sparkplug_b`},
		{func(c *Config) { c.Sparkplug.GroupID = "a/b" }, `uplinks.mqtt.sparkplug.group_id: "a/b"`},
		{func(c *Config) { c.Sparkplug.EdgeNodeID = "n#" }, `uplinks.mqtt.sparkplug.edge_node_id: "n#"`},
		{func(c *Config) { c.Sparkplug.PrimaryHostID = "h+" }, `uplinks.mqtt.sparkplug.primary_host_id: "h+"`},
	} {
		x := d
		c.mod(&x)
		if err := x.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
}

// dropper makes the broker discard every PUBLISH it reads (and drop the
// connection) while on.
type dropper struct {
	mochi.HookBase
	on atomic.Bool
}

func (d *dropper) ID() string           { return "dropper" }
func (d *dropper) Provides(b byte) bool { return b == mochi.OnPacketRead }
func (d *dropper) OnPacketRead(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if d.on.Load() && pk.FixedHeader.Type == packets.Publish {
		return pk, packets.ErrRejectPacket // mochi then drops the connection
	}
	return pk, nil
}

// TestSparkplugPublishConfirmsDelivery: QoS 0 has no PUBACK, so Publish
// must not report success for messages the broker never processed: with a
// broker that discards them it fails, and the retry after the reconnect
// delivers the data behind a new birth sequence (at least once).
func TestSparkplugPublishConfirmsDelivery(t *testing.T) {
	b, rec := startRecorded(t)
	drop := &dropper{}
	if err := b.Server().AddHook(drop, nil); err != nil {
		t.Fatal(err)
	}
	cfg := spConfig(b.URL())
	cfg.Timeout = time.Second
	r := runUplink(t, cfg, nil)
	wait.For(t, 10*time.Second, "connected", r.u.Ready)
	env := batchEnv(ac1, 7, telemetry.Reading{Signal: "discharge_pressure", Value: 0.9, TS: 7})
	drop.on.Store(true)
	if err := r.u.Publish(context.Background(), []telemetry.Envelope{env}); err == nil {
		t.Fatal("Publish reported success for messages the broker discarded")
	}
	drop.on.Store(false)
	publishOK(t, r.u, env)
	pk := rec.of("gw-test")
	last := pk[len(pk)-1]
	if last.topic != "spBv1.0/plant/DDATA/gw-test/ac-1" || decode(t, last.payload).Metrics[0].GetDoubleValue() != 0.9 {
		t.Fatalf("last message %s", last.topic)
	}
	if n := len(slices.DeleteFunc(slices.Clone(pk), func(p packet) bool { return p.typ != packets.Connect })); n < 2 {
		t.Fatal("no reconnect")
	}
}

// TestSparkplugPrimaryHostMultipleServers: with two servers in the url list
// and a primary host online on both, the node holds one session at a time,
// and when the host goes offline on the current server it ends that session
// and moves to the next server, where it births once the host is online
// there (Sparkplug 3.0 section 5.10).
func TestSparkplugPrimaryHostMultipleServers(t *testing.T) {
	b1, rec1 := startRecorded(t)
	b2, rec2 := startRecorded(t)
	h1 := subscribe(t, b1.URL(), "scada-1", true, "", nil)
	h2 := subscribe(t, b2.URL(), "scada-2", true, "", nil)
	state := func(h *subscriber, online bool, ts int64) {
		t.Helper()
		p, _ := json.Marshal(sparkplug.State{Online: online, Timestamp: ts})
		if tok := h.c.Publish(sparkplug.StateTopic("scada"), 1, true, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// the host's session on server 2 began before its latest STATE on server 1
	state(h2, true, 1000)
	state(h1, true, 1500)
	cfg := spConfig(b1.URL() + "," + b2.URL())
	cfg.Sparkplug.PrimaryHostID = "scada"
	runUplink(t, cfg, nil)
	const client = "gw-test"
	const nbirth, ndeath = "spBv1.0/plant/NBIRTH/gw-test", "spBv1.0/plant/NDEATH/gw-test"
	has := func(rec *recorder, topic string) func() bool {
		return func() bool {
			return slices.ContainsFunc(rec.of(client), func(p packet) bool { return p.topic == topic })
		}
	}
	count := func(rec *recorder, typ byte, topic string) int {
		n := 0
		for _, p := range rec.of(client) {
			if p.typ == typ && p.topic == topic {
				n++
			}
		}
		return n
	}
	wait.For(t, 10*time.Second, "NBIRTH on server 1", has(rec1, nbirth))
	if n := len(rec2.of(client)); n != 0 {
		t.Fatalf("server 2 saw %d packets while the node was in session on server 1", n)
	}

	state(h1, false, 2000)
	wait.For(t, 10*time.Second, "NBIRTH on server 2", has(rec2, nbirth))
	p1, p2 := rec1.of(client), rec2.of(client)
	d := slices.IndexFunc(p1, func(p packet) bool { return p.topic == ndeath })
	t.Run("tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk", func(t *testing.T) {
		if d < 0 {
			t.Fatal("no NDEATH on server 1 after the host's offline STATE there")
		}
		if n := count(rec1, packets.Connect, ""); n != 1 {
			t.Fatalf("%d CONNECTs on server 1; the node should have moved to server 2", n)
		}
		if p2[0].typ != packets.Connect {
			t.Fatalf("first packet on server 2: type %d", p2[0].typ)
		}
	})
	t.Run("tck-id-operational-behavior-primary-application-state-with-multiple-servers-single-server", func(t *testing.T) {
		// the NDEATH is QoS 1 and acknowledged before the node moves on
		if !p1[d].at.Before(p2[0].at) {
			t.Fatalf("server 1 NDEATH at %v, server 2 CONNECT at %v", p1[d].at, p2[0].at)
		}
		if d != len(p1)-1 {
			t.Fatalf("published %q on server 1 after its NDEATH", p1[len(p1)-1].topic)
		}
	})
	t.Run("tck-id-operational-behavior-edge-node-termination-host-offline-reconnect", func(t *testing.T) {
		wbd, _ := sparkplug.BdSeq(decode(t, p2[0].connect.WillPayload))
		i := slices.IndexFunc(p2, func(p packet) bool { return p.topic == nbirth })
		bd, _ := sparkplug.BdSeq(decode(t, p2[i].payload))
		if wbd != 1 || bd != 1 {
			t.Fatalf("server 2 session: will bdSeq %d, NBIRTH bdSeq %d; want the next, 1", wbd, bd)
		}
	})
	t.Run("tck-id-operational-behavior-primary-application-state-with-multiple-servers-state-subs", func(t *testing.T) {
		for i, rec := range []*recorder{rec1, rec2} {
			if q, ok := rec.subscriptions(client)[sparkplug.StateTopic("scada")]; !ok || q != 1 {
				t.Fatalf("server %d: STATE subscription %v QoS %d", i+1, ok, q)
			}
		}
	})
	t.Run("walk wraps to the first server", func(t *testing.T) {
		state(h2, false, 3000)
		wait.For(t, 10*time.Second, "NDEATH on server 2 and a new CONNECT on server 1", func() bool {
			return count(rec2, packets.Publish, ndeath) == 1 && count(rec1, packets.Connect, "") == 2
		})
		if count(rec1, packets.Publish, nbirth) != 1 {
			t.Fatal("births on server 1 while its retained STATE says the host is offline")
		}
		state(h1, true, 4000)
		wait.For(t, 10*time.Second, "NBIRTH on server 1 again", func() bool { return count(rec1, packets.Publish, nbirth) == 2 })
	})
}

// TestSparkplugDuplicateDeviceIDAcrossEdgeNodes: two gateways (edge nodes
// gw-a and gw-b) with an asset of the same id each publish its device under
// their own edge node id, on one broker.
func TestSparkplugDuplicateDeviceIDAcrossEdgeNodes(t *testing.T) {
	b, rec := startRecorded(t)
	for _, id := range []string{"gw-a", "gw-b"} {
		cfg := spConfig(b.URL())
		cfg.ClientID, cfg.Sparkplug.EdgeNodeID = id, id
		r := runUplink(t, cfg, nil)
		wait.For(t, 10*time.Second, id+" connected", r.u.Ready)
		publishOK(t, r.u, birthEnv(t, ac1, 1), batchEnv(ac1, 2, telemetry.Reading{Signal: "discharge_pressure", Value: 0.5, Quality: telemetry.QualityGood, TS: 1700000000100}))
	}
	t.Run("tck-id-topic-structure-namespace-duplicate-device-id-across-edge-node", func(t *testing.T) {
		for _, id := range []string{"gw-a", "gw-b"} {
			for _, typ := range []string{"DBIRTH", "DDATA"} {
				topic := "spBv1.0/plant/" + typ + "/" + id + "/ac-1"
				if !slices.ContainsFunc(rec.of(id), func(p packet) bool { return p.topic == topic }) {
					t.Fatalf("no %s from %s", topic, id)
				}
			}
		}
	})
}
