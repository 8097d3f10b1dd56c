package sparkplug

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/telemetry"
)

func TestParseTopic(t *testing.T) {
	cases := []struct {
		topic string
		want  Topic
		err   bool
	}{
		{"spBv1.0/plant/NBIRTH/gw-1", Topic{Group: "plant", Type: NBIRTH, Node: "gw-1"}, false},
		{"spBv1.0/plant/DDATA/gw-1/ac-1", Topic{Group: "plant", Type: DDATA, Node: "gw-1", Device: "ac-1"}, false},
		{"spBv1.0/Plant A/NCMD/Edge Node 7", Topic{Group: "Plant A", Type: NCMD, Node: "Edge Node 7"}, false},
		{"spBv1.0/plant/DDATA/gw-1", Topic{}, true},      // tck-id-topic-structure-namespace-device-id-associated-message-types
		{"spBv1.0/plant/NDATA/gw-1/ac-1", Topic{}, true}, // tck-id-topic-structure-namespace-device-id-non-associated-message-types
		{"spAv1.0/plant/NDATA/gw-1", Topic{}, true},      // tck-id-topic-structure-namespace-a
		{"spBv1.0/plant/NOPE/gw-1", Topic{}, true},       // unknown type
		{"spBv1.0//NDATA/gw-1", Topic{}, true},           // empty group
		{"spBv1.0/STATE/scada", Topic{}, true},           // host topic, not an edge topic
		{"spBv1.0/plant/DDATA/gw-1/ac-1/extra", Topic{}, true},
	}
	for _, c := range cases {
		got, err := ParseTopic(c.topic)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseTopic(%q) = %+v, %v", c.topic, got, err)
		}
		if err != nil && !errors.Is(err, ErrTopic) {
			t.Errorf("%q: error %v does not wrap ErrTopic", c.topic, err)
		}
		if err == nil && got.String() != c.topic {
			t.Errorf("String() = %q, want %q", got.String(), c.topic)
		}
	}
	for _, id := range []string{"a+b", "a/b", "a#b", ""} { // tck-id-topic-structure-namespace-valid-group-id
		if ValidID(id) {
			t.Errorf("ValidID(%q)", id)
		}
	}
}

func TestSeqWraps(t *testing.T) {
	var s Seq
	for i := range 600 {
		if got := s.Next(); got != uint64(i%256) {
			t.Fatalf("message %d: seq %d", i, got)
		}
	}
	s.Reset()
	if s.Next() != 0 {
		t.Fatal("Reset")
	}
	if NextSeq(255) != 0 || NextSeq(7) != 8 {
		t.Fatal("NextSeq")
	}
}

func TestAliases(t *testing.T) {
	a := NewAliases()
	x, y := a.Assign("ac-1/p"), a.Assign("ac-2/p")
	if x == y || a.Assign("ac-1/p") != x || a.Len() != 2 {
		t.Fatalf("aliases %d %d", x, y)
	}
	if n, ok := a.Name(y); !ok || n != "ac-2/p" {
		t.Fatal("Name")
	}
}

// TestGoldenPayload pins the wire bytes of a small DDATA payload: field
// numbers and types are the specification's (a change here breaks every
// other Sparkplug implementation).
func TestGoldenPayload(t *testing.T) {
	p := &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(2), Metrics: []*sppb.Payload_Metric{{
		Alias: proto.Uint64(3), Timestamp: proto.Uint64(4), Value: &sppb.Payload_Metric_DoubleValue{DoubleValue: 1.5}}}}
	b, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	// 08 01: timestamp=1; 12 0d: metrics (13 bytes): 10 03 alias, 18 04 timestamp,
	// 69 + 8 bytes: double_value (field 13, fixed64) 1.5; 18 02: seq=2
	want, _ := hex.DecodeString("0801120d1003180469000000000000f83f1802")
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded %x, want %x", b, want)
	}
	q, err := Decode(b)
	if err != nil || !proto.Equal(p, q) {
		t.Fatalf("round trip %v %v", q, err)
	}
}

func TestDecodeChecks(t *testing.T) {
	bad := func(m *sppb.Payload_Metric) []byte {
		b, _ := Encode(&sppb.Payload{Metrics: []*sppb.Payload_Metric{m}})
		return b
	}
	for name, data := range map[string][]byte{
		"garbage": {0xff, 0xff, 0xff, 0x01},
		// tck-id-payloads-propertyset-keys-array-size
		"keys without values": bad(&sppb.Payload_Metric{Properties: &sppb.Payload_PropertySet{Keys: []string{"a"}}}),
		// tck-id-payloads-propertyset-quality-value-type
		"quality not int32": bad(&sppb.Payload_Metric{Properties: &sppb.Payload_PropertySet{Keys: []string{"Quality"},
			Values: []*sppb.Payload_PropertyValue{{Type: proto.Uint32(12), Value: &sppb.Payload_PropertyValue_StringValue{StringValue: "good"}}}}}),
		// tck-id-payloads-propertyset-quality-value-value
		"quality 7": bad(&sppb.Payload_Metric{Properties: &sppb.Payload_PropertySet{Keys: []string{"Quality"},
			Values: []*sppb.Payload_PropertyValue{{Type: proto.Uint32(3), Value: &sppb.Payload_PropertyValue_IntValue{IntValue: 7}}}}}),
	} {
		if _, err := Decode(data); !errors.Is(err, ErrPayload) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMetricNumberSigned(t *testing.T) {
	m := &sppb.Payload_Metric{Datatype: proto.Uint32(uint32(sppb.DataType_Int16)), Value: &sppb.Payload_Metric_IntValue{IntValue: 0xfffe}}
	if v, ok := MetricNumber(m); !ok || v != -2 {
		t.Fatalf("Int16 0xfffe = %v", v)
	}
	m = &sppb.Payload_Metric{Datatype: proto.Uint32(uint32(sppb.DataType_Int64)), Value: &sppb.Payload_Metric_LongValue{LongValue: ^uint64(0)}}
	if v, ok := MetricNumber(m); !ok || v != -1 {
		t.Fatalf("Int64 -1 = %v", v)
	}
}

// TestNodeTranslate covers the edge node state machine without a broker
// (the uplink's tests run it against one).
func TestNodeTranslate(t *testing.T) {
	n, err := NewNode("plant", "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	a := telemetry.Asset{ID: "ac-1", Class: "air_compressor"}
	b := telemetry.Batch{Gateway: "gw-1", Seq: 1, Asset: a, TSGW: 1, Readings: []telemetry.Reading{{Signal: "p", Value: 1, TS: 5}}}
	env := telemetry.Envelope{Subject: telemetry.AssetSubject(a, telemetry.KindData), Data: b.AppendJSON(nil)}
	if _, err := n.Translate(&env, 1); !errors.Is(err, ErrNotBorn) {
		t.Fatalf("before birth: %v", err)
	}
	out, err := n.Birth(0, 1)
	if err != nil || len(out) != 1 || out[0].Type != NBIRTH {
		t.Fatalf("birth %v %v", out, err)
	}
	out, err = n.Translate(&env, 2)
	if err != nil || len(out) != 2 || out[0].Type != DBIRTH || out[1].Type != DDATA {
		t.Fatalf("first data %v %v", out, err)
	}
	// a text-only reading of the same signal changes its datatype: DBIRTH again
	b.Readings = []telemetry.Reading{{Signal: "p", Text: "x", NoValue: true, TS: 6}}
	env.Data = b.AppendJSON(nil)
	out, _ = n.Translate(&env, 3)
	if len(out) != 2 || out[0].Type != DBIRTH {
		t.Fatalf("type change %v", out)
	}
	p, _ := Decode(out[0].Payload)
	if p.Metrics[0].GetDatatype() != uint32(sppb.DataType_String) {
		t.Fatalf("datatype %d", p.Metrics[0].GetDatatype())
	}
	bad := telemetry.Envelope{Subject: env.Subject, Data: []byte("{")}
	if _, err := n.Translate(&bad, 4); err == nil {
		t.Fatal("malformed batch translated")
	}
}

// FuzzDecode: Decode never panics, and what it accepts re-encodes.
func FuzzDecode(f *testing.F) {
	p := &sppb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(2), Metrics: []*sppb.Payload_Metric{{
		Name: proto.String("a"), Alias: proto.Uint64(3), Datatype: proto.Uint32(10),
		Properties: &sppb.Payload_PropertySet{Keys: []string{"Quality"}, Values: []*sppb.Payload_PropertyValue{{Type: proto.Uint32(3), Value: &sppb.Payload_PropertyValue_IntValue{IntValue: 192}}}},
		Value:      &sppb.Payload_Metric_DoubleValue{DoubleValue: 1.5}}}}
	b, _ := Encode(p)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := Decode(data)
		if err != nil {
			return
		}
		for _, m := range q.Metrics {
			MetricNumber(m)
			MetricQuality(m)
		}
		BdSeq(q)
		RebirthRequested(q)
		if _, err := Encode(q); err != nil {
			t.Fatalf("decoded payload does not encode: %v", err)
		}
	})
}
