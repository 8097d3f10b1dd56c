package dashboard

import "math"

// point is one downsampled bucket of a signal: the mean, minimum and
// maximum of the good readings whose source time fell into the bucket. A
// bucket that saw only bad or stale readings has n == 0 and is drawn as a
// gap: bad values are never interpolated. The mean is kept as a running
// mean (Welford), not a sum, and min and max as float64, so any finite
// reading (up to ±math.MaxFloat64) keeps every field finite and the
// history JSON-encodable.
type point struct {
	t            int64 // bucket start, Unix ms
	mean         float64
	min, max     float64
	n, bad       uint16
	qualityWorst uint8
}

// tier is a fixed-capacity ring of buckets of one width.
type tier struct {
	res  int64 // bucket width, ms
	pts  []point
	head int // index of the oldest point once the ring is full
	cap  int
}

func newTier(res, span int64) tier {
	n := int(span / res)
	if n < 1 {
		n = 1
	}
	return tier{res: res, cap: n}
}

func (t *tier) last() *point {
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
func (t *tier) add(ts int64, v float64, good bool, q uint8) bool {
	b := ts - mod(ts, t.res)
	lp := t.last()
	if lp == nil || b > lp.t {
		p := point{t: b}
		if len(t.pts) < t.cap {
			if t.pts == nil {
				t.pts = make([]point, 0, min(t.cap, 64))
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
func (t *tier) each(since int64, f func(p *point) bool) {
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

func (t *tier) oldest() (int64, bool) {
	if len(t.pts) == 0 {
		return 0, false
	}
	if len(t.pts) == t.cap {
		return t.pts[t.head].t, true
	}
	return t.pts[0].t, true
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// series is the recent history of one asset signal in two tiers: fine
// buckets for the last minutes and coarse ones for the last hour.
type series struct {
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
	out := Point{T: p.t, N: int(p.n), Bad: int(p.bad), Quality: "good"}
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
		if p.t+s.coarse.res > fineStart {
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
