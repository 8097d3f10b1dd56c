package collector

import (
	"context"
	"math"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Absurd births (min above max, infinite ranges, a negative or huge
// interval, a negative rating) are refused with reason "birth" and create
// no asset; a sound birth is ingested.
func TestHandleRefusesAbsurdBirths(t *testing.T) {
	cfg := Defaults()
	cfg.Rules.Files = nil
	c := newCollector(t, cfg)
	ctx := context.Background()
	f := func(v float64) *float64 { return &v }
	birth := func(id string, sig telemetry.SignalInfo, np map[string]float64) {
		t.Helper()
		bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", TSGW: 1,
			Asset:   telemetry.AssetJSON{ID: id, Class: "air_compressor", Path: []string{"acme", "site1"}},
			Signals: []telemetry.SignalInfo{sig}, Nameplate: np}
		if err := c.Handle(ctx, "smelter.v1.site1.air_compressor."+id+".birth", mustJSON(t, bi)); err != nil {
			t.Fatal(err)
		}
	}
	birth("b-1", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel", Min: f(1e308), Max: f(-1e308)}, nil)
	birth("b-2", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel", IntervalMS: -1}, nil)
	birth("b-3", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel", IntervalMS: 1e12}, nil)
	birth("b-4", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel"}, map[string]float64{"rated_power": -1e300})
	birth("b-5", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel", Max: f(math.MaxFloat64)}, map[string]float64{"rated_power": 0})
	birth("ok-1", telemetry.SignalInfo{Signal: "discharge_temp", Unit: "Cel", Min: f(-20), Max: f(150), IntervalMS: 1000}, map[string]float64{"rated_power": 75})
	// a nameplate value that is not a rated_* rating may be negative: a PV
	// string's temperature coefficient gamma (the demo's -0.35 %/K)
	pv := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", TSGW: 1,
		Asset:   telemetry.AssetJSON{ID: "pv-1", Class: "pv_string", Path: []string{"acme", "site1"}},
		Signals: []telemetry.SignalInfo{{Signal: "ac_power", Unit: "kW"}}, Nameplate: map[string]float64{"rated_power": 10.8, "gamma": -0.35, "inverter": 1}}
	if err := c.Handle(ctx, "smelter.v1.site1.pv_string.pv-1.birth", mustJSON(t, pv)); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, c.m.malformed.WithLabelValues("birth")); got != 5 {
		t.Errorf("malformed{reason=birth} = %v, want 5", got)
	}
	if got := counterValue(t, c.m.ingested.WithLabelValues("birth")); got != 2 {
		t.Errorf("ingested births = %v, want 2", got)
	}
	for _, a := range c.Assets() {
		if a.ID != "ok-1" && a.ID != "pv-1" {
			t.Errorf("asset of a refused birth tracked: %s", a.ID)
		}
	}
}
