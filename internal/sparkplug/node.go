package sparkplug

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/smelterio/smelter/internal/sparkplug/sppb"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Message is one Sparkplug message an edge node publishes: at QoS 0,
// never retained (tck-id-topics-nbirth-mqtt and its siblings).
type Message struct {
	Type    MessageType
	Topic   string
	Payload []byte
}

// Node is the state of a Smelter gateway as a Sparkplug edge node: its
// devices (one per asset), their metrics and aliases, the last value of
// every metric, and the session's message sequence number. It turns the
// gateway's telemetry messages (births, batches, deaths) into Sparkplug
// messages. It is not safe for concurrent use: the uplink serializes
// calls, so the order of the returned messages is their seq order.
type Node struct {
	group, node string
	seq         Seq
	aliases     *Aliases
	devices     map[string]*device
	order       []*device // in first-seen order, for the birth sequence
	born        bool      // NBIRTH sent in this session
	// liveSince is when the current session began to publish (Unix ms):
	// batches from before it are backlog, sent as historical.
	liveSince int64
	// fits reports whether a message of topic with an n-byte payload
	// fits the transport (nil: everything fits).
	fits  func(topic string, n int) bool
	aside []SetAside // devices set aside since the last TakeSetAside
}

// SetAside is a device whose DBIRTH cannot fit the transport's packet
// limit: it is not born and its messages are refused with
// ErrBirthTooLarge until a new birth of it fits.
type SetAside struct {
	Device string
	Bytes  int // the DBIRTH payload's size
}

// ErrBirthTooLarge: the device's DBIRTH does not fit the transport's
// packet limit (SetLimit), so neither it nor the device's data can be
// sent. The rest of the node is unaffected. Use errors.Is.
var ErrBirthTooLarge = errors.New("sparkplug: the device's DBIRTH exceeds the packet limit")

type device struct {
	id      string
	signals []*metric
	index   map[string]*metric
	parts   map[uint64][]*telemetry.Birth // birth parts by the birth's seq
	born    bool                          // DBIRTH sent in this session
	dead    bool                          // DDEATH sent, no data since
	tooBig  int                           // size of its last DBIRTH that did not fit; 0: fits
}

type metric struct {
	info  telemetry.SignalInfo
	alias uint64
	text  bool // string datatype (a text-only reading was seen)
	last  telemetry.Reading
	have  bool
}

// NewNode returns the edge node group/node. Both ids must pass ValidID.
func NewNode(group, node string) (*Node, error) {
	if !ValidID(group) {
		return nil, fmt.Errorf("sparkplug: group id %q is empty or has '+', '/' or '#'", group)
	}
	if !ValidID(node) {
		return nil, fmt.Errorf("sparkplug: edge node id %q is empty or has '+', '/' or '#'", node)
	}
	return &Node{group: group, node: node, aliases: NewAliases(), devices: map[string]*device{}}, nil
}

// SetLimit makes the node check every message against fits (the
// transport's packet limit): a device whose DBIRTH does not fit is set
// aside alone (SetAside, ErrBirthTooLarge) instead of failing the whole
// birth sequence.
func (n *Node) SetLimit(fits func(topic string, payloadBytes int) bool) { n.fits = fits }

// SetLiveSince records when the current session began to publish (Unix
// ms). Data batches with a gateway time before it are backlog stored
// while the node was offline, and are sent with is_historical (a host
// stores them but keeps its current values).
func (n *Node) SetLiveSince(ms int64) { n.liveSince = ms }

// TakeSetAside returns the devices set aside since its last call (each
// once per transition).
func (n *Node) TakeSetAside() []SetAside {
	out := n.aside
	n.aside = nil
	return out
}

// Group returns the group id.
func (n *Node) Group() string { return n.group }

// ID returns the edge node id.
func (n *Node) ID() string { return n.node }

// Born reports whether the session's birth sequence was produced.
func (n *Node) Born() bool { return n.born }

// EndSession forgets that anything was born: the next messages need a
// birth sequence first (after a connection loss or a rebirth request).
func (n *Node) EndSession() {
	n.born = false
	for _, d := range n.order {
		d.born = false
	}
}

// Death returns the NDEATH payload for bdSeq: the bdSeq metric only, no
// seq (tck-id-topics-ndeath-payload, tck-id-topics-ndeath-seq).
func (n *Node) Death(bdSeq uint64, nowMS int64) ([]byte, error) {
	return Encode(&sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Metrics: []*sppb.Payload_Metric{bdSeqMetric(bdSeq, nowMS)}})
}

// DeathTopic returns the NDEATH topic (the MQTT will's).
func (n *Node) DeathTopic() string { return NodeTopic(n.group, NDEATH, n.node) }

// CommandTopic returns the NCMD topic the node subscribes to.
func (n *Node) CommandTopic() string { return NodeTopic(n.group, NCMD, n.node) }

func bdSeqMetric(bdSeq uint64, nowMS int64) *sppb.Payload_Metric {
	return &sppb.Payload_Metric{Name: proto.String(MetricBdSeq), Timestamp: proto.Uint64(uint64(nowMS)),
		Datatype: proto.Uint32(uint32(sppb.DataType_Int64)), Value: &sppb.Payload_Metric_LongValue{LongValue: bdSeq}}
}

// Birth starts a session's birth sequence: the NBIRTH (seq 0, bdSeq, the
// node metrics) followed by a DBIRTH for every device that is not dead
// (tck-id-payloads-dbirth-order).
func (n *Node) Birth(bdSeq uint64, nowMS int64) ([]Message, error) {
	n.EndSession()
	n.seq.Reset()
	p := &sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Seq: proto.Uint64(n.seq.Next()), Metrics: []*sppb.Payload_Metric{
		bdSeqMetric(bdSeq, nowMS),
		{Name: proto.String(MetricRebirth), Timestamp: proto.Uint64(uint64(nowMS)), Datatype: proto.Uint32(uint32(sppb.DataType_Boolean)),
			Value: &sppb.Payload_Metric_BooleanValue{BooleanValue: false}},
	}}
	out, err := n.emit(nil, NBIRTH, "", p)
	if err != nil {
		return nil, err
	}
	n.born = true
	for _, d := range n.order {
		if d.dead || len(d.signals) == 0 || d.tooBig > 0 {
			continue
		}
		if out, err = n.deviceBirth(out, d, nowMS); err != nil && !errors.Is(err, ErrBirthTooLarge) {
			return nil, err
		}
	}
	return out, nil
}

func (n *Node) emit(out []Message, t MessageType, dev string, p *sppb.Payload) ([]Message, error) {
	b, err := Encode(p)
	if err != nil {
		return out, err
	}
	topic := NodeTopic(n.group, t, n.node)
	if t.DeviceLevel() {
		topic = DeviceTopic(n.group, t, n.node, dev)
	}
	return append(out, Message{Type: t, Topic: topic, Payload: b}), nil
}

// ErrNotBorn: Translate was called before Birth in this session.
var ErrNotBorn = fmt.Errorf("sparkplug: edge node not born in this session")

// Translate turns one telemetry envelope into the Sparkplug messages it
// needs, in order: a birth becomes a DBIRTH (parts of a split birth are
// kept until the last arrives); a batch a DDATA by alias, preceded by a
// DBIRTH when the device is new, was dead, or reports a metric its DBIRTH
// did not list (tck-id-operational-behavior-data-publish-dbirth); a death
// a DDEATH (tck-id-operational-behavior-device-ddeath); the gateway status
// nothing (NBIRTH and NDEATH say it). A batch of only stale readings of a
// dead device gives nothing (it stays dead until it has real data). A
// batch whose ts_gw is before SetLiveSince's time is sent as historical.
// Errors: ErrNotBorn; ErrBirthTooLarge (the device is set aside, the node
// goes on); or the message does not decode (then it can never be sent:
// the caller sets it aside).
func (n *Node) Translate(e *telemetry.Envelope, nowMS int64) ([]Message, error) {
	if !n.born {
		return nil, ErrNotBorn
	}
	kind := telemetry.Kind(e.Subject[strings.LastIndexByte(e.Subject, '.')+1:])
	switch kind {
	case telemetry.KindData:
		b, err := telemetry.DecodeBatch(e.Data)
		if err != nil {
			return nil, err
		}
		return n.data(b, nowMS)
	case telemetry.KindBirth:
		bi, err := telemetry.DecodeBirth(e.Data)
		if err != nil {
			return nil, err
		}
		return n.birth(bi, nowMS)
	case telemetry.KindDeath:
		var d telemetry.Death
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, fmt.Errorf("%w: death: %w", telemetry.ErrInvalid, err)
		}
		return n.death(&d, nowMS)
	}
	return nil, nil
}

func (n *Node) dev(id string) *device {
	d := n.devices[id]
	if d == nil {
		d = &device{id: id, index: map[string]*metric{}}
		n.devices[id] = d
		n.order = append(n.order, d)
	}
	return d
}

func (n *Node) addSignal(d *device, si telemetry.SignalInfo) *metric {
	m := &metric{info: si, alias: n.aliases.Assign(d.id + "/" + si.Signal)}
	d.signals = append(d.signals, m)
	d.index[si.Signal] = m
	return m
}

func (n *Node) birth(bi *telemetry.Birth, nowMS int64) ([]Message, error) {
	if !ValidID(bi.Asset.ID) {
		return nil, fmt.Errorf("%w: asset id %q", telemetry.ErrInvalid, bi.Asset.ID)
	}
	d := n.dev(bi.Asset.ID)
	if bi.Parts > 0 {
		if d.parts == nil {
			d.parts = map[uint64][]*telemetry.Birth{}
		}
		ps := d.parts[bi.Seq]
		ps = slices.DeleteFunc(ps, func(p *telemetry.Birth) bool { return p.Part == bi.Part })
		ps = append(ps, bi)
		if len(ps) < bi.Parts {
			d.parts[bi.Seq] = ps
			return nil, nil
		}
		delete(d.parts, bi.Seq)
		m, err := telemetry.MergeBirth(ps)
		if err != nil {
			return nil, err
		}
		bi = m
	}
	// The birth's signals replace the device's; last values of signals
	// that stay are kept for the DBIRTH's current values.
	old := d.index
	d.signals, d.index = d.signals[:0:0], make(map[string]*metric, len(bi.Signals))
	for _, si := range bi.Signals {
		if m, ok := old[si.Signal]; ok {
			m.info = si
			d.signals = append(d.signals, m)
			d.index[si.Signal] = m
			continue
		}
		n.addSignal(d, si)
	}
	d.dead, d.tooBig = false, 0 // a new birth may fit
	return n.deviceBirth(nil, d, nowMS)
}

// deviceBirth appends d's DBIRTH to out. When it does not fit, d is set
// aside (not born, no seq used) and the error is ErrBirthTooLarge.
func (n *Node) deviceBirth(out []Message, d *device, nowMS int64) ([]Message, error) {
	p := &sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Seq: proto.Uint64(uint64(n.seq.next)),
		Metrics: make([]*sppb.Payload_Metric, 0, len(d.signals))}
	for _, m := range d.signals {
		p.Metrics = append(p.Metrics, birthMetric(m, nowMS))
	}
	b, err := Encode(p)
	if err != nil {
		return out, err
	}
	topic := DeviceTopic(n.group, DBIRTH, n.node, d.id)
	if n.fits != nil && !n.fits(topic, len(b)) {
		d.born = false
		if d.tooBig == 0 {
			n.aside = append(n.aside, SetAside{Device: d.id, Bytes: len(b)})
		}
		d.tooBig = len(b)
		return out, fmt.Errorf("%w: device %s, %d bytes", ErrBirthTooLarge, d.id, len(b))
	}
	n.seq.Next()
	d.born, d.tooBig = true, 0
	return append(out, Message{Type: DBIRTH, Topic: topic, Payload: b}), nil
}

func (n *Node) death(dt *telemetry.Death, nowMS int64) ([]Message, error) {
	d := n.devices[dt.Asset.ID]
	if d == nil || d.dead {
		return nil, nil
	}
	d.dead, d.tooBig = true, 0
	if !d.born {
		return nil, nil
	}
	d.born = false
	p := &sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Seq: proto.Uint64(n.seq.Next())}
	return n.emit(nil, DDEATH, d.id, p)
}

func (n *Node) data(b *telemetry.Batch, nowMS int64) ([]Message, error) {
	if !ValidID(b.Asset.ID) {
		return nil, fmt.Errorf("%w: asset id %q", telemetry.ErrInvalid, b.Asset.ID)
	}
	d := n.dev(b.Asset.ID)
	if d.dead && allStale(b.Readings) {
		// stale readings of a dead device say nothing new: it stays dead
		// until it has real data again (good, uncertain or bad answers)
		return nil, nil
	}
	rebirth := !d.born || d.dead
	grown := false
	for i := range b.Readings {
		r := &b.Readings[i]
		m := d.index[r.Signal]
		if m == nil {
			m = n.addSignal(d, telemetry.SignalInfo{Signal: r.Signal, Unit: r.Unit, Src: r.Src})
			rebirth, grown = true, true
		}
		if text := r.NoValue && r.Text != ""; text && !m.text {
			m.text = true // a datatype change needs a new DBIRTH
			rebirth, grown = true, true
		}
	}
	if d.tooBig > 0 && !grown {
		// set aside until a birth of it fits: no DBIRTH to re-encode
		return nil, fmt.Errorf("%w: device %s, %d bytes", ErrBirthTooLarge, d.id, d.tooBig)
	}
	var out []Message
	var err error
	if rebirth {
		d.dead = false
		if out, err = n.deviceBirth(out, d, nowMS); err != nil {
			return nil, err
		}
	}
	hist := b.Historical || b.TSGW < n.liveSince // backlog stored while offline
	p := &sppb.Payload{Timestamp: proto.Uint64(uint64(nowMS)), Seq: proto.Uint64(n.seq.Next()),
		Metrics: make([]*sppb.Payload_Metric, 0, len(b.Readings))}
	// one allocation per field kind for the whole message, not per metric
	dms := make([]sppb.Payload_Metric, len(b.Readings))
	nums := make([]uint64, 2*len(b.Readings)) // alias, timestamp
	vals := make([]sppb.Payload_Metric_DoubleValue, len(b.Readings))
	historical := true
	for i := range b.Readings {
		r := &b.Readings[i]
		m := d.index[r.Signal]
		dm := &dms[i]
		nums[2*i], nums[2*i+1] = m.alias, uint64(r.TS)
		dm.Alias, dm.Timestamp = &nums[2*i], &nums[2*i+1]
		if hist {
			dm.IsHistorical = &historical
		}
		if r.HasValue() && !m.text {
			vals[i].DoubleValue = r.Value
			dm.Value = &vals[i]
		}
		setValue(dm, m, r)
		p.Metrics = append(p.Metrics, dm)
		if !hist && (!m.have || r.TS >= m.last.TS) {
			m.last, m.have = *r, true
		}
	}
	// tck-id-operational-behavior-data-publish-dbirth-order: metric values
	// in chronological order (a batch may hold several polls; stable, so
	// readings of one instant keep the batch's order)
	if !slices.IsSortedFunc(p.Metrics, byTimestamp) {
		slices.SortStableFunc(p.Metrics, byTimestamp)
	}
	return n.emit(out, DDATA, d.id, p)
}

func byTimestamp(a, b *sppb.Payload_Metric) int {
	return cmp.Compare(a.GetTimestamp(), b.GetTimestamp())
}

// allStale reports whether every reading is stale (and there is one).
func allStale(rs []telemetry.Reading) bool {
	for i := range rs {
		if rs[i].Quality != telemetry.QualityStale {
			return false
		}
	}
	return len(rs) > 0
}

func (m *metric) datatype() sppb.DataType {
	if m.text {
		return sppb.DataType_String
	}
	return sppb.DataType_Double
}

// setValue sets dm's value, is_null and Quality properties from r.
func setValue(dm *sppb.Payload_Metric, m *metric, r *telemetry.Reading) {
	var ps *sppb.Payload_PropertySet
	switch {
	case !r.Quality.HasValue():
		dm.IsNull = proto.Bool(true)
	case m.text:
		if r.NoValue || r.Text != "" {
			dm.Value = &sppb.Payload_Metric_StringValue{StringValue: r.Text}
		} else {
			dm.IsNull = proto.Bool(true)
		}
	case r.NoValue:
		dm.IsNull = proto.Bool(true)
	case dm.Value == nil: // data() may have set it from its own storage
		dm.Value = &sppb.Payload_Metric_DoubleValue{DoubleValue: r.Value}
	}
	switch r.Quality {
	case telemetry.QualityBad:
		ps = addProp(ps, PropQuality, intProp(QualityBad))
	case telemetry.QualityStale:
		ps = addProp(ps, PropQuality, intProp(QualityStale))
	case telemetry.QualityUncertain:
		// The specification knows 0, 192 and 500 only; an uncertain value
		// (OPC UA Uncertain, a Modbus value outside its plausible range) is
		// not good, so hosts that know nothing of smelterQuality see BAD,
		// with the value kept; Smelter's collector reads it back as
		// uncertain (review13 F8: 192 made every third-party host show it
		// good).
		ps = addProp(ps, PropQuality, intProp(QualityBad))
		ps = addProp(ps, PropUncertain, strProp("uncertain"))
	}
	if r.Status != 0 {
		// UInt64 in long_value: what the specification says, and what
		// Tahu's JavaScript decoder reads (it takes UInt32 from long_value)
		ps = addProp(ps, PropStatus, &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_UInt64)),
			Value: &sppb.Payload_PropertyValue_LongValue{LongValue: uint64(r.Status)}})
	}
	dm.Properties = ps
}

func birthMetric(m *metric, nowMS int64) *sppb.Payload_Metric {
	bm := &sppb.Payload_Metric{Name: proto.String(m.info.Signal), Alias: proto.Uint64(m.alias),
		Datatype: proto.Uint32(uint32(m.datatype())), Timestamp: proto.Uint64(uint64(nowMS))}
	if m.have {
		bm.Timestamp = proto.Uint64(uint64(m.last.TS))
		setValue(bm, m, &m.last)
	} else {
		bm.IsNull = proto.Bool(true) // tck-id-operational-behavior-data-publish-dbirth-values
	}
	ps := bm.Properties
	if m.info.Unit != "" {
		ps = addProp(ps, PropEngUnit, strProp(m.info.Unit))
	}
	if m.info.Min != nil {
		ps = addProp(ps, PropEngLow, dblProp(*m.info.Min))
	}
	if m.info.Max != nil {
		ps = addProp(ps, PropEngHigh, dblProp(*m.info.Max))
	}
	if m.info.IntervalMS > 0 {
		ps = addProp(ps, PropInterval, &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_Int64)),
			Value: &sppb.Payload_PropertyValue_LongValue{LongValue: uint64(m.info.IntervalMS)}})
	}
	if len(m.info.Enum) > 0 {
		ps = addProp(ps, PropStates, strProp(strings.Join(m.info.Enum, ",")))
	}
	if m.info.Src != "" {
		ps = addProp(ps, PropSource, strProp(m.info.Src))
	}
	bm.Properties = ps
	return bm
}

func addProp(ps *sppb.Payload_PropertySet, key string, v *sppb.Payload_PropertyValue) *sppb.Payload_PropertySet {
	if ps == nil {
		ps = &sppb.Payload_PropertySet{}
	}
	ps.Keys = append(ps.Keys, key)
	ps.Values = append(ps.Values, v)
	return ps
}

func intProp(q int32) *sppb.Payload_PropertyValue {
	return &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_Int32)),
		Value: &sppb.Payload_PropertyValue_IntValue{IntValue: uint32(q)}}
}

func strProp(s string) *sppb.Payload_PropertyValue {
	return &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_String)),
		Value: &sppb.Payload_PropertyValue_StringValue{StringValue: s}}
}

func dblProp(v float64) *sppb.Payload_PropertyValue {
	return &sppb.Payload_PropertyValue{Type: proto.Uint32(uint32(sppb.DataType_Double)),
		Value: &sppb.Payload_PropertyValue_DoubleValue{DoubleValue: v}}
}
