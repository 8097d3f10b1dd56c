package rules

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// AppendJSON writes exactly what json.Marshal writes for random asset
// states (strings that need escaping, numbers in every format, empty and
// nil slices, maps, evaluator memory of every length), and refuses what
// json.Marshal refuses (NaN, infinities).
func TestAssetStateAppendJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	strs := []string{"", "a", "motor-1", "Cel", "m3/min", `q"uote`, `back\\slash`, "<tag>&", "ä", "\x00\x1f", "\xff\xfe", "\u2028\u2029", "日本"}
	nums := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 123.456, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e300, -2.5e-300,
		math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-10, 400.00000000001}
	str := func() string { return strs[rng.IntN(len(strs))] }
	num := func() float64 { return nums[rng.IntN(len(nums))] * (1 + float64(rng.IntN(3))) }
	i64 := func() int64 {
		if rng.IntN(3) == 0 {
			return 0
		}
		return rng.Int64N(1<<50) - 1<<49
	}
	rulesOf := func() []RuleState {
		var out []RuleState
		for range rng.IntN(4) {
			r := RuleState{Rule: str(), Latch: alert.LatchState{Level: alert.Severity(rng.IntN(6)), Pending: alert.Severity(rng.IntN(5)),
				Since: i64(), Dir: int8(rng.IntN(3) - 1), Raised: i64()}}
			if n := rng.IntN(40); n > 0 {
				r.Eval = make(Floats, n)
				for i := range r.Eval {
					r.Eval[i] = num()
				}
			} else if rng.IntN(2) == 0 {
				r.Eval = Floats{}
			}
			out = append(out, r)
		}
		return out
	}
	for i := range 3000 {
		s := AssetState{Site: str(), ID: str(), Class: str(), LastTSGW: i64(), LastTS: i64(), Interval: i64(), Batches: uint64(rng.IntN(3)),
			Dead: str(), Running: rng.IntN(2) == 0, Gateway: str(), Seq: uint64(rng.Int64N(3)) << 40, Part: rng.IntN(3), LifeTSGW: i64(), Rules: rulesOf()}
		if rng.IntN(2) == 0 {
			s.Path = []string{str(), str()}
		} else if rng.IntN(2) == 0 {
			s.Path = []string{}
		}
		if rng.IntN(2) == 0 {
			s.Nameplate = map[string]float64{}
			for range rng.IntN(5) {
				s.Nameplate[str()+fmt.Sprint(rng.IntN(9))] = num()
			}
		}
		for range rng.IntN(3) {
			si := telemetry.SignalInfo{Signal: str(), Unit: str(), IntervalMS: i64(), Src: str()}
			if rng.IntN(2) == 0 {
				v := num()
				si.Min = &v
			}
			if rng.IntN(2) == 0 {
				v := num()
				si.Max = &v
			}
			if rng.IntN(3) == 0 {
				si.Enum = []string{str(), str()}
			}
			if rng.IntN(3) == 0 {
				v := num()
				si.Write = &telemetry.WriteLimits{Max: &v, Allowed: []string{str()}, MaxStep: num(), MinIntervalMS: i64()}
			}
			s.Birth = append(s.Birth, si)
		}
		for range rng.IntN(4) {
			s.Signals = append(s.Signals, SignalState{Name: str(), Unit: str(), Value: num(), Text: str(), Quality: telemetry.Quality(rng.IntN(4)),
				Valid: rng.IntN(2) == 0, Implaus: rng.IntN(2) == 0, TS: i64(), Seen: i64(), First: i64(), Arr: i64(), Good: i64(),
				FirstArr: i64(), Interval: i64(), Rules: rulesOf()})
		}
		bad := rng.IntN(20) == 0
		if bad && len(s.Signals) > 0 {
			s.Signals[0].Value = [...]float64{math.NaN(), math.Inf(1), math.Inf(-1)}[rng.IntN(3)]
		}
		want, werr := json.Marshal(&s)
		got, gerr := s.AppendJSON(nil)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("case %d: json.Marshal error %v, AppendJSON error %v", i, werr, gerr)
		}
		if werr == nil && string(got) != string(want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}
