package rules

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
)

// evaluator is the per-signal state of one rule kind. step consumes one
// good value and returns the severity the condition asks for now; pause is
// called for values the rule must not see (asset not running, guard false).
type evaluator interface {
	step(in *inst, x float64, ts int64) alert.Severity
	pause()
}

func newEvaluator(r *Rule) evaluator {
	switch r.Kind {
	case KindThreshold:
		return &thresholdEval{}
	case KindRate:
		return &rateEval{}
	case KindStuck:
		return newStuck(r)
	case KindEWMA:
		return &ewmaEval{}
	case KindZScore:
		return &zscoreEval{vals: make([]float64, r.N)}
	case KindCUSUM:
		return &cusumEval{}
	case KindPeer:
		return &peerEval{}
	}
	panic("rules: no evaluator for kind " + string(r.Kind)) // Parse rejects unknown kinds
}

// threshold with deadband: a level is entered at x >= limit (above) and
// held while x > limit - deadband.
type thresholdEval struct{ x, limit float64 }

func (t *thresholdEval) step(in *inst, x float64, _ int64) alert.Severity {
	r := in.r
	t.x = x
	for i := len(r.Levels) - 1; i >= 0; i-- {
		l := r.Levels[i]
		held := in.latch.Level >= l.Severity
		var on bool
		if r.Below {
			on = x <= l.Limit || held && x < l.Limit+r.Deadband
		} else {
			on = x >= l.Limit || held && x > l.Limit-r.Deadband
		}
		if on {
			t.limit = l.Limit
			return l.Severity
		}
	}
	if len(r.Levels) > 0 {
		t.limit = r.Levels[0].Limit
	}
	return alert.None
}
func (t *thresholdEval) pause() {}

// rate of change over a window: samples are kept every window/64, the
// reference is the newest sample at least one window old.
const rateCap = 80

type rateEval struct {
	ts      [rateCap]int64
	v       [rateCap]float64
	head, n int
	delta   float64
	x       float64
}

func (re *rateEval) step(in *inst, x float64, ts int64) alert.Severity {
	r := in.r
	re.x = x
	last := (re.head + re.n - 1) % rateCap
	if re.n == 0 || ts-re.ts[last] >= r.Window/64 {
		if re.n == rateCap {
			re.head = (re.head + 1) % rateCap
			re.n--
		}
		i := (re.head + re.n) % rateCap
		re.ts[i], re.v[i] = ts, x
		re.n++
	}
	ref := -1
	for k := 0; k < re.n; k++ {
		i := (re.head + k) % rateCap
		if ts-re.ts[i] >= r.Window {
			ref = i
			continue
		}
		break
	}
	if ref < 0 {
		return in.latch.Level // not enough history yet: no change
	}
	dt := ts - re.ts[ref]
	d := x - re.v[ref]
	if r.Wrap > 0 { // an angle: the shortest way round (179.999 -> -179.999 is 0.002)
		d -= r.Wrap * math.Round(d/r.Wrap)
	}
	re.delta = d * float64(r.Window) / float64(dt)
	switch {
	case r.Direction != "fall" && re.delta > r.Limit:
		return r.Severity
	case r.Direction != "rise" && -re.delta > r.Limit:
		return r.Severity
	}
	return alert.None
}
func (re *rateEval) pause() {}

// stuck: max - min over the window below the resolution (DOMAIN.md
// "stuck sensor": max - min over W polls). The window is Polls slots, each
// the lowest and highest reading of a slice of data time MinSpan/(Polls-1)
// long (stuckSlice), so that it covers at least Polls readings and at least
// MinSpan of data time: at a poll interval of a slice or more every reading
// has a slot of its own (W polls), faster polls share one. Without it, 30
// polls at 100 ms judged 3 s, where a slowly moving signal or the flat top
// of a compressor's load cycle stays within the resolution: a stuck alert
// raised and cleared within 100-300 ms, ten times in 12 minutes (bbtest3
// F13).
type stuckEval struct {
	lo, hi  []float64 // per slot, a ring; head is the next slot
	slice   int64     // data time of the newest slot, in slices (noSlice: none)
	head, n int
	spread  float64
}

// noSlice: no slot to add the next reading to.
const noSlice = math.MinInt64

// stuckSlice is the data time (ms) one slot of r's window covers, 0 when
// every reading has a slot (min_span 0 or a single poll).
func stuckSlice(r *Rule) int64 {
	if r.MinSpan <= 0 || r.Polls < 2 {
		return 0
	}
	return (r.MinSpan + int64(r.Polls) - 2) / int64(r.Polls-1) // rounded up
}

func newStuck(r *Rule) *stuckEval {
	return &stuckEval{lo: make([]float64, r.Polls), hi: make([]float64, r.Polls), slice: noSlice}
}

func (s *stuckEval) step(in *inst, x float64, ts int64) alert.Severity {
	sl := int64(noSlice)
	if d := stuckSlice(in.r); d > 0 {
		sl = ts / d
		if ts < 0 && ts%d != 0 {
			sl--
		}
	}
	if sl != noSlice && sl == s.slice && s.n > 0 { // the newest slot's slice: widen it
		i := (s.head + len(s.lo) - 1) % len(s.lo)
		s.lo[i], s.hi[i] = min(s.lo[i], x), max(s.hi[i], x)
	} else {
		s.lo[s.head], s.hi[s.head], s.slice = x, x, sl
		s.head = (s.head + 1) % len(s.lo)
		if s.n < len(s.lo) {
			s.n++
		}
	}
	if s.n < len(s.lo) {
		return alert.None
	}
	lo, hi := s.lo[0], s.hi[0]
	for i := 1; i < len(s.lo); i++ {
		lo, hi = min(lo, s.lo[i]), max(hi, s.hi[i])
	}
	s.spread = hi - lo
	if s.spread < in.r.Resolution {
		return in.r.Severity
	}
	return alert.None
}
func (s *stuckEval) pause() { s.n, s.head, s.slice = 0, 0, noSlice }

// baseline estimates mean and sigma: Welford over the warmup, then either
// frozen or exponentially forgetting over Baseline samples.
type baseline struct {
	n        int
	mean, m2 float64
}

func (b *baseline) warm(r *Rule) bool { return b.n >= r.Warmup }

func (b *baseline) add(r *Rule, x float64) {
	if b.n < r.Warmup {
		b.n++
		d := x - b.mean
		b.mean += d / float64(b.n)
		b.m2 += d * (x - b.mean)
		if b.n == r.Warmup && b.n > 1 {
			b.m2 /= float64(b.n - 1) // m2 holds the variance from here on
		}
		return
	}
	if r.Baseline > 0 {
		a := 1 / float64(r.Baseline)
		d := x - b.mean
		b.mean += a * d
		b.m2 = (1 - a) * (b.m2 + a*d*d)
	}
}

func (b *baseline) sigma(r *Rule) float64 { return max(math.Sqrt(b.m2), r.MinSigma, 1e-12) }

// EWMA control chart: z = l x + (1-l) z, limits mean +- L sigma sqrt(l/(2-l)).
type ewmaEval struct {
	b       baseline
	z       float64
	started bool
	lim     float64
	x       float64
}

func (w *ewmaEval) step(in *inst, x float64, _ int64) alert.Severity {
	r := in.r
	w.x = x
	if !w.b.warm(r) {
		w.b.add(r, x)
		return alert.None
	}
	if !w.started {
		w.z, w.started = w.b.mean, true
	}
	w.z = r.Lambda*x + (1-r.Lambda)*w.z
	w.lim = r.L * w.b.sigma(r) * math.Sqrt(r.Lambda/(2-r.Lambda))
	if math.Abs(w.z-w.b.mean) > w.lim {
		return r.Severity
	}
	w.b.add(r, x)
	return alert.None
}
func (w *ewmaEval) pause() {}

// rolling z-score of x against the previous N values.
type zscoreEval struct {
	vals    []float64
	head, n int
	z       float64
	mean    float64
	sd      float64
}

func (zs *zscoreEval) step(in *inst, x float64, _ int64) alert.Severity {
	r := in.r
	tgt := alert.None
	if zs.n == len(zs.vals) {
		s, s2 := 0.0, 0.0
		for _, v := range zs.vals {
			s += v
		}
		m := s / float64(zs.n)
		for _, v := range zs.vals {
			s2 += (v - m) * (v - m)
		}
		zs.mean = m
		zs.sd = max(math.Sqrt(s2/float64(zs.n-1)), r.MinSigma, 1e-12)
		zs.z = (x - m) / zs.sd
		if math.Abs(zs.z) > r.Limit {
			tgt = r.Severity
		}
	}
	zs.vals[zs.head] = x
	zs.head = (zs.head + 1) % len(zs.vals)
	if zs.n < len(zs.vals) {
		zs.n++
	}
	return tgt
}
func (zs *zscoreEval) pause() {}

// tabular CUSUM on standardised values: S+ = max(0, S+ + u - k),
// S- = max(0, S- - u - k), signal when either exceeds h.
type cusumEval struct {
	b         baseline
	hi, lo, x float64
}

func (c *cusumEval) step(in *inst, x float64, _ int64) alert.Severity {
	r := in.r
	c.x = x
	if !c.b.warm(r) {
		c.b.add(r, x)
		return alert.None
	}
	u := (x - c.b.mean) / c.b.sigma(r)
	c.hi = max(0, c.hi+u-r.CusumK)
	c.lo = max(0, c.lo-u-r.CusumK)
	if c.hi > r.CusumH || c.lo > r.CusumH {
		return r.Severity
	}
	if c.hi < r.CusumH/2 && c.lo < r.CusumH/2 {
		c.b.add(r, x)
	}
	return alert.None
}
func (c *cusumEval) pause() {}

// peer comparison: the value against the median of the same signal on the
// other assets that share the group_by nameplate value.
type peerKey struct {
	site, class, signal, group string
	value                      float64
}

type peerMember struct {
	v   float64
	ts  int64 // 0: not a valid peer (paused, or no value yet)
	uid uint64
	// nodes in the group's trees while ts != 0
	byVal, byTS onode
	in          bool
}

// peerGroup holds the members of one group in two order-statistic trees,
// by value and by time, so that the median of the members within max_age
// of a reading costs O(log n) (plus O(k log n) for k members outside the
// age window), not a scan and sort of the whole group.
type peerGroup struct {
	members map[string]*peerMember
	byVal   ostree
	byTS    ostree
	uids    uint64
	excl    []int // scratch: ranks of excluded members
}

func newPeerGroup() *peerGroup {
	return &peerGroup{members: map[string]*peerMember{},
		byVal: ostree{less: func(a, b *peerMember) bool { return a.v < b.v || (a.v == b.v && a.uid < b.uid) }},
		byTS:  ostree{less: func(a, b *peerMember) bool { return a.ts < b.ts || (a.ts == b.ts && a.uid < b.uid) }}}
}

// join adds a fresh member for id, replacing one it had.
func (g *peerGroup) join(id string) *peerMember {
	g.leave(id)
	g.uids++
	m := &peerMember{uid: g.uids}
	m.byVal.m, m.byTS.m = m, m
	m.byVal.pri, m.byTS.pri = mix(m.uid), mix(m.uid^0x5bd1e995)
	g.members[id] = m
	return m
}

func (g *peerGroup) leave(id string) {
	if m, ok := g.members[id]; ok {
		g.set(m, 0, 0)
		delete(g.members, id)
	}
}

// set updates a member's value and time (ts 0: not a valid peer).
func (g *peerGroup) set(m *peerMember, v float64, ts int64) {
	if m.in {
		g.byVal.remove(m)
		g.byTS.remove(m)
		m.in = false
	}
	m.v, m.ts = v, ts
	if ts != 0 {
		g.byVal.insert(&m.byVal)
		g.byTS.insert(&m.byTS)
		m.in = true
	}
}

// peerScanAbove: with more members outside the age window than this (and
// than an eighth of the group), the median is taken by a scan instead.
const peerScanAbove = 64

// median returns the median value of the members other than self whose
// time is within maxAge of ts, and their count; the median is computed
// only when there are at least minPeers of them. scratch is for the
// scan fallback.
func (g *peerGroup) median(self *peerMember, ts, maxAge int64, minPeers int, scratch *[]float64) (float64, int) {
	excl := g.excl[:0]
	if self.in {
		excl = append(excl, g.byVal.rank(self))
	}
	limit := max(peerScanAbove, g.byVal.len()/8)
	over := false
	old := func(m *peerMember) bool {
		if ts-m.ts <= maxAge {
			return false
		}
		if m != self {
			excl = append(excl, g.byVal.rank(m))
		}
		over = len(excl) > limit
		return !over
	}
	g.byTS.ascend(old)
	if !over {
		g.byTS.descend(func(m *peerMember) bool {
			if m.ts-ts <= maxAge {
				return false
			}
			if m != self {
				excl = append(excl, g.byVal.rank(m))
			}
			over = len(excl) > limit
			return !over
		})
	}
	g.excl = excl[:0]
	if over { // many silent members: scan, as the tree would skip too many
		return g.scanMedian(self, ts, maxAge, minPeers, scratch)
	}
	n := g.byVal.len() - len(excl)
	if n < minPeers || n == 0 {
		return 0, n
	}
	slices.Sort(excl)
	// kth is the value of rank k among the members not excluded
	kth := func(k int) float64 {
		for _, e := range excl {
			if e > k {
				break
			}
			k++
		}
		return g.byVal.at(k).v
	}
	if n%2 == 1 {
		return kth(n / 2), n
	}
	return (kth(n/2-1) + kth(n/2)) / 2, n
}

// scanMedian is median by a scan of every member and a sort: the peer
// rule's median as it was computed before the trees, O(n log n).
func (g *peerGroup) scanMedian(self *peerMember, ts, maxAge int64, minPeers int, scratch *[]float64) (float64, int) {
	sc := (*scratch)[:0]
	for _, m := range g.members {
		if m == self || m.ts == 0 || ts-m.ts > maxAge || m.ts-ts > maxAge {
			continue
		}
		sc = append(sc, m.v)
	}
	*scratch = sc[:0]
	if len(sc) < minPeers {
		return 0, len(sc)
	}
	return median(sc), len(sc)
}

type peerEval struct {
	g      *peerGroup
	gval   float64
	me     *peerMember
	median float64
	ratio  float64
	peers  int
}

func (p *peerEval) group(in *inst) bool {
	gv, ok := in.a.nameplate[in.r.GroupBy]
	if !ok {
		if p.g != nil {
			p.g.leave(in.a.id)
			p.g, p.me = nil, nil
		}
		return false
	}
	if p.g != nil && p.gval == gv {
		return true
	}
	if p.g != nil {
		p.g.leave(in.a.id)
	}
	k := peerKey{in.a.site, in.a.class, in.sig.name, in.r.GroupBy, gv}
	g, ok := in.a.e.peers[k]
	if !ok {
		g = newPeerGroup()
		in.a.e.peers[k] = g
	}
	p.g, p.gval = g, gv
	p.me = g.join(in.a.id)
	return true
}

func (p *peerEval) step(in *inst, x float64, ts int64) alert.Severity {
	if !p.group(in) {
		return alert.None
	}
	p.g.set(p.me, x, ts)
	med, n := p.g.median(p.me, ts, in.r.MaxAge, in.r.MinPeers, &in.a.e.scratch)
	p.peers = n
	if n < in.r.MinPeers {
		return in.latch.Level
	}
	p.median = med
	if p.median <= 0 {
		return alert.None
	}
	p.ratio = x / p.median
	if p.ratio < in.r.Ratio {
		return in.r.Severity
	}
	return alert.None
}

func (p *peerEval) pause() {
	if p.me != nil {
		p.g.set(p.me, p.me.v, 0) // not a valid peer while its guard is false
	}
}

func fv(x float64) string {
	if x == math.Trunc(x) && math.Abs(x) < 1e15 {
		return strconv.FormatInt(int64(x), 10)
	}
	return strconv.FormatFloat(x, 'g', 5, 64)
}

func withUnit(x float64, unit string) string {
	if unit == "" || unit == "1" {
		return fv(x)
	}
	return fv(x) + " " + unit
}

func ms(d int64) string { return (fmtDuration(d)) }

func fmtDuration(d int64) string {
	switch {
	case d%3600000 == 0 && d >= 3600000:
		return strconv.FormatInt(d/3600000, 10) + " h"
	case d%60000 == 0 && d >= 60000:
		return strconv.FormatInt(d/60000, 10) + " min"
	default:
		return strconv.FormatFloat(float64(d)/1000, 'g', 4, 64) + " s"
	}
}

// describe builds the human message and the triggering values of an alert.
func (e *Engine) describe(in *inst, st alert.State) (string, map[string]float64) {
	a, r := in.a, in.r
	who := a.class + " " + a.id
	prefix := ""
	if st == alert.Cleared {
		prefix = "cleared: "
	}
	vals := map[string]float64{}
	var msg string
	if in.sig == nil && in.impl == nil && in.expr == nil { // asset silence / death
		switch {
		case a.dead != "":
			msg = who + " reported dead by its gateway: " + a.dead
		case st == alert.Cleared:
			msg = who + " sends data again"
		case e.gap[0] > 0: // gapSilence
			age := in.latch.Raised - a.heardGW
			msg = fmt.Sprintf("%s sent nothing for %s (%s x its %s interval), found on replay: its batches %s apart by its gateway's clock and %s by the stream's",
				who, ms(age), fv(r.K), ms(e.gap[2]), ms(e.gap[0]), ms(e.gap[1]))
			return prefix + msg, map[string]float64{"age_ms": float64(age), "counted_ms": float64(age), "gap_ms": float64(e.gap[0]), "stored_gap_ms": float64(e.gap[1])}
		default:
			// the time since its last batch is what the operator acts on;
			// when a disruption of the caller's stream ended after it
			// (Tick's from), only the time since counted: say both
			age, counted := in.latch.Raised-a.lastRecv, in.latch.Raised-max(a.lastRecv, e.from)
			if counted < age {
				msg = fmt.Sprintf("%s sent nothing for %s; counted from the end of a disruption of the collector's stream plus grace: %s (%s x its %s interval)",
					who, ms(age), ms(counted), fv(r.K), ms(a.silenceIV()))
			} else {
				msg = fmt.Sprintf("%s sent nothing for %s (%s x its %s interval)", who, ms(age), fv(r.K), ms(a.silenceIV()))
			}
			return prefix + msg, map[string]float64{"age_ms": float64(age), "counted_ms": float64(counted)}
		}
		return prefix + msg, nil
	}
	if in.expr != nil { // expr rule
		for i, id := range in.expr.e.idents {
			if s := in.expr.bd.slots[i]; s >= 0 {
				if v, ok := a.slotValue(s); ok {
					vals[id] = v
				}
			} else if in.expr.bd.okc[i] {
				vals[id] = in.expr.bd.consts[i]
			} else {
				for _, s := range in.expr.bd.globs[i] {
					if v, ok := a.slotValue(s); ok {
						vals[a.list[s].name] = v
					}
				}
			}
		}
		return fmt.Sprintf("%s%s %s: %s (%s)", prefix, who, r.Name, r.Expr.src, fmtVals(vals)), vals
	}
	s := in.sig
	sig := s.name
	switch r.Kind {
	case KindStale:
		iv := r.Interval
		if iv == 0 {
			iv = s.interval
		}
		switch age := a.lastTSGW - max(s.good, s.firstArr); {
		case st == alert.Cleared:
			msg = fmt.Sprintf("%s %s has a good value again", who, sig)
		case s.quality == 3:
			msg = fmt.Sprintf("%s %s reported stale by its gateway", who, sig)
		case float64(age) <= r.K*float64(iv):
			// raised for its quality, not its age
			msg = fmt.Sprintf("%s %s has no good value: its last reading is %s", who, sig, s.quality)
		default:
			msg = fmt.Sprintf("%s %s has no good value for %s (%s x %s interval), last quality %s", who, sig,
				ms(age), fv(r.K), ms(iv), s.quality)
		}
		vals["age_ms"] = float64(a.lastTSGW - max(s.good, s.firstArr))
	case KindPlausibility:
		vals[sig] = s.value
		msg = fmt.Sprintf("%s %s %s outside its plausible range [%s, %s]", who, sig, withUnit(s.value, s.unit),
			rangeEnd(s.min, s.hasMin, "-inf"), rangeEnd(s.max, s.hasMax, "+inf"))
	case KindThreshold:
		t := in.impl.(*thresholdEval)
		vals[sig], vals["limit"] = t.x, t.limit
		rel := "above"
		if r.Below {
			rel = "below"
		}
		if st == alert.Cleared {
			msg = fmt.Sprintf("%s %s %s back within limit %s", who, sig, withUnit(t.x, s.unit), fv(t.limit))
		} else {
			msg = fmt.Sprintf("%s %s %s %s %s limit %s", who, sig, withUnit(t.x, s.unit), rel, in.latch.Level, withUnit(t.limit, s.unit))
		}
	case KindRate:
		re := in.impl.(*rateEval)
		vals[sig], vals["change"], vals["limit"] = re.x, re.delta, r.Limit
		now := withUnit(re.x, s.unit)
		if r.Wrap > 0 { // a position: enough digits that -179.999 is not shown as -180
			now = strconv.FormatFloat(re.x, 'f', 4, 64) + " " + s.unit
		}
		msg = fmt.Sprintf("%s %s changed by %s per %s (limit %s), now %s", who, sig, withUnit(re.delta, s.unit), ms(r.Window), fv(r.Limit), now)
	case KindStuck:
		st := in.impl.(*stuckEval)
		vals[sig], vals["spread"] = s.value, st.spread
		over := strconv.Itoa(r.Polls) + " polls"
		if r.MinSpan > 0 {
			over += " and at least " + (time.Duration(r.MinSpan) * time.Millisecond).String()
		}
		msg = fmt.Sprintf("%s %s stuck at %s: spread %s over %s below resolution %s while running", who, sig, withUnit(s.value, s.unit), fv(st.spread), over, fv(r.Resolution))
	case KindEWMA:
		w := in.impl.(*ewmaEval)
		vals[sig], vals["ewma"], vals["mean"], vals["limit"] = w.x, w.z, w.b.mean, w.lim
		msg = fmt.Sprintf("%s %s EWMA %s left the control band %s +- %s (now %s)", who, sig, fv(w.z), fv(w.b.mean), fv(w.lim), withUnit(w.x, s.unit))
	case KindZScore:
		z := in.impl.(*zscoreEval)
		vals[sig], vals["z"], vals["mean"], vals["sd"] = s.value, z.z, z.mean, z.sd
		msg = fmt.Sprintf("%s %s %s is %s sigma from its rolling mean %s (limit %s)", who, sig, withUnit(s.value, s.unit), fv(z.z), fv(z.mean), fv(r.Limit))
	case KindCUSUM:
		c := in.impl.(*cusumEval)
		vals[sig], vals["cusum_hi"], vals["cusum_lo"], vals["mean"] = c.x, c.hi, c.lo, c.b.mean
		dir := "upward"
		if c.lo > c.hi {
			dir = "downward"
		}
		msg = fmt.Sprintf("%s %s shows a sustained %s shift from %s (CUSUM %s > h %s), now %s", who, sig, dir, fv(c.b.mean), fv(max(c.hi, c.lo)), fv(r.CusumH), withUnit(c.x, s.unit))
	case KindPeer:
		p := in.impl.(*peerEval)
		vals[sig], vals["peer_median"], vals["ratio"] = s.value, p.median, p.ratio
		msg = fmt.Sprintf("%s %s %s is %s x the median %s of %d peers sharing %s %s (limit %s)", who, sig, withUnit(s.value, s.unit), fv(p.ratio), withUnit(p.median, s.unit), p.peers, r.GroupBy, fv(p.gval), fv(r.Ratio))
	}
	return prefix + msg, vals
}

// rangeEnd formats one end of a plausible range; open stands for a
// missing end ("-inf" or "+inf").
func rangeEnd(v float64, ok bool, open string) string {
	if !ok {
		return open
	}
	return fv(v)
}

func fmtVals(v map[string]float64) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sortStrings(keys)
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += k + "=" + fv(v[k])
	}
	return out
}

func sortStrings(s []string) { slices.Sort(s) }
