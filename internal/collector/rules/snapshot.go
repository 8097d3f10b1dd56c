package rules

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// AssetState is everything the engine knows about one asset, in a form the
// collector checkpoints (JSON in JetStream KV) so that a restart or another
// replica continues the same alerts: the birth, per-signal values and
// arrival times, every rule's latch (level, running on/off delay, raise time)
// and evaluator memory (EWMA baseline, z-score and stuck windows, rate
// history, CUSUM sums). Peer-rule group membership is not kept: it is
// rebuilt from the next values of the peers.
type AssetState struct {
	Site      string                 `json:"site"`
	ID        string                 `json:"id"`
	Class     string                 `json:"class"`
	Path      []string               `json:"path,omitempty"`
	Nameplate map[string]float64     `json:"np,omitempty"`
	Birth     []telemetry.SignalInfo `json:"birth,omitempty"`
	LastTSGW  int64                  `json:"ts_gw,omitempty"`
	LastTS    int64                  `json:"ts,omitempty"`
	Interval  int64                  `json:"iv,omitempty"`
	Batches   uint64                 `json:"n,omitempty"`
	Dead      string                 `json:"dead,omitempty"`
	Running   bool                   `json:"run,omitempty"`
	Gateway   string                 `json:"gw,omitempty"`
	Seq       uint64                 `json:"seq,omitempty"`
	Part      int                    `json:"part,omitempty"`
	// LifeTSGW is the ts_gw of the newest birth or death the state
	// includes (Engine.BirthBehind, DeathBehind); 0 in records written
	// before it was kept.
	LifeTSGW int64         `json:"life_ts_gw,omitempty"`
	Signals  []SignalState `json:"sigs,omitempty"`
	Rules    []RuleState   `json:"rules,omitempty"` // asset-level rules and silence

	slab []float64 // SnapshotInto's evaluator memory, reused
}

// SignalState is one signal of an AssetState. Times are Unix ms.
type SignalState struct {
	Name     string            `json:"s"`
	Unit     string            `json:"u,omitempty"`
	Value    float64           `json:"v,omitempty"`
	Text     string            `json:"t,omitempty"`
	Quality  telemetry.Quality `json:"q,omitempty"`
	Valid    bool              `json:"ok,omitempty"`
	Implaus  bool              `json:"ip,omitempty"`
	TS       int64             `json:"ts,omitempty"`
	Seen     int64             `json:"seen,omitempty"`
	First    int64             `json:"first,omitempty"`
	Arr      int64             `json:"arr,omitempty"`
	Good     int64             `json:"good,omitempty"`
	FirstArr int64             `json:"farr,omitempty"`
	Interval int64             `json:"iv,omitempty"`
	Rules    []RuleState       `json:"rules,omitempty"`
}

// RuleState is one rule instance: its latch and evaluator memory.
type RuleState struct {
	Rule  string           `json:"r"`
	Latch alert.LatchState `json:"l"`
	Eval  Floats           `json:"e,omitempty"`
}

// Floats is evaluator memory; in JSON it is the base64 of the
// little-endian IEEE 754 values (exact, and an order of magnitude cheaper
// to write than decimal numbers: the checkpoint is on the hot path).
type Floats []float64

// MarshalText writes the base64 (encoding/json quotes it: the same bytes
// a MarshalJSON would give, without its validation pass over them).
func (f Floats) MarshalText() ([]byte, error) {
	return f.appendBase64(make([]byte, 0, base64.StdEncoding.EncodedLen(8*len(f)))), nil
}

// UnmarshalJSON reads what MarshalText wrote (a JSON string).
func (f *Floats) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw)%8 != 0 {
		return fmt.Errorf("rules: evaluator state: not base64 of float64s")
	}
	*f = make(Floats, len(raw)/8)
	for i := range *f {
		(*f)[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return nil
}

// Has reports whether the engine tracks the asset.
func (e *Engine) Has(site, id string) bool {
	_, ok := e.lookup(site, id)
	return ok
}

// Key returns the engine's own copies of a tracked asset's site and id
// (never views into a message payload) and of the gateway of its newest
// evaluated batch; false when the asset is not tracked.
func (e *Engine) Key(site, id string) (key [2]string, gateway string, ok bool) {
	a, ok := e.lookup(site, id)
	if !ok {
		return [2]string{}, "", false
	}
	return [2]string{a.site, a.id}, a.gateway, true
}

// Current returns the gateway of a tracked asset's newest evaluated batch
// and whether the asset is alive on it: it sent a batch, is not reported
// dead and its silence alert is not raised. False when the asset is not
// tracked or has no batch yet.
func (e *Engine) Current(site, id string) (gateway string, alive bool) {
	a, ok := e.lookup(site, id)
	if !ok || a.batches == 0 {
		return "", false
	}
	return a.gateway, a.dead == "" && !a.silenced()
}

// Len returns how many assets the engine tracks.
func (e *Engine) Len() int { return len(e.assets) }

// Duplicate reports whether b was already evaluated: same gateway as the
// asset's newest batch and a seq not above it but less than window behind
// it (for the parts of a split batch, which share their seq: a part not
// above the newest part). Batches of one asset are evaluated in order, so
// this recognises a batch redelivered after a restart or takeover whose
// effects were already checkpointed. The window (the collector's
// dedup_window, in sequence numbers) keeps one bogus seq far ahead from
// silencing the asset: the gateway's real seqs lie more than window behind
// it and are evaluated, and the first of them becomes the recorded seq
// again. A real redelivery lies within the consumer's unacknowledged
// messages, far less than window behind.
//
// Births and deaths take their numbers from the same sequence as the
// batches (docs/schema.md) and move the recorded (gateway, seq) too
// (Birth, Death), so Behind holds them to the same order.
func (e *Engine) Duplicate(b *telemetry.Batch, window uint64) bool {
	return e.behind(b.Asset.Site(), b.Asset.ID, b.Gateway, b.Seq, b.Part, b.Parts, window)
}

// Behind reports whether a birth or death of the asset, sent by gateway
// with seq at ts_gw tsgw (Unix ms), is older than the asset's state and
// must not be applied: it lies at or behind the newest message of that
// gateway the asset's state includes (a batch, birth or death: the
// recorded (gateway, seq), checkpointed), less than window behind it, as
// Duplicate does for batches; or it lies at or behind it by window or more
// and its tsgw is before the newest ts_gw the asset's state includes (its
// newest batch's, or its newest birth's or death's when later). Such a message is a
// redelivery after a restart or takeover, or an older birth or death a
// gateway's live_first backlog replays behind newer data (a 1 Hz gateway
// with 30 assets uses 16384 seqs in 9 minutes); applied, it would set the
// asset back (an older birth's signal list drops what the newer one and
// the batches since brought; an older death marks a live asset dead).
// Beyond the window the seq alone cannot tell an old message from a
// gateway that started over, so ts_gw decides (review2 F1). seq 0 (a
// message without a place in its gateway's sequence: tests, hand-made
// messages; the gateway and the Sparkplug host never send one) and a
// message of another gateway than the recorded one are never behind by
// seq; BirthBehind and DeathBehind compare such messages on ts_gw.
func (e *Engine) Behind(site, id, gateway string, seq uint64, tsgw int64, window uint64) bool {
	if seq == 0 {
		return false
	}
	if e.behind(site, id, gateway, seq, 0, 0, window) {
		return true
	}
	a, ok := e.lookup(site, id)
	return ok && a.seq != 0 && a.gateway == gateway && seq <= a.seq && a.before(tsgw)
}

// before reports whether tsgw (a birth's or death's ts_gw; 0: none) lies
// before the newest ts_gw the asset's state includes: its newest batch's,
// birth's or death's, each bounded by the clock when it was evaluated
// (Engine.bounded).
func (a *assetState) before(tsgw int64) bool {
	return tsgw > 0 && tsgw < max(a.order, a.lifeTSGW)
}

func (e *Engine) behind(site, id, gateway string, seq uint64, part, parts int, window uint64) bool {
	a, ok := e.lookup(site, id)
	if !ok || a.seq == 0 || a.gateway != gateway {
		return false
	}
	if seq == a.seq && parts > 0 {
		return part <= a.part
	}
	return seq <= a.seq && a.seq-seq < window
}

// DeathBehind is Behind for a death d, and, where its seq cannot be
// compared (seq 0, no recorded seq, or another gateway than the asset's
// newest message), whether d's ts_gw lies before the newest ts_gw the
// asset's state includes (its newest batch, birth or death): a death
// older than data already evaluated, or than a birth that said the asset
// answers, is not applied (batches older than the newest are not
// evaluated either).
func (e *Engine) DeathBehind(d *telemetry.Death, window uint64) bool {
	as := d.Asset.FromJSON()
	return e.lifeBehind(as.Site(), as.ID, d.Gateway, d.Seq, d.TSGW, window)
}

// BirthBehind is DeathBehind for a birth b: one whose seq cannot be
// compared and whose ts_gw lies before the asset's newest batch, birth or
// death is not applied (its signal list and ranges are not put in force,
// it clears no alert and ends no death). The case: an asset moved from
// gateway A to gateway B, and A replays its live_first backlog later,
// with an hour-old birth of the asset; before, that birth ended the death
// B reported, cleared its alert and put A's old signal list and ranges
// in force.
func (e *Engine) BirthBehind(b *telemetry.Birth, window uint64) bool {
	as := b.Asset.FromJSON()
	return e.lifeBehind(as.Site(), as.ID, b.Gateway, b.Seq, b.TSGW, window)
}

func (e *Engine) lifeBehind(site, id, gateway string, seq uint64, tsgw int64, window uint64) bool {
	if e.Behind(site, id, gateway, seq, tsgw, window) {
		return true
	}
	a, ok := e.lookup(site, id)
	if !ok || seq != 0 && a.gateway == gateway && a.seq != 0 {
		return false // compared by seq above: newer
	}
	return a.before(tsgw)
}

// Mark records a birth or death of the asset (gateway, seq) as the
// newest message the state includes, as Process records a batch's; seq 0,
// an untracked asset, or a seq of the recorded gateway below the recorded
// one (an old message applied because it lies more than the window behind
// and is not older than the newest batch in ts_gw) changes nothing: an
// applied old message never moves the recorded seq back, so the rest of
// a replayed backlog stays behind it (review2 F1). A gateway that started
// over moves it back with its first batch (Process). The collector marks
// a birth also when it does not apply it (InForce).
func (e *Engine) Mark(site, id, gateway string, seq uint64) {
	a, ok := e.lookup(site, id)
	if !ok || seq == 0 || a.gateway == gateway && seq < a.seq {
		return
	}
	if a.gateway != gateway {
		a.gateway = strings.Clone(gateway)
	}
	a.seq, a.part = seq, 0
}

// Snapshot returns the state of one asset; false when it is not tracked.
func (e *Engine) Snapshot(site, id string) (AssetState, bool) {
	var st AssetState
	ok := e.SnapshotInto(&st, site, id)
	return st, ok
}

// SnapshotInto is Snapshot into st, reusing its lists (and its evaluator
// memory slab) for a caller that encodes one asset after another: valid
// until the next call with the same st. Path and Nameplate are the
// engine's own (read only; valid while the engine's lock is held).
func (e *Engine) SnapshotInto(st *AssetState, site, id string) bool {
	a, ok := e.lookup(site, id)
	if !ok {
		return false
	}
	sigs, birth, rules, slab := st.Signals[:0], st.Birth[:0], st.Rules[:0], st.slab[:0]
	*st = AssetState{Site: a.site, ID: a.id, Class: a.class, Path: a.path, Nameplate: a.nameplate, LastTSGW: a.lastTSGW,
		LastTS: a.lastTS, Interval: a.interval, Batches: a.batches, Dead: a.dead, Running: a.running, Gateway: a.gateway, Seq: a.seq, Part: a.part, LifeTSGW: a.lifeTSGW}
	if len(a.birth) > 0 {
		st.Birth = birth
		for _, bi := range a.birth {
			st.Birth = append(st.Birth, bi)
		}
	}
	// evaluator memory of every rule in one slab: few allocations per record
	if slab == nil {
		slab = make([]float64, 0, 256)
	}
	if sigs == nil {
		sigs = make([]SignalState, 0, len(a.list))
	}
	for i, s := range a.list {
		var rs []RuleState
		if i < cap(sigs) {
			rs = sigs[:cap(sigs)][i].Rules[:0]
		}
		ss := SignalState{Name: s.name, Unit: s.unit, Value: s.value, Text: s.text, Quality: s.quality, Valid: s.valid, Implaus: s.implaus,
			TS: s.ts, Seen: s.seen, First: s.first, Arr: s.arr, Good: s.good, FirstArr: s.firstArr}
		if !s.birthIV {
			ss.Interval = s.interval
		}
		for _, in := range s.insts {
			rs = appendRule(rs, in, &slab)
		}
		for _, in := range [2]*inst{s.stale, s.plaus} { // as all() orders them
			if in != nil {
				rs = appendRule(rs, in, &slab)
			}
		}
		if len(rs) > 0 {
			ss.Rules = rs
		}
		sigs = append(sigs, ss)
	}
	if len(sigs) > 0 {
		st.Signals = sigs // else omitted, as before
	}
	for _, in := range a.insts {
		rules = appendRule(rules, in, &slab)
	}
	if a.silence != nil {
		rules = appendRule(rules, a.silence, &slab)
	}
	if len(rules) > 0 {
		st.Rules = rules
	}
	st.slab = slab
	return true
}

// appendRule appends in's state unless it has none; its evaluator memory
// goes to the end of slab.
func appendRule(out []RuleState, in *inst, slab *[]float64) []RuleState {
	var ev []float64
	if in.impl != nil {
		start := len(*slab)
		*slab = appendEval(*slab, in.impl)
		if end := len(*slab); end > start {
			ev = (*slab)[start:end:end]
		}
	}
	if in.latch.Zero() && ev == nil {
		return out
	}
	return append(out, RuleState{Rule: in.r.Name, Latch: in.latch.State(), Eval: ev})
}

func (s *signalState) all() []*inst {
	out := s.insts
	if s.stale != nil {
		out = append(out[:len(out):len(out)], s.stale)
	}
	if s.plaus != nil {
		out = append(out[:len(out):len(out)], s.plaus)
	}
	return out
}

func (a *assetState) all() []*inst {
	out := a.insts
	if a.silence != nil {
		out = append(out[:len(out):len(out)], a.silence)
	}
	return out
}

// RestoreAsset puts a checkpointed asset back, replacing what the engine
// knew about it. Rules that no longer exist are ignored; evaluator memory
// whose shape no longer fits its rule (the rule changed) starts afresh.
// The asset's silence clock restarts now, so a takeover never raises a
// silence alert for the time no replica was reading. A newest ts_gw
// (batch, birth or death) later than now + Options.MaxFuture is restored
// as now.
func (e *Engine) RestoreAsset(st *AssetState) { e.RestoreAssetAt(st, 0) }

// RestoreAssetAt is RestoreAsset for a record written at written (Unix
// ms, the time the state bucket stored it; 0: unknown): the asset's
// silence clock starts then (now if that is later), not at the restore.
// The record was written after the asset's newest message was evaluated
// (and once or twice a checkpoint interval after it at most, unless an
// alert changed it later), so the asset sent nothing evaluated since at
// least then. Silence is still judged only on a fetch that found the
// stream drained (Tick): a restart or takeover whose backlog holds the
// asset's batches evaluates them first, so the time no replica was
// reading is silence only when the stream holds nothing of the asset
// for it, as when every device went down before a restart.
func (e *Engine) RestoreAssetAt(st *AssetState, written int64) {
	if a, ok := e.lookup(st.Site, st.ID); ok {
		e.dropAsset(a)
	}
	a := e.asset(st.Site, st.ID, st.Class, st.Path)
	for k, v := range st.Nameplate {
		a.nameplate[k] = v
	}
	for _, bi := range st.Birth {
		a.birth[bi.Signal] = bi
		a.signal(bi.Signal)
	}
	a.setBirthGap()
	a.birthBin = nil
	a.lastTSGW, a.lastTS, a.interval, a.batches, a.dead, a.running = st.LastTSGW, st.LastTS, st.Interval, st.Batches, st.Dead, st.Running
	a.gateway, a.seq, a.part, a.lifeTSGW = st.Gateway, st.Seq, st.Part, st.LifeTSGW
	if e.future > 0 {
		// a record of a release that did not clamp births and deaths:
		// a death dated 2100 would hold the asset dead until then
		// (review4 F6); the arrival times were lost, now stands for them
		now := e.now()
		for _, ts := range [2]*int64{&a.lastTSGW, &a.lifeTSGW} {
			if *ts > now+e.future {
				*ts = now
			}
		}
	}
	// the ordering keys never lie ahead of the clock (bounded)
	a.order, a.lifeTSGW = e.bounded(a.lastTSGW), e.bounded(a.lifeTSGW)
	if a.batches > 0 {
		a.lastRecv = e.now()
		if written > 0 && written < a.lastRecv {
			a.lastRecv = written
		}
	}
	// the gap clocks (gapSilence) start from the newest batch or birth the
	// record includes and the time it was written: the stream stored that
	// message no later, so a gap measured from written is no longer than
	// the real one (a silence across the restart is found, never made)
	a.heardGW, a.heardAt = max(a.lastTSGW, a.lifeTSGW), written
	for i := range st.Signals {
		ss := &st.Signals[i]
		s := a.signal(ss.Name)
		s.unit, s.value, s.text, s.quality, s.valid, s.implaus = ss.Unit, ss.Value, ss.Text, ss.Quality, ss.Valid, ss.Implaus
		s.ts, s.seen, s.first, s.arr, s.good, s.firstArr = ss.TS, ss.Seen, ss.First, ss.Arr, ss.Good, ss.FirstArr
		a.applyRange(s)
		if !s.birthIV {
			s.interval = ss.Interval
		}
		restoreRules(s.all(), ss.Rules)
	}
	for _, s := range a.list {
		a.applyRange(s)
	}
	for _, bd := range a.bindings {
		a.refreshConsts(bd)
	}
	restoreRules(a.all(), st.Rules)
}

func restoreRules(insts []*inst, rs []RuleState) {
	for _, r := range rs {
		for _, in := range insts {
			if in.r.Name != r.Rule {
				continue
			}
			in.latch.SetState(r.Latch)
			if in.impl != nil && r.Eval != nil {
				loadEval(in.impl, in.r, r.Eval)
			}
			break
		}
	}
}

// appendEvalBinary appends an evaluator's memory as statebin.AppendFloats
// writes its numbers (the count, then every value; count 0 for a nil
// evaluator and a peer rule: rebuilt from live values), straight from the
// evaluator: the layout loadEval reads, defined here only (appendEval
// reads it back as numbers). Windows are written in bulk.
func appendEvalBinary(b []byte, ev evaluator) []byte {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	switch x := ev.(type) {
	case *thresholdEval:
		return statebin.AppendFloats(b, []float64{x.x, x.limit})
	case *rateEval:
		b = statebin.AppendUvarint(b, uint64(2+2*x.n))
		b = statebin.AppendRawFloats(b, []float64{x.delta, x.x})
		at := len(b)
		b = slices.Grow(b, 16*x.n)[:at+16*x.n]
		d := b[at:]
		for k := 0; k < x.n; k++ {
			i := (x.head + k) % rateCap
			binary.LittleEndian.PutUint64(d[16*k:], math.Float64bits(float64(x.ts[i])))
			binary.LittleEndian.PutUint64(d[16*k+8:], math.Float64bits(x.v[i]))
		}
		return b
	case *stuckEval: // head, n, spread, slice, lows, highs (3 + polls values before min_span)
		b = statebin.AppendUvarint(b, uint64(4+2*len(x.lo)))
		b = statebin.AppendRawFloats(b, []float64{float64(x.head), float64(x.n), x.spread, float64(x.slice)})
		b = statebin.AppendRawFloats(b, x.lo)
		return statebin.AppendRawFloats(b, x.hi)
	case *ewmaEval:
		return statebin.AppendFloats(b, []float64{float64(x.b.n), x.b.mean, x.b.m2, x.z, b2f(x.started), x.lim, x.x})
	case *zscoreEval:
		b = statebin.AppendUvarint(b, uint64(5+len(x.vals)))
		b = statebin.AppendRawFloats(b, []float64{float64(x.head), float64(x.n), x.z, x.mean, x.sd})
		return statebin.AppendRawFloats(b, x.vals)
	case *cusumEval:
		return statebin.AppendFloats(b, []float64{float64(x.b.n), x.b.mean, x.b.m2, x.hi, x.lo, x.x})
	}
	return append(b, 0)
}

// appendEval appends an evaluator's memory to dst as numbers
// (appendEvalBinary's, read back: one definition of the layout).
func appendEval(dst []float64, ev evaluator) []float64 {
	var buf [1024]byte // a window of up to 120 values (a stuck rule of 60 polls) without an allocation
	r := statebin.NewReader(appendEvalBinary(buf[:0], ev))
	for range r.Count(8) {
		dst = append(dst, r.Float())
	}
	return dst
}

// loadEval restores what appendEval wrote; a shape that does not fit the
// rule (its window changed) is ignored.
func loadEval(ev evaluator, r *Rule, f []float64) {
	switch x := ev.(type) {
	case *thresholdEval:
		if len(f) == 2 {
			x.x, x.limit = f[0], f[1]
		}
	case *rateEval:
		if len(f) < 2 || (len(f)-2)%2 != 0 || (len(f)-2)/2 > rateCap {
			return
		}
		x.delta, x.x, x.head, x.n = f[0], f[1], 0, (len(f)-2)/2
		for k := 0; k < x.n; k++ {
			x.ts[k], x.v[k] = int64(f[2+2*k]), f[3+2*k]
		}
	case *stuckEval:
		if len(f) < 3 || int(f[0]) >= r.Polls {
			return
		}
		switch len(f) {
		case 4 + 2*r.Polls:
			x.head, x.n, x.spread, x.slice = int(f[0]), int(f[1]), f[2], int64(f[3])
			copy(x.lo, f[4:])
			copy(x.hi, f[4+r.Polls:])
		case 3 + r.Polls: // a record of a release before min_span: one reading a slot
			x.head, x.n, x.spread, x.slice = int(f[0]), int(f[1]), f[2], noSlice
			copy(x.lo, f[3:])
			copy(x.hi, f[3:])
		}
	case *ewmaEval:
		if len(f) == 7 {
			x.b.n, x.b.mean, x.b.m2, x.z, x.started, x.lim, x.x = int(f[0]), f[1], f[2], f[3], f[4] != 0, f[5], f[6]
		}
	case *zscoreEval:
		if len(f) != 5+r.N || int(f[0]) >= r.N {
			return
		}
		x.head, x.n, x.z, x.mean, x.sd = int(f[0]), int(f[1]), f[2], f[3], f[4]
		copy(x.vals, f[5:])
	case *cusumEval:
		if len(f) == 6 {
			x.b.n, x.b.mean, x.b.m2, x.hi, x.lo, x.x = int(f[0]), f[1], f[2], f[3], f[4], f[5]
		}
	}
}
