package rules

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// shipNP is an Ultramax bulk carrier: main engine SMCR 8 600 kW at 117 /min,
// shop-test SFOC 167 g/kWh.
var shipNP = map[string]float64{"rated_power": 8600, "rated_speed": 117, "rated_sfoc": 167, "capacity": 63500, "ship_type": 1}

// shipState is one healthy operating point on the propeller curve.
type shipState struct {
	rpm, sog, lat, lon float64
	exhaust            [6]float64
	fuel, power        float64
}

// healthyShip returns the point at engine speed rpm: power on the
// propeller law P = 0.9 x MCR (n / n_MCR)^3 and SFOC ~172 g/kWh on HFO.
func healthyShip(rpm float64) shipState {
	x := rpm / 117
	pw := 0.9 * 8600 * x * x * x
	s := shipState{rpm: rpm, sog: 15.5 * x, power: pw, fuel: pw * 172 / 1000}
	for i := range s.exhaust {
		s.exhaust[i] = 250 + 120*x + float64(i)*3
	}
	return s
}

func (h *harness) feedShip(asset string, ts int64, s shipState, rng *rand.Rand) []alert.Alert {
	n := func(sd float64) float64 {
		if rng == nil {
			return 0
		}
		return rng.NormFloat64() * sd
	}
	kv := []any{"me_speed", s.rpm + n(0.2), "shaft_power", max(0, s.power+n(20)), "me_fuel_flow", max(0, s.fuel+n(5)),
		"ae_fuel_flow", 150 + n(2), "boiler_fuel_flow", 0.0, "me_fuel_type", 3.0, "ae_fuel_type", 5.0, "boiler_fuel_type", 5.0,
		"sog", max(0, s.sog+n(0.05)), "stw", s.sog + 0.3 + n(0.05), "heading", 88 + n(0.3), "cog", 90 + n(0.5),
		"latitude", s.lat + n(2e-6), "longitude", s.lon + n(2e-6), "water_depth", 3000 + n(5), "draught", 12.8, "cargo", 60000.0,
		"scavenge_air_pressure", 50 + 200*s.power/8600 + n(1), "jacket_water_temp", 82 + n(0.2), "jacket_water_pressure", 400 + n(2),
		"lube_oil_temp", 45 + n(0.2), "lube_oil_pressure", 230 + n(2)}
	for i, e := range s.exhaust {
		kv = append(kv, "exhaust_temp_cyl_"+string(rune('1'+i)), e+n(2))
	}
	return h.feed("ship", asset, ts, kv...)
}

func shipHarness(t *testing.T, assets ...string) *harness {
	h := newHarness(t, true, "")
	for _, a := range assets {
		h.e.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: a, Class: "ship", Path: []string{"acme", "site1"}}, Nameplate: shipNP}, 0, nil)
	}
	return h
}

// TestShipPackFaultFree: two hours of a healthy passage, with departure
// from berth (engine ramped from 0 to 100 /min over 15 min, 0 to 13.2 kn),
// a sea passage and noise, raise nothing from the default packs.
func TestShipPackFaultFree(t *testing.T) {
	h := shipHarness(t, "mv-1")
	rng := rand.New(rand.NewPCG(3, 4))
	lat, lon := 36.0, 120.0
	for s := 0; s < 7200; s++ {
		rpm := min(100, float64(s)/900*100)
		st := healthyShip(rpm)
		// 1 kn = 1/60 deg of latitude per hour; course 090: east, scaled by cos(lat)
		lon += st.sog / 3600 / 60 / math.Cos(lat*math.Pi/180)
		st.lat, st.lon = lat, lon
		h.feedShip("mv-1", sec(s), st, rng)
	}
	for _, a := range h.out {
		t.Errorf("unexpected alert: %s: %s", a.Rule, a.Message)
	}
}

// TestShipPackFaults: each ship rule fires on its fault.
func TestShipPackFaults(t *testing.T) {
	cases := []struct {
		rule   string
		sev    alert.Severity
		within int // seconds
		fault  func(s *shipState, sec int)
	}{
		// cylinder 3 runs 60 K above the others: maxdev > 40 K for 2 min
		{"exhaust_cylinder_deviation", alert.Alarm, 200, func(s *shipState, _ int) { s.exhaust[2] += 60 }},
		// 216.7 g/kWh at steady load, above 1.15 x 167 = 192.05 for 30 min
		{"sfoc_drift", alert.Warn, 1900, func(s *shipState, _ int) { s.fuel = s.power * 216.7 / 1000 }},
		// 100 /min of 117: line 4 allows 8600 x (100/117)^2 = 6282 kW; 7000 kW is heavy running
		{"overload_load_diagram", alert.Alarm, 200, func(s *shipState, _ int) { s.power = 7000 }},
		// 125 /min > 1.05 x 117 = 122.85
		{"overspeed", alert.Alarm, 60, func(s *shipState, _ int) { s.rpm = 125 }},
		// a bad fix 0.5 deg (30 nm) north
		{"position_jump_lat", alert.Warn, 70, func(s *shipState, _ int) { s.lat += 0.5 }},
		{"position_jump_lon", alert.Warn, 70, func(s *shipState, _ int) { s.lon -= 0.4 }},
		// SOG drops from 13.2 to 2 kn at once
		{"speed_jump", alert.Warn, 70, func(s *shipState, _ int) { s.sog = 2 }},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			h := shipHarness(t, "mv-1")
			st := healthyShip(100)
			st.lat, st.lon = 36, 120
			for s := range 300 {
				none(t, h.feedShip("mv-1", sec(s), st, nil), "healthy")
			}
			for s := 300; s < 300+tc.within; s++ {
				f := st
				tc.fault(&f, s)
				for _, a := range h.feedShip("mv-1", sec(s), f, nil) {
					if a.Rule == tc.rule && a.State == alert.Raised {
						if a.Severity != tc.sev {
							t.Fatalf("%s raised at %v, want %v: %s", tc.rule, a.Severity, tc.sev, a.Message)
						}
						return
					}
				}
			}
			t.Fatalf("%s not raised within %d s; alerts %+v", tc.rule, tc.within, h.out)
		})
	}
}

// TestShipCrossesTheAntimeridian: sailing east across 180 deg (longitude
// 179.99 -> -179.99) is no position jump; a real 0.4 deg jump just past the
// meridian still is, and its message shows the longitude unrounded.
func TestShipCrossesTheAntimeridian(t *testing.T) {
	h := shipHarness(t, "mv-1")
	st := healthyShip(100)
	lat, lon := 50.0, 179.9
	var last float64
	for s := range 1200 {
		lon += st.sog / 3600 / 60 / math.Cos(lat*math.Pi/180)
		if lon > 180 {
			lon -= 360
		}
		st.lat, st.lon = lat, lon
		last = lon
		none(t, h.feedShip("mv-1", sec(s), st, nil), "crossing the 180th meridian")
	}
	if last > 0 {
		t.Fatalf("the test ship did not cross: longitude %v", last)
	}
	// a bad fix about 0.4 deg west, back across the meridian
	st.lon = 179.8009
	for s := 1200; s < 1300; s++ {
		for _, a := range h.feedShip("mv-1", sec(s), st, nil) {
			if a.Rule == "position_jump_lon" && a.State == alert.Raised {
				if !strings.Contains(a.Message, "now 179.8009 deg") {
					t.Errorf("message %q", a.Message)
				}
				return
			}
		}
	}
	t.Error("a 0.4 deg jump across the meridian raised nothing")
}
