package rules

import (
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// storedLag is how long after its ts_gw the stream stores a live batch in
// these tests.
const storedLag = 400

// backlog feeds ac-1's batches at the seconds given, each stored storedLag
// after its ts_gw, as a collector reads them from a backlog (Tick is never
// called: the stream is not drained), and returns the asset-silence events.
func backlog(h *harness, secs ...int) []alert.Alert {
	h.t.Helper()
	var out []alert.Alert
	for _, s := range secs {
		out = append(out, silenceOf(h.feedStored("air_compressor", "ac-1", sec(s), sec(s)+storedLag, "discharge_temp", temp(s), "load_state", 2))...)
	}
	return out
}

// silenceOf keeps the asset-silence events of got.
func silenceOf(got []alert.Alert) []alert.Alert {
	var out []alert.Alert
	for _, a := range got {
		if a.Rule == "stale" && a.Signal == "" {
			out = append(out, a)
		}
	}
	return out
}

func upTo(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// raisedAndCleared checks that got is one silence raised at raised and
// cleared at cleared.
func raisedAndCleared(t *testing.T, got []alert.Alert, raised, cleared int64) {
	t.Helper()
	if len(got) != 2 || got[0].State != alert.Raised || got[1].State != alert.Cleared {
		t.Fatalf("want the silence raised and cleared, got %+v", got)
	}
	if got[0].RaisedAt != raised || got[1].RaisedAt != raised || got[1].ClearedAt != cleared || got[0].ID != got[1].ID {
		t.Fatalf("want raised at %d and cleared at %d, got %+v", raised, cleared, got)
	}
}

// F1: a silence inside a backlog the collector replays (it was down, or
// behind, and catches up) is raised. ac-1 reports every second, sends
// nothing from 9 s to 30 s, then reports again; the stream stored every
// batch 400 ms after its ts_gw. Read as a backlog, the batches arrive
// together and Tick, judging wall time, never sees the 21 s: before, no
// silence was raised at all. Now the batch at 30 s raises it, dated when
// live judgment would have (the previous batch's ts_gw + 3 x 1 s), and
// clears it at its own ts_gw. The rest of the backlog raises nothing.
func TestSilenceInsideBacklog(t *testing.T) {
	h := newHarness(t, true, "")
	if got := backlog(h, upTo(0, 9)...); len(got) != 0 {
		t.Fatalf("silence events before the gap: %+v", got)
	}
	got := backlog(h, 30)
	raisedAndCleared(t, got, sec(9)+3000, sec(30))
	if m := got[0].Message; !strings.Contains(m, "sent nothing for 3 s (3 x its 1 s interval), found on replay: its batches 21 s apart by its gateway's clock and 21 s by the stream's") {
		t.Fatalf("message %q", m)
	}
	if v := got[0].Values; v["gap_ms"] != 21_000 || v["stored_gap_ms"] != 21_000 || v["age_ms"] != 3000 {
		t.Fatalf("values %v", v)
	}
	if got := backlog(h, upTo(31, 40)...); len(got) != 0 {
		t.Fatalf("silence events after the gap: %+v", got)
	}
	// within k x the interval on both clocks: nothing
	h2 := newHarness(t, true, "")
	if got := backlog(h2, append(upTo(0, 9), 12, 13)...); len(got) != 0 {
		t.Fatalf("a gap of 3 s, 3 x the interval: %+v", got)
	}
	// live judgment runs once a TickPeriod (1 s): a gap up to k x the
	// interval + 1 s may pass between two judgments unraised, so the data
	// alone raises none either (a 100 ms feed that hiccups 0.33 s)
	h3 := newHarness(t, true, "")
	if got := backlog(h3, append(upTo(0, 9), 13, 14)...); len(got) != 0 {
		t.Fatalf("a gap of 4 s, 3 x the interval + the tick period: %+v", got)
	}
	h4 := newHarness(t, true, "")
	backlog(h4, upTo(0, 9)...)
	raisedAndCleared(t, backlog(h4, 14), sec(9)+3000, sec(14))
}

// A gap that a birth ends is the silence too (the gateway restarted after
// the device, or itself, was silent): raised when Tick would have, cleared
// at the birth; the batches after the birth are measured from it. A gap
// that a death ends, or that lies after a death, is the death's silence:
// raised once, by the death, and cleared once, by the birth or answer that
// ends the death; the gap raises nothing of its own.
func TestSilenceInsideBacklogBeforeBirthOrDeath(t *testing.T) {
	t.Run("gap before a birth", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		got := silenceOf(h.e.Birth(compressorBirth(sec(30), "discharge_temp", "load_state"), sec(30)+storedLag, nil))
		raisedAndCleared(t, got, sec(9)+3000, sec(30))
		if got := backlog(h, upTo(31, 35)...); len(got) != 0 {
			t.Fatalf("silence events after the birth: %+v", got)
		}
	})
	t.Run("gap before a birth in force", func(t *testing.T) {
		h := newHarness(t, true, "")
		h.e.Birth(compressorBirth(sec(0), "discharge_temp", "load_state"), sec(0)+storedLag, nil)
		backlog(h, upTo(0, 9)...)
		got := silenceOf(h.e.Revive(compressorBirth(sec(30), "discharge_temp", "load_state"), sec(30)+storedLag, nil))
		raisedAndCleared(t, got, sec(9)+3000, sec(30))
	})
	death := func(ts int64) *telemetry.Death {
		return &telemetry.Death{Schema: telemetry.SchemaDeath, Gateway: "gw", TSGW: ts, Asset: lifeAsset, Reason: "no reply"}
	}
	t.Run("gap before a death, then a birth", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		got := silenceOf(h.e.Death(death(sec(30)), nil))
		if len(got) != 1 || got[0].State != alert.Raised || got[0].RaisedAt != sec(30) {
			t.Fatalf("the death's silence: %+v", got)
		}
		got = silenceOf(h.e.Birth(compressorBirth(sec(60), "discharge_temp", "load_state"), sec(60)+storedLag, nil))
		got = append(got, backlog(h, upTo(61, 65)...)...)
		if len(got) != 1 || got[0].State != alert.Cleared || got[0].ClearedAt != sec(60) {
			t.Fatalf("want the death's silence cleared by the birth and nothing else, got %+v", got)
		}
	})
	t.Run("gap after a death, ended by a batch", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		h.e.Death(death(sec(10)), nil)
		got := backlog(h, upTo(60, 65)...)
		if len(got) != 1 || got[0].State != alert.Cleared || got[0].RaisedAt != sec(10) || got[0].ClearedAt != sec(60) {
			t.Fatalf("want the death's silence cleared at the first answer and nothing else, got %+v", got)
		}
	})
}

// A gap on one clock only is no silence on replay. A gateway spooling
// through an uplink outage sends its batches late: their ts_gw follow each
// other, the stream stores them together after the outage. (Live, the
// collector's Tick raises such an outage as silence: it judges what it
// receives, docs/collector.md.) A gateway whose clock steps forward makes a
// gap of ts_gw only. A source without a stored time (0) judges nothing.
func TestSilenceInsideBacklogOneClockOnly(t *testing.T) {
	t.Run("stored only: a spooled uplink outage", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		var got []alert.Alert
		for s := 10; s <= 40; s++ { // stored together 60 s after the outage began
			got = append(got, silenceOf(h.feedStored("air_compressor", "ac-1", sec(s), sec(70)+int64(s), "discharge_temp", temp(s), "load_state", 2))...)
		}
		if len(got) != 0 {
			t.Fatalf("silence events for a spooled outage: %+v", got)
		}
	})
	t.Run("ts_gw only: the gateway clock stepped forward", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		var got []alert.Alert
		for s := 10; s <= 15; s++ {
			got = append(got, silenceOf(h.feedStored("air_compressor", "ac-1", sec(s+60), sec(s)+storedLag, "discharge_temp", temp(s), "load_state", 2))...)
		}
		if len(got) != 0 {
			t.Fatalf("silence events for a clock step: %+v", got)
		}
	})
	t.Run("ts_gw only: the gateway clock stepped back, then a silence", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		var got []alert.Alert
		for s := -100; s <= -95; s++ { // the same gateway, its seq ahead: its clock stepped back
			got = append(got, silenceOf(h.feedStored("air_compressor", "ac-1", sec(s), sec(s+110)+storedLag, "discharge_temp", temp(s+200), "load_state", 2))...)
		}
		if len(got) != 0 {
			t.Fatalf("silence events for a clock step back: %+v", got)
		}
		// a real silence after the step is judged on the new times
		got = silenceOf(h.feedStored("air_compressor", "ac-1", sec(-70), sec(40)+storedLag, "discharge_temp", temp(130), "load_state", 2))
		raisedAndCleared(t, got, sec(-95)+3000, sec(-70))
	})
	t.Run("no stored time", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		if got := silenceOf(h.feed("air_compressor", "ac-1", sec(30), "discharge_temp", temp(30), "load_state", 2)); len(got) != 0 {
			t.Fatalf("silence events without a stored time: %+v", got)
		}
	})
}

// A silence already raised is not raised again by the gap: Tick raised it
// live (the collector read the stream drained), or it was raised before a
// restart and restored with its record. A restart also does not raise a
// gap's silence twice: the batch that ended it, evaluated again after a
// restore of the record that includes it, finds no gap; and a silence that
// spans the restart is found from the time the record was written.
func TestSilenceInsideBacklogAlreadyRaised(t *testing.T) {
	t.Run("raised live by Tick", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		raised := only(t, h.e.Tick(nil, sec(9)+3001, 0), alert.Raised, alert.Warn)
		got := backlog(h, 30)
		if len(got) != 1 || got[0].State != alert.Cleared || got[0].RaisedAt != raised.RaisedAt {
			t.Fatalf("want the live silence cleared and nothing raised, got %+v", got)
		}
	})
	t.Run("raised before a restart", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		raised := only(t, h.e.Tick(nil, sec(9)+3001, 0), alert.Raised, alert.Warn)
		st, _ := h.e.Snapshot("site1", "ac-1")
		h2 := newHarness(t, true, "")
		h2.now = sec(20)
		h2.e.RestoreAssetAt(&st, sec(9)+3100)
		if !h2.e.Restore(raised) {
			t.Fatal("silence not restored")
		}
		got := backlog(h2, 30)
		if len(got) != 1 || got[0].State != alert.Cleared || got[0].RaisedAt != raised.RaisedAt {
			t.Fatalf("want the restored silence cleared and nothing raised, got %+v", got)
		}
	})
	t.Run("the gap's batch evaluated again after a restore", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		raisedAndCleared(t, backlog(h, 30), sec(9)+3000, sec(30))
		st, _ := h.e.Snapshot("site1", "ac-1")
		h2 := newHarness(t, true, "")
		h2.now = sec(31)
		h2.e.RestoreAssetAt(&st, sec(30)+storedLag+100)
		if got := backlog(h2, 30, 31, 32); len(got) != 0 {
			t.Fatalf("silence events after the restore: %+v", got)
		}
	})
	t.Run("a silence across the restart", func(t *testing.T) {
		h := newHarness(t, true, "")
		backlog(h, upTo(0, 9)...)
		st, _ := h.e.Snapshot("site1", "ac-1")
		h2 := newHarness(t, true, "")
		h2.now = sec(100)
		h2.e.RestoreAssetAt(&st, sec(10)) // written 1 s after the last batch
		raisedAndCleared(t, backlog(h2, 30), sec(9)+3000, sec(30))
		// written late (a checkpoint long after the asset's last batch): the
		// stream's gap from the write is too short to tell
		h3 := newHarness(t, true, "")
		h3.now = sec(100)
		h3.e.RestoreAssetAt(&st, sec(28))
		if got := backlog(h3, 30); len(got) != 0 {
			t.Fatalf("silence events with a gap of stored time not shown: %+v", got)
		}
	})
}

// The per-signal stale rule is judged at each batch of the asset on ts_gw
// alone, so it is the same live and on replay: a signal missing from the
// batches (the others arriving) is raised at the first batch more than k x
// its interval after its last good value, whether the batches arrive live
// or together from a backlog. It has no judgment between batches, so a
// silence of the whole asset is not raised per signal, live or on replay:
// that is the asset-level silence's one alert (here found in the backlog),
// not one per signal beside it.
func TestSignalStaleOnReplay(t *testing.T) {
	for _, replay := range []bool{false, true} {
		h := newHarness(t, true, "")
		stored := func(s int) int64 {
			if replay {
				return sec(100) + int64(s) // the backlog stored after the fact, all at once
			}
			return sec(s) + storedLag
		}
		var got []alert.Alert
		for s := range 10 {
			got = append(got, h.feedStored("air_compressor", "ac-1", sec(s), stored(s), "discharge_temp", temp(s), "load_state", 2, "dew_point", 3.0)...)
		}
		for s := 10; s <= 14; s++ { // dew_point missing
			got = append(got, h.feedStored("air_compressor", "ac-1", sec(s), stored(s), "discharge_temp", temp(s), "load_state", 2)...)
		}
		var stale []alert.Alert
		for _, a := range got {
			if a.Rule == "stale" {
				stale = append(stale, a)
			}
		}
		if len(stale) != 1 || stale[0].Signal != "dew_point" || stale[0].State != alert.Raised || stale[0].RaisedAt != sec(13) {
			t.Fatalf("replay %v: want dew_point stale raised at the batch of 13 s, got %+v", replay, stale)
		}
	}
	// the whole asset silent from 9 s to 30 s, read from a backlog: the
	// asset's silence, no signal's
	h := newHarness(t, true, "")
	backlog(h, upTo(0, 9)...)
	for _, a := range h.feedStored("air_compressor", "ac-1", sec(30), sec(30)+storedLag, "discharge_temp", temp(30), "load_state", 2) {
		if a.Rule == "stale" && a.Signal != "" {
			t.Fatalf("a signal's stale for the asset's silence: %+v", a)
		}
	}
}
