package normalize

import (
	"math"

	"github.com/smelterio/smelter/internal/units"
)

// Table is a device's points in the form a gateway keeps them for its
// life: per point only its signal, its source and the index of its shape;
// the shapes (unit, scale, offset, conversion, deadband, labels, range,
// interval, NoUnit) are interned, so the points of a device that are
// normalized alike share one. A 1,000-node OPC UA device whose nodes share
// a unit and interval keeps 40 bytes a point instead of a 128-byte Point
// (issue 17). A Table is read-only once built: the compiled configuration
// and the device's Normalizer share it.
type Table struct {
	rows   []row
	shapes []shape
}

// row is one point of a Table.
type row struct {
	Signal string
	Src    string
	shape  int32 // index in Table.shapes
}

// shape is what a Point holds besides its signal and source. Its range
// bounds point to values owned by the table, one per distinct value, so
// that equal shapes compare equal (a map key) and share one entry.
type shape struct {
	Unit       string
	Scale      float64
	Offset     float64
	Conv       units.Conversion
	Deadband   float64
	Labels     *Labels
	Min, Max   *float64
	IntervalMS int64
	NoUnit     bool
}

// NewTable returns points as a Table: a copy (points may be changed or
// dropped afterwards), with the defaults of a Point filled in (Scale 0 is
// 1, a Conv with Scale 0 is units.Identity).
func NewTable(points []Point) *Table {
	t := &Table{rows: make([]row, len(points))}
	// keyed by the floats' bits: -0 and 0 (and each NaN) stay apart
	ids := map[shapeKey]int32{}
	bounds := map[uint64]*float64{}
	bound := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		if b, ok := bounds[math.Float64bits(*p)]; ok {
			return b
		}
		b := new(float64)
		*b = *p
		bounds[math.Float64bits(*p)] = b
		return b
	}
	for i := range points {
		p := &points[i]
		sh := shape{Unit: p.Unit, Scale: p.Scale, Offset: p.Offset, Conv: p.Conv, Deadband: p.Deadband, Labels: p.Labels,
			Min: bound(p.Min), Max: bound(p.Max), IntervalMS: p.IntervalMS, NoUnit: p.NoUnit}
		if sh.Scale == 0 {
			sh.Scale = 1
		}
		if sh.Conv.Scale == 0 {
			sh.Conv = units.Identity
		}
		k := sh.key()
		id, ok := ids[k]
		if !ok {
			id = int32(len(t.shapes))
			t.shapes = append(t.shapes, sh)
			ids[k] = id
		}
		t.rows[i] = row{Signal: p.Signal, Src: p.Src, shape: id}
	}
	// exact size: the table lives as long as the gateway
	t.shapes = append([]shape(nil), t.shapes...)
	return t
}

// Len is the number of points.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.rows)
}

// Point returns point i as configured (its Min and Max point into the
// table: read them, do not change them).
func (t *Table) Point(i int) Point {
	r := &t.rows[i]
	sh := &t.shapes[r.shape]
	return Point{Signal: r.Signal, Unit: sh.Unit, Scale: sh.Scale, Offset: sh.Offset, Conv: sh.Conv, Deadband: sh.Deadband,
		Labels: sh.Labels, Min: sh.Min, Max: sh.Max, Src: r.Src, IntervalMS: sh.IntervalMS, NoUnit: sh.NoUnit}
}

// Signal is point i's signal.
func (t *Table) Signal(i int) string { return t.rows[i].Signal }

// Index returns the index of the point of signal sig, -1 when none.
func (t *Table) Index(sig string) int {
	if t == nil {
		return -1
	}
	for i := range t.rows {
		if t.rows[i].Signal == sig {
			return i
		}
	}
	return -1
}

// shapeKey is a shape as a map key, its floats as bits.
type shapeKey struct {
	unit                                           string
	scale, offset, convScale, convOffset, deadband uint64
	labels                                         *Labels
	min, max                                       *float64
	intervalMS                                     int64
	noUnit                                         bool
}

func (s *shape) key() shapeKey {
	b := math.Float64bits
	return shapeKey{unit: s.Unit, scale: b(s.Scale), offset: b(s.Offset), convScale: b(s.Conv.Scale), convOffset: b(s.Conv.Offset),
		deadband: b(s.Deadband), labels: s.Labels, min: s.Min, max: s.Max, intervalMS: s.IntervalMS, noUnit: s.NoUnit}
}

func (t *Table) shapeOf(i int) *shape { return &t.shapes[t.rows[i].shape] }
