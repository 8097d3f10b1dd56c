// Package sparkplug implements the parts of Eclipse Sparkplug B 3.0.0 that
// Smelter's edge node (the MQTT uplink's encoding sparkplug_b) and its host
// side (the collector's Sparkplug source) share: the topic namespace
// (spBv1.0/<group>/<type>/<edge node>[/<device>], specification chapter 4),
// payload encoding and strict decoding (chapter 6, schema in package sppb),
// the message sequence number and bdSeq (0-255, wrapping), alias tables, the
// Quality property, and the mapping between Smelter's telemetry schema and
// Sparkplug metrics (docs/sparkplug.md describes it).
package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/sparkplug/sppb"
)

// Namespace is the first topic token of Sparkplug B
// (tck-id-topic-structure-namespace-a).
const Namespace = "spBv1.0"

// MessageType is the third topic token.
type MessageType string

// Message types (specification 4.1.2.3).
const (
	NBIRTH MessageType = "NBIRTH"
	NDEATH MessageType = "NDEATH"
	DBIRTH MessageType = "DBIRTH"
	DDEATH MessageType = "DDEATH"
	NDATA  MessageType = "NDATA"
	DDATA  MessageType = "DDATA"
	NCMD   MessageType = "NCMD"
	DCMD   MessageType = "DCMD"
	STATE  MessageType = "STATE"
)

// DeviceLevel reports whether messages of type t carry a device id
// (tck-id-topic-structure-namespace-device-id-associated-message-types).
func (t MessageType) DeviceLevel() bool {
	return t == DBIRTH || t == DDEATH || t == DDATA || t == DCMD
}

func (t MessageType) valid() bool {
	switch t {
	case NBIRTH, NDEATH, DBIRTH, DDEATH, NDATA, DDATA, NCMD, DCMD:
		return true
	}
	return false
}

// Well-known metric names.
const (
	MetricBdSeq   = "bdSeq"                // tck-id-topics-nbirth-bdseq-included
	MetricRebirth = "Node Control/Rebirth" // tck-id-topics-nbirth-rebirth-metric
)

// Property keys. Quality is the specification's (section 6.4.9, "Quality
// Codes"); engUnit, engLow and engHigh are the keys Sparkplug host
// applications (Ignition's MQTT Engine among them) read for engineering
// unit and range; the others are Smelter's.
const (
	PropQuality   = "Quality"
	PropEngUnit   = "engUnit"
	PropEngLow    = "engLow"
	PropEngHigh   = "engHigh"
	PropInterval  = "intervalMs"     // the signal's report interval, ms (telemetry.SignalInfo.IntervalMS)
	PropSource    = "src"            // where the value came from (telemetry.Reading.Src)
	PropStates    = "states"         // state labels, comma-separated, index = value
	PropStatus    = "statusCode"     // the raw protocol status (telemetry.Reading.Status)
	PropUncertain = "smelterQuality" // "uncertain" for Smelter's uncertain readings (sent with Quality 0, the value kept)
)

// Quality codes (tck-id-payloads-propertyset-quality-value-value).
const (
	QualityBad   int32 = 0
	QualityGood  int32 = 192
	QualityStale int32 = 500
)

// Errors; use errors.Is.
var (
	ErrTopic   = errors.New("not a sparkplug b topic")
	ErrPayload = errors.New("malformed sparkplug b payload")
)

// Topic is a parsed Sparkplug topic.
type Topic struct {
	Group  string
	Type   MessageType
	Node   string
	Device string // only for DBIRTH, DDEATH, DDATA, DCMD
}

// String formats the topic (tck-id-topic-structure).
func (t Topic) String() string {
	s := Namespace + "/" + t.Group + "/" + string(t.Type) + "/" + t.Node
	if t.Type.DeviceLevel() {
		s += "/" + t.Device
	}
	return s
}

// NodeTopic returns the topic of a node-level message.
func NodeTopic(group string, t MessageType, node string) string {
	return Topic{Group: group, Type: t, Node: node}.String()
}

// DeviceTopic returns the topic of a device-level message.
func DeviceTopic(group string, t MessageType, node, device string) string {
	return Topic{Group: group, Type: t, Node: node, Device: device}.String()
}

// StateTopic is a host application's STATE topic, spBv1.0/STATE/<host id>
// (tck-id-host-topic-phid-birth-topic).
func StateTopic(hostID string) string { return Namespace + "/" + string(STATE) + "/" + hostID }

// ValidID reports whether s can be a group, edge node or device id: a
// non-empty UTF-8 string without '+', '/' or '#'
// (tck-id-topic-structure-namespace-valid-group-id and its siblings).
func ValidID(s string) bool {
	return s != "" && utf8.ValidString(s) && !strings.ContainsAny(s, "+/#\x00")
}

// ParseTopic splits a Sparkplug B topic other than STATE. Errors wrap
// ErrTopic.
func ParseTopic(topic string) (Topic, error) {
	p := strings.Split(topic, "/")
	if len(p) < 4 || p[0] != Namespace {
		return Topic{}, fmt.Errorf("%w: %q", ErrTopic, topic)
	}
	t := Topic{Group: p[1], Type: MessageType(p[2]), Node: p[3]}
	if !t.Type.valid() {
		return Topic{}, fmt.Errorf("%w: %q: unknown message type %q", ErrTopic, topic, p[2])
	}
	want := 4
	if t.Type.DeviceLevel() {
		want = 5
	}
	if len(p) != want {
		return Topic{}, fmt.Errorf("%w: %q: a %s topic has %d levels", ErrTopic, topic, t.Type, want)
	}
	if want == 5 {
		t.Device = p[4]
	}
	if !ValidID(t.Group) || !ValidID(t.Node) || (want == 5 && !ValidID(t.Device)) {
		return Topic{}, fmt.Errorf("%w: %q: empty or invalid id", ErrTopic, topic)
	}
	return t, nil
}

// Seq is the message sequence number of an edge node: 0 at NBIRTH, then one
// more for every message but NDEATH, 255 followed by 0
// (tck-id-payloads-sequence-num-incrementing). The zero value is ready.
type Seq struct{ next uint8 }

// Reset makes the next number 0 (for an NBIRTH).
func (s *Seq) Reset() { s.next = 0 }

// Next returns the number for the next message.
func (s *Seq) Next() uint64 {
	n := s.next
	s.next++ // wraps 255 -> 0
	return uint64(n)
}

// NextSeq returns the sequence number that follows n (255 -> 0).
func NextSeq(n uint64) uint64 { return (n + 1) % 256 }

// Aliases maps metric names to aliases and back. An edge node's aliases are
// unique across all its metrics, node and devices
// (tck-id-payloads-alias-uniqueness). The zero value is not ready; use
// NewAliases.
type Aliases struct {
	byName  map[string]uint64
	byAlias map[uint64]string
	next    uint64
}

// NewAliases returns an empty table whose first alias is 1.
func NewAliases() *Aliases {
	return &Aliases{byName: map[string]uint64{}, byAlias: map[uint64]string{}, next: 1}
}

// Assign returns the alias of key, assigning the next free one when key is
// new. Keys are the caller's (the uplink uses "<device>/<metric>").
func (a *Aliases) Assign(key string) uint64 {
	if v, ok := a.byName[key]; ok {
		return v
	}
	v := a.next
	a.next++
	a.byName[key] = v
	a.byAlias[v] = key
	return v
}

// Alias returns the alias of key.
func (a *Aliases) Alias(key string) (uint64, bool) { v, ok := a.byName[key]; return v, ok }

// Name returns the key of alias.
func (a *Aliases) Name(alias uint64) (string, bool) { k, ok := a.byAlias[alias]; return k, ok }

// Len returns how many aliases are assigned.
func (a *Aliases) Len() int { return len(a.byName) }

// Encode marshals p.
func Encode(p *sppb.Payload) ([]byte, error) {
	b, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sparkplug: encode: %w", err)
	}
	return b, nil
}

// AppendEncode appends the encoding of p to dst.
func AppendEncode(dst []byte, p *sppb.Payload) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(dst, p)
	if err != nil {
		return dst, fmt.Errorf("sparkplug: encode: %w", err)
	}
	return b, nil
}

// MaxMetrics bounds the metrics one decoded payload may carry.
const MaxMetrics = 1 << 16

// Decode parses a payload and checks what every consumer relies on: at
// most MaxMetrics metrics, each metric's PropertySet with as many values
// as keys (tck-id-payloads-propertyset-keys-array-size), and a Quality
// property, when present, of type Int32 with 0, 192 or 500
// (tck-id-payloads-propertyset-quality-value-type). Errors wrap
// ErrPayload. It never panics, whatever data holds (FuzzDecode).
func Decode(data []byte) (*sppb.Payload, error) {
	p := &sppb.Payload{}
	if err := proto.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	if len(p.Metrics) > MaxMetrics {
		return nil, fmt.Errorf("%w: %d metrics (at most %d)", ErrPayload, len(p.Metrics), MaxMetrics)
	}
	for i, m := range p.Metrics {
		if m == nil {
			return nil, fmt.Errorf("%w: metrics[%d] is empty", ErrPayload, i)
		}
		if ps := m.GetProperties(); ps != nil {
			if len(ps.Keys) != len(ps.Values) {
				return nil, fmt.Errorf("%w: metrics[%d]: %d property keys for %d values", ErrPayload, i, len(ps.Keys), len(ps.Values))
			}
			if q, ok := propertyByKey(ps, PropQuality); ok {
				if _, err := qualityCode(q); err != nil {
					return nil, fmt.Errorf("%w: metrics[%d]: %w", ErrPayload, i, err)
				}
			}
		}
	}
	return p, nil
}

func propertyByKey(ps *sppb.Payload_PropertySet, key string) (*sppb.Payload_PropertyValue, bool) {
	if ps == nil {
		return nil, false
	}
	for i, k := range ps.Keys {
		if k == key && i < len(ps.Values) && ps.Values[i] != nil {
			return ps.Values[i], true
		}
	}
	return nil, false
}

func qualityCode(v *sppb.Payload_PropertyValue) (int32, error) {
	if v.GetType() != uint32(sppb.DataType_Int32) {
		return 0, fmt.Errorf("quality property has datatype %d, not Int32 (3)", v.GetType())
	}
	iv, ok := v.Value.(*sppb.Payload_PropertyValue_IntValue)
	if !ok {
		return 0, errors.New("quality property has no int_value")
	}
	q := int32(iv.IntValue)
	switch q {
	case QualityBad, QualityGood, QualityStale:
		return q, nil
	}
	return 0, fmt.Errorf("quality %d is not 0, 192 or 500", q)
}

// MetricQuality returns the Quality property of m, QualityGood when it
// has none (the property is only required when the quality is not good).
func MetricQuality(m *sppb.Payload_Metric) int32 {
	if v, ok := propertyByKey(m.GetProperties(), PropQuality); ok {
		if q, err := qualityCode(v); err == nil {
			return q
		}
	}
	return QualityGood
}

// Property returns the property key of m.
func Property(m *sppb.Payload_Metric, key string) (*sppb.Payload_PropertyValue, bool) {
	return propertyByKey(m.GetProperties(), key)
}

// MetricNumber returns m's value as float64 for the numeric and boolean
// datatypes (ok false for null, strings and the complex types).
// Integer values are decoded per their datatype: signed types from the
// two's complement bits of int_value/long_value (specification 6.4.16).
func MetricNumber(m *sppb.Payload_Metric) (v float64, ok bool) {
	if m.GetIsNull() {
		return 0, false
	}
	switch x := m.Value.(type) {
	case *sppb.Payload_Metric_IntValue:
		switch sppb.DataType(m.GetDatatype()) {
		case sppb.DataType_Int8:
			return float64(int8(x.IntValue)), true
		case sppb.DataType_Int16:
			return float64(int16(x.IntValue)), true
		case sppb.DataType_Int32:
			return float64(int32(x.IntValue)), true
		}
		return float64(x.IntValue), true
	case *sppb.Payload_Metric_LongValue:
		if sppb.DataType(m.GetDatatype()) == sppb.DataType_Int64 {
			return float64(int64(x.LongValue)), true
		}
		return float64(x.LongValue), true
	case *sppb.Payload_Metric_FloatValue:
		return float64(x.FloatValue), true
	case *sppb.Payload_Metric_DoubleValue:
		return x.DoubleValue, true
	case *sppb.Payload_Metric_BooleanValue:
		if x.BooleanValue {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// PropString returns a string property value.
func PropString(v *sppb.Payload_PropertyValue) (string, bool) {
	s, ok := v.GetValue().(*sppb.Payload_PropertyValue_StringValue)
	if !ok {
		return "", false
	}
	return s.StringValue, true
}

// PropNumber returns a numeric property value as float64.
func PropNumber(v *sppb.Payload_PropertyValue) (float64, bool) {
	switch x := v.GetValue().(type) {
	case *sppb.Payload_PropertyValue_IntValue:
		if sppb.DataType(v.GetType()) == sppb.DataType_Int32 {
			return float64(int32(x.IntValue)), true
		}
		return float64(x.IntValue), true
	case *sppb.Payload_PropertyValue_LongValue:
		if sppb.DataType(v.GetType()) == sppb.DataType_Int64 {
			return float64(int64(x.LongValue)), true
		}
		return float64(x.LongValue), true
	case *sppb.Payload_PropertyValue_FloatValue:
		return float64(x.FloatValue), true
	case *sppb.Payload_PropertyValue_DoubleValue:
		return x.DoubleValue, true
	}
	return 0, false
}

// BdSeq returns the bdSeq metric of an NBIRTH or NDEATH payload.
func BdSeq(p *sppb.Payload) (uint64, bool) {
	for _, m := range p.GetMetrics() {
		if m.GetName() == MetricBdSeq {
			if v, ok := MetricNumber(m); ok && v >= 0 {
				return uint64(v), true
			}
		}
	}
	return 0, false
}

// RebirthRequested reports whether an NCMD payload asks for a rebirth: a
// metric "Node Control/Rebirth" with the value true
// (tck-id-operational-behavior-data-commands-ncmd-rebirth-name, -value).
func RebirthRequested(p *sppb.Payload) bool {
	for _, m := range p.GetMetrics() {
		if m.GetName() == MetricRebirth {
			if b, ok := m.Value.(*sppb.Payload_Metric_BooleanValue); ok && b.BooleanValue {
				return true
			}
		}
	}
	return false
}

// RebirthRequest returns the NCMD payload a host sends to ask an edge node
// for a rebirth (no seq: tck-id-payloads-ncmd-seq).
func RebirthRequest(nowMS int64) *sppb.Payload {
	return &sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Metrics: []*sppb.Payload_Metric{{
		Name: proto.String(MetricRebirth), Timestamp: proto.Uint64(uint64(nowMS)),
		Datatype: proto.Uint32(uint32(sppb.DataType_Boolean)), Value: &sppb.Payload_Metric_BooleanValue{BooleanValue: true},
	}}}
}

// State is the JSON payload of a host application's STATE topic
// (tck-id-host-topic-phid-birth-payload).
type State struct {
	Online    bool  `json:"online"`
	Timestamp int64 `json:"timestamp"`
}
