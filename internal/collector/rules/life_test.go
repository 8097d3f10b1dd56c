package rules

import (
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Silence follows the liveness rule of deaths (review2 F0): a batch whose
// readings are all stale (a gateway publishing points it no longer hears)
// neither restarts the silence clock, nor clears a raised silence alert,
// nor moves the asset's data time; a batch with a reading that is not stale
// (bad included: the device answered with an error, or was heard within k
// x the point's interval) does all three. Before, any batch did.
func TestStaleBatchesAreSilence(t *testing.T) {
	h := newHarness(t, true, "")
	asset := func(h *harness) AssetView {
		v, _ := h.e.Asset("site1", "ac-1")
		return v
	}
	for s := range 5 {
		h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", 80.0, "load_state", 2)
	}
	lastTS := asset(h).LastTS
	// stale batches every second: still silent after 3 intervals
	for s := 5; s <= 8; s++ {
		h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", telemetry.QualityStale, "load_state", telemetry.QualityStale)
	}
	if got := asset(h).LastTS; got != lastTS {
		t.Errorf("stale batches moved the asset's data time: %d, want %d", got, lastTS)
	}
	a := only(t, h.e.Tick(nil, h.now, 0), alert.Raised, alert.Warn)
	if a.Signal != "" || a.Rule != "stale" {
		t.Fatalf("%+v", a)
	}
	var asl []alert.Alert
	for _, x := range h.feed("air_compressor", "ac-1", sec(9), "discharge_temp", telemetry.QualityStale) {
		if x.Signal == "" {
			asl = append(asl, x)
		}
	}
	if len(asl) != 0 {
		t.Fatalf("a stale batch changed the asset's silence: %+v", asl)
	}
	for _, x := range h.feed("air_compressor", "ac-1", sec(10), "discharge_temp", telemetry.QualityBad) {
		if x.Signal == "" {
			asl = append(asl, x)
		}
	}
	if len(asl) != 1 || asl[0].State != alert.Cleared {
		t.Fatalf("a bad reading (heard) did not clear the silence: %+v", asl)
	}
	if asset(h).LastTS <= lastTS {
		t.Error("a bad reading did not move the asset's data time")
	}
}

// Silence is judged on the batch interval, but never on less than the
// shortest interval the asset's birth declares (review 4, F9): a Modbus
// device on a connection shared with silent units reports every second
// most of the time, and its gateway announces the longest gap between two
// of its reports (here 5 s): 3 x the observed 1 s is no silence, 3 x 5 s
// is. Before, "sent nothing for 3 s (3 x its 1 s interval)" was raised on a
// device that answered every read. A restored asset keeps it.
func TestSilenceFollowsBirthInterval(t *testing.T) {
	birth := func(ts int64) *telemetry.Birth {
		b := compressorBirth(ts, "discharge_temp", "load_state")
		b.Signals[0].IntervalMS, b.Signals[1].IntervalMS = 5000, 60_000
		return b
	}
	h := newHarness(t, true, "")
	h.e.Birth(birth(sec(0)), 0, nil)
	for s := range 5 {
		h.feed("air_compressor", "ac-1", sec(s), "discharge_temp", temp(s), "load_state", 2)
	}
	for _, quiet := range []int64{3001, 15_000} { // 3 x the observed 1 s; 3 x the birth's 5 s
		h.now = sec(4) + quiet
		none(t, h.e.Tick(nil, h.now, 0), "within 3 x the birth's 5 s")
	}
	h.now = sec(4) + 15_001
	if a := only(t, h.e.Tick(nil, h.now, 0), alert.Raised, alert.Warn); a.Signal != "" || a.Rule != "stale" ||
		!strings.Contains(a.Message, "(3 x its 5 s interval)") {
		t.Fatalf("%+v", a)
	}

	// the same after a restore from a checkpoint
	st, ok := h.e.Snapshot("site1", "ac-1")
	if !ok {
		t.Fatal("no state for ac-1")
	}
	h2 := newHarness(t, true, "")
	h2.now = h.now
	h2.e.RestoreAssetAt(&st, h.now)
	h2.feed("air_compressor", "ac-1", sec(20), "discharge_temp", temp(20), "load_state", 2)
	h2.now = sec(20) + 14_000
	none(t, h2.e.Tick(nil, h2.now, 0), "restored: within 3 x the birth's 5 s")
}
