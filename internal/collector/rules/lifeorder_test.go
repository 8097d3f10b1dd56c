package rules

import (
	"encoding/json"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/statebin"
	"github.com/smelterio/smelter/internal/telemetry"
)

// lifeAsset is ac-1 as the messages of these tests carry it.
var lifeAsset = telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}}

func gwBirth(gw string, seq uint64, ts int64, sigs ...string) *telemetry.Birth {
	b := compressorBirth(ts, sigs...)
	b.Gateway, b.Seq = gw, seq
	return b
}

func gwDeath(gw string, seq uint64, ts int64) *telemetry.Death {
	return &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: gw, Seq: seq, TSGW: ts, Asset: lifeAsset, Reason: "no reply"}
}

func gwBatch(gw string, seq uint64, ts int64) *telemetry.Batch {
	return &telemetry.Batch{Gateway: gw, Seq: seq, TSGW: ts, Asset: lifeAsset.FromJSON(),
		Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, TS: ts}}}
}

// A birth or death whose seq cannot order it (another gateway than the
// recorded one, seq 0) or that lies more than the window behind the
// recorded seq is judged on ts_gw against the newest batch, birth or death
// the asset's state includes, also across a checkpoint in every record
// form. The reviewer's case: ac-1 moved from gateway A to gateway B, B
// sent its birth and later its death, and A's live_first backlog replays
// an hour-old birth of ac-1. Before, that birth was applied (another
// gateway: never behind), revived the dead asset and put A's signal list
// in force; an old birth beyond the window was compared with the newest
// batch only, so with no batch after the newest birth it was applied too.
func TestUnorderedBirthsAndDeathsJudgedOnTSGW(t *testing.T) {
	const window = 1000
	h := newHarness(t, true, "")
	h.now = sec(200) // every message arrives after its ts_gw (the ordering keys are bounded by the clock)
	e := h.e
	e.Birth(gwBirth("gw-a", 10, sec(0), "discharge_temp"), 0, nil)
	e.Mark("site1", "ac-1", "gw-a", 10)
	e.Process(gwBatch("gw-a", 11, sec(1)), 0, nil)
	// moved to gw-b: its birth and its death, no batch since
	e.Birth(gwBirth("gw-b", 3*window, sec(100), "discharge_temp", "load_state"), 0, nil)
	e.Mark("site1", "ac-1", "gw-b", 3*window)
	e.Death(gwDeath("gw-b", 3*window+1, sec(110)), nil)
	e.Mark("site1", "ac-1", "gw-b", 3*window+1)
	check := func(e *Engine, name string) {
		t.Helper()
		for _, c := range []struct {
			what   string
			b      *telemetry.Birth
			behind bool
		}{
			{"gateway A's old birth, newer than the newest batch", gwBirth("gw-a", 12, sec(2), "discharge_temp"), true},
			{"gateway A's birth older than B's death", gwBirth("gw-a", 12, sec(105), "discharge_temp"), true},
			{"gateway A's birth newer than B's death", gwBirth("gw-a", 12, sec(111), "discharge_temp"), false},
			{"a birth of seq 0 older than the death", gwBirth("gw-b", 0, sec(105), "discharge_temp"), true},
			{"a birth of seq 0 newer than the death", gwBirth("gw-b", 0, sec(111), "discharge_temp"), false},
			{"a birth without ts_gw", gwBirth("gw-a", 12, 0, "discharge_temp"), false},
			{"B's birth of a newer seq (ordered by seq)", gwBirth("gw-b", 3*window+2, sec(50), "discharge_temp"), false},
			{"B's birth two windows behind, older than its newest birth", gwBirth("gw-b", window, sec(50), "discharge_temp"), true},
		} {
			if got := e.BirthBehind(c.b, window); got != c.behind {
				t.Errorf("%s: %s: behind %v, want %v", name, c.what, got, c.behind)
			}
		}
		for _, c := range []struct {
			what   string
			d      *telemetry.Death
			behind bool
		}{
			{"gateway A's death older than B's birth", gwDeath("gw-a", 13, sec(50)), true},
			{"gateway A's death newer than B's death", gwDeath("gw-a", 13, sec(120)), false},
			{"a death of seq 0 older than B's birth", gwDeath("gw-b", 0, sec(99)), true},
		} {
			if got := e.DeathBehind(c.d, window); got != c.behind {
				t.Errorf("%s: %s: behind %v, want %v", name, c.what, got, c.behind)
			}
		}
	}
	check(e, "live")
	st, _ := e.Snapshot("site1", "ac-1")
	js, err := st.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON AssetState
	if err := json.Unmarshal(js, &fromJSON); err != nil {
		t.Fatal(err)
	}
	bin, _ := e.AppendBinary(nil, "site1", "ac-1")
	fromBin := ReadBinary(statebin.NewReader(bin))
	for name, rec := range map[string]*AssetState{"snapshot": &st, "json": &fromJSON, "binary": &fromBin} {
		if rec.LifeTSGW != sec(110) {
			t.Errorf("%s: life ts_gw %d, want the death's %d", name, rec.LifeTSGW, sec(110))
		}
		r := newHarness(t, true, "")
		r.now = h.now
		r.e.RestoreAsset(rec)
		check(r.e, name)
	}
}

// A birth or batch whose ts_gw is before the asset's death does not end
// it: an identical rebirth (Revive, the path of a birth in force again),
// an applied birth, or a batch with a value newer than the newest batch
// (another gateway's, or one more than the window behind). They say the
// asset answered before it died. One newer than the death ends it.
// Before, each of them revived the asset and cleared its "reported dead"
// alert, at a cleared_at before its raised_at.
func TestOlderThanTheDeathDoesNotRevive(t *testing.T) {
	h := newHarness(t, true, "")
	h.now = sec(20) // every message arrives after its ts_gw
	e := h.e
	e.Birth(gwBirth("gw", 0, sec(0), "discharge_temp"), 0, nil)
	e.Process(gwBatch("gw", 1, sec(1)), 0, nil)
	raised := only(t, e.Death(gwDeath("gw", 0, sec(10)), nil), alert.Raised, alert.Warn)
	dead := func(what string, out []alert.Alert) {
		t.Helper()
		if len(out) != 0 {
			t.Errorf("%s: alerts changed: %+v", what, out)
		}
		if v, _ := e.Asset("site1", "ac-1"); v.Dead == "" {
			t.Errorf("%s revived the asset", what)
		}
	}
	dead("an identical rebirth older than the death", e.Revive(gwBirth("gw", 0, sec(5), "discharge_temp"), 0, nil))
	dead("a birth older than the death", e.Birth(gwBirth("gw", 0, sec(6), "discharge_temp", "load_state"), 0, nil))
	dead("a batch older than the death", e.Process(gwBatch("gw-2", 1, sec(7)), 0, nil))
	cl := only(t, e.Revive(gwBirth("gw", 0, sec(12), "discharge_temp", "load_state"), 0, nil), alert.Cleared, alert.Warn)
	if cl.RaisedAt != raised.RaisedAt || cl.ClearedAt != sec(12) {
		t.Errorf("cleared %+v, want the death's occurrence cleared at %d", cl, sec(12))
	}
	if v, _ := e.Asset("site1", "ac-1"); v.Dead != "" {
		t.Errorf("a rebirth newer than the death did not revive the asset: %q", v.Dead)
	}
}

// After an uplink outage with the default backlog policy (oldest_first)
// the first batch the collector gets carries a ts_gw from the outage's
// start, before the silence alert the collector raised on its own clock
// during the outage. The batch clears the silence (the asset was heard),
// but not at a time before the raise: cleared_at >= raised_at (the
// reviewer's alert cleared before it was raised).
func TestClearedNotBeforeRaised(t *testing.T) {
	h := newHarness(t, true, "")
	for s := range 5 {
		h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s))
	}
	h.now = sec(60) // the outage: nothing arrives
	raised := only(t, h.e.Tick(nil, h.now, 0), alert.Raised, alert.Warn)
	var cl []alert.Alert
	for _, a := range h.feed("air_compressor", "ac-1", sec(5), "discharge_temp", temp(5)) {
		if a.Signal == "" {
			cl = append(cl, a)
		}
	}
	if len(cl) != 1 || cl[0].State != alert.Cleared {
		t.Fatalf("the backlog's first batch did not clear the silence: %+v", cl)
	}
	if cl[0].RaisedAt != raised.RaisedAt || cl[0].ClearedAt < cl[0].RaisedAt || cl[0].UpdatedAt < cl[0].RaisedAt {
		t.Errorf("raised at %d, cleared at %d, updated at %d", cl[0].RaisedAt, cl[0].ClearedAt, cl[0].UpdatedAt)
	}
}

// A batch dated ahead of the engine's clock (inside max_future: another
// gateway of the site, or the asset's own gateway before its fast clock is
// corrected) ranks the batches after it no later than the clock when it
// was evaluated (review5 F13), also across a checkpoint: the next batch
// dated now is evaluated, not late, and a death dated now is not behind.
// Before, every batch and death dated before the first one's ts_gw was
// late or behind until the clock reached it.
func TestAheadOfTheClockRanksNoLater(t *testing.T) {
	const window = 1000
	for _, c := range []struct{ name, ahead string }{
		{"another gateway", "gw-b"},
		{"the same gateway's clock corrected", "gw-a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, true, "")
			h.now = sec(10)
			e := h.e
			e.Process(gwBatch("gw-a", 1, sec(10)), 0, nil)
			e.Process(gwBatch(c.ahead, 2, sec(10+290)), 0, nil)
			st, _ := e.Snapshot("site1", "ac-1")
			r := newHarness(t, true, "")
			r.now = sec(11)
			r.e.RestoreAsset(&st)
			for name, e := range map[string]*Engine{"live": e, "restored": r.e} {
				h.now = sec(11)
				if e.DeathBehind(gwDeath("gw-a", 0, sec(11)), window) {
					t.Errorf("%s: a death dated now is behind the batch dated ahead", name)
				}
				late := e.Stats().Late
				e.Process(gwBatch("gw-a", 3, sec(11)), 0, nil)
				if e.Stats().Late != late {
					t.Errorf("%s: the batch dated now is late", name)
				}
				if e.Process(gwBatch("gw-a", 1, sec(9)), 0, nil); e.Stats().Late != late+1 {
					t.Errorf("%s: a batch older than the clock's bound was evaluated", name)
				}
			}
		})
	}
}
