package dashboard

// refTier is the history tier as it was before the column store (float64
// buckets of 40 bytes): the reference TestTierMatchesReference compares with.

import (
	"math"
	"math/rand/v2"
	"testing"
)

// point is one downsampled bucket of a signal: the mean, minimum and
// maximum of the good readings whose source time fell into the bucket. A
// bucket that saw only bad or stale readings has n == 0 and is drawn as a
// gap: bad values are never interpolated. The mean is kept as a running
// mean (Welford), not a sum, and min and max as float64, so any finite
// reading (up to ±math.MaxFloat64) keeps every field finite and the
// history JSON-encodable.
type refPoint struct {
	t            int64 // bucket start, Unix ms
	mean         float64
	min, max     float64
	n, bad       uint16
	qualityWorst uint8
}

// tier is a fixed-capacity ring of buckets of one width.
type refTier struct {
	res  int64 // bucket width, ms
	pts  []refPoint
	head int // index of the oldest point once the ring is full
	cap  int
}

func newRefTier(res, span int64) refTier {
	n := int(span / res)
	if n < 1 {
		n = 1
	}
	return refTier{res: res, cap: n}
}

func (t *refTier) last() *refPoint {
	if len(t.pts) == 0 {
		return nil
	}
	i := len(t.pts) - 1
	if len(t.pts) == t.cap {
		i = (t.head + t.cap - 1) % t.cap
	}
	return &t.pts[i]
}

// add folds one reading into the tier; it reports false when ts is older
// than the newest bucket (out of order), which is dropped.
func (t *refTier) add(ts int64, v float64, good bool, q uint8) bool {
	b := ts - mod(ts, t.res)
	lp := t.last()
	if lp == nil || b > lp.t {
		p := refPoint{t: b}
		if len(t.pts) < t.cap {
			if t.pts == nil {
				t.pts = make([]refPoint, 0, min(t.cap, 64))
			}
			t.pts = append(t.pts, p)
		} else {
			t.pts[t.head] = p
			t.head = (t.head + 1) % t.cap
		}
		lp = t.last()
	} else if b < lp.t {
		return false
	}
	if q > lp.qualityWorst {
		lp.qualityWorst = q
	}
	if !good {
		if lp.bad < math.MaxUint16 {
			lp.bad++
		}
		return true
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		// not a number: counted as bad, never averaged (ingest gives such
		// readings bad quality already)
		if lp.bad < math.MaxUint16 {
			lp.bad++
		}
		return true
	}
	if lp.n == 0 || v < lp.min {
		lp.min = v
	}
	if lp.n == 0 || v > lp.max {
		lp.max = v
	}
	if lp.n < math.MaxUint16 {
		lp.n++
		// v/n - mean/n rather than (v-mean)/n: the difference of two
		// finite values can overflow, the scaled terms cannot
		lp.mean += v/float64(lp.n) - lp.mean/float64(lp.n)
	}
	return true
}

// each calls f for every point with t >= since, oldest first, until f
// returns false.
func (t *refTier) each(since int64, f func(p *refPoint) bool) {
	n := len(t.pts)
	for i := range n {
		j := i
		if n == t.cap {
			j = (t.head + i) % t.cap
		}
		if t.pts[j].t+t.res <= since {
			continue
		}
		if !f(&t.pts[j]) {
			return
		}
	}
}

func (t *refTier) oldest() (int64, bool) {
	if len(t.pts) == 0 {
		return 0, false
	}
	if len(t.pts) == t.cap {
		return t.pts[t.head].t, true
	}
	return t.pts[0].t, true
}

// TestTierMatchesReference feeds random streams (gaps, bursts, bad and
// non-finite readings, out-of-order times, values beyond float32, wrapping
// rings; a quarter of them evenly spaced, every 1-20 buckets with a rare
// irregular step, as a signal polled slower than the bucket width) to the
// column tier and the reference and requires the same
// buckets: times, counts, bad counts and worst quality exactly, mean, min
// and max within float32 rounding.
func TestTierMatchesReference(t *testing.T) {
	for seed := range 60 {
		rng := rand.New(rand.NewPCG(uint64(seed), 5))
		res, span := int64(1000), int64(1000*(1+rng.IntN(40)))
		got, want := newTier(res, span), newRefTier(res, span)
		ts := int64(1_700_000_000_000) + rng.Int64N(1000)
		huge := seed%5 == 0
		stride := int64(0) // evenly spaced: ts += stride
		if seed%4 == 1 {
			stride = res * int64(1+rng.IntN(20))
		}
		for step := range 3000 {
			switch r := rng.IntN(100); {
			case stride > 0 && r < 95:
				ts += stride
			case stride > 0: // off the spacing, forwards or backwards
				ts += int64(rng.IntN(4000)) - 1000
			case r < 60:
				ts += int64(rng.IntN(1500))
			case r < 65:
				ts += int64(rng.IntN(100_000))
			case r < 70:
				ts -= int64(rng.IntN(3000)) // out of order
			}
			v := 50 + rng.NormFloat64()*10
			if huge && rng.IntN(50) == 0 {
				v = math.MaxFloat64 / float64(1+rng.IntN(3)) * float64(1-2*rng.IntN(2))
			}
			good := rng.IntN(20) != 0
			if rng.IntN(100) == 0 {
				v = math.NaN()
			}
			q := uint8(0)
			if !good {
				q = uint8(1 + rng.IntN(3))
			}
			if a, b := got.add(ts, v, good, q), want.add(ts, v, good, q); a != b {
				t.Fatalf("seed %d step %d: add %v, reference %v", seed, step, a, b)
			}
			if step%97 != 0 && step != 2999 {
				continue
			}
			var gp []point
			var rp []refPoint
			got.each(0, func(p *point) bool { gp = append(gp, *p); return true })
			want.each(0, func(p *refPoint) bool { rp = append(rp, *p); return true })
			if len(gp) != len(rp) {
				t.Fatalf("seed %d step %d: %d buckets, reference %d", seed, step, len(gp), len(rp))
			}
			near := func(a, b float64) bool {
				return a == b || math.Abs(a-b) <= 1e-6*math.Max(math.Abs(a), math.Abs(b)) || math.Abs(a-b) < 1e-30
			}
			for i := range gp {
				g, r := gp[i], rp[i]
				if g.t != r.t || g.n != int(r.n) || g.bad != int(r.bad) || g.qualityWorst != r.qualityWorst {
					t.Fatalf("seed %d step %d bucket %d: %+v, reference %+v", seed, step, i, g, r)
				}
				if r.n > 0 && (!near(g.mean, r.mean) || !near(g.min, r.min) || !near(g.max, r.max)) {
					t.Fatalf("seed %d step %d bucket %d: %+v, reference %+v", seed, step, i, g, r)
				}
			}
			if o, ok := got.oldest(); ok {
				if ro, _ := want.oldest(); o != ro {
					t.Fatalf("oldest %d, reference %d", o, ro)
				}
			}
		}
	}
}

// mod is a % b in [0, b) for b > 0: the reference's bucket start.
func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// floorDiv gives the bucket number the reference's bucket start gives, for
// times before and after 1970, on and off a bucket's edge, and at the ends
// of int64; wrap is % for the ring indexes the tiers use.
func TestFloorDivAndWrap(t *testing.T) {
	res := []int64{1, 7, 1000, 15000, 3600000}
	ts := []int64{0, 1, -1, 999, 1000, 1001, -999, -1000, -1001, 1764550000000, -1764550000123,
		math.MaxInt64, math.MinInt64 + 3600000}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		ts = append(ts, rng.Int64N(1<<50)-1<<49)
	}
	for _, r := range res {
		for _, a := range ts {
			if got, want := floorDiv(a, r), (a-mod(a, r))/r; got != want {
				t.Fatalf("floorDiv(%d, %d) = %d, want %d", a, r, got, want)
			}
		}
	}
	for _, n := range []int{1, 2, 300, 240} {
		for i := range 2 * n {
			if got := wrap(i, n); got != i%n {
				t.Fatalf("wrap(%d, %d) = %d, want %d", i, n, got, i%n)
			}
		}
	}
}
