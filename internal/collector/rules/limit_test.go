package rules

import (
	"fmt"
	"slices"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// limitBatch is a batch of generic asset a-1 at ts with one reading per name.
func limitBatch(ts int64, names ...string) *telemetry.Batch {
	b := &telemetry.Batch{Gateway: "gw", Seq: uint64(ts), TSGW: ts,
		Asset: telemetry.Asset{ID: "a-1", Class: "generic", Path: []string{"acme", "site1", "_", "_", "_"}}}
	for _, n := range names {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: n, Value: 1, TS: ts})
	}
	return b
}

func signalsOf(b *telemetry.Batch) []string {
	var out []string
	for _, r := range b.Readings {
		out = append(out, r.Signal)
	}
	return out
}

// LimitSignals takes new signals while the asset holds fewer than max
// (a name repeated in one batch counts once), always passes the signals it
// holds, refuses the rest in place keeping the order, and reports a warning
// as due on the first refusal and then once a minute.
func TestLimitSignals(t *testing.T) {
	h := newHarness(t, true, "")
	e := h.e
	steps := []struct {
		names   []string
		at      int64 // engine clock, ms after t0
		kept    []string
		refused int
		first   string
		held    int
		warn    bool
	}{
		// fits without a look at the names
		{[]string{"a", "b"}, 0, []string{"a", "b"}, 0, "", 2, false},
		// c twice and d fit (4 held); e and f do not
		{[]string{"c", "a", "c", "d", "e", "f", "b"}, 1000, []string{"c", "a", "c", "d", "b"}, 2, "e", 4, true},
		// held signals pass, a new one is refused; no second warning within the minute
		{[]string{"x", "a", "b", "c", "d"}, 2000, []string{"a", "b", "c", "d"}, 1, "x", 4, false},
		// a minute after the first warning the next one is due
		{[]string{"d", "y"}, 61_000, []string{"d"}, 1, "y", 4, true},
		// nothing refused: nothing due
		{[]string{"a", "b", "c", "d"}, 62_000, []string{"a", "b", "c", "d"}, 0, "", 4, false},
	}
	var total uint64
	for i, s := range steps {
		h.now = t0 + s.at
		b := limitBatch(t0+s.at, s.names...)
		r := e.LimitSignals(b, 4)
		total += uint64(s.refused)
		if got := signalsOf(b); !slices.Equal(got, s.kept) || r.Refused != s.refused || r.First != s.first || s.refused > 0 && r.Held != s.held || r.Warn != s.warn || r.Total != total {
			t.Fatalf("step %d: kept %v, %+v; want %v, refused %d first %q held %d warn %v total %d", i, got, r, s.kept, s.refused, s.first, s.held, s.warn, total)
		}
		e.Process(b, 0, nil)
	}
	v, _ := e.Asset("site1", "a-1")
	var names []string
	for _, s := range v.Signals {
		names = append(names, s.Signal)
	}
	if !slices.Equal(names, []string{"a", "b", "c", "d"}) || v.SignalsRefused != total {
		t.Fatalf("view: %v, %d refused", names, v.SignalsRefused)
	}
	// no bound: nothing is looked at
	b := limitBatch(t0+70_000, "p", "q", "r", "s", "t")
	if r := e.LimitSignals(b, 0); r.Refused != 0 || len(b.Readings) != 5 {
		t.Fatalf("max 0: %+v, %d readings", r, len(b.Readings))
	}
}

// A batch of many new names (more than the short list LimitSignals scans)
// takes exactly the room left, the first names in the batch.
func TestLimitSignalsManyNewNames(t *testing.T) {
	e := newHarness(t, true, "").e
	var names []string
	for i := range 1000 {
		names = append(names, fmt.Sprintf("n%d", i%300)) // each name 3 or 4 times
	}
	b := limitBatch(t0, names...)
	r := e.LimitSignals(b, 100)
	if r.Held != 100 || r.Refused != 1000-len(b.Readings) || r.First != "n100" {
		t.Fatalf("%+v, %d readings kept", r, len(b.Readings))
	}
	for _, rd := range b.Readings {
		var k int
		if _, err := fmt.Sscanf(rd.Signal, "n%d", &k); err != nil || k >= 100 {
			t.Fatalf("kept %s", rd.Signal)
		}
	}
	e.Process(b, 0, nil)
	if v, _ := e.Asset("site1", "a-1"); len(v.Signals) != 100 {
		t.Fatalf("%d signals held", len(v.Signals))
	}
}

// A birth's refused signals are counted on the asset with the data's.
func TestNoteRefused(t *testing.T) {
	e := newHarness(t, true, "").e
	if r := e.NoteRefused("site1", "a-1", 3, "z"); r != (Refusal{}) {
		t.Fatalf("untracked asset: %+v", r)
	}
	bi := &telemetry.Birth{Gateway: "gw", Asset: telemetry.AssetJSON{ID: "a-1", Class: "generic", Path: []string{"acme", "site1", "_", "_", "_"}},
		Signals: []telemetry.SignalInfo{{Signal: "a"}, {Signal: "b"}}}
	e.Birth(bi, 0, nil)
	if r := e.NoteRefused("site1", "a-1", 3, "z"); r.Refused != 3 || r.First != "z" || r.Held != 2 || !r.Warn || r.Total != 3 {
		t.Fatalf("%+v", r)
	}
}

// BenchmarkLimitSignals is LimitSignals' cost per batch of an asset that
// already holds its signals: a 12-signal motor far below the bound (the
// common case: one length check) and an asset at the bound of 256 sending
// all of them (every reading looked up), after Process cached their
// positions.
func BenchmarkLimitSignals(b *testing.B) {
	for _, n := range []int{12, 256} {
		b.Run(fmt.Sprintf("held=%d/max=256", n), func(b *testing.B) {
			e := newHarness(b, true, "").e
			var names []string
			for i := range n {
				names = append(names, fmt.Sprintf("sig_%d", i))
			}
			bt := limitBatch(t0, names...)
			e.Process(bt, 0, nil)
			b.ReportAllocs()
			for b.Loop() {
				if r := e.LimitSignals(bt, 256); r.Refused != 0 {
					b.Fatal(r)
				}
			}
		})
	}
}

// A batch that repeats its asset's few signals many times (a payload of
// 10,000 readings of 3 names) leaves the per-position cache at most as
// long as the asset's signal list: the cache was as long as the largest
// batch, 8 bytes a reading kept per asset.
func TestProcessCacheBoundedBySignals(t *testing.T) {
	e := newHarness(t, true, "").e
	var names []string
	for i := range 10_000 {
		names = append(names, []string{"a", "b", "c"}[i%3])
	}
	e.Process(limitBatch(t0, names...), 0, nil)
	e.Process(limitBatch(t0+1000, "a", "b", "c"), 0, nil)
	a := e.assets[[2]string{"site1", "a-1"}]
	if len(a.list) != 3 || len(a.cache) > len(a.list) {
		t.Fatalf("%d signals, cache of %d positions", len(a.list), len(a.cache))
	}
	if v, _ := e.Asset("site1", "a-1"); len(v.Signals) != 3 || !v.Signals[2].Valid {
		t.Fatalf("view %+v", v.Signals)
	}
}

// Invented names that fill an asset's bound do not lock out the signals
// of its class in the catalog: they are taken beyond the bound (and
// counted as held), while a new invented name is still refused.
func TestLimitSignalsAdmitsCatalogSignals(t *testing.T) {
	h := newHarness(t, true, "")
	b := limitBatch(t0, "x1", "x2", "x3", "x4")
	b.Asset.Class = "air_compressor"
	// the rules of the default packs name 3 compressor signals: 3 + 4 = 7
	if r := h.e.LimitSignals(b, 7); r.Refused != 0 {
		t.Fatalf("first batch: %+v", r)
	}
	h.e.Process(b, 0, nil)
	b = limitBatch(t0+1000, "x5", "dew_point", "x1", "free_air_delivery", "dew_point")
	b.Asset.Class = "air_compressor"
	r := h.e.LimitSignals(b, 7)
	if got, want := signalsOf(b), []string{"dew_point", "x1", "free_air_delivery", "dew_point"}; !slices.Equal(got, want) || r.Refused != 1 || r.First != "x5" {
		t.Fatalf("kept %v, refusal %+v; want %v and x5 refused", got, r, want)
	}
	h.e.Process(b, 0, nil)
	v, _ := h.e.Asset("site1", "a-1")
	var names []string
	for _, s := range v.Signals {
		names = append(names, s.Signal)
	}
	for _, n := range []string{"dew_point", "free_air_delivery"} {
		if !slices.Contains(names, n) {
			t.Errorf("%s not held: %v", n, names)
		}
	}
}
