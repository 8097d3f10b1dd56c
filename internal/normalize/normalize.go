// Package normalize turns raw protocol values into telemetry readings:
// scale and offset, conversion to the catalog's canonical unit, state labels,
// quality and staleness, timestamps, and report-by-exception deadbands.
//
// A Normalizer belongs to one acquisition group (the points one device reads
// in one cycle) and is used by one goroutine; it allocates nothing per
// reading once its output slice has grown.
package normalize

import (
	"math"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// Point is the compiled description of one configured point.
type Point struct {
	Signal   string
	Unit     string           // canonical unit of the reading
	Scale    float64          // raw*Scale + Offset, before unit conversion
	Offset   float64          // (Scale 0 is read as 1)
	Conv     units.Conversion // device unit -> canonical unit
	Deadband float64          // report by exception: minimum change in canonical units (0 = report every cycle)
	States   []string         // state labels, index = value (catalog states)
	Enum     map[int64]string // device code -> label, overrides States lookup
	Min, Max *float64         // plausible range; values outside are reported "uncertain"
	Src      string
}

// Raw is one value as a driver produced it.
type Raw struct {
	Num     float64
	Str     string
	IsStr   bool
	Quality telemetry.Quality // Good, Uncertain or Bad from the driver
	Status  uint32            // raw protocol code
	TS      int64             // source time (Unix ms); 0 means "read time" (now)
}

type pointState struct {
	lastGood     int64 // ms of the last good or uncertain read
	lastSent     float64
	lastSentText string
	lastQuality  telemetry.Quality
	sent         bool
	sentAt       int64
}

// Normalizer normalizes the readings of one group of points.
type Normalizer struct {
	points     []Point
	state      []pointState
	staleAfter int64 // ms without a good read before failures are reported stale
	heartbeat  int64 // ms: a deadbanded point is reported at least this often
}

// New returns a normalizer for points read every interval (ms). Failed reads
// turn from bad to stale after staleMultiple intervals without a good read
// (DOMAIN.md: 3). heartbeat (ms, 0 = never) forces a deadbanded point to be
// reported even if unchanged.
func New(points []Point, intervalMS int64, staleMultiple int, heartbeatMS int64) *Normalizer {
	if staleMultiple <= 0 {
		staleMultiple = 3
	}
	ps := make([]Point, len(points))
	copy(ps, points)
	for i := range ps {
		if ps[i].Scale == 0 {
			ps[i].Scale = 1
		}
		if ps[i].Conv.Scale == 0 {
			ps[i].Conv = units.Identity
		}
	}
	return &Normalizer{points: ps, state: make([]pointState, len(ps)),
		staleAfter: int64(staleMultiple) * intervalMS, heartbeat: heartbeatMS}
}

// Points returns the compiled points (read-only).
func (n *Normalizer) Points() []Point { return n.points }

// Apply normalizes one cycle: raws[i] belongs to point i. It appends the
// readings to report to dst and returns it. now is the read time in Unix ms.
// Points suppressed by their deadband are left out; a bad or stale point is
// always reported (without a value), so one bad point never hides another.
func (n *Normalizer) Apply(dst []telemetry.Reading, raws []Raw, now int64) []telemetry.Reading {
	for i := range raws {
		dst = n.ApplyOne(dst, i, &raws[i], now)
	}
	return dst
}

// ApplyOne normalizes one value of point i and appends it to dst unless its
// deadband suppresses it. Sources that report changes only (OPC UA
// subscriptions) call it per notification. A Stale raw value (the source
// lost its session) stays stale.
func (n *Normalizer) ApplyOne(dst []telemetry.Reading, i int, raw *Raw, now int64) []telemetry.Reading {
	p := &n.points[i]
	st := &n.state[i]
	ts := raw.TS
	if ts == 0 {
		ts = now
	}
	r := telemetry.Reading{Signal: p.Signal, Unit: p.Unit, TS: ts, Status: raw.Status, Src: p.Src, Quality: raw.Quality}
	switch {
	case raw.Quality.HasValue():
		st.lastGood = now
		n.fillValue(&r, p, raw)
	case raw.Quality == telemetry.QualityStale:
	default:
		r.Quality = telemetry.QualityBad
		if st.lastGood == 0 {
			st.lastGood = now // first read failed: start the stale clock
		} else if now-st.lastGood >= n.staleAfter {
			r.Quality = telemetry.QualityStale
		}
	}
	if !n.report(st, p, &r, now) {
		return dst
	}
	return append(dst, r)
}

// SetConversion replaces point i's unit conversion and plausible range;
// used when the device reports its own engineering units at connect time.
func (n *Normalizer) SetConversion(i int, c units.Conversion, min, max *float64) {
	n.points[i].Conv = c
	if min != nil {
		n.points[i].Min = min
	}
	if max != nil {
		n.points[i].Max = max
	}
}

func (n *Normalizer) fillValue(r *telemetry.Reading, p *Point, raw *Raw) {
	if raw.IsStr {
		r.Text = raw.Str
		r.NoValue = true
		return
	}
	v := raw.Num*p.Scale + p.Offset
	if p.Enum != nil || p.States != nil {
		code := int64(math.Round(v))
		r.Value = float64(code)
		if lbl, ok := p.Enum[code]; ok {
			r.Text = lbl
			if idx := indexOf(p.States, lbl); idx >= 0 {
				r.Value = float64(idx)
			}
		} else if code >= 0 && code < int64(len(p.States)) {
			r.Text = p.States[code]
		} else {
			r.Quality = telemetry.QualityUncertain
		}
		return
	}
	v = p.Conv.Apply(v)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.Quality = telemetry.QualityBad
		r.Value = 0
		return
	}
	r.Value = v
	if (p.Min != nil && v < *p.Min) || (p.Max != nil && v > *p.Max) {
		if r.Quality == telemetry.QualityGood {
			r.Quality = telemetry.QualityUncertain
		}
	}
}

func indexOf(xs []string, s string) int {
	for i, x := range xs {
		if x == s {
			return i
		}
	}
	return -1
}

// report applies the deadband and records what was sent.
func (n *Normalizer) report(st *pointState, p *Point, r *telemetry.Reading, now int64) bool {
	if st.sent && p.Deadband > 0 && r.Quality == st.lastQuality && r.HasValue() &&
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
