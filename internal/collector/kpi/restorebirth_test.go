package kpi

import (
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A tracker restored from a checkpoint gates the KPI inputs by the ranges
// of the asset's birth again (RestoreBirth, from the birth the rules'
// checkpoint holds), as before the restart: the checkpoint of the KPIs does
// not hold them, and a birth redelivered after a restart is no longer
// applied again (the collector skips the birth in force).
func TestRestoreBirthRanges(t *testing.T) {
	hi := 50.0
	birth := &telemetry.Birth{Asset: telemetry.AssetJSON{ID: "ac-3", Class: "air_compressor", Path: []string{"acme", "site1"}},
		Nameplate: map[string]float64{"rated_specific_power": 6.2},
		Signals:   []telemetry.SignalInfo{{Signal: "input_power", Max: &hi}, {Signal: "free_air_delivery"}, {Signal: "load_state"}}}
	f := newFeeder("air_compressor", "ac-3", nil)
	f.tr.Birth(birth)
	over := func(int) []any { return []any{"input_power", 78.0, "free_air_delivery", 10.0, "load_state", 2.0} }
	f.run(10, over)
	if got := f.tr.Stats().Rejected; got != 10 {
		t.Fatalf("before the restart: %d readings rejected, want 10 (above the birth's max)", got)
	}
	st, _ := f.tr.Snapshot("site1", "ac-3")
	for _, withBirth := range []bool{false, true} {
		g := &feeder{tr: New(Config{}), class: f.class, asset: f.asset, ts: f.ts}
		g.tr.RestoreAsset(&st)
		if withBirth {
			g.tr.RestoreBirth("site1", "ac-3", birth.Signals)
		}
		g.run(10, over)
		if got, want := g.tr.Stats().Rejected, map[bool]uint64{false: 0, true: 10}[withBirth]; got != want {
			t.Errorf("restored (RestoreBirth %v): %d readings rejected, want %d", withBirth, got, want)
		}
	}
}
