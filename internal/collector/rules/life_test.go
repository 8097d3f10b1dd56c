package rules

import (
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
	a := only(t, h.e.Tick(nil, h.now), alert.Raised, alert.Warn)
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
