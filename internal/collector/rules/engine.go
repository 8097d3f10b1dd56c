// Package rules is the collector's anomaly rule engine: per-asset state fed
// with decoded telemetry batches, rules configured in YAML with embedded
// per-class default packs, and alerts as state changes with on/off delays.
// The engine is pure (no I/O, no goroutines) and not safe for concurrent
// use; the collector serialises calls.
package rules

import (
	"math"
	"math/bits"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Stats counts the engine's work since it was created.
type Stats struct {
	Batches     uint64 // batches evaluated
	Readings    uint64 // readings in evaluated batches
	Late        uint64 // batches older than the asset's newest, skipped
	Bad         uint64 // readings without a usable value (bad, stale, implausible)
	Evaluations uint64 // rule evaluations
	Raised      uint64 // alerts raised
	Cleared     uint64 // alerts cleared
}

// Options tune an Engine.
type Options struct {
	// Now returns the wall clock in Unix ms; it drives asset-silence
	// detection in Tick. Default: time.Now.
	Now func() int64
	// MaxFuture bounds the times a restored record may hold (the
	// collector's max_future): a newest batch's or birth's or death's
	// ts_gw later than Now + MaxFuture, written by a release that did not
	// clamp births and deaths, is restored as Now (RestoreAssetAt).
	// 0: no bound.
	MaxFuture time.Duration
}

// Engine evaluates a rule Set over the telemetry stream.
type Engine struct {
	set     *Set
	cat     *catalog.Catalog
	now     func() int64
	future  int64 // Options.MaxFuture in ms; 0: none
	assets  map[[2]string]*assetState
	order   []*assetState
	peers   map[peerKey]*peerGroup
	stats   Stats
	scratch []float64
	updated []*signalState
	kept    []*inst // AppendBinary's rule instances with state of one asset, reused
	warmed  uint32  // what warm returned
	// last is the asset of the newest lookup (nil: none): the calls
	// for one batch (Has, Duplicate, LimitSignals, Process, Key, the
	// checkpoint's AppendBinary) ask for the same asset in a row, and a
	// comparison of its site and id costs less than the map's hash and
	// probe; dropAsset clears it
	last *assetState
	// from is the from of the Tick in progress (0 outside one): a silence
	// it raises says how much of the asset's silence was counted (describe)
	from int64
	// gap is the silence found between two messages of an asset by the
	// gapSilence in progress (zero outside one): its length in ts_gw and
	// in stored time and the interval it was judged on, ms (describe)
	gap [3]int64
	// selected caches set.Select by class, asset and signal (selectRules):
	// a fleet's assets of one class have the same signals, and Select
	// matches every rule against each. The asset is part of the key only
	// for an asset some rule lists (listed): for any other the rules
	// listing assets never apply, so the class and signal decide.
	selected map[selectKey][]*Rule
	listed   map[string]bool
	added    []string // Birth's list of the signals it adds, reused
	// slow: Process steps every staleness and plausibility instance and
	// reads the silence latch, as it did before the quiet paths
	// (staleQuiet, plausIdle, silenceNone); the tests compare the two
	slow bool
	read []uint64 // Process's bitmap of the slots a batch read, reused
}

type selectKey struct{ class, asset, signal string }

// maxSelected bounds the Select cache: signal names come from gateways,
// so their number has no bound of its own; when full it starts over.
const maxSelected = 1 << 14

// selectRules is e.set.Select(class, id, signal), cached. The strings
// must be the engine's own (not views into a payload): they are kept as
// the key. The result is shared: callers only read it.
func (e *Engine) selectRules(class, id, signal string) []*Rule {
	if e.selected == nil { // the first call (the set does not change)
		e.selected, e.listed = map[selectKey][]*Rule{}, map[string]bool{}
		for _, r := range e.set.Rules {
			for _, id := range r.Assets {
				e.listed[id] = true
			}
		}
	}
	k := selectKey{class: class, signal: signal}
	if e.listed[id] {
		k.asset = id
	}
	if rs, ok := e.selected[k]; ok {
		return rs
	}
	rs := e.set.Select(class, id, signal)
	if len(e.selected) >= maxSelected {
		clear(e.selected)
	}
	e.selected[k] = rs
	return rs
}

// lookup returns the tracked asset (site, id).
func (e *Engine) lookup(site, id string) (*assetState, bool) {
	if a := e.last; a != nil && a.id == id && a.site == site {
		return a, true
	}
	a, ok := e.assets[[2]string{site, id}]
	if ok {
		e.last = a
	}
	return a, ok
}

// Handle is a caller's reference to a tracked asset's state (Bind): it
// spares the map lookup by site and id on the asset's next messages. The
// zero Handle refers to nothing. A handle goes stale when the engine drops
// its asset (a class change, a restored record, an adopted alert whose
// rule is gone): Bind then looks the asset up again. Not safe for
// concurrent use: it belongs with the engine's caller's lock.
type Handle struct{ a *assetState }

// Bind makes the asset (site, id) the engine's current one, so that the
// calls for one message that follow (Duplicate, LimitSignals, Process,
// Key...) find it without a lookup, and reports whether the engine tracks
// it. h is its handle: while it is not stale, Bind takes the asset from
// it; else (zero or stale) it looks the asset up and fills h (zero when
// not tracked). site and id must be those h was filled for.
func (e *Engine) Bind(h *Handle, site, id string) bool {
	if a := h.a; a != nil && !a.dropped {
		e.last = a
		return true
	}
	a, ok := e.lookup(site, id)
	h.a = a
	return ok
}

// New returns an engine for set; cat supplies default plausibility ranges.
func New(set *Set, cat *catalog.Catalog, opts Options) *Engine {
	if opts.Now == nil {
		opts.Now = func() int64 { return time.Now().UnixMilli() }
	}
	return &Engine{set: set, cat: cat, now: opts.Now, future: opts.MaxFuture.Milliseconds(), assets: map[[2]string]*assetState{},
		peers: map[peerKey]*peerGroup{}, scratch: make([]float64, 0, 64)}
}

// Stats returns the counters.
func (e *Engine) Stats() Stats { return e.stats }

type assetState struct {
	e         *Engine
	site, id  string
	class     string
	path      []string
	nameplate map[string]float64
	birth     map[string]telemetry.SignalInfo
	sigs      map[string]*signalState
	list      []*signalState
	slab      []signalState  // states for the next new signals (reserve)
	names     string         // names of the next new signals, back to back (reserve)
	cache     []*signalState // by reading position of the last batch
	insts     []*inst        // asset-level rules (expr)
	silence   *inst          // asset-level staleness (silence, death)
	bindings  []*boundExpr
	running   bool
	runExpr   *boundExpr
	lastTSGW  int64
	// order is the key batches, and births and deaths judged on ts_gw,
	// are ordered against: the newest evaluated batch's ts_gw, bounded by
	// the engine's clock when it was evaluated (bounded). A batch dated
	// ahead of the clock (inside max_future: a fast clock, or another
	// gateway of the site) does not make the next batches "late" (review5
	// F13). Not checkpointed: restored as min(lastTSGW, now).
	order    int64
	lastTS   int64 // data time of the newest batch
	lastRecv int64 // wall time the newest batch was received
	// heardGW is the ts_gw of the asset's newest sign of life (a batch with
	// a reading that is not stale, or a birth that revived it), heardAt the
	// time the stream stored that message (Unix ms, the caller's stored
	// time; 0: unknown): the two clocks a silence inside a replayed
	// backlog is found on (gapSilence). Not checkpointed: a restored asset
	// starts from its newest batch or birth and from the time its record
	// was written (RestoreAssetAt).
	heardGW, heardAt int64
	// interval is the observed batch interval, ms
	interval int64
	// birthGap is the shortest interval_ms its birth in force declares (0:
	// none): the asset reports at least that often while it answers
	// (docs/schema.md), so silence is never judged on less (silenceIV).
	// Derived from birth, not checkpointed.
	birthGap int64
	batches  uint64
	dead     string
	// lifeTSGW is the ts_gw of the newest birth or death the state
	// includes (applied, or a birth in force again: Revive), bounded by the
	// engine's clock when it was applied (bounded); 0 when none had one. While the asset is dead it is its death's (a birth or batch
	// newer than the death revives it). Births and deaths whose seq cannot
	// order them are judged on it (Engine.BirthBehind, DeathBehind), and
	// nothing older than it ends a death (revive, Process).
	lifeTSGW int64
	gateway  string // gateway and seq of the newest evaluated batch, for
	seq      uint64 // redelivery detection after a restart or takeover
	part     int    // part of the newest batch when it was split (docs/schema.md), else 0
	// birthBin is the encoded part of its checkpoint record a birth sets
	// (Engine.AppendBinary); nil once the birth, nameplate or path change
	birthBin []byte
	// refused counts readings and birth signals refused by the bound on
	// signals per asset (LimitSignals); refusedLog is the engine time of
	// the last warning about it. Neither is checkpointed.
	refused    uint64
	refusedLog int64
	// dropped: no longer the engine's (dropAsset): a Handle to it is stale
	dropped bool
	// staleQuiet: every staleness instance of the asset's signals has an
	// idle latch (alert.Latch.Idle), no signal's latest quality is stale,
	// and none is stale by time (checkStale) at a ts_gw up to staleBy: a
	// batch up to then need not step them (Process). Set by Process's
	// staleness pass; anything else that changes those latches or the
	// signals' intervals (Birth, Restore, Adopt) clears it.
	staleQuiet bool
	staleBy    int64
	// silenceR is silence's rule (nil: none); silenceNone: silence is nil
	// or its latch is at None, known without loading it (false: not
	// known). silenced and e.step keep it; Restore and Adopt clear it
	// (RestoreAssetAt makes a new asset, which does not know).
	silenceR    *Rule
	silenceNone bool
}

type signalState struct {
	a       *assetState
	name    string
	slot    int
	unit    string
	value   float64
	text    string
	quality telemetry.Quality
	valid   bool  // the latest reading had a good, plausible value
	ts      int64 // source time of the latest good value
	seen    int64 // source time of the latest reading of any quality
	first   int64 // source time of the first reading
	// Arrival times (the batch's ts_gw): staleness and the age of a value
	// are judged on these, never on source time alone, because a constant
	// OPC UA value keeps an old SourceTimestamp (docs/rules.md).
	arr      int64 // ts_gw of the latest reading of any quality
	good     int64 // ts_gw of the latest good value
	firstArr int64 // ts_gw of the first reading
	birthIV  bool  // interval comes from the birth
	interval int64 // birth interval or observed interval between arrivals, ms
	min, max float64
	hasMin   bool
	hasMax   bool
	stale    *inst
	plaus    *inst
	staleR   *Rule // stale's rule (nil: none): its deadline is found without the instance (staleDeadline)
	insts    []*inst
	implaus  bool // the latest reading carried a value outside the range or not finite
	// plausIdle: plaus's latch is idle (alert.Latch.Idle), so a plausible
	// value need not step it. Set by Process after a step; false when
	// unknown (Restore and Adopt clear it).
	plausIdle bool
}

type boundExpr struct {
	e  *Expr
	bd binding
}

func (a *assetState) slotValue(slot int) (float64, bool) {
	s := a.list[slot]
	if !s.valid {
		return 0, false
	}
	if s.interval > 0 && a.lastTSGW-s.good > 3*s.interval {
		return 0, false
	}
	return s.value, true
}

func (a *assetState) bind(x *Expr) *boundExpr {
	if x == nil {
		return nil
	}
	b := &boundExpr{e: x}
	n := len(x.idents)
	b.bd = binding{slots: make([]int, n), consts: make([]float64, n), okc: make([]bool, n), globs: make([][]int, n)}
	for i, id := range x.idents {
		b.bd.slots[i] = -1
		switch {
		case strings.HasPrefix(id, "nameplate."):
		case strings.Contains(id, "*"):
			for _, s := range a.list {
				if ok, _ := path.Match(id, s.name); ok {
					b.bd.globs[i] = append(b.bd.globs[i], s.slot)
				}
			}
		default:
			b.bd.slots[i] = a.signal(id).slot
		}
	}
	a.refreshConsts(b)
	a.bindings = append(a.bindings, b)
	return b
}

func (a *assetState) refreshConsts(b *boundExpr) {
	for i, id := range b.e.idents {
		if k, ok := strings.CutPrefix(id, "nameplate."); ok {
			b.bd.consts[i], b.bd.okc[i] = a.nameplate[k]
		}
	}
}

func (a *assetState) eval(b *boundExpr) (float64, bool) {
	return b.e.eval(&b.bd, a, &a.e.scratch)
}

func (e *Engine) asset(site, id, class string, path []string) *assetState {
	if a, ok := e.lookup(site, id); ok {
		if a.class == class {
			return a
		}
		// the asset changed class: start over
		e.dropAsset(a)
	}
	// copies, into one string: the strings may be views into a message
	// payload
	n := len(site) + len(id) + len(class)
	for _, p := range path {
		n += len(p)
	}
	var sb strings.Builder
	sb.Grow(n)
	own := func(s string) string {
		k := sb.Len()
		sb.WriteString(s)
		return sb.String()[k:]
	}
	site, id, class = own(site), own(id), own(class)
	if path != nil {
		path = slices.Clone(path)
		for i := range path {
			path[i] = own(path[i])
		}
	}
	k := [2]string{site, id}
	a := &assetState{e: e, site: site, id: id, class: class, path: path, sigs: map[string]*signalState{},
		nameplate: map[string]float64{}, birth: map[string]telemetry.SignalInfo{}}
	e.assets[k] = a
	e.last = a
	e.order = append(e.order, a)
	if x, ok := e.set.Running[class]; ok {
		a.runExpr = a.bind(x)
	}
	for _, r := range e.selectRules(class, id, "") {
		in := &inst{r: r, a: a}
		in.when = a.bind(r.When)
		in.expr = a.bind(r.Expr)
		in.clear = a.bind(r.ClearWhen)
		a.insts = append(a.insts, in)
	}
	for _, r := range e.selectRules(class, id, "*") {
		if r.Kind == KindStale {
			a.silence, a.silenceR = &inst{r: r, a: a}, r
			break
		}
	}
	return a
}

func (e *Engine) dropAsset(a *assetState) {
	delete(e.assets, [2]string{a.site, a.id})
	a.dropped = true
	if e.last == a {
		e.last = nil
	}
	for i, x := range e.order {
		if x == a {
			e.order = append(e.order[:i], e.order[i+1:]...)
			break
		}
	}
}

func (a *assetState) signal(name string) *signalState {
	if s, ok := a.sigs[name]; ok {
		return s
	}
	// not a view into a payload: the next of names (reserve), else (a
	// signal a rule's expression names, added before its turn) one in
	// names, else a copy
	n := len(name)
	if n <= len(a.names) && a.names[:n] == name {
		name, a.names = a.names[:n], a.names[n:]
	} else if k := strings.Index(a.names, name); k >= 0 && n > 0 {
		name = a.names[k : k+n]
	} else {
		name = strings.Clone(name)
	}
	return a.add(name)
}

// reserve makes room for the signals a birth adds (names, in the order
// signal will be asked for them): their states in one array (slab), the
// map at its size, and their names copied into one string (names), which
// signal takes them from.
func (a *assetState) reserve(names []string) {
	n := 0
	for _, s := range names {
		n += len(s)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, s := range names {
		sb.WriteString(s)
	}
	a.names = sb.String()
	a.slab = make([]signalState, len(names))
	a.list = slices.Grow(a.list, len(names))
	if len(a.sigs) == 0 {
		a.sigs = make(map[string]*signalState, len(names))
	}
}

// add adds the state of signal name (the asset's own string), which the
// asset does not have.
func (a *assetState) add(name string) *signalState {
	var s *signalState
	if len(a.slab) > 0 {
		s, a.slab = &a.slab[0], a.slab[1:]
		if len(a.slab) == 0 {
			a.slab = nil
		}
	} else {
		s = new(signalState)
	}
	*s = signalState{a: a, name: name, slot: len(a.list)}
	a.sigs[name] = s
	a.list = append(a.list, s)
	for _, b := range a.bindings {
		for i, id := range b.e.idents {
			if strings.Contains(id, "*") {
				if ok, _ := path.Match(id, name); ok {
					b.bd.globs[i] = append(b.bd.globs[i], s.slot)
				}
			}
		}
	}
	rs := a.e.selectRules(a.class, a.id, name)
	insts := make([]inst, len(rs)) // the signal's rule instances in one array
	for j, r := range rs {
		in := &insts[j]
		*in = inst{r: r, a: a, sig: s}
		switch r.Kind {
		case KindStale:
			s.stale, s.staleR = in, r
			continue
		case KindPlausibility:
			s.plaus = in
			continue
		}
		in.when = a.bind(r.When)
		in.impl = newEvaluator(r)
		s.insts = append(s.insts, in)
	}
	a.applyRange(s) // after plaus is known
	return s
}

// applyRange sets the plausibility range: rule min/max, else birth, else catalog.
func (a *assetState) applyRange(s *signalState) {
	s.hasMin, s.hasMax, s.birthIV = false, false, false
	if cs, err := a.e.cat.Lookup(a.class, s.name); err == nil {
		if cs.Min != nil {
			s.min, s.hasMin = *cs.Min, true
		}
		if cs.Max != nil {
			s.max, s.hasMax = *cs.Max, true
		}
		if s.unit == "" {
			s.unit = cs.Unit
		}
	}
	if bi, ok := a.birth[s.name]; ok {
		if bi.Min != nil {
			s.min, s.hasMin = *bi.Min, true
		}
		if bi.Max != nil {
			s.max, s.hasMax = *bi.Max, true
		}
		if bi.IntervalMS > 0 {
			s.interval, s.birthIV = bi.IntervalMS, true
		}
		if bi.Unit != "" {
			s.unit = bi.Unit
		}
	}
	if s.plaus != nil {
		if s.plaus.r.Min != nil {
			s.min, s.hasMin = *s.plaus.r.Min, true
		}
		if s.plaus.r.Max != nil {
			s.max, s.hasMax = *s.plaus.r.Max, true
		}
	}
}

// Birth records an asset's birth: nameplate, ranges and intervals. A birth
// that lists signals replaces the asset's signal list: a signal the asset
// had but the birth does not list (a point removed from the gateway's configuration) is
// dropped from its state, its view and its checkpoint, and every active
// alert on it is cleared (the changes are appended to out). Signals the
// birth lists keep their state.
//
// stored is when the stream stored the birth (Unix ms; 0: unknown): a
// birth after a gap in the asset's messages on both clocks raises and
// clears the silence the gap was (gapSilence).
func (e *Engine) Birth(b *telemetry.Birth, stored int64, out []alert.Alert) []alert.Alert {
	as := b.Asset.FromJSON()
	a := e.asset(as.Site(), as.ID, as.Class, as.Path)
	a.path = as.Path
	clear(a.nameplate)
	for k, v := range b.Nameplate {
		a.nameplate[k] = v
	}
	if len(a.birth) == 0 && len(b.Signals) > 8 { // the first birth
		a.birth = make(map[string]telemetry.SignalInfo, len(b.Signals))
	}
	clear(a.birth)
	added := e.added[:0] // signals the birth adds, once each, in order
	for _, si := range b.Signals {
		if _, twice := a.birth[si.Signal]; !twice {
			if _, ok := a.sigs[si.Signal]; !ok {
				added = append(added, si.Signal)
			}
		}
		a.birth[si.Signal] = si
	}
	if len(added) > 1 { // an asset's first birth: its states allocated at once
		a.reserve(added)
	}
	clear(added) // no views into the birth kept
	e.added = added[:0]
	n0 := len(a.list)
	for _, si := range b.Signals {
		a.signal(si.Signal)
	}
	a.slab, a.names = nil, ""
	var added0 *signalState // the first signal this birth added
	if len(a.list) > n0 {
		added0 = a.list[n0]
	}
	a.setBirthGap()
	a.birthBin = nil
	out = a.dropUnborn(out, b.TSGW)
	out = e.revive(a, b.TSGW, stored, out)
	for _, s := range a.list {
		if s == added0 {
			// it and the rest were added by this birth (dropUnborn keeps
			// the order), their ranges applied from it already
			break
		}
		a.applyRange(s)
	}
	for _, bd := range a.bindings {
		a.refreshConsts(bd)
	}
	a.staleQuiet = false // intervals and signals changed
	return out
}

// Revive records what a birth of a tracked asset says besides its
// declarations, for a birth not applied because it is the one in force
// (InForce; a gateway sends the same birth again when a dead device
// answers again): the asset answers, unless the birth is older than its
// death (revive). Birth does the same; stored is as Birth's.
func (e *Engine) Revive(b *telemetry.Birth, stored int64, out []alert.Alert) []alert.Alert {
	as := b.Asset.FromJSON()
	a, ok := e.lookup(as.Site(), as.ID)
	if !ok {
		return out
	}
	return e.revive(a, b.TSGW, stored, out)
}

// revive clears the asset's death and its silence alert (at ts, the
// birth's ts_gw, else now) and restarts its silence clock: a birth is the
// gateway's word that the asset answers again (review2 F0: before, the
// next batch cleared a death, whatever the quality of its readings). A
// birth whose ts_gw is before the death's (lifeTSGW) does none of this:
// it says the asset answered before it died, not since (a seq-0 or
// another gateway's birth identical to the one in force, replayed from a
// backlog: the reviewer's false revival). A birth that ends a gap of the
// asset's messages on both clocks (ts_gw and stored, the stream's time of
// the birth) first raises the silence the gap was (gapSilence).
func (e *Engine) revive(a *assetState, ts, stored int64, out []alert.Alert) []alert.Alert {
	if a.dead != "" && ts > 0 && ts < a.lifeTSGW {
		return out
	}
	if ts > 0 && ts >= a.heardGW {
		out = e.gapSilence(out, a, ts, stored, a.silenceIV())
		a.heardGW, a.heardAt = ts, stored
	}
	a.lifeTSGW = max(a.lifeTSGW, e.bounded(ts))
	a.dead = ""
	a.lastRecv = e.now()
	if !a.silenced() {
		return out
	}
	if ts <= 0 {
		ts = e.now()
	}
	return e.step(out, a.silence, alert.None, ts, 0, 0)
}

// InForce reports whether the birth b declares exactly what the birth in
// force of its asset declares: the same path, nameplate and signal list
// (units, ranges, intervals, sources, labels and write limits), as the
// asset's checkpoint holds them. Applying such a birth again changes
// nothing it sets, but its signal list would drop the signals it does not
// list that batches since brought (their values and alerts; the KPI
// inputs they hold): a birth redelivered after a restart or takeover
// would take from the restored state what the batches after it, already
// evaluated and skipped as duplicates, put there. The caller skips it.
func (e *Engine) InForce(b *telemetry.Birth) bool {
	as := b.Asset.FromJSON()
	a, ok := e.lookup(as.Site(), as.ID)
	if !ok || a.class != as.Class || !slices.Equal(a.path, as.Path) || len(b.Signals) != len(a.birth) ||
		len(b.Nameplate) != len(a.nameplate) {
		return false
	}
	for k, v := range b.Nameplate {
		if w, ok := a.nameplate[k]; !ok || math.Float64bits(w) != math.Float64bits(v) {
			return false
		}
	}
	var x, y []byte
	for i := range b.Signals {
		si := &b.Signals[i]
		have, ok := a.birth[si.Signal]
		if !ok {
			return false
		}
		x, y = appendSignalInfoBinary(x[:0], si), appendSignalInfoBinary(y[:0], &have)
		if string(x) != string(y) {
			return false
		}
	}
	return true
}

// dropUnborn drops the signals the asset's birth does not list: their
// active alerts are cleared at ts (the engine's clock when ts <= 0) with a
// message naming the removal, and they leave the list. A signal an
// expression names stays as a never-seen placeholder (as a.bind creates
// one before any data): it has no value, so it neither feeds the
// expression nor shows in the view, and it cannot be stale.
func (a *assetState) dropUnborn(out []alert.Alert, ts int64) []alert.Alert {
	if len(a.birth) == 0 || len(a.list) == len(a.birth) {
		// a birth without signals (nameplate only) declares no signal
		// list; else every signal is in it (a.signal added those missing)
		return out
	}
	if ts <= 0 {
		ts = a.e.now()
	}
	// the bindings of the dropped signals' own rules go with them
	owned := map[*boundExpr]bool{}
	for _, s := range a.list {
		if _, ok := a.birth[s.name]; !ok {
			for _, in := range s.insts {
				if in.when != nil {
					owned[in.when] = true
				}
			}
		}
	}
	named := map[string]bool{}
	for _, b := range a.bindings {
		if owned[b] {
			continue
		}
		for i, id := range b.e.idents {
			if b.bd.slots[i] >= 0 {
				named[id] = true
			}
		}
	}
	kept := a.list[:0]
	for _, s := range a.list {
		if _, ok := a.birth[s.name]; ok {
			kept = append(kept, s)
			continue
		}
		for _, in := range s.all() {
			if in.impl != nil {
				in.impl.pause()
			}
			if in.latch.Level == alert.None {
				in.latch = alert.Latch{} // a pending raise goes too
				continue
			}
			n := len(out)
			out = a.e.step(out, in, alert.None, ts, 0, 0)
			for i := n; i < len(out); i++ {
				out[i].Message = "cleared: " + a.class + " " + a.id + " " + s.name + " removed from its gateway's configuration"
			}
		}
		if named[s.name] {
			for _, in := range s.insts {
				owned[in.when] = false // kept: its rules stay bound
			}
			a.resetSignal(s)
			kept = append(kept, s)
			continue
		}
		a.leavePeers(s)
		delete(a.sigs, s.name)
	}
	clear(a.list[len(kept):])
	a.list = kept
	clear(a.cache)
	bs := a.bindings[:0]
	for _, b := range a.bindings {
		if !owned[b] {
			bs = append(bs, b)
		}
	}
	clear(a.bindings[len(bs):])
	a.bindings = bs
	for i, s := range a.list {
		s.slot = i
	}
	for _, b := range a.bindings {
		for i, id := range b.e.idents {
			switch {
			case b.bd.slots[i] >= 0:
				t, ok := a.sigs[id]
				if !ok { // named only by a dropped signal's rule, which a kept one shares
					t = a.signal(id)
				}
				b.bd.slots[i] = t.slot
			case strings.Contains(id, "*") && !strings.HasPrefix(id, "nameplate."):
				b.bd.globs[i] = b.bd.globs[i][:0]
				for _, s := range a.list {
					if ok, _ := path.Match(id, s.name); ok {
						b.bd.globs[i] = append(b.bd.globs[i], s.slot)
					}
				}
			}
		}
	}
	return out
}

// resetSignal makes s a never-seen signal: no value, no arrival, rules
// with fresh evaluators and latches.
func (a *assetState) resetSignal(s *signalState) {
	a.leavePeers(s)
	*s = signalState{a: a, name: s.name, slot: s.slot, stale: s.stale, plaus: s.plaus, staleR: s.staleR, insts: s.insts}
	for _, in := range s.all() {
		in.latch = alert.Latch{}
		if in.impl != nil {
			in.impl = newEvaluator(in.r)
		}
	}
	a.applyRange(s)
}

// leavePeers takes s out of the peer groups its rules joined.
func (a *assetState) leavePeers(s *signalState) {
	for _, in := range s.insts {
		if p, ok := in.impl.(*peerEval); ok && p.g != nil {
			p.g.leave(a.id)
			p.g, p.me = nil, nil
		}
	}
}

// Death records a death notice: the asset's silence alert is raised at once.
func (e *Engine) Death(d *telemetry.Death, out []alert.Alert) []alert.Alert {
	as := d.Asset.FromJSON()
	a := e.asset(as.Site(), as.ID, as.Class, as.Path)
	a.dead = d.Reason
	a.lifeTSGW = max(a.lifeTSGW, e.bounded(d.TSGW))
	if a.silence == nil {
		return out
	}
	ts := d.TSGW
	if ts <= 0 {
		ts = e.now()
	}
	return e.step(out, a.silence, a.silence.r.Severity, ts, 0, 0)
}

// bounded returns ts (a ts_gw, Unix ms) as an ordering key: ts, or the
// engine's clock when ts lies ahead of it. A message dated ahead of the
// collector's clock, inside max_future, would otherwise rank every
// message after it as older until the clock reached its ts_gw: a batch,
// birth or death of another gateway of the site dated 290 s ahead made
// the real gateway's batches late (not evaluated) and its death refused
// for 290 s (review5 F13); so did a gateway's clock corrected back.
// Readings' times and what is shown keep the message's own ts_gw.
func (e *Engine) bounded(ts int64) int64 {
	return min(ts, e.now())
}

// Process evaluates one batch and appends the alert state changes to out.
// stored is when the stream stored the batch (Unix ms: the JetStream
// message's stored time, or the time a source without one received it;
// 0: unknown). A batch that ends a gap of its asset's batches longer than
// k x the silence interval on both clocks, its ts_gw and stored, raises
// the silence the gap was, dated at the asset's previous batch's ts_gw +
// k x interval, and clears it (gapSilence): a silence inside a backlog the
// collector replays, which Tick cannot see.
func (e *Engine) Process(b *telemetry.Batch, stored int64, out []alert.Alert) []alert.Alert {
	a := e.asset(b.Asset.Site(), b.Asset.ID, b.Asset.Class, b.Asset.Path)
	// A batch dated before the asset's newest is late, unless it is the
	// newer batch of the gateway the asset's state records (its seq ahead
	// of the recorded one: seq orders one gateway's messages, docs/schema.md):
	// that gateway's clock stepped back (NTP correcting a fast clock, an
	// RTC-less box restoring a saved time), and the asset's time order
	// restarts from it. Before, every batch of that gateway was dropped as
	// late until its clock passed its old newest time (review12 F3: alarms
	// missed, a false "sent nothing" held while data flowed).
	stepBack := b.TSGW < a.order && b.Follows(a.gateway, a.seq)
	if b.TSGW < a.order && !stepBack {
		e.stats.Late++
		return out
	}
	e.stats.Batches++
	e.stats.Readings += uint64(len(b.Readings))
	now := e.now() // one clock read serves the ordering bound and lastRecv
	// the silence interval before this batch's gap moves it (gapSilence)
	siv := a.silenceIV()
	if stepBack {
		a.order, a.lastTSGW = min(b.TSGW, now), 0 // no interval across the step
		a.heardGW = 0                             // nor a gap (gapSilence): the gaps after it are judged
	}
	a.order = max(a.order, min(b.TSGW, now))
	// d < 0: newer only by the bound on order (the last batch was dated
	// ahead of the clock): no interval of this asset
	if d := b.TSGW - a.lastTSGW; a.lastTSGW > 0 && d >= 0 {
		if a.interval == 0 {
			a.interval = d
		} else {
			a.interval += (d - a.interval) / 8
		}
	}
	a.lastTSGW = b.TSGW
	a.batches++
	batchTS := b.TSGW
	e.updated = e.updated[:0]
	e.warmed += warm(a.cache[:min(len(b.Readings), len(a.cache))])
	// heard: a reading that is not stale (the point was heard from within
	// k x its interval); answered: a reading with a value (good or
	// uncertain). See liveness below.
	heard, answered := false, false
	// the staleness pass may be skipped (quiet) while the asset's
	// staleness instances are quiet (staleQuiet) and this batch keeps them
	// so: no reading of stale quality, its ts_gw not after any signal's
	// deadline (by: the lowest of its signals' deadlines, staleDeadline)
	quiet := a.staleQuiet && !e.slow && b.TSGW > 0
	by := int64(math.MaxInt64)
	// read: the slots of the asset's signals the batch read (of those it
	// had before it), a bit each; when it read every one, by is the lowest
	// deadline of all of them, not only of this batch's
	nsig := len(a.list)
	read := e.read[:0]
	if quiet {
		read = append(read, make([]uint64, (nsig+63)/64)...)
	}
	for i := range b.Readings {
		r := &b.Readings[i]
		heard = heard || r.Quality != telemetry.QualityStale
		answered = answered || r.Quality.HasValue()
		var s *signalState
		if i < len(a.cache) {
			s = a.cache[i]
		}
		if s == nil || s.name != r.Signal {
			s = a.signal(r.Signal)
			// positions are cached up to the asset's signal count: a batch
			// that repeats names does not grow the cache beyond what the
			// signal bound allows (max_signals_per_asset)
			if i < len(a.list) {
				if i >= len(a.cache) {
					a.cache = append(a.cache, make([]*signalState, i+1-len(a.cache))...)
				}
				a.cache[i] = s
			}
		}
		ts := r.TS
		if ts <= 0 {
			ts = b.TSGW
		}
		if ts > batchTS {
			batchTS = ts
		}
		s.quality = r.Quality
		if s.arr > 0 && b.TSGW > s.arr && !s.birthIV {
			if gap := b.TSGW - s.arr; s.interval == 0 {
				s.interval = gap
			} else {
				s.interval += (gap - s.interval) / 8
			}
		}
		if b.TSGW > s.arr {
			s.arr = b.TSGW
		}
		if s.firstArr == 0 {
			s.firstArr = b.TSGW
		}
		if ts > s.seen {
			s.seen = ts
		}
		if s.first == 0 {
			s.first = ts
		}
		if r.HasValue() {
			out = e.value(out, s, r, ts, b.TSGW)
		} else {
			s.valid, s.implaus = false, false
			if r.Quality.HasValue() { // text-only reading
				s.text = held(s.text, r.Text)
			} else {
				e.stats.Bad++
			}
		}
		if quiet && s.slot < nsig {
			read[s.slot/64] |= 1 << (s.slot % 64)
		}
		if quiet && s.staleR != nil {
			if s.quality == telemetry.QualityStale {
				quiet = false
			} else {
				by = min(by, s.staleDeadline())
			}
		}
	}
	// Liveness (review2 F0). A gateway keeps publishing a dead device's
	// points, stale, after its death notice: such a batch is no sign of
	// life. Only a batch with a reading that is not stale restarts the
	// silence clock, moves the asset's data time (the dashboard's "silent")
	// and clears a silence alert; a death is cleared only by a birth or by
	// a batch with a value (good or uncertain). A bad reading does not
	// clear a death: after one it is mostly silence too ("bad, then
	// stale": timeouts of a group with a longer interval than the one
	// whose silence made the death, docs/schema.md), and a device that
	// answers again, even only with exceptions, gets a birth from its
	// gateway (any reply is life), which clears the death. A batch whose
	// ts_gw is before the death's (one of another gateway, or of the same
	// more than dedup_window behind, newer than the newest batch) says the
	// asset answered before it died: it does not clear the death.
	if heard {
		if b.TSGW >= a.heardGW {
			out = e.gapSilence(out, a, b.TSGW, stored, siv)
			a.heardGW, a.heardAt = b.TSGW, stored
		}
		a.lastRecv = now
		a.lastTS = batchTS
	}
	if answered && (a.dead == "" || b.TSGW >= a.lifeTSGW) {
		a.dead = ""
	}
	if a.gateway != b.Gateway { // a copy: b's strings may be views into a message payload
		a.gateway = strings.Clone(b.Gateway)
	}
	a.seq, a.part = b.Seq, b.Part
	if heard && a.dead == "" && a.silenced() {
		out = e.step(out, a.silence, alert.None, batchTS, 0, 0)
	}
	// staleness per signal, on arrival (gateway) time: a signal is stale
	// when no good value arrived for k x its interval of ts_gw. While the
	// asset's staleness instances are quiet and no signal reaches its
	// deadline, stepping them would change nothing: the pass is skipped.
	if quiet {
		n := 0
		for _, w := range read {
			n += bits.OnesCount64(w)
		}
		if n < nsig {
			by = min(by, a.staleBy) // the signals this batch did not read keep theirs
		}
		e.read = read
	}
	if quiet && b.TSGW <= by {
		a.staleBy = by
	} else {
		out = e.checkStaleAll(out, a, b.TSGW, batchTS)
	}
	if a.runExpr != nil {
		if v, ok := a.eval(a.runExpr); ok {
			a.running = v != 0
		}
	} else {
		a.running = true
	}
	for _, s := range e.updated {
		for _, in := range s.insts {
			tgt := alert.None
			if in.active() {
				e.stats.Evaluations++
				tgt = in.impl.step(in, s.value, s.ts)
			} else {
				in.impl.pause()
			}
			out = e.step(out, in, tgt, s.ts, in.r.OnDelay, in.r.OffDelay)
		}
	}
	for _, in := range a.insts {
		tgt := alert.None
		if in.active() {
			e.stats.Evaluations++
			v, ok := a.eval(in.expr)
			switch {
			case !ok:
				tgt = in.latch.Level
			case v != 0:
				tgt = in.r.Severity
			case in.clear != nil && in.latch.Level != alert.None:
				if c, cok := a.eval(in.clear); !cok || c == 0 {
					tgt = in.latch.Level
				}
			}
		}
		out = e.step(out, in, tgt, batchTS, in.r.OnDelay, in.r.OffDelay)
	}
	return out
}

// warm loads what Process will read of the signals of the asset's last
// batch, in passes of loads that do not depend on each other: the signal
// states with the bytes of their names, then their rule instances' lists
// and plausibility instances, then the instances. With thousands of
// assets the engine's state is far larger than the caches and every one
// of these loads misses; issued together, the misses overlap instead of
// following one another in Process. The result means nothing; it is kept
// so the loads are not dropped.
func warm(cache []*signalState) uint32 {
	var x uint32
	for _, s := range cache {
		if s != nil && s.name != "" {
			x += uint32(s.name[0])
		}
	}
	for _, s := range cache {
		if s == nil {
			continue
		}
		if len(s.insts) > 0 && s.insts[0] != nil {
			x++
		}
		if s.plaus != nil && !s.plausIdle {
			x += uint32(s.plaus.latch.Level)
		}
	}
	for _, s := range cache {
		if s == nil {
			continue
		}
		for _, in := range s.insts {
			x += uint32(in.latch.Level)
		}
	}
	return x
}

// value takes a reading r with a value for s, dated ts (its source time,
// else the batch's) in a batch of ts_gw gw: the plausibility gate and
// rule, then the value for the rules (e.updated) when it passed.
func (e *Engine) value(out []alert.Alert, s *signalState, r *telemetry.Reading, ts, gw int64) []alert.Alert {
	s.text = held(s.text, r.Text)
	if r.Unit != "" {
		// the unit held (the catalog's or the birth's string, shared
		// and in the cache when the checkpoint writes it) is kept
		// rather than a view into each new payload
		s.unit = held(s.unit, r.Unit)
	}
	// The plausibility gate is built in: an implausible value never
	// feeds rules or expressions. A plausibility rule only decides
	// whether it also raises an alert.
	s.implaus = !finite(r.Value) || s.hasMin && r.Value < s.min || s.hasMax && r.Value > s.max
	if s.implaus {
		s.value, s.valid = r.Value, false // the value is kept for the message and the view
	}
	// a plausible value steps the rule towards None: nothing to do in a
	// latch known to be idle (plausIdle)
	if s.plaus != nil && (s.implaus || !s.plausIdle || e.slow) {
		tgt := alert.None
		if s.implaus {
			tgt = s.plaus.r.Severity
		}
		out = e.step(out, s.plaus, tgt, ts, s.plaus.r.OnDelay, s.plaus.r.OffDelay)
		s.plausIdle = s.plaus.latch.Idle()
	}
	if s.implaus {
		e.stats.Bad++
		return out
	}
	s.value, s.valid, s.ts, s.good = r.Value, true, ts, gw
	e.updated = append(e.updated, s)
	return out
}

// checkStaleAll is the staleness pass of a batch of ts_gw gw (checkStale
// of every signal with a staleness rule); at is the alerts' event time.
// It finds whether the asset's staleness instances are quiet after it
// and the lowest deadline of its signals (staleQuiet, staleBy).
func (e *Engine) checkStaleAll(out []alert.Alert, a *assetState, gw, at int64) []alert.Alert {
	quiet, by := true, int64(math.MaxInt64)
	for _, s := range a.list {
		if s.stale == nil {
			continue
		}
		out = e.checkStale(out, s, gw, at)
		if quiet = quiet && s.quality != telemetry.QualityStale && s.stale.latch.Idle(); quiet {
			by = min(by, s.staleDeadline())
		}
	}
	a.staleQuiet, a.staleBy = quiet, by
	return out
}

// staleDeadline returns a ts_gw up to which s is not stale by time
// (checkStale's second case) as it is now: math.MaxInt64 when it never
// is (no interval, no arrival), math.MinInt64 when the bound cannot be
// given exactly (times or a k x interval beyond what is exact in
// float64). s must have a staleness rule (staleR).
func (s *signalState) staleDeadline() int64 {
	r := s.staleR
	iv := r.Interval
	if iv == 0 {
		iv = s.interval
	}
	if iv <= 0 || s.arr <= 0 {
		return math.MaxInt64
	}
	lim := r.K * float64(iv)
	base := max(s.good, s.firstArr)
	if math.IsNaN(lim) {
		return math.MaxInt64 // no difference is > NaN
	}
	if !(lim > -(1<<52) && lim < 1<<52) || base < 0 || base >= 1<<62 {
		return math.MinInt64
	}
	// for 0 < gw <= base + floor(lim): gw-base is exact in float64 and
	// not above floor(lim), so not above lim
	return base + int64(math.Floor(lim))
}

// checkStale judges one signal's staleness at arrival time gw (the batch's
// ts_gw); at is the alert's event time.
func (e *Engine) checkStale(out []alert.Alert, s *signalState, gw, at int64) []alert.Alert {
	r := s.stale.r
	iv := r.Interval
	if iv == 0 {
		iv = s.interval
	}
	tgt := alert.None
	switch {
	case s.quality == telemetry.QualityStale:
		tgt = r.Severity
	case iv > 0 && s.arr > 0 && float64(gw-max(s.good, s.firstArr)) > r.K*float64(iv):
		tgt = r.Severity
	}
	return e.step(out, s.stale, tgt, at, r.OnDelay, r.OffDelay)
}

// Tick raises silence alerts for assets that sent nothing for k x their
// batch interval of wall time before at (Unix ms, the engine's clock).
// at is not the time now but the time up to which the caller knows every
// batch of these assets was evaluated: the collector passes the start of
// its newest fetch that found the stream drained, so time passing without
// such evidence (its own pause, a stall, a backlog) is never silence.
// from (Unix ms, 0: none) is the end of the caller's newest disruption of
// that evidence (a broker failover, a reconnect: the stream may not have
// taken the assets' batches meanwhile); silence counts from the later of
// an asset's last batch and from, so a broker outage longer than k x the
// interval does not make every asset silent. Call it about once a second.
//
// The alert's message gives the time since the asset's last batch and,
// when from was later than that batch, the time counted from from; its
// values are age_ms (since the last batch) and counted_ms (since the later
// of the last batch and from), in ms of the engine's clock.
func (e *Engine) Tick(out []alert.Alert, at, from int64) []alert.Alert {
	e.from = from
	defer func() { e.from = 0 }()
	for _, a := range e.order {
		if a.silentAt(at, from) {
			out = e.step(out, a.silence, a.silence.r.Severity, at, 0, 0)
		}
	}
	return out
}

// Silent reports whether Tick(at, from) would raise a silence alert,
// changing nothing.
func (e *Engine) Silent(at, from int64) bool {
	for _, a := range e.order {
		if a.silentAt(at, from) {
			return true
		}
	}
	return false
}

// silentAt reports whether the asset's silence alert is due at at and not
// raised yet: it sent nothing for more than k x its batch interval since
// its last batch or from, whichever is later (see Tick).
func (a *assetState) silentAt(at, from int64) bool {
	iv := a.silenceIV()
	return a.silence != nil && iv > 0 && a.lastRecv != 0 &&
		float64(at-max(a.lastRecv, from)) > a.silence.r.K*float64(iv) && a.silence.latch.Level == alert.None
}

// TickPeriod is the most often the collector judges silence live
// (Engine.Tick): once a second at most, per partition. A gap in the data
// is raised as a silence (gapSilence) only when it exceeds k x interval by
// more than this, as live judgment would surely have raised it.
const TickPeriod = time.Second

// gapSilence raises the asset's silence alert for the gap before a
// message of its that ends one: a batch with a reading that is not stale,
// or a birth, dated gw (ts_gw) and stored by the stream at stored (Unix
// ms), when both are more than k x iv + TickPeriod (the silence rule's k
// and the asset's silence interval, as Tick judges) after the asset's previous
// sign of life (heardGW, heardAt). The raise is dated heardGW + k x iv,
// when Tick would have raised it had it read the stream live; the caller
// clears it at the message that ended the gap. Tick cannot see such a
// silence when the collector reads it from a backlog (down, or behind,
// then catching up): the backlog arrives all at once.
//
// Nothing is raised when the alert is active (Tick raised it live, or a
// death did), when the asset is dead (its death raised it), when a clock
// is unknown (stored 0, or an asset restored without the time its record
// was written), or when the gap is on one clock only: a gap of stored
// times only is the stream's (a broker outage, a gateway's uplink down
// while it spooled: its batches come late with their own ts_gw and nothing
// is missing); a gap of ts_gw only, the gateway's clock stepped forward.
// On a live stream a gateway spooling through an uplink outage looks
// silent to Tick (nothing arrives): that is what live judges, the
// collector's view; on replay only a gap in the device's own data counts.
func (e *Engine) gapSilence(out []alert.Alert, a *assetState, gw, stored, iv int64) []alert.Alert {
	// the tests on the asset's own fields first: the silence instance
	// is one more load (of memory out of cache with many assets)
	if a.silenceR == nil || a.dead != "" || iv <= 0 || a.heardAt <= 0 || stored <= 0 || a.heardGW <= 0 {
		return out
	}
	lim := a.silenceR.K * float64(iv)
	// longer than live judgment surely sees: Tick runs at most once a
	// TickPeriod, so a silence up to a TickPeriod beyond k x iv may pass
	// between two live judgments unraised; raising it from the data alone
	// would raise what live never does (a 0.33 s hiccup of a 100 ms feed)
	if seen := lim + float64(TickPeriod.Milliseconds()); float64(gw-a.heardGW) <= seen || float64(stored-a.heardAt) <= seen || a.silenced() {
		return out
	}
	in := a.silence
	e.gap = [3]int64{gw - a.heardGW, stored - a.heardAt, iv}
	out = e.step(out, in, in.r.Severity, a.heardGW+int64(math.Ceil(lim)), 0, 0)
	e.gap = [3]int64{}
	return out
}

// silenced reports whether the asset's silence alert is raised (its latch
// not at None), from silenceNone when it knows.
func (a *assetState) silenced() bool {
	if a.silenceNone && !a.e.slow {
		return false
	}
	on := a.silence != nil && a.silence.latch.Level != alert.None
	a.silenceNone = !on
	return on
}

// silenceIV is the batch interval the asset's silence is judged on (ms):
// the observed one (an average of arrival gaps), but never less than the
// shortest interval its birth declares, the longest its gateway may go
// between two reports while the asset answers (a Modbus device on a
// connection shared with units that time out: review 4 F9; 0 when
// neither is known.
func (a *assetState) silenceIV() int64 {
	if a.interval <= 0 {
		return 0 // no batch interval seen yet: as before, no silence judged
	}
	return max(a.interval, a.birthGap)
}

// setBirthGap sets birthGap from the birth in force.
func (a *assetState) setBirthGap() {
	a.birthGap = 0
	for _, si := range a.birth {
		if si.IntervalMS > 0 && (a.birthGap == 0 || si.IntervalMS < a.birthGap) {
			a.birthGap = si.IntervalMS
		}
	}
}

// inst is one rule applied to one asset (and signal).
type inst struct {
	r     *Rule
	a     *assetState
	sig   *signalState
	latch alert.Latch
	when  *boundExpr
	expr  *boundExpr
	clear *boundExpr
	impl  evaluator
	key   string
}

func (in *inst) active() bool {
	if in.r.Running && !in.a.running {
		return false
	}
	if in.when != nil {
		v, ok := in.a.eval(in.when)
		return ok && v != 0
	}
	return true
}

// held returns the string a signal keeps for a reading's s: the one it
// holds while equal, else a copy. A reading's strings may be views into
// its message's payload (telemetry.DecodeBatchStringInto): kept as such,
// one text reading per signal would keep its whole payload alive.
func held(have, s string) string {
	if s == have {
		return have
	}
	return strings.Clone(s)
}

func (in *inst) alertKey() string {
	if in.key == "" {
		sig := ""
		if in.sig != nil {
			sig = in.sig.name
		}
		in.key = alert.MakeKey(in.a.site, in.a.id, in.r.Name, sig)
	}
	return in.key
}

// step feeds a latch and appends an alert when its state changed. The
// change of an active alert is dated no earlier than its raise
// (alert.Latch.At): ts may be on another clock than the raise (a silence
// raised on the collector's clock, cleared by a backlog batch's ts_gw).
func (e *Engine) step(out []alert.Alert, in *inst, tgt alert.Severity, ts, on, off int64) []alert.Alert {
	prev := in.latch.Level
	ts = in.latch.At(ts)
	if !in.latch.Step(tgt, ts, on, off) {
		return out
	}
	ts = in.latch.At(ts) // a raise may come 1 ms after ts (alert.Latch.Step)
	if in == in.a.silence {
		in.a.silenceNone = in.latch.Level == alert.None
	}
	al := alert.Alert{Schema: alert.Schema, Key: in.alertKey(), Site: in.a.site, Class: in.a.class, Asset: in.a.id,
		Rule: in.r.Name, Kind: string(in.r.Kind), Severity: in.latch.Level, RaisedAt: in.latch.Raised, UpdatedAt: ts}
	if in.sig != nil {
		al.Signal = in.sig.name
	}
	switch {
	case in.latch.Level == alert.None:
		al.State, al.ClearedAt, al.Severity = alert.Cleared, ts, prev
		e.stats.Cleared++
	case prev == alert.None:
		al.State = alert.Raised
		e.stats.Raised++
	default:
		al.State = alert.Updated
	}
	al.ID = alert.MakeID(al.Key, al.RaisedAt)
	al.Message, al.Values = e.describe(in, al.State)
	return append(out, al)
}

// Restore puts a persisted active alert back into the engine so that it is
// not raised again and clears normally. Unknown rules are ignored.
func (e *Engine) Restore(al alert.Alert) bool {
	if !al.Active() {
		return false
	}
	in := e.inst(e.asset(al.Site, al.Asset, al.Class, nil), al)
	if in == nil {
		return false
	}
	in.latch.Restore(al.Severity, al.RaisedAt)
	return true
}

// Adopt applies an alert event that was published but is missing from the
// restored state (a crash between an event's publication and the
// checkpoint of its asset): a raise or update makes its occurrence active
// with the event's raised_at and severity, as Restore; a clear of the
// occurrence that is active (same raised_at) clears its latch without an
// event, so a new occurrence is raised later than it. It reports whether
// the engine changed. A clear of an unknown asset or of another occurrence
// changes nothing.
func (e *Engine) Adopt(al alert.Alert) bool {
	if al.Active() {
		_, known := e.lookup(al.Site, al.Asset)
		a := e.asset(al.Site, al.Asset, al.Class, nil)
		in := e.inst(a, al)
		if in == nil && !known {
			e.dropAsset(a) // a rule no longer configured: no asset made for it
		}
		if in == nil || in.latch.Level == al.Severity && in.latch.Raised == al.RaisedAt {
			return false
		}
		in.latch.Restore(al.Severity, al.RaisedAt)
		return true
	}
	a, ok := e.lookup(al.Site, al.Asset)
	if !ok {
		return false
	}
	in := e.inst(a, al)
	if in == nil || in.latch.Level == alert.None || in.latch.Raised != al.RaisedAt {
		return false
	}
	in.latch.Restore(alert.None, al.RaisedAt)
	return true
}

// inst finds the rule instance of asset a that raises al (nil: none, a rule
// no longer configured).
func (e *Engine) inst(a *assetState, al alert.Alert) *inst {
	var cands []*inst
	if al.Signal != "" {
		s := a.signal(al.Signal)
		cands = append(cands, s.insts...)
		if s.stale != nil {
			cands = append(cands, s.stale)
		}
		if s.plaus != nil {
			cands = append(cands, s.plaus)
		}
	} else {
		cands = append(cands, a.insts...)
		if a.silence != nil {
			cands = append(cands, a.silence)
		}
	}
	for _, in := range cands {
		if in.r.Name == al.Rule {
			// the caller may change its latch: the quiet paths judge
			// it again (staleQuiet, silenceNone, plausIdle)
			a.staleQuiet, a.silenceNone = false, false
			if in.sig != nil {
				in.sig.plausIdle = false
			}
			return in
		}
	}
	return nil
}

type SignalView struct {
	Signal string  `json:"signal"`
	Value  float64 `json:"value"`
	Valid  bool    `json:"valid"`
	// Implausible is set when the latest reading's value was outside the
	// plausible range or not finite; Valid is then false.
	Implausible bool   `json:"implausible,omitempty"`
	Text        string `json:"text,omitempty"`
	Unit        string `json:"unit,omitempty"`
	Quality     string `json:"quality"`
	TS          int64  `json:"ts"`
}

// AssetView is the latest state of one asset.
type AssetView struct {
	Site      string             `json:"site"`
	ID        string             `json:"id"`
	Class     string             `json:"class"`
	Path      []string           `json:"path,omitempty"`
	Nameplate map[string]float64 `json:"nameplate,omitempty"`
	Running   bool               `json:"running"`
	LastTS    int64              `json:"last_ts"`
	Dead      string             `json:"dead,omitempty"`
	// Gateway is the gateway of the asset's newest evaluated message (a
	// batch not older than the newest, an applied birth or death;
	// checkpointed): "" before any.
	Gateway string       `json:"gateway,omitempty"`
	Signals []SignalView `json:"signals"`
	// Writable lists the signals commands may write, with the limits of
	// the asset's birth (sorted by signal; empty when none is writable).
	Writable []WritableView `json:"writable,omitempty"`
	// SignalsRefused counts the readings and birth signals refused because
	// the asset held max_signals_per_asset signals (since this collector
	// tracks it; not checkpointed).
	SignalsRefused uint64 `json:"signals_refused,omitempty"`
}

// WritableView is one writable signal of an asset's birth: its canonical
// unit and the gateway's write limits.
type WritableView struct {
	Signal string                 `json:"signal"`
	Unit   string                 `json:"unit,omitempty"`
	States []string               `json:"states,omitempty"` // labels of a state signal, index = value
	Write  *telemetry.WriteLimits `json:"write"`
}

// Assets returns a copy of every asset's latest state.
func (e *Engine) Assets() []AssetView {
	out := make([]AssetView, 0, len(e.order))
	for _, a := range e.order {
		out = append(out, a.view())
	}
	return out
}

// Asset returns one asset's latest state.
func (e *Engine) Asset(site, id string) (AssetView, bool) {
	a, ok := e.lookup(site, id)
	if !ok {
		return AssetView{}, false
	}
	return a.view(), true
}

func (a *assetState) view() AssetView {
	v := AssetView{Site: a.site, ID: a.id, Class: a.class, Path: append([]string(nil), a.path...),
		Running: a.running, LastTS: a.lastTS, Dead: a.dead, Gateway: a.gateway, Nameplate: make(map[string]float64, len(a.nameplate)), SignalsRefused: a.refused}
	for k, x := range a.nameplate {
		v.Nameplate[k] = x
	}
	for _, s := range a.list {
		if s.seen == 0 {
			continue
		}
		v.Signals = append(v.Signals, SignalView{Signal: s.name, Value: s.value, Valid: s.valid, Implausible: s.implaus, Text: s.text, Unit: s.unit,
			Quality: s.quality.String(), TS: s.seen})
	}
	for _, si := range a.birth {
		if si.Write != nil {
			v.Writable = append(v.Writable, WritableView{Signal: si.Signal, Unit: si.Unit, States: si.Enum, Write: si.Write})
		}
	}
	slices.SortFunc(v.Writable, func(x, y WritableView) int { return strings.Compare(x.Signal, y.Signal) })
	return v
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
