package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// quietRules adds staleness and plausibility rules with on and off delays
// (pending moves the quiet paths must see), an explicit interval and k,
// and a range of a rule's own to the default packs.
const quietRules = `version: 1
rules:
  - {name: vib_stale, kind: stale, class: motor, signal: vibration, k: 2, interval: 10s, on_delay: 20s, off_delay: 5s, severity: alarm}
  - {name: power_range, kind: plausibility, class: motor, signal: power, min: 0, max: 200, on_delay: 5s, off_delay: 10s}
  - {name: ac_stale, kind: stale, class: air_compressor, signal: "*", k: 1.5, on_delay: 3s, off_delay: 2s}
  - {name: ac_range, kind: plausibility, class: air_compressor, signal: discharge_temp, max: 120, off_delay: 4s}
`

// TestQuietPathsMatchSlow: the engine that skips stepping quiet staleness
// and plausibility instances (staleQuiet, plausIdle) gives the same alert
// transitions, the same checkpoint bytes and the same asset views as one
// that steps every instance on every batch (Engine.slow), after every
// operation of random sequences over a few assets: batches of every shape
// (all signals in order, subsets, shuffled, repeated, new signals; good,
// uncertain, bad, stale, valueless and implausible readings; gaps of
// ts_gw beyond k x interval, clocks stepped back, late batches), births
// that change intervals, ranges and signal lists, deaths, ticks, adopted
// and restored alerts and checkpoint round trips. It also checks what the
// quiet paths rely on after every operation (checkQuiet).
func TestQuietPathsMatchSlow(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	var quiet, batches int
	kinds := map[string]int{}
	for seed := range seeds {
		q, n := quietRun(t, uint64(seed), 400, kinds)
		quiet, batches = quiet+q, batches+n
	}
	// the comparison means something only if the quiet paths were taken
	// and the instances they skip raised and cleared
	t.Logf("the staleness instances were quiet after %d of %d batches; alerts: %v", quiet, batches, kinds)
	if quiet < batches/10 {
		t.Errorf("the staleness instances were quiet after %d of %d batches", quiet, batches)
	}
	for _, k := range []string{"stale raised", "stale cleared", "plausibility raised", "plausibility cleared", "silence raised", "silence cleared"} {
		if kinds[k] == 0 {
			t.Errorf("no %s alert in the sequences: %v", k, kinds)
		}
	}
}

// quietRun runs one random sequence of ops operations on a fast and a slow
// engine, failing at the first difference. It returns how many batches
// left their asset's staleness instances quiet, of how many batches, and
// counts the alerts by kind and state into kinds.
func quietRun(t *testing.T, seed uint64, ops int, kinds map[string]int) (quiet, batches int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 22))
	fast, slow := newHarness(t, true, quietRules), newHarness(t, true, quietRules)
	slow.e.slow = true
	now := int64(1_700_000_000_000)
	clock := func() int64 { return now }
	fast.e.now, slow.e.now = clock, clock
	cat := catalog.Default()

	type fleetAsset struct {
		as   telemetry.Asset
		sigs []string
		mean []float64
		gw   int64
		seq  uint64
		step int64 // its usual interval, ms
		// mute is a signal its batches leave out for the next muted
		// batches (a point that stopped answering)
		mute  string
		muted int
	}
	motor := []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "power_factor", "power", "frequency",
		"winding_temp", "bearing_temp", "vibration"}
	motorMean := []float64{400, 400, 400, 110, 110, 110, 0.86, 65, 50, 95, 60, 2}
	comp := []string{"discharge_pressure", "discharge_temp", "input_power", "free_air_delivery", "load_state", "dew_point"}
	compMean := []float64{0.75, 82, 70, 11.5, 2, 3}
	var fleet []*fleetAsset
	for i := range 4 {
		f := &fleetAsset{sigs: motor, mean: motorMean, gw: now - 600_000, step: 1000 * (1 + rng.Int64N(15))}
		f.as = telemetry.Asset{ID: fmt.Sprintf("m-%d", i), Class: "motor", Path: []string{"acme", "site1", "_", "_", "_"}}
		if i == 3 {
			f.sigs, f.mean = comp, compMean
			f.as.ID, f.as.Class = "ac-1", "air_compressor"
		}
		fleet = append(fleet, f)
	}
	var history []alert.Alert // every alert emitted, for Adopt and Restore
	// compare compares the results of an operation, described by op (made
	// only on failure)
	compare := func(op func() string, got, want []alert.Alert) {
		t.Helper()
		if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
			t.Fatalf("seed %d, %s: the quiet paths gave\n%s\nstepping every instance gave\n%s", seed, op(), g, w)
		}
		for _, al := range got {
			kind := al.Kind
			if al.Signal == "" {
				kind = "silence"
			}
			kinds[kind+" "+string(al.State)]++
		}
		history = append(history, got...)
		for _, f := range fleet {
			x, okx := fast.e.AppendBinary(nil, f.as.Site(), f.as.ID)
			y, oky := slow.e.AppendBinary(nil, f.as.Site(), f.as.ID)
			if okx != oky || string(x) != string(y) {
				t.Fatalf("seed %d, %s: checkpoint records of %s differ:\n%x\n%x", seed, op(), f.as.ID, x, y)
			}
		}
		if g, w := fmt.Sprintf("%+v", fast.e.Assets()), fmt.Sprintf("%+v", slow.e.Assets()); g != w {
			t.Fatalf("seed %d, %s: asset views differ:\n%s\n%s", seed, op(), g, w)
		}
		if err := checkQuiet(fast.e); err != nil {
			t.Fatalf("seed %d, %s: %v", seed, op(), err)
		}
	}
	birth := func(f *fleetAsset) *telemetry.Birth {
		bi := &telemetry.Birth{Gateway: "gw", Asset: f.as.ToJSON(), TSGW: f.gw, Nameplate: map[string]float64{"rated_power": 75}}
		cl, _ := cat.Class(f.as.Class)
		for j, s := range f.sigs {
			if rng.IntN(8) == 0 {
				continue // a signal the birth drops
			}
			si := telemetry.SignalInfo{Signal: s, Unit: cl.Signals[s].Unit}
			switch rng.IntN(3) {
			case 0:
				si.IntervalMS = f.step
			case 1:
				si.IntervalMS = 1000 * (1 + rng.Int64N(20))
			}
			if rng.IntN(4) == 0 {
				lo, hi := f.mean[j]*0.5, f.mean[j]*1.5
				si.Min, si.Max = &lo, &hi
			}
			bi.Signals = append(bi.Signals, si)
		}
		return bi
	}
	for _, f := range fleet {
		bi := birth(f)
		compare(func() string { return "birth " + f.as.ID }, fast.e.Birth(bi, now, nil), slow.e.Birth(bi, now, nil))
	}
	for op := range ops {
		f := fleet[rng.IntN(len(fleet))]
		now += rng.Int64N(3000)
		switch p := rng.IntN(100); {
		case p < 75: // a batch
			b := &telemetry.Batch{Gateway: "gw", Asset: f.as}
			switch q := rng.IntN(20); {
			case q == 0: // a late batch (not evaluated)
				b.TSGW = f.gw - 1 - rng.Int64N(60_000)
			case q == 1: // the gateway's clock stepped back, its seq ahead
				f.seq++
				f.gw -= rng.Int64N(120_000)
				b.TSGW, b.Seq = f.gw, f.seq
			case q < 4: // a gap: stale by time, silence
				f.seq++
				f.gw += f.step * (2 + rng.Int64N(8))
				b.TSGW, b.Seq = f.gw, f.seq
			default:
				f.seq++
				f.gw += f.step/2 + rng.Int64N(f.step)
				b.TSGW, b.Seq = f.gw, f.seq
			}
			now = max(now, b.TSGW+rng.Int64N(2000))
			order := slices.Clone(f.sigs)
			if rng.IntN(2) == 0 { // the order the fast engine holds them in
				if a, ok := fast.e.lookup(f.as.Site(), f.as.ID); ok {
					order = order[:0]
					for _, s := range a.list {
						order = append(order, s.name)
					}
				}
			}
			switch rng.IntN(8) {
			case 0: // a subset
				keep := 1 + rng.IntN(8)
				order = slices.DeleteFunc(order, func(string) bool { return rng.IntN(keep+1) == 0 })
			case 4: // all but one
				if len(order) > 0 {
					i := rng.IntN(len(order))
					order = slices.Delete(order, i, i+1)
				}
			case 1:
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			case 2: // a signal twice
				if len(order) > 0 {
					order = append(order, order[rng.IntN(len(order))])
				}
			case 3: // a signal no birth declared
				order = append(order, fmt.Sprintf("spare_%d", rng.IntN(3)))
			}
			if f.muted == 0 && rng.IntN(15) == 0 {
				f.mute, f.muted = f.sigs[rng.IntN(len(f.sigs))], 2+rng.IntN(12)
			}
			if f.muted > 0 {
				f.muted--
				order = slices.DeleteFunc(order, func(s string) bool { return s == f.mute })
			}
			for _, s := range order {
				mean := 10.0
				if j := slices.Index(f.sigs, s); j >= 0 {
					mean = f.mean[j]
				}
				r := telemetry.Reading{Signal: s, TS: b.TSGW, Value: mean * (1 + (rng.Float64()-0.5)*0.02)}
				switch rng.IntN(60) {
				case 0:
					r.Quality = telemetry.QualityBad
				case 1, 2:
					r.Quality = telemetry.QualityStale
				case 3:
					r.Quality = telemetry.QualityUncertain
				case 4:
					r.NoValue, r.Text = true, "off"
				case 5:
					r.Value = -1e9
				case 6:
					r.Value = 1e9
				case 7:
					r.Value = math.NaN()
				case 8:
					r.TS = 0
				}
				b.Readings = append(b.Readings, r)
			}
			batches++
			compare(func() string { return fmt.Sprintf("op %d batch %s %+v", op, f.as.ID, b) }, fast.e.Process(b, now, nil), slow.e.Process(b, now, nil))
			if a, ok := fast.e.lookup(f.as.Site(), f.as.ID); ok && a.staleQuiet {
				quiet++
			}
		case p < 80:
			f.gw += rng.Int64N(f.step)
			bi := birth(f)
			compare(func() string { return fmt.Sprintf("op %d birth %s", op, f.as.ID) }, fast.e.Birth(bi, now, nil), slow.e.Birth(bi, now, nil))
		case p < 82:
			f.gw += rng.Int64N(f.step)
			d := &telemetry.Death{Gateway: "gw", Asset: f.as.ToJSON(), TSGW: f.gw, Reason: "timeout"}
			compare(func() string { return fmt.Sprintf("op %d death %s", op, f.as.ID) }, fast.e.Death(d, nil), slow.e.Death(d, nil))
		case p < 88:
			now += rng.Int64N(60_000)
			compare(func() string { return fmt.Sprintf("op %d tick", op) }, fast.e.Tick(nil, now, 0), slow.e.Tick(nil, now, 0))
		case p < 94: // an alert event adopted or restored (a crash between publishing and checkpointing)
			if len(history) == 0 {
				continue
			}
			al := history[rng.IntN(len(history))]
			if rng.IntN(2) == 0 {
				al.State, al.Severity = alert.Raised, alert.Severity(1+rng.IntN(3))
			}
			if rng.IntN(2) == 0 {
				if x, y := fast.e.Adopt(al), slow.e.Adopt(al); x != y {
					t.Fatalf("seed %d, op %d: Adopt(%+v) = %v, %v", seed, op, al, x, y)
				}
			} else if x, y := fast.e.Restore(al), slow.e.Restore(al); x != y {
				t.Fatalf("seed %d, op %d: Restore(%+v) = %v, %v", seed, op, al, x, y)
			}
			compare(func() string { return fmt.Sprintf("op %d adopt %+v", op, al) }, nil, nil)
		default: // a checkpoint round trip (a restart or takeover)
			rec, ok := fast.e.AppendBinary(nil, f.as.Site(), f.as.ID)
			if !ok {
				continue
			}
			written := now - rng.Int64N(5000)
			for _, e := range []*Engine{fast.e, slow.e} {
				st := ReadBinary(statebin.NewReader(rec))
				e.RestoreAssetAt(&st, written)
			}
			compare(func() string { return fmt.Sprintf("op %d restore %s", op, f.as.ID) }, nil, nil)
		}
	}
	return quiet, batches
}

// checkQuiet reports a broken promise of the quiet paths: an asset whose
// silence is marked at None and is raised; an asset whose staleness
// instances are marked quiet with one of them not idle, a signal of stale
// quality, or a signal's deadline before the asset's staleBy; a signal
// whose plausibility latch is marked idle and is not.
func checkQuiet(e *Engine) error {
	for _, a := range e.order {
		if a.silenceNone && a.silence != nil && a.silence.latch.Level != alert.None {
			return fmt.Errorf("%s: silenceNone with silence raised", a.id)
		}
		if a.silenceR != nil && a.silenceR != a.silence.r {
			return fmt.Errorf("%s: silenceR is not its silence instance's rule", a.id)
		}
		for _, s := range a.list {
			if s.plausIdle && (s.plaus == nil || !s.plaus.latch.Idle()) {
				return fmt.Errorf("%s %s: plausIdle with latch %+v", a.id, s.name, s.plaus.latch)
			}
			if !a.staleQuiet || s.stale == nil {
				continue
			}
			switch {
			case s.staleR != s.stale.r:
				return fmt.Errorf("%s %s: staleR is not its staleness instance's rule", a.id, s.name)
			case !s.stale.latch.Idle():
				return fmt.Errorf("%s %s: staleQuiet with latch %+v", a.id, s.name, s.stale.latch)
			case s.quality == telemetry.QualityStale:
				return fmt.Errorf("%s %s: staleQuiet with a reading of stale quality", a.id, s.name)
			case s.staleDeadline() < a.staleBy:
				return fmt.Errorf("%s %s: deadline %d before staleBy %d", a.id, s.name, s.staleDeadline(), a.staleBy)
			}
		}
	}
	return nil
}

// TestStaleDeadline: no signal is stale by time (checkStale) at a ts_gw up
// to its deadline, and one past it is, for exact bounds (a deadline of
// MaxInt64 is never reached, MinInt64 promises nothing).
func TestStaleDeadline(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 22))
	staleAt := func(s *signalState, gw int64) bool {
		iv := s.staleR.Interval
		if iv == 0 {
			iv = s.interval
		}
		return iv > 0 && s.arr > 0 && float64(gw-max(s.good, s.firstArr)) > s.staleR.K*float64(iv)
	}
	for range 100_000 {
		r := &Rule{K: []float64{1, 1.5, 3, 2.7, 1e15, math.Inf(1)}[rng.IntN(6)], Interval: []int64{0, 1000, 15_000, 333}[rng.IntN(4)]}
		base := int64(1_700_000_000_000) + rng.Int64N(1_000_000)
		s := &signalState{staleR: r, interval: []int64{0, -5, 1, 999, 15_000, 7}[rng.IntN(6)], arr: base * rng.Int64N(2),
			good: base - rng.Int64N(100_000), firstArr: base - rng.Int64N(100_000)}
		dl := s.staleDeadline()
		switch dl {
		case math.MinInt64:
			continue
		case math.MaxInt64:
			if staleAt(s, math.MaxInt64/2) {
				t.Fatalf("%+v %+v: never stale, but stale at %d", s, r, int64(math.MaxInt64/2))
			}
			continue
		}
		for _, gw := range []int64{dl - 1, dl} {
			if staleAt(s, gw) {
				t.Fatalf("%+v %+v: deadline %d, stale at %d", s, r, dl, gw)
			}
		}
		if !staleAt(s, dl+1) {
			t.Fatalf("%+v %+v: deadline %d, not stale at %d: a bound lower than need be", s, r, dl, dl+1)
		}
	}
}
