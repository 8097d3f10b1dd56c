package kpi

import (
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A birth that no longer lists an input (a point removed from the
// gateway's configuration) drops its held value: the KPIs that need it
// have no value in the windows after the birth, instead of integrating the
// last value before it for ever.
func TestBirthDropsRemovedInput(t *testing.T) {
	f := newFeeder("air_compressor", "ac-3", map[string]float64{"rated_specific_power": 6.2})
	loaded := func(int) []any { return []any{"input_power", 78.0, "free_air_delivery", 10.0, "load_state", 2.0} }
	f.run(1000, loaded)
	near(t, "specific power before", kpiOf(t, f.res[0], "specific_power").Value, 7.8, 0.01)

	f.tr.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: "ac-3", Class: "air_compressor", Path: []string{"acme", "site1"}},
		Nameplate: map[string]float64{"rated_specific_power": 6.2},
		Signals:   []telemetry.SignalInfo{{Signal: "input_power"}, {Signal: "load_state"}}})
	n := len(f.res)
	f.run(1900, func(int) []any { return []any{"input_power", 78.0, "load_state", 2.0} })
	if len(f.res) < n+2 {
		t.Fatalf("want 2 more windows, got %d", len(f.res)-n)
	}
	if sp := kpiOf(t, f.res[n+1], "specific_power"); sp.Status != StatusNA {
		t.Fatalf("specific power without free_air_delivery: %+v", sp)
	}
}
