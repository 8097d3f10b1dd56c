package kpi

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// reading is one input of a gate test batch.
type reading struct {
	signal string
	value  float64
	q      telemetry.Quality
}

// runReadings feeds seconds batches of one second, readings from kv.
func (f *feeder) runReadings(seconds int, kv func(s int) []reading) {
	for s := range seconds {
		b := &telemetry.Batch{Gateway: "gw", Seq: uint64(f.ts), Asset: telemetry.Asset{ID: f.asset, Class: f.class, Path: []string{"acme", "site1"}}, TSGW: f.ts}
		for _, r := range kv(s) {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: r.signal, Value: r.value, Quality: r.q, TS: f.ts})
		}
		f.res, f.alerts = f.tr.Process(b, f.res, f.alerts)
		f.ts += 1000
	}
}

// The int32 "no value" marker 0x80000000 W (-2147483.648 kW), published
// uncertain, once became a specific power of -214748 kW/(m3/min) with
// status ok. KPIs take only what the rules accept: it is n/a now, and so is
// every other value the rules' gate refuses.
func TestKPIInputsGated(t *testing.T) {
	const marker = -2147483648.0 / 1000 // kW
	good, unc, bad := telemetry.QualityGood, telemetry.QualityUncertain, telemetry.QualityBad
	for _, tc := range []struct {
		name  string
		power reading
		rng   func(class, asset, signal string) (lo, hi *float64, ok bool)
		birth *float64 // birth max of input_power
		taken bool
	}{
		{"int32 marker published uncertain", reading{"input_power", marker, unc}, nil, nil, false},
		{"int32 marker published good", reading{"input_power", marker, good}, nil, nil, false},
		{"plausible but uncertain", reading{"input_power", 62, unc}, nil, nil, false},
		{"bad", reading{"input_power", 62, bad}, nil, nil, false},
		{"stale", reading{"input_power", 62, telemetry.QualityStale}, nil, nil, false},
		{"above the catalog max 1000 kW", reading{"input_power", 1200, good}, nil, nil, false},
		{"above the birth max", reading{"input_power", 62, good}, nil, p(50), false},
		{"above a rule max", reading{"input_power", 62, good}, func(_, _, sig string) (*float64, *float64, bool) {
			return nil, p(55), sig == "input_power"
		}, p(5000), false},
		{"a rule range wider than the catalog", reading{"input_power", 1200, good}, func(_, _, sig string) (*float64, *float64, bool) {
			return nil, p(2000), sig == "input_power"
		}, nil, true},
		{"good and plausible", reading{"input_power", 62, good}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &feeder{tr: New(Config{Window: 15 * time.Minute, Range: tc.rng}), class: "air_compressor", asset: "ac-1", ts: t0}
			bi := &telemetry.Birth{Asset: telemetry.AssetJSON{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "site1"}},
				Nameplate: map[string]float64{"rated_specific_power": 6.2}}
			if tc.birth != nil {
				bi.Signals = []telemetry.SignalInfo{{Signal: "input_power", Unit: "kW", Max: tc.birth}}
			}
			f.tr.Birth(bi)
			f.runReadings(1900, func(int) []reading {
				return []reading{tc.power, {"free_air_delivery", 10, good}, {"load_state", 2, good}}
			})
			if len(f.res) < 2 {
				t.Fatalf("%d windows", len(f.res))
			}
			sp := kpiOf(t, f.res[1], "specific_power")
			if !tc.taken {
				if sp.Status != StatusNA || sp.Value != 0 {
					t.Fatalf("specific power from a refused input: %+v", sp)
				}
				if len(f.alerts) != 0 {
					t.Fatalf("alerts from a refused input: %+v", f.alerts)
				}
				if f.tr.Stats().Rejected < 1900 {
					t.Fatalf("rejected %d readings, want every one", f.tr.Stats().Rejected)
				}
				return
			}
			if sp.Status == StatusNA || sp.Value != tc.power.value/10 {
				t.Fatalf("specific power %+v, want %v", sp, tc.power.value/10)
			}
		})
	}
}

// A refused reading replaces the held value: the KPI integrates only the
// time a good value was held.
func TestKPIRefusedReadingDropsHeldValue(t *testing.T) {
	f := newFeeder("air_compressor", "ac-1", map[string]float64{"rated_specific_power": 6.2})
	good := telemetry.QualityGood
	f.runReadings(1900, func(s int) []reading {
		if s%2 == 1 { // every other second the marker, uncertain
			return []reading{{"input_power", -2147483.648, telemetry.QualityUncertain}, {"free_air_delivery", 10, good}}
		}
		return []reading{{"input_power", 70, good}, {"free_air_delivery", 10, good}, {"load_state", 2, good}}
	})
	near(t, "specific power", kpiOf(t, f.res[1], "specific_power").Value, 7, 1e-9)
}
