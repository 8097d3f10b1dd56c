package rules

import (
	"testing"

	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Births, deaths and batches of one gateway share its sequence: Behind and
// DeathBehind hold a birth or death to the asset's recorded (gateway, seq),
// which births and deaths move as batches do (Mark), also across a
// checkpoint; seq 0 has no place in the sequence, another gateway's seq
// cannot be compared (a death is then compared on ts_gw), and a seq more
// than the window behind is a gateway that started over.
func TestBehindOrdersBirthsAndDeaths(t *testing.T) {
	const window = 1000
	h := newHarness(t, true, "")
	h.now = sec(30) // every message arrives after its ts_gw (the ordering keys are bounded by the clock)
	e := h.e
	if e.Behind("site1", "ac-1", "gw", 1, 0, window) {
		t.Fatal("behind on an untracked asset")
	}
	e.Birth(compressorBirth(sec(0), "discharge_temp"), 0, nil)
	e.Mark("site1", "ac-1", "gw", 5)
	batch := func(seq uint64, ts int64) *telemetry.Batch {
		return &telemetry.Batch{Gateway: "gw", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, TS: ts}}}
	}
	if !e.Duplicate(batch(5, sec(1)), window) || e.Duplicate(batch(6, sec(1)), window) {
		t.Fatal("a birth's seq does not order the batches")
	}
	e.Process(batch(8, sec(8)), 0, nil)
	death := func(gw string, seq uint64, ts int64) *telemetry.Death {
		return &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: gw, Seq: seq, TSGW: ts,
			Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}}}
	}
	check := func(e *Engine, name string) {
		t.Helper()
		for _, c := range []struct {
			what   string
			gw     string
			seq    uint64
			behind bool
		}{
			{"the newest batch's seq", "gw", 8, true},
			{"an older birth", "gw", 7, true},
			{"a newer birth", "gw", 9, false},
			{"seq 0", "gw", 0, false},
			{"another gateway", "gw-2", 3, false},
		} {
			if got := e.Behind("site1", "ac-1", c.gw, c.seq, 0, window); got != c.behind {
				t.Errorf("%s: %s: behind %v, want %v", name, c.what, got, c.behind)
			}
		}
		for _, c := range []struct {
			what   string
			d      *telemetry.Death
			behind bool
		}{
			{"a death of an older seq", death("gw", 7, sec(20)), true},
			{"a death of a newer seq, older ts_gw", death("gw", 9, sec(2)), false},
			{"a death of seq 0 older than the newest batch", death("gw", 0, sec(7)), true},
			{"a death of seq 0 after the newest batch", death("gw", 0, sec(9)), false},
			{"another gateway's death older than the newest batch", death("gw-2", 30, sec(7)), true},
			{"another gateway's death after it", death("gw-2", 3, sec(9)), false},
		} {
			if got := e.DeathBehind(c.d, window); got != c.behind {
				t.Errorf("%s: %s: behind %v, want %v", name, c.what, got, c.behind)
			}
		}
	}
	check(e, "live")
	// the position survives the checkpoint in both record forms
	st, _ := e.Snapshot("site1", "ac-1")
	bin, _ := e.AppendBinary(nil, "site1", "ac-1")
	fromBin := ReadBinary(statebin.NewReader(bin))
	for name, rec := range map[string]*AssetState{"snapshot": &st, "binary": &fromBin} {
		r := newHarness(t, true, "")
		r.now = h.now
		r.e.RestoreAsset(rec)
		check(r.e, name)
	}
	// a death applied and marked orders what follows it
	e.Death(death("gw", 9, sec(9)), nil)
	e.Mark("site1", "ac-1", "gw", 9)
	if !e.Behind("site1", "ac-1", "gw", 9, 0, window) || !e.Duplicate(batch(9, sec(10)), window) {
		t.Fatal("a death's seq does not order what follows")
	}
	// far ahead: a seq more than the window behind is applied (a gateway
	// that started over, as for batches)
	e.Mark("site1", "ac-1", "gw", 9+2*window)
	if e.Behind("site1", "ac-1", "gw", 9, 0, window) || !e.Behind("site1", "ac-1", "gw", 10+window, 0, window) {
		t.Fatal("window")
	}
	// seq 0 and untracked assets mark nothing
	e.Mark("site1", "ac-1", "gw", 0)
	e.Mark("site1", "nobody", "gw", 4)
	if !e.Behind("site1", "ac-1", "gw", 10+window, 0, window) || e.Has("site1", "nobody") {
		t.Fatal("Mark of seq 0 or an untracked asset changed something")
	}
}
