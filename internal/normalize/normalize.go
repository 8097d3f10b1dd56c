// Package normalize turns raw protocol values into telemetry readings:
// scale and offset, conversion to the catalog's canonical unit, state labels,
// quality and staleness, timestamps, and report-by-exception deadbands.
//
// A Normalizer belongs to one device (every point it reads, indexed as the
// driver's sample.Sample.Index) and is used by one goroutine at a time; it
// allocates nothing per reading once its output slice has grown.
//
// Quality rule (docs/schema.md, "bad vs stale"): a sample that carries a
// value is good or uncertain; a Bad sample the device answered (an exception,
// a Bad StatusCode) stays bad with its status on every batch; a Bad sample
// that is Silent (nothing heard: timeout, connection lost) is bad until the
// point has been silent for k x its interval (DOMAIN.md: k = 3), then stale;
// a Stale sample (the driver lost its session) passes through.
package normalize

import (
	"math"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// StatusNoUnit is the status of a numeric reading published bad because
// neither the configuration nor the device gives its unit: the OPC UA
// StatusCode Bad_ConfigurationError (0x80890000, "there is a problem with
// the configuration that affects the usefulness of the value"). A value
// without a unit is never published (docs/schema.md).
const StatusNoUnit uint32 = 0x80890000

// Point is the compiled description of one configured point.
type Point struct {
	Signal   string
	Unit     string           // canonical unit of the reading
	Scale    float64          // raw*Scale + Offset, before unit conversion
	Offset   float64          // (Scale 0 is read as 1)
	Conv     units.Conversion // device unit -> canonical unit
	Deadband float64          // report by exception: minimum change in canonical units (0 = report every cycle)
	Labels   *Labels          // a state point's labels; nil for a numeric point
	Min, Max *float64         // plausible range; values outside are reported "uncertain"
	Src      string
	// IntervalMS is the point's nominal period (poll interval, or the
	// subscription's sampling/publishing period): a silent point turns
	// stale after k x IntervalMS without anything heard.
	IntervalMS int64
	// NoUnit marks a numeric point whose unit nobody gives (neither the
	// configuration nor the device): its values are reported bad with
	// StatusNoUnit instead of unit-less.
	NoUnit bool
}

// Labels are a state point's labels. They hang off the point (nil for
// a numeric one) rather than being two fields of every Point: a gateway
// keeps one Point per configured point for its life, and 20,000 OPC UA
// nodes pay 24 bytes each for fields only state points use.
type Labels struct {
	States []string         // state labels, index = value (catalog states)
	Enum   map[int64]string // device code -> label, overrides States lookup
}

// States returns the point's state labels (nil for a numeric point).
func (p *Point) States() []string {
	if p.Labels == nil {
		return nil
	}
	return p.Labels.States
}

// Enum returns the point's device code -> label map (nil when none).
func (p *Point) Enum() map[int64]string {
	if p.Labels == nil {
		return nil
	}
	return p.Labels.Enum
}

// bandState is what a deadbanded point remembers of its last report.
type bandState struct {
	lastSent     float64
	lastSentText string
	lastQuality  telemetry.Quality
	sent         bool
	sentAt       int64
}

// override is what the device itself reported of one point (SetConversion,
// SetUnit, SetNoUnit), laid over the point's configuration. Overrides are
// values, interned: the points of a device that share a unit and range
// share one entry, so a 10,000-point device whose nodes all report their
// engineering units keeps 4 bytes per point (overOf) and a few entries,
// not a second copy of its points (~150 bytes each).
type override struct {
	conv           units.Conversion
	min, max       float64 // when hasMin, hasMax; else the point's Min, Max
	hasMin, hasMax bool
	unit           string // when hasUnit; else the point's Unit
	hasUnit        bool
	noUnit         bool
}

// Normalizer normalizes the readings of one device's points.
type Normalizer struct {
	points *Table
	// heard[i]: ms of the last sample point i's device answered (anything
	// but Silent or Stale), 0 before.
	heard []int64
	// band[bandOf[i]] is the report state of point i when it has a
	// deadband (bandOf[i] < 0 when not; bandOf is nil when no point has
	// one): only those need one, so a 10,000-point device without
	// deadbands keeps 8 bytes per point instead of 48.
	band   []bandState
	bandOf []int32
	// over[overOf[i]] is point i's override (overOf[i] < 0: none; overOf
	// is nil until the first Set call); overIdx finds an equal entry.
	over      []override
	overOf    []int32
	overIdx   map[override]int32
	k         int64 // a silent point is stale after k x its interval
	heartbeat int64 // ms: a deadbanded point is reported at least this often
}

// New returns a normalizer for points (sample.Sample.Index i is points[i]),
// kept as a Table of its own (NewTable). Silent samples turn from bad to
// stale after staleMultiple x the point's IntervalMS without anything
// heard (DOMAIN.md: 3; <= 0 means 3). heartbeat (ms, 0 = never) forces a
// deadbanded point to be reported even if unchanged.
func New(points []Point, staleMultiple int, heartbeatMS int64) *Normalizer {
	return NewFromTable(NewTable(points), staleMultiple, heartbeatMS)
}

// NewFromTable returns a normalizer for the points of t, which it shares
// and never modifies (a compiled configuration's table: a gateway keeps
// one copy of its points, not two); what the device reports (the Set
// methods) is kept in an override per point.
func NewFromTable(t *Table, staleMultiple int, heartbeatMS int64) *Normalizer {
	if staleMultiple <= 0 {
		staleMultiple = 3
	}
	n := &Normalizer{points: t, heard: make([]int64, t.Len()), k: int64(staleMultiple), heartbeat: heartbeatMS}
	bands := 0
	for i := range t.rows {
		if t.shapeOf(i).Deadband > 0 {
			bands++
		}
	}
	if bands > 0 {
		n.band, n.bandOf = make([]bandState, bands), make([]int32, t.Len())
		b := int32(0)
		for i := range t.rows {
			n.bandOf[i] = -1
			if t.shapeOf(i).Deadband > 0 {
				n.bandOf[i], b = b, b+1
			}
		}
	}
	return n
}

// Table returns the configured points (read-only), without what the
// device reported (Point gives that).
func (n *Normalizer) Table() *Table { return n.points }

// Point returns point i as the normalizer applies it: its configuration
// with the conversion, range and unit the device reported laid over it.
func (n *Normalizer) Point(i int) Point {
	p := n.points.Point(i)
	if o := n.overrideOf(i); o != nil {
		p.Conv, p.NoUnit = o.conv, o.noUnit
		if o.hasUnit {
			p.Unit = o.unit
		}
		if o.hasMin {
			lo := o.min
			p.Min = &lo
		}
		if o.hasMax {
			hi := o.max
			p.Max = &hi
		}
	}
	return p
}

// Unit returns point i's canonical unit: the configuration's, or the one
// the device reported (SetUnit).
func (n *Normalizer) Unit(i int) string {
	if o := n.overrideOf(i); o != nil && o.hasUnit {
		return o.unit
	}
	return n.points.shapeOf(i).Unit
}

func (n *Normalizer) overrideOf(i int) *override {
	if n.overOf == nil {
		return nil
	}
	if j := n.overOf[i]; j >= 0 {
		return &n.over[j]
	}
	return nil
}

// set changes point i's override by f, starting from its current one (or
// from its configuration: the configured conversion and NoUnit mark).
func (n *Normalizer) set(i int, f func(*override)) {
	sh := n.points.shapeOf(i)
	o := override{conv: sh.Conv, noUnit: sh.NoUnit}
	if cur := n.overrideOf(i); cur != nil {
		o = *cur
	}
	f(&o)
	if n.overOf == nil {
		n.overOf = make([]int32, n.points.Len())
		for j := range n.overOf {
			n.overOf[j] = -1
		}
		n.overIdx = map[override]int32{}
	}
	j, ok := n.overIdx[o]
	if !ok {
		if len(n.over) >= n.points.Len()+16 {
			n.compactOverrides()
		}
		j = int32(len(n.over))
		n.over = append(n.over, o)
		n.overIdx[o] = j
	}
	n.overOf[i] = j
}

// compactOverrides drops the entries no point uses any more (a device
// whose units change on every reconnect would otherwise grow them).
func (n *Normalizer) compactOverrides() {
	old := n.over
	n.over, n.overIdx = nil, map[override]int32{}
	for i, j := range n.overOf {
		if j < 0 {
			continue
		}
		k, ok := n.overIdx[old[j]]
		if !ok {
			k = int32(len(n.over))
			n.over = append(n.over, old[j])
			n.overIdx[old[j]] = k
		}
		n.overOf[i] = k
	}
}

// Apply normalizes one cycle's samples (each names its point by Index) and
// appends the readings to report to dst, which it returns. now is the read
// time in Unix ms on the wall clock (staleness, deadband heartbeat), read the
// time stamped on samples without a source time (the gateway's data clock,
// Unix ms). Points suppressed by their deadband are left out; a bad or
// stale point is always reported (without a value), so one bad point never
// hides another. A sample whose Index is out of range is skipped.
func (n *Normalizer) Apply(dst []telemetry.Reading, samples []sample.Sample, now, read int64) []telemetry.Reading {
	for i := range samples {
		dst = n.ApplyOne(dst, &samples[i], now, read)
	}
	return dst
}

// ApplyOne normalizes one sample and appends it to dst unless its deadband
// suppresses it (or its Index is out of range).
func (n *Normalizer) ApplyOne(dst []telemetry.Reading, s *sample.Sample, now, read int64) []telemetry.Reading {
	i := s.Index
	if i < 0 || i >= len(n.points.rows) {
		return dst
	}
	row := &n.points.rows[i]
	p := &n.points.shapes[row.shape]
	heard := &n.heard[i]
	ts := s.TS
	if ts == 0 {
		ts = read
	}
	var o *override
	unit := p.Unit
	if n.overOf != nil {
		if j := n.overOf[i]; j >= 0 {
			o = &n.over[j]
			if o.hasUnit {
				unit = o.unit
			}
		}
	}
	// built in place: a Reading is ~100 bytes, copied once less
	dst = append(dst, telemetry.Reading{Signal: row.Signal, Unit: unit, TS: ts, Status: s.Status, Src: row.Src, Quality: s.Quality})
	r := &dst[len(dst)-1]
	switch {
	case s.Quality.HasValue():
		*heard = now
		n.fillValue(r, p, o, s)
	case s.Quality == telemetry.QualityStale:
		// the driver knows nothing can be heard: stale at once
	case !s.Silent:
		// the device answered about the point, negatively: bad, every batch
		r.Quality = telemetry.QualityBad
		*heard = now
	default:
		r.Quality = telemetry.QualityBad
		if *heard == 0 {
			*heard = now // first attempt unanswered: start the silence clock
		} else if now-*heard >= n.k*p.IntervalMS {
			r.Quality = telemetry.QualityStale
		}
	}
	if n.bandOf != nil {
		if b := n.bandOf[i]; b >= 0 && !n.report(&n.band[b], p, r, now) {
			return dst[:len(dst)-1]
		}
	}
	return dst
}

// SetConversion replaces point i's unit conversion and plausible range
// (a nil bound keeps the one in force); used when the device reports its
// own engineering units at connect time. It clears the point's NoUnit mark.
// The configured points are left as they are: the change is point i's
// override.
func (n *Normalizer) SetConversion(i int, c units.Conversion, min, max *float64) {
	n.set(i, func(o *override) {
		o.conv, o.noUnit = c, false
		if min != nil {
			o.min, o.hasMin = *min, true
		}
		if max != nil {
			o.max, o.hasMax = *max, true
		}
	})
}

// SetUnit sets point i's canonical unit (a class without catalog unit,
// whose unit the device reported) and clears its NoUnit mark.
func (n *Normalizer) SetUnit(i int, unit string) {
	n.set(i, func(o *override) { o.unit, o.hasUnit, o.noUnit = unit, true, false })
}

// ResetUnits drops what the device reported for point i (SetConversion,
// SetUnit, SetNoUnit): the point is normalized by its configuration again
// (a point whose configuration gives no unit is NoUnit again).
func (n *Normalizer) ResetUnits(i int) {
	if n.overOf != nil && i >= 0 && i < len(n.overOf) {
		n.overOf[i] = -1
	}
}

// SetNoUnit marks point i as having no known unit: its numeric values are
// reported bad with StatusNoUnit until SetConversion gives one.
func (n *Normalizer) SetNoUnit(i int) {
	n.set(i, func(o *override) { o.noUnit = true })
}

// fillValue sets r's value from s by point p and its override o (nil:
// none).
func (n *Normalizer) fillValue(r *telemetry.Reading, p *shape, o *override, s *sample.Sample) {
	if s.IsStr {
		r.Text = s.Str
		r.NoValue = true
		return
	}
	v := scaleRaw(s.Num, p.Scale) + p.Offset
	if l := p.Labels; l != nil && (l.Enum != nil || l.States != nil) {
		code := int64(math.Round(v))
		r.Value = float64(code)
		if lbl, ok := l.Enum[code]; ok {
			r.Text = lbl
			if idx := indexOf(l.States, lbl); idx >= 0 {
				r.Value = float64(idx)
			}
		} else if code >= 0 && code < int64(len(l.States)) {
			r.Text = l.States[code]
		} else {
			r.Quality = telemetry.QualityUncertain
		}
		return
	}
	conv, noUnit := p.Conv, p.NoUnit
	if o != nil {
		conv, noUnit = o.conv, o.noUnit
	}
	if noUnit {
		r.Quality = telemetry.QualityBad
		r.Status = StatusNoUnit
		return
	}
	v = conv.Apply(v)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.Quality = telemetry.QualityBad
		r.Value = 0
		return
	}
	r.Value = v
	if r.Quality == telemetry.QualityGood && outside(v, p, o) {
		r.Quality = telemetry.QualityUncertain
	}
}

// outside reports whether v is outside point p's plausible range, the
// bounds of its override o (nil: none) taking precedence.
func outside(v float64, p *shape, o *override) bool {
	switch {
	case o != nil && o.hasMin:
		if v < o.min {
			return true
		}
	case p.Min != nil && v < *p.Min:
		return true
	}
	switch {
	case o != nil && o.hasMax:
		return v > o.max
	case p.Max != nil:
		return v > *p.Max
	}
	return false
}

func indexOf(xs []string, s string) int {
	for i, x := range xs {
		if x == s {
			return i
		}
	}
	return -1
}

// report applies the deadband of a point that has one and records what was
// sent.
func (n *Normalizer) report(st *bandState, p *shape, r *telemetry.Reading, now int64) bool {
	if st.sent && r.Quality == st.lastQuality && r.HasValue() &&
		math.Abs(r.Value-st.lastSent) < p.Deadband && r.Text == st.lastSentText &&
		(n.heartbeat == 0 || now-st.sentAt < n.heartbeat) {
		return false
	}
	st.sent = true
	st.sentAt = now
	st.lastQuality = r.Quality
	st.lastSent = r.Value
	st.lastSentText = r.Text
	return true
}

// scaleRaw returns raw x scale. A scale that is exactly 1/10^k for k = 1..6
// (0.1, 0.01, ... 0.000001: the decimal scales of register maps) divides
// by 10^k instead: the division is correctly rounded, so the result is the
// double nearest the exact decimal (register 1001 x 0.1 is 100.1, where the
// product of 1001 and the double nearest 0.1 is 100.10000000000001, one
// ulp off). Other scales multiply.
func scaleRaw(raw, scale float64) float64 {
	switch scale {
	case 0.1:
		return raw / 10
	case 0.01:
		return raw / 100
	case 0.001:
		return raw / 1000
	case 0.0001:
		return raw / 10000
	case 0.00001:
		return raw / 100000
	case 0.000001:
		return raw / 1000000
	}
	return raw * scale
}
