package dashboard

import "math"

// point is one downsampled bucket of a signal as the tiers hand it out:
// the mean, minimum and maximum of the good readings whose source time
// fell into the bucket. A bucket that saw only bad or stale readings has
// n == 0 and is drawn as a gap: bad values are never interpolated.
type point struct {
	t            int64 // bucket start, Unix ms
	mean         float64
	min, max     float64
	n, bad       int
	qualityWorst uint8
}

// tier is a fixed-capacity ring of the buckets of one width that received
// readings, stored column-wise. Always kept: the running mean (Welford:
// v/n - mean/n, so no sum overflows) as float32. Kept only once needed,
// implied until then: the bucket numbers (uint32 from base; implied while
// the buckets held are evenly spaced, step apart: a signal polled every
// second, or every 15 s, or every 5 min), the count of good readings (implied 1
// while every bucket held exactly one), the count of bad ones (saturating
// at 16,383) with the worst quality in the top two bits (implied 0), and
// min and max (implied equal to the mean while no bucket held two good
// readings). A signal polled every second without bad readings costs 4
// bytes a fine bucket and 14 a coarse one; the most any bucket costs is
// 20. A series whose values leave the float32 range (beyond ±3.4e38)
// keeps float64 columns instead (wide), so any finite reading up to
// ±math.MaxFloat64 stays finite and the history JSON-encodable. Columns
// grow to the capacity, never past it.
//
// The tier itself holds what a reading of a series polled evenly without
// bad readings needs (the ring's place and the means); the columns such a
// series never has are behind c, so that a series' two tiers and its name
// fit in 192 bytes (three cache lines) instead of 448 (seven): with
// thousands of assets every line is a cache miss per reading
// (BenchmarkObserveBatchCollector).
type tier struct {
	res  int32 // bucket width, ms
	step int32 // bucket numbers between neighbours while there is no idx
	cap  int
	n    int   // buckets held
	head int   // index of the oldest bucket once the ring is full
	last int64 // bucket number (start / res) of the newest bucket
	base int64 // bucket number of idx 0

	mean []float32 // nil while wide
	c    *tierCols // nil: no idx, cnt, bq, lo, hi nor wide column
}

// tierCols are a tier's columns kept only once needed (see tier).
type tierCols struct {
	idx    []uint32  // bucket number - base; nil: step apart up to last
	cnt    []uint16  // good readings, saturating; nil: 1 each
	bq     []uint16  // bad readings (low 14 bits, saturating) | worst quality << 14; nil: 0
	lo, hi []float32 // nil: equal to the mean
	wide   *wideCols // float64 columns instead of mean, lo, hi
}

type wideCols struct{ mean, lo, hi []float64 }

// cols returns the tier's optional columns, created empty on first use.
func (t *tier) cols() *tierCols {
	if t.c == nil {
		t.c = &tierCols{}
	}
	return t.c
}

// index returns the bucket numbers' column, nil while implied.
func (t *tier) index() []uint32 {
	if t.c == nil {
		return nil
	}
	return t.c.idx
}

// wideCols returns the float64 columns, nil while the tier has none.
func (t *tier) wideCols() *wideCols {
	if t.c == nil {
		return nil
	}
	return t.c.wide
}

const (
	badMask = 1<<14 - 1
	f32Max  = math.MaxFloat32
)

func newTier(res, span int64) tier {
	n := int(span / res)
	if n < 1 {
		n = 1
	}
	return tier{res: int32(res), cap: n, step: 1}
}

// pos returns the index of the bucket of order k (0 the oldest).
func (t *tier) pos(k int) int {
	if t.n == t.cap {
		return wrap(t.head+k, t.cap)
	}
	return k
}

// order is the inverse of pos.
func (t *tier) order(i int) int {
	if t.n == t.cap {
		return wrap(i-t.head+t.cap, t.cap)
	}
	return i
}

// number is the bucket number of index i.
func (t *tier) number(i int) int64 {
	if idx := t.index(); idx != nil {
		return t.base + int64(idx[i])
	}
	return t.last - int64(t.n-1-t.order(i))*int64(t.step)
}

func (t *tier) start(i int) int64 { return t.number(i) * int64(t.res) }

func (t *tier) count(i int) uint16 {
	if t.c == nil || t.c.cnt == nil {
		return 1
	}
	return t.c.cnt[i]
}

func (t *tier) badq(i int) uint16 {
	if t.c == nil || t.c.bq == nil {
		return 0
	}
	return t.c.bq[i]
}

func growTo[T any](s []T, capacity int) []T {
	if len(s) < cap(s) {
		return s
	}
	c := min(max(2*cap(s), 16), capacity)
	out := make([]T, len(s), c)
	copy(out, s)
	return out
}

// column returns a column of len t.n filled by f, with room to grow.
func column[T any](t *tier, f func(i int) T) []T {
	out := make([]T, t.n, max(t.n, min(2*t.n, t.cap), 16))[:t.n]
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// push starts a new newest bucket of number b and returns its index.
func (t *tier) push(b int64) int {
	idx := t.index()
	if t.n > 0 && idx == nil && b != t.last+int64(t.step) {
		if d := b - t.last; t.n == 1 && d <= math.MaxInt32/int64(t.cap) {
			t.step = int32(d) // the second bucket sets the spacing
		} else { // unevenly spaced: numbers kept from now on
			t.base = t.number(t.pos(0))
			idx = column(t, func(i int) uint32 { return uint32(t.number(i) - t.base) })
			t.cols().idx = idx
		}
	}
	if t.n == 0 || (idx != nil && b-t.base > math.MaxUint32) {
		t.reset(b)
	}
	t.last = b
	var i int
	if t.n < t.cap {
		i = t.n
		t.n++
		c := t.c
		if c != nil {
			if c.idx != nil {
				c.idx = append(growTo(c.idx, t.cap), 0)
			}
			if c.cnt != nil {
				c.cnt = append(growTo(c.cnt, t.cap), 0)
			}
			if c.bq != nil {
				c.bq = append(growTo(c.bq, t.cap), 0)
			}
		}
		if c != nil && c.wide != nil {
			w := c.wide
			w.mean = append(growTo(w.mean, t.cap), 0)
			if w.lo != nil {
				w.lo, w.hi = append(growTo(w.lo, t.cap), 0), append(growTo(w.hi, t.cap), 0)
			}
		} else {
			t.mean = append(growTo(t.mean, t.cap), 0)
			if c != nil && c.lo != nil {
				c.lo, c.hi = append(growTo(c.lo, t.cap), 0), append(growTo(c.hi, t.cap), 0)
			}
		}
	} else {
		i = t.head
		t.head = wrap(t.head+1, t.cap)
		if c := t.c; c != nil {
			if c.cnt != nil {
				c.cnt[i] = 0
			}
			if c.bq != nil {
				c.bq[i] = 0
			}
		}
		t.set(i, 0, 0, 0)
	}
	if c := t.c; c != nil && c.idx != nil {
		c.idx[i] = uint32(b - t.base)
	}
	return i
}

// reset empties the tier and numbers buckets from b (the first bucket, or
// one more than 2^32 buckets after base).
func (t *tier) reset(b int64) {
	t.n, t.head, t.base, t.last, t.step = 0, 0, b, b, 1
	t.mean = t.mean[:0]
	if c := t.c; c != nil {
		c.idx, c.cnt, c.bq, c.lo, c.hi = nil, nil, nil, nil, nil
		if c.wide != nil {
			c.wide = &wideCols{mean: c.wide.mean[:0]}
		}
	}
}

// get returns bucket i's mean, min and max.
func (t *tier) get(i int) (mean, lo, hi float64) {
	c := t.c
	if c != nil && c.wide != nil {
		w := c.wide
		if w.lo == nil {
			return w.mean[i], w.mean[i], w.mean[i]
		}
		return w.mean[i], w.lo[i], w.hi[i]
	}
	m := float64(t.mean[i])
	if c == nil || c.lo == nil {
		return m, m, m
	}
	return m, float64(c.lo[i]), float64(c.hi[i])
}

// set stores bucket i's mean, min and max (min and max only where kept).
func (t *tier) set(i int, mean, lo, hi float64) {
	c := t.c
	if c != nil && c.wide != nil {
		w := c.wide
		w.mean[i] = mean
		if w.lo != nil {
			w.lo[i], w.hi[i] = lo, hi
		}
		return
	}
	t.mean[i] = float32(mean)
	if c != nil && c.lo != nil {
		c.lo[i], c.hi[i] = float32(lo), float32(hi)
	}
}

// spread keeps min and max columns from now on (a bucket got a second
// good reading), filled with the means so far.
func (t *tier) spread() {
	c := t.cols()
	if w := c.wide; w != nil {
		if w.lo == nil {
			w.lo = column(t, func(i int) float64 { return w.mean[i] })
			w.hi = column(t, func(i int) float64 { return w.mean[i] })
		}
		return
	}
	if c.lo == nil {
		c.lo = column(t, func(i int) float32 { return t.mean[i] })
		c.hi = column(t, func(i int) float32 { return t.mean[i] })
	}
}

// widen moves the values to float64 columns (a value beyond float32).
func (t *tier) widen() {
	c := t.cols()
	w := &wideCols{mean: column(t, func(i int) float64 { return float64(t.mean[i]) })}
	if c.lo != nil {
		w.lo = column(t, func(i int) float64 { return float64(c.lo[i]) })
		w.hi = column(t, func(i int) float64 { return float64(c.hi[i]) })
	}
	t.mean, c.lo, c.hi, c.wide = nil, nil, nil, w
}

// warm loads the newest bucket's index and mean (see assetLive.warm).
func (t *tier) warm() uint32 {
	if t.n == 0 {
		return 0
	}
	i := t.pos(t.n - 1)
	var x uint32
	if c := t.c; c != nil && c.idx != nil {
		x = c.idx[i]
	}
	if t.mean == nil { // wide
		return x
	}
	return x + uint32(len(t.mean)) + math.Float32bits(t.mean[i])
}

// add folds one reading into the tier; it reports false when ts is older
// than the newest bucket (out of order), which is dropped.
func (t *tier) add(ts int64, v float64, good bool, q uint8) bool {
	b := floorDiv(ts, int64(t.res))
	var i int
	fresh := false
	switch {
	case t.n == 0 || b > t.last:
		i, fresh = t.push(b), true
	case b < t.last:
		return false
	default:
		i = t.pos(t.n - 1)
	}
	bad := !good || math.IsNaN(v) || math.IsInf(v, 0) // not a number: counted as bad, never averaged
	if bad || q > 0 {
		c := t.cols()
		if c.bq == nil {
			c.bq = column(t, func(int) uint16 { return 0 })
		}
		if q > uint8(c.bq[i]>>14) {
			c.bq[i] = c.bq[i]&badMask | uint16(min(q, 3))<<14
		}
	}
	if bad {
		// c made above
		c := t.c
		if fresh && c.cnt == nil { // no good reading in this bucket (yet)
			c.cnt = column(t, func(int) uint16 { return 1 })
			c.cnt[i] = 0
		}
		if c.bq[i]&badMask < badMask {
			c.bq[i]++
		}
		return true
	}
	if math.Abs(v) > f32Max && t.wideCols() == nil {
		t.widen()
	}
	if fresh {
		if c := t.c; c != nil && c.cnt != nil {
			c.cnt[i] = 1
		}
		t.set(i, v, v, v)
		return true
	}
	c := t.cols()
	if c.cnt == nil {
		c.cnt = column(t, func(int) uint16 { return 1 })
	}
	n := c.cnt[i]
	if n == math.MaxUint16 {
		mean, lo, hi := t.get(i)
		t.set(i, mean, min(lo, v), max(hi, v))
		return true
	}
	n++
	c.cnt[i] = n
	if n == 1 {
		t.set(i, v, v, v)
		return true
	}
	t.spread()
	mean, lo, hi := t.get(i)
	// v/n - mean/n rather than (v-mean)/n: the difference of two finite
	// values can overflow, the scaled terms cannot
	mean += v/float64(n) - mean/float64(n)
	t.set(i, mean, min(lo, v), max(hi, v))
	return true
}

// at returns bucket i as a point.
func (t *tier) at(i int) point {
	mean, lo, hi := t.get(i)
	bq := t.badq(i)
	return point{t: t.start(i), mean: min(max(mean, lo), hi), min: lo, max: hi, n: int(t.count(i)),
		bad: int(bq & badMask), qualityWorst: uint8(bq >> 14)}
}

// each calls f for every point with t >= since, oldest first, until f
// returns false.
func (t *tier) each(since int64, f func(p *point) bool) {
	for k := range t.n {
		j := t.pos(k)
		if t.start(j)+int64(t.res) <= since {
			continue
		}
		p := t.at(j)
		if !f(&p) {
			return
		}
	}
}

func (t *tier) oldest() (int64, bool) {
	if t.n == 0 {
		return 0, false
	}
	return t.start(t.pos(0)), true
}

// wrap is i % n for 0 <= i < 2n (a ring index plus an offset below the
// ring's length), without a division.
func wrap(i, n int) int {
	if i >= n {
		i -= n
	}
	return i
}

// floorDiv is a / b rounded towards minus infinity for b > 0, the number of
// the bucket of width b that holds a: (a - mod(a, b)) / b with one division.
func floorDiv(a, b int64) int64 {
	q := a / b
	if q*b > a { // a negative a not a multiple of b: / rounded towards zero
		q--
	}
	return q
}

// series is the recent history of one asset signal in two tiers: fine
// buckets for the last minutes and coarse ones for the last hour.
type series struct {
	name   string // the signal, a key of assetLive.series
	unit   string
	fine   tier
	coarse tier
}

// Point is one history point as served by the API. V, Min and Max are nil
// for a gap (only bad or stale readings in the bucket).
type Point struct {
	T       int64    `json:"t"`
	V       *float64 `json:"v"`
	Min     *float64 `json:"min,omitempty"`
	Max     *float64 `json:"max,omitempty"`
	N       int      `json:"n"`
	Bad     int      `json:"bad,omitempty"`
	Quality string   `json:"quality"`
}

var qualityNames = [...]string{"good", "uncertain", "bad", "stale"}

func (p *point) export() Point {
	out := Point{T: p.t, N: p.n, Bad: p.bad, Quality: "good"}
	if int(p.qualityWorst) < len(qualityNames) {
		out.Quality = qualityNames[p.qualityWorst]
	}
	if p.n > 0 {
		avg := roundSig(p.mean)
		lo, hi := roundSig(p.min), roundSig(p.max)
		out.V, out.Min, out.Max = &avg, &lo, &hi
	}
	return out
}

// points returns the history since (Unix ms): coarse buckets up to where
// the fine tier begins, fine buckets after.
func (s *series) points(since int64) []Point {
	var out []Point
	fineStart, ok := s.fine.oldest()
	if !ok {
		fineStart = math.MaxInt64
	}
	s.coarse.each(since, func(p *point) bool {
		if p.t+int64(s.coarse.res) > fineStart {
			return false
		}
		out = append(out, p.export())
		return true
	})
	s.fine.each(since, func(p *point) bool {
		out = append(out, p.export())
		return true
	})
	return out
}

// roundSig rounds to 6 significant digits, enough for any display and
// compact in JSON. A finite v gives a finite result: where the scaling
// would overflow (|v| near math.MaxFloat64, or subnormal) v is returned
// as it is.
func roundSig(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	e := math.Pow(10, 5-math.Floor(math.Log10(math.Abs(v))))
	r := math.Round(v*e) / e
	if math.IsNaN(r) || math.IsInf(r, 0) || math.IsInf(e, 0) || e == 0 {
		return v
	}
	return r
}
