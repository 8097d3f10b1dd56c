package model

import (
	"math"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/kpi"
	"github.com/smelterio/smelter/internal/telemetry"
)

// shipRun steps a ship for d at 5 s and collects what the collector's ship
// rules and KPIs look at.
type shipStats struct {
	berthS, seaS                     float64 // seconds at berth (SOG 0) and at sea (SOG >= 10)
	fuelSea, distSea                 float64 // kg, nm at sea
	maxDev                           float64 // largest cylinder deviation from the bank mean above 25 % MCR, K
	maxSOGJump                       float64 // kn per minute
	maxLoadRatio                     float64 // shaft power over the line-4 limit P_MCR (n/n_MCR)^2, above 30 % speed
	minSFOCISO, maxSFOCISO           float64 // g/kWh at ISO LCV above 50 % MCR
	departures                       int
	cargoMin, cargoMax, latMin       float64
	propellerLawMin, propellerLawMax float64 // P / n^3 at sea, normalised
}

func shipRun(t *testing.T, m Model, from time.Time, d time.Duration) shipStats {
	t.Helper()
	np := m.Nameplate()
	st := shipStats{minSFOCISO: math.Inf(1), cargoMin: math.Inf(1), latMin: math.Inf(1), propellerLawMin: math.Inf(1)}
	i := func(s string) int { return idx(m, s) }
	prevSOG, atBerth := -1.0, false
	sogHist := []float64{}
	run(m, from, d, 5*time.Second, func(_ time.Time, v []float64) {
		sog, rpm, pw := v[i("sog")], v[i("me_speed")], v[i("shaft_power")]
		sogHist = append(sogHist, sog)
		if len(sogHist) > 12 {
			j := math.Abs(sog - sogHist[len(sogHist)-13]) // per minute
			st.maxSOGJump = math.Max(st.maxSOGJump, j)
		}
		if sog < 0.2 {
			st.berthS += 5
			atBerth = true
		} else if sog > 3 && atBerth {
			st.departures++
			atBerth = false
		}
		_ = prevSOG
		prevSOG = sog
		x := pw / np["rated_power"]
		if sog >= 10 {
			st.seaS += 5
			st.fuelSea += (v[i("me_fuel_flow")] + v[i("ae_fuel_flow")] + v[i("boiler_fuel_flow")]) * 5 / 3600
			st.distSea += sog * 5 / 3600
			n := rpm / np["rated_speed"]
			pl := pw / (n * n * n) / np["rated_power"]
			st.propellerLawMin, st.propellerLawMax = math.Min(st.propellerLawMin, pl), math.Max(st.propellerLawMax, pl)
		}
		if x > 0.25 {
			var mean float64
			for c := 1; c <= 6; c++ {
				mean += v[i("exhaust_temp_cyl_"+string(rune('0'+c)))] / 6
			}
			for c := 1; c <= 6; c++ {
				st.maxDev = math.Max(st.maxDev, math.Abs(v[i("exhaust_temp_cyl_"+string(rune('0'+c)))]-mean))
			}
		}
		if rpm > 0.3*np["rated_speed"] {
			n := rpm / np["rated_speed"]
			st.maxLoadRatio = math.Max(st.maxLoadRatio, pw/(np["rated_power"]*n*n))
		}
		if x > 0.5 {
			lcv := 40.2
			if v[i("me_fuel_type")] == 5 {
				lcv = 42.7
			}
			sf := v[i("me_fuel_flow")] * 1000 / pw * lcv / 42.7
			st.minSFOCISO, st.maxSFOCISO = math.Min(st.minSFOCISO, sf), math.Max(st.maxSFOCISO, sf)
		}
		st.cargoMin, st.cargoMax = math.Min(st.cargoMin, v[i("cargo")]), math.Max(st.cargoMax, v[i("cargo")])
		st.latMin = math.Min(st.latMin, v[i("latitude")])
	})
	return st
}

// TestShipVoyage: over two days the healthy ship sails, berths, loads or
// discharges and sails again; it stays on the propeller curve, inside its
// load diagram, with a slow-speed two-stroke SFOC and no jumps.
func TestShipVoyage(t *testing.T) {
	m := newModel(t, "ship", nil)
	st := shipRun(t, m, t0, 48*time.Hour)
	t.Logf("%+v fuel/nm %.1f kg", st, st.fuelSea/st.distSea)
	if st.departures < 1 || st.berthS < 5*3600 || st.seaS < 24*3600 {
		t.Errorf("voyage profile: %d departures, %.1f h at berth, %.1f h at sea", st.departures, st.berthS/3600, st.seaS/3600)
	}
	if st.cargoMin > 100 || st.cargoMax < 57000 {
		t.Errorf("cargo %v..%v t: never discharged or loaded", st.cargoMin, st.cargoMax)
	}
	// slow-speed two-stroke: 160-190 g/kWh at ISO LCV (DOMAIN.md)
	if st.minSFOCISO < 160 || st.maxSFOCISO > 190 {
		t.Errorf("SFOC at ISO LCV %.1f..%.1f g/kWh", st.minSFOCISO, st.maxSFOCISO)
	}
	// propeller law: P / (n/n_MCR)^3 stays 0.9 P_MCR x (1 + 0.5 a), a 0.02-0.3,
	// x 0.85 in ballast
	if st.propellerLawMin < 0.75 || st.propellerLawMax > 1.1 {
		t.Errorf("P/n^3 %.3f..%.3f of MCR", st.propellerLawMin, st.propellerLawMax)
	}
	// the ship's rules stay quiet: deviation < 40 K, inside line 4, SOG < 5 kn/min
	if st.maxDev > 25 || st.maxLoadRatio > 0.95 || st.maxSOGJump > 3 {
		t.Errorf("healthy ship: deviation %.1f K, load ratio %.2f of line 4, SOG jump %.2f kn/min", st.maxDev, st.maxLoadRatio, st.maxSOGJump)
	}
	// fuel per mile of a laden passage at ~13.5 kn: 1 100-1 300 kg/h over 13-14 kn
	if fpm := st.fuelSea / st.distSea; fpm < 60 || fpm > 110 {
		t.Errorf("fuel per nm %.1f kg", fpm)
	}
}

// TestShipFaults: fouling raises fuel per mile; an injector fault makes
// cylinder 4 deviate past the rule's 40 K; heavy weather with fouling
// drives the engine past its load diagram.
func TestShipFaults(t *testing.T) {
	clean := shipRun(t, newModel(t, "ship", nil), t0, 12*time.Hour)
	fouled := newModel(t, "ship", nil)
	if err := fouled.Degrade("fouling", 0.3); err != nil {
		t.Fatal(err)
	}
	fs := shipRun(t, fouled, t0, 12*time.Hour)
	c, f := clean.fuelSea/clean.distSea, fs.fuelSea/fs.distSea
	t.Logf("fuel per nm clean %.1f, fouled %.1f kg", c, f)
	// (1 + 0.5 a) / (1 - 0.3 a) with 0.3 more resistance: ~ +26 %
	if f < c*1.15 {
		t.Errorf("fouling 0.3: fuel per nm %.1f -> %.1f kg", c, f)
	}
	inj := newModel(t, "ship", nil)
	if err := inj.Degrade("injector_fault", 1); err != nil {
		t.Fatal(err)
	}
	if st := shipRun(t, inj, t0, time.Hour); st.maxDev < 45 {
		t.Errorf("injector fault: deviation %.1f K", st.maxDev)
	}
	storm := newModel(t, "ship", nil)
	_ = storm.Degrade("fouling", 0.5)
	_ = storm.Degrade("heavy_weather", 0.6)
	if st := shipRun(t, storm, t0, time.Hour); st.maxLoadRatio < 1 {
		t.Errorf("storm and fouling: load %.2f of line 4", st.maxLoadRatio)
	}
}

// TestShipKPIsFaultFree feeds two simulated days of the healthy ship to the
// collector's KPI tracker: every window is judged OK (no warning), SFOC and
// fuel per mile are computed at sea and the leg's CII appears.
func TestShipKPIsFaultFree(t *testing.T) {
	m := newModel(t, "ship", nil)
	tr := kpi.New(kpi.Config{Window: 15 * time.Minute})
	asset := telemetry.AssetJSON{ID: "mv-1", Class: "ship", Path: []string{"acme", "fleet"}}
	tr.Birth(&telemetry.Birth{Asset: asset, Nameplate: m.Nameplate()})
	var res []kpi.Result
	var alerts []alert.Alert
	seq := uint64(0)
	sigs := m.Signals()
	run(m, t0, 48*time.Hour, 5*time.Second, func(now time.Time, v []float64) {
		seq++
		b := &telemetry.Batch{Gateway: "gw", Seq: seq, Asset: asset.FromJSON(), TSGW: now.UnixMilli()}
		for i, x := range v {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: sigs[i], Value: x, TS: b.TSGW})
		}
		res, alerts = tr.Process(b, res, alerts)
	})
	for _, a := range alerts {
		t.Errorf("alert %s %s: %s", a.Rule, a.Severity, a.Message)
	}
	seen := map[string]int{}
	for _, r := range res {
		for _, k := range r.KPIs {
			if k.Status != kpi.StatusNA {
				seen[k.Name]++
			}
		}
	}
	t.Logf("judged windows per KPI: %v; last %+v", seen, res[len(res)-1].KPIs)
	for _, k := range []string{"sfoc", "fuel_per_nm", "co2", "eeoi", "cii"} {
		if seen[k] == 0 {
			t.Errorf("KPI %s never computed", k)
		}
	}
}
