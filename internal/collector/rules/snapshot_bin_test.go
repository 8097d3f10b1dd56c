package rules

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// randomAssetState is an asset state with every field set or left empty
// at random (strings of every kind, numbers of every magnitude, evaluator
// memory of every length, births with and without write limits).
func randomAssetState(rng *rand.Rand) AssetState {
	strs := []string{"", "a", "motor-1", "Cel", `q"uote`, "<tag>&", "ä", "\x00\x1f", "\xff\xfe", "日本"}
	nums := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 123.456, 1e-7, 1e21, math.MaxFloat64, math.SmallestNonzeroFloat64}
	str := func() string { return strs[rng.IntN(len(strs))] }
	num := func() float64 { return nums[rng.IntN(len(nums))] * (1 + float64(rng.IntN(3))) }
	i64 := func() int64 {
		if rng.IntN(3) == 0 {
			return 0
		}
		return rng.Int64() - 1<<62
	}
	opt := func() *float64 {
		if rng.IntN(2) == 0 {
			return nil
		}
		v := num()
		return &v
	}
	rulesOf := func() []RuleState {
		var out []RuleState
		for range rng.IntN(4) {
			r := RuleState{Rule: str(), Latch: alert.LatchState{Level: alert.Severity(rng.IntN(5)), Pending: alert.Severity(rng.IntN(5)),
				Since: i64(), Dir: int8(rng.IntN(3) - 1), Raised: i64()}}
			if n := rng.IntN(40); n > 0 {
				r.Eval = make(Floats, n)
				for i := range r.Eval {
					r.Eval[i] = num()
				}
			}
			out = append(out, r)
		}
		return out
	}
	s := AssetState{Site: str(), ID: str(), Class: str(), LastTSGW: i64(), LastTS: i64(), Interval: i64(), Batches: rng.Uint64(),
		Dead: str(), Running: rng.IntN(2) == 0, Gateway: str(), Seq: rng.Uint64(), Part: rng.IntN(3), LifeTSGW: i64(), Rules: rulesOf()}
	if rng.IntN(2) == 0 {
		s.Path = []string{str(), str()}
	}
	if n := rng.IntN(20); n > 0 {
		s.Nameplate = map[string]float64{}
		for range n {
			s.Nameplate[str()+fmt.Sprint(rng.IntN(30))] = num()
		}
	}
	for range rng.IntN(3) {
		si := telemetry.SignalInfo{Signal: str(), Unit: str(), Min: opt(), Max: opt(), IntervalMS: i64(), Src: str()}
		if rng.IntN(3) == 0 {
			si.Enum = []string{str(), str()}
		}
		if rng.IntN(3) == 0 {
			si.Write = &telemetry.WriteLimits{Min: opt(), Max: opt(), MaxStep: num(), MinIntervalMS: i64()}
			if rng.IntN(2) == 0 {
				si.Write.Allowed = []string{str()}
			}
		}
		s.Birth = append(s.Birth, si)
	}
	for range rng.IntN(4) {
		s.Signals = append(s.Signals, SignalState{Name: str(), Unit: str(), Value: num(), Text: str(), Quality: telemetry.Quality(rng.IntN(4)),
			Valid: rng.IntN(2) == 0, Implaus: rng.IntN(2) == 0, TS: i64(), Seen: i64(), First: i64(), Arr: i64(), Good: i64(),
			FirstArr: i64(), Interval: i64(), Rules: rulesOf()})
	}
	return s
}

// TestAssetStateBinaryRoundTrip: ReadBinary gives back exactly the state
// AppendBinary wrote, write limits and every number included, and nothing
// is left over.
func TestAssetStateBinaryRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for i := range 3000 {
		s := randomAssetState(rng)
		b := s.AppendBinary([]byte{0xee}) // appends
		r := statebin.NewReader(b[1:])
		got := ReadBinary(r)
		if err := r.Done(); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("case %d:\n got %+v\nwant %+v", i, got, s)
		}
		// every truncation is an error, never a panic
		cut := rng.IntN(len(b) - 1)
		r = statebin.NewReader(b[1 : 1+cut])
		ReadBinary(r)
		if r.Done() == nil {
			t.Fatalf("case %d: %d of %d bytes read without an error", i, cut, len(b)-1)
		}
	}
	// NaN survives (JSON refused it: a checkpoint error)
	s := AssetState{Site: "s", ID: "a", Signals: []SignalState{{Name: "x", Value: math.NaN()}}}
	got := ReadBinary(statebin.NewReader(s.AppendBinary(nil)))
	if !math.IsNaN(got.Signals[0].Value) {
		t.Fatalf("NaN read back as %v", got.Signals[0].Value)
	}
}

// TestSnapshotIntoMatchesSnapshot: SnapshotInto with one reused state over
// assets of different shapes gives what Snapshot gives for each.
func TestSnapshotIntoMatchesSnapshot(t *testing.T) {
	h := newHarness(t, true, "")
	for i := range 30 { // assets of different classes and signal sets, some with active latches
		id := "a" + fmt.Sprint(i%5)
		class := [...]string{"air_compressor", "motor"}[i%5%2]
		b := &telemetry.Batch{Gateway: "gw", Seq: uint64(i + 1), TSGW: h.now + int64(i)*1000, Asset: telemetry.Asset{ID: id, Class: class, Path: []string{"acme", "site1", "_", "_", "_"}}}
		if class == "air_compressor" {
			b.Readings = []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64(i%5)*20, TS: b.TSGW}, {Signal: "load_state", Value: 2, TS: b.TSGW}}
		} else {
			b.Readings = []telemetry.Reading{{Signal: "winding_temp", Value: 90, TS: b.TSGW}}
			if i%3 == 0 {
				b.Readings = append(b.Readings, telemetry.Reading{Signal: "current_a", Value: 100, TS: b.TSGW}, telemetry.Reading{Signal: "current_b", Value: 120, TS: b.TSGW})
			}
		}
		h.now = b.TSGW
		h.e.Process(b, 0, nil)
	}
	e := h.e
	var st AssetState
	for round := range 3 {
		for _, v := range e.Assets() {
			want, _ := e.Snapshot(v.Site, v.ID)
			if !e.SnapshotInto(&st, v.Site, v.ID) {
				t.Fatalf("%s not tracked", v.ID)
			}
			got := st
			got.slab, want.slab = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, %s:\n got %+v\nwant %+v", round, v.ID, got, want)
			}
		}
	}
}

// FuzzReadBinary: no input makes ReadBinary panic.
func FuzzReadBinary(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		s := randomAssetState(rng)
		f.Add(s.AppendBinary(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := statebin.NewReader(b)
		s := ReadBinary(r)
		if r.Done() != nil {
			return
		}
		// what was read writes back bytes that read back the same (the
		// input itself may hold a repeated nameplate key or a varint
		// longer than needed)
		again := s.AppendBinary(nil)
		r = statebin.NewReader(again)
		s2 := ReadBinary(r)
		if err := r.Done(); err != nil {
			t.Fatalf("written back, then: %v", err)
		}
		if again2 := s2.AppendBinary(nil); !bytes.Equal(again, again2) {
			t.Fatalf("not stable:\n% x\n% x", again, again2)
		}
	})
}
