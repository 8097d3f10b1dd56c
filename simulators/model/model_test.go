package model

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
)

var t0 = time.Date(2025, 6, 21, 0, 0, 0, 0, time.UTC)

// run steps m for d at step dt and calls f after every step.
func run(m Model, from time.Time, d, dt time.Duration, f func(now time.Time, v []float64)) time.Time {
	now := from
	for end := from.Add(d); now.Before(end); {
		now = now.Add(dt)
		m.Step(now, dt)
		if f != nil {
			f(now, m.Values())
		}
	}
	return now
}

func newModel(t *testing.T, class string, np map[string]float64) Model {
	t.Helper()
	m, err := New(class, Options{ID: class + "-1", Seed: 7, Nameplate: np, Start: t0})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func idx(m Model, sig string) int { return slices.Index(m.Signals(), sig) }

func TestSignalsMatchCatalog(t *testing.T) {
	cat := catalog.Default()
	for _, class := range Classes() {
		m := newModel(t, class, nil)
		cl, ok := cat.Class(class)
		if !ok {
			t.Fatalf("class %s not in catalog", class)
		}
		got := slices.Sorted(slices.Values(m.Signals()))
		if !slices.Equal(got, cl.SignalNames()) {
			t.Errorf("%s signals %v, catalog %v", class, got, cl.SignalNames())
		}
		for _, k := range cl.Nameplate {
			if _, ok := m.Nameplate()[k]; !ok {
				t.Errorf("%s nameplate lacks catalog rating %s", class, k)
			}
		}
		for k := range m.Nameplate() {
			if !slices.Contains(cl.Nameplate, k) {
				t.Errorf("%s nameplate rating %s is not in the catalog (the gateway refuses it)", class, k)
			}
		}
	}
}

// TestModelsStayInCatalogRanges runs every model for two simulated days at 2 s
// steps and checks every value against the catalog range.
func TestModelsStayInCatalogRanges(t *testing.T) {
	cat := catalog.Default()
	for _, class := range Classes() {
		t.Run(class, func(t *testing.T) {
			m := newModel(t, class, nil)
			if class == "cnc_machine" { // a healthy machine has no alarm: inject some to cover alarm_code
				if err := m.Degrade("alarms", 1); err != nil {
					t.Fatal(err)
				}
			}
			sigs := make([]*catalog.Signal, len(m.Signals()))
			for i, s := range m.Signals() {
				sigs[i], _ = cat.Lookup(class, s)
			}
			lo := make([]float64, len(sigs))
			hi := make([]float64, len(sigs))
			for i := range lo {
				lo[i], hi[i] = math.Inf(1), math.Inf(-1)
			}
			bad := 0
			run(m, t0, 48*time.Hour, 2*time.Second, func(now time.Time, v []float64) {
				for i, x := range v {
					s := sigs[i]
					lo[i], hi[i] = math.Min(lo[i], x), math.Max(hi[i], x)
					ok := !math.IsNaN(x) && !math.IsInf(x, 0)
					if s.IsState() {
						ok = ok && x >= 0 && int(x) < len(s.States) && x == math.Trunc(x)
					} else {
						ok = ok && (s.Min == nil || x >= *s.Min) && (s.Max == nil || x <= *s.Max)
					}
					if !ok && bad < 10 {
						bad++
						t.Errorf("%s at %s: %s = %v outside catalog range", class, now.Format(time.TimeOnly), s.Name, x)
					}
				}
			})
			var setpoints []string // held until a command changes them
			if st, ok := m.(Setter); ok {
				setpoints = st.Setpoints()
			}
			for i, s := range sigs {
				if lo[i] == hi[i] && s.Name != "nut_coke_rate" && s.Name != "feedwater_temp" && !slices.Contains(setpoints, s.Name) {
					t.Errorf("%s.%s never changed over two days (%v)", class, s.Name, lo[i])
				}
			}
		})
	}
}

func TestDeterministicUnderSeed(t *testing.T) {
	for _, class := range Classes() {
		a := newModel(t, class, nil)
		b := newModel(t, class, nil)
		c, _ := New(class, Options{ID: class + "-1", Seed: 8, Start: t0})
		run(a, t0, 9*time.Hour, time.Second, nil)
		run(b, t0, 9*time.Hour, time.Second, nil)
		run(c, t0, 9*time.Hour, time.Second, nil)
		if !slices.Equal(a.Values(), b.Values()) {
			t.Errorf("%s: same seed diverged: %v vs %v", class, a.Values(), b.Values())
		}
		if slices.Equal(a.Values(), c.Values()) {
			t.Errorf("%s: different seeds gave identical values %v", class, a.Values())
		}
	}
}

func TestNewRejectsBadNameplate(t *testing.T) {
	for _, tc := range []struct {
		class string
		np    map[string]float64
		want  string
	}{
		{"furnace", nil, `no model for class "furnace"`},
		{"air_compressor", map[string]float64{"rated_kw": 1}, "nameplate.rated_kw: unknown rating"},
		{"motor", map[string]float64{"rated_power": -3}, "nameplate.rated_power: -3 must be a positive number"},
	} {
		_, err := New(tc.class, Options{Nameplate: tc.np})
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New(%s, %v) = %v, want %q", tc.class, tc.np, err, tc.want)
		}
	}
	m := newModel(t, "motor", nil)
	if err := m.Degrade("leak", 0.1); err == nil || !contains(err.Error(), `no degradation "leak"`) {
		t.Errorf("motor leak: %v", err)
	}
	if err := m.Degrade("unbalance", 2); err == nil || !contains(err.Error(), "outside [0, 0.5]") {
		t.Errorf("unbalance 2: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// compressorKPI returns specific power (kW per m3/min, energy over air) and
// loaded ratio over d.
func compressorKPI(m Model, from time.Time, d time.Duration) (sp, loaded, loadedSP float64) {
	var e, air, n, nl, el, al float64
	ip, ifad, ils := idx(m, "input_power"), idx(m, "free_air_delivery"), idx(m, "load_state")
	run(m, from, d, time.Second, func(_ time.Time, v []float64) {
		e += v[ip]
		air += v[ifad]
		n++
		if v[ils] == csLoaded {
			nl++
			el += v[ip]
			al += v[ifad]
		}
	})
	return e / air, nl / n, el / al
}

func TestCompressorSpecificPowerAndLeak(t *testing.T) {
	from := t0.Add(8 * time.Hour)
	m := newModel(t, "air_compressor", nil)
	run(m, t0, 8*time.Hour, time.Second, nil)
	sp, loaded, lsp := compressorKPI(m, from, 2*time.Hour)
	t.Logf("healthy: specific power %.2f (loaded %.2f), loaded ratio %.2f", sp, lsp, loaded)
	if lsp < 5 || lsp > 7 {
		t.Errorf("loaded specific power %.2f outside 5-7 kW/(m3/min)", lsp)
	}
	if loaded < 0.3 || loaded > 0.95 {
		t.Errorf("loaded ratio %.2f implausible", loaded)
	}
	// load/unload cycling happens
	states := map[float64]int{}
	run(m, from.Add(2*time.Hour), 30*time.Minute, time.Second, func(_ time.Time, v []float64) { states[v[idx(m, "load_state")]]++ })
	if states[csLoaded] == 0 || states[csUnloaded] == 0 {
		t.Errorf("no load/unload cycling: %v", states)
	}
	if err := m.Degrade("leak", 0.25); err != nil {
		t.Fatal(err)
	}
	sp2, loaded2, lsp2 := compressorKPI(m, from.Add(150*time.Minute), 2*time.Hour)
	t.Logf("leak 25%%: specific power %.2f (loaded %.2f), loaded ratio %.2f", sp2, lsp2, loaded2)
	if lsp2 < lsp*1.25 || loaded2 <= loaded {
		t.Errorf("leak did not degrade: sp %.2f->%.2f loaded %.2f->%.2f", lsp, lsp2, loaded, loaded2)
	}
	_ = sp
}

func TestPVFollowsIrradianceAndSharesWeather(t *testing.T) {
	a, _ := New("pv_string", Options{ID: "pv-1", Seed: 3, Start: t0})
	b, _ := New("pv_string", Options{ID: "pv-2", Seed: 3, Start: t0})
	c, _ := New("pv_string", Options{ID: "pv-3", Seed: 3, Start: t0, Nameplate: map[string]float64{"inverter": 2}})
	if err := b.Degrade("soiling", 0.3); err != nil {
		t.Fatal(err)
	}
	ii, ig := idx(a, "string_current"), idx(a, "irradiance_poa")
	var maxG, noonRatio, diffC float64
	now := t0
	for i := 0; i < 86400/10; i++ {
		now = now.Add(10 * time.Second)
		a.Step(now, 10*time.Second)
		b.Step(now, 10*time.Second)
		c.Step(now, 10*time.Second)
		va, vb := a.Values(), b.Values()
		maxG = math.Max(maxG, va[ig])
		h := hourOfDay(now)
		if h < 4 || h > 20.5 {
			if va[ig] != 0 || va[ii] != 0 {
				t.Fatalf("night at %v: G %v I %v", now, va[ig], va[ii])
			}
		}
		if math.Abs(va[ig]-vb[ig]) > 0.05*va[ig]+1 {
			t.Fatalf("peers on one inverter see different sky at %v: %v vs %v", now, va[ig], vb[ig])
		}
		diffC += math.Abs(va[ig] - c.Values()[ig])
		if h == 12 {
			noonRatio = vb[ii] / va[ii]
			if r := va[ii] / (va[ig] / 1000); r < 9 || r > 11.5 {
				t.Errorf("noon current %.2f A at %.0f W/m2 not ~Impp x G", va[ii], va[ig])
			}
		}
	}
	if maxG < 700 || maxG > 1300 {
		t.Errorf("max irradiance %v", maxG)
	}
	if noonRatio < 0.65 || noonRatio > 0.75 {
		t.Errorf("soiled/clean current at noon %.2f, want ~0.7", noonRatio)
	}
	if diffC == 0 {
		t.Error("strings on different inverters share weather")
	}
	e := a.Values()[idx(a, "energy")] - a.Nameplate()["rated_power"]*1000
	if pr := e / a.Nameplate()["rated_power"]; pr < 3 || pr > 9 {
		t.Errorf("daily yield %.2f kWh/kWp implausible", pr)
	}
}

func TestDieselBSFCAndFurnaceKPIs(t *testing.T) {
	d := newModel(t, "diesel_engine", nil)
	run(d, t0, 8*time.Hour, time.Second, func(_ time.Time, v []float64) {
		if p := v[idx(d, "power")]; p > 0.3*d.Nameplate()["rated_power"] {
			bsfc := v[idx(d, "fuel_rate")] * 1000 / p
			if bsfc < 200 || bsfc > 232 {
				t.Fatalf("BSFC %.1f g/kWh at %.0f kW", bsfc, p)
			}
		}
	})
	f := newModel(t, "blast_furnace", nil)
	run(f, t0, 24*time.Hour, 5*time.Second, func(now time.Time, v []float64) {
		fuel := v[idx(f, "coke_rate")] + v[idx(f, "nut_coke_rate")] + v[idx(f, "pci_rate")]
		co, co2 := v[idx(f, "top_gas_co")], v[idx(f, "top_gas_co2")]
		eta := co2 / (co + co2)
		if fuel < 480 || fuel > 540 || eta < 0.45 || eta > 0.52 {
			t.Fatalf("at %v fuel rate %.1f kg/t, CO utilisation %.3f", now, fuel, eta)
		}
		if dp := v[idx(f, "blast_pressure")] - v[idx(f, "top_pressure")]; dp < 110 || dp > 200 {
			t.Fatalf("pressure difference %.1f", dp)
		}
		if hm := v[idx(f, "hot_metal_temp")]; hm < 1470 || hm > 1540 {
			t.Fatalf("hot metal temp %.1f", hm)
		}
	})
}

func TestBoilerEfficiencyAndFouling(t *testing.T) {
	b := newModel(t, "boiler", nil)
	np := b.Nameplate()
	direct := func(v []float64) float64 {
		heat := v[idx(b, "steam_flow")] * 1000 / 3600 * (2778 - 4.19*v[idx(b, "feedwater_temp")])
		return heat / (v[idx(b, "fuel_flow")] / 3600 * np["fuel_ncv"] * 1000)
	}
	end := run(b, t0, 12*time.Hour, time.Second, nil)
	e1 := direct(b.Values())
	flue1 := b.Values()[idx(b, "flue_gas_temp")]
	if e1 < 0.86 || e1 > 0.95 {
		t.Errorf("efficiency %.3f", e1)
	}
	if err := b.Degrade("fouling", 1); err != nil {
		t.Fatal(err)
	}
	run(b, end, time.Hour, time.Second, nil)
	e2, flue2 := direct(b.Values()), b.Values()[idx(b, "flue_gas_temp")]
	t.Logf("efficiency %.3f -> %.3f, flue %.0f -> %.0f", e1, e2, flue1, flue2)
	if flue2 < flue1+40 || e2 > e1-0.015 {
		t.Errorf("fouling: efficiency %.3f -> %.3f, flue %.0f -> %.0f", e1, e2, flue1, flue2)
	}
}

func TestMotorUnbalanceAndWind(t *testing.T) {
	m := newModel(t, "motor", nil)
	end := run(m, t0, 10*time.Hour, time.Second, nil)
	v := m.Values()
	ia, ib := v[idx(m, "current_a")], v[idx(m, "current_b")]
	if math.Abs(ia-ib)/ia > 0.02 {
		t.Errorf("healthy motor unbalanced: %v %v", ia, ib)
	}
	if ir := m.Nameplate()["rated_current"]; ia > 1.1*ir || ia < 0.3*ir {
		t.Errorf("current %.1f vs rated %.1f", ia, ir)
	}
	_ = m.Degrade("unbalance", 0.2)
	run(m, end, time.Minute, time.Second, nil)
	v = m.Values()
	if u := (v[idx(m, "current_a")] - v[idx(m, "current_b")]) / v[idx(m, "current_b")]; u < 0.25 {
		t.Errorf("unbalance 0.2 gave a/b %.3f", u)
	}
	if vu := math.Abs(v[idx(m, "voltage_a")]-v[idx(m, "voltage_b")]) / v[idx(m, "voltage_a")]; vu > 0.02 {
		t.Errorf("voltages unbalanced too: %.3f", vu)
	}

	w := newModel(t, "wind_turbine", nil)
	np := w.Nameplate()
	var sumV, n, prod, dev float64
	run(w, t0, 48*time.Hour, 2*time.Second, func(_ time.Time, v []float64) {
		sumV += v[idx(w, "wind_speed")]
		n++
		if v[idx(w, "power")] > np["rated_power"]*1.001 {
			t.Fatalf("power %v above rated", v[idx(w, "power")])
		}
		if v[idx(w, "power")] > 0 {
			prod++
		}
		ref := WindPowerCurve(np, v[idx(w, "wind_speed")])
		dev += math.Abs(v[idx(w, "power")]-ref) / np["rated_power"]
	})
	t.Logf("mean wind %.2f m/s, producing %.0f%%, mean |P-Pref| %.3f of rated", sumV/n, 100*prod/n, dev/n)
	if mv := sumV / n; mv < 3 || mv > 13 {
		t.Errorf("mean wind %.2f", mv)
	}
	if prod/n < 0.3 {
		t.Errorf("producing only %.2f of the time", prod/n)
	}
}

// TestBoilerFuelTypeIsACatalogCode: the boiler's fuel_type uses the
// catalog's fuel codes, so the simulator and the collector's KPIs agree on
// what the demo boiler burns.
func TestBoilerFuelTypeIsACatalogCode(t *testing.T) {
	np, err := DefaultNameplate("boiler")
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := catalog.Default().Fuel(np["fuel_type"]); !ok || f.Name != "natural_gas" {
		t.Errorf("default boiler fuel_type %v = %+v: want the catalog's natural_gas", np["fuel_type"], f)
	}
	_, err = New("boiler", Options{ID: "b", Nameplate: map[string]float64{"fuel_type": 7}})
	if err == nil || !strings.Contains(err.Error(), "fuel_type: 7 is not a fuel code of the catalog (1 natural_gas, 2 fuel_oil)") {
		t.Errorf("unknown fuel code: %v", err)
	}
}

// TestBoilerFoulingShowsWithinMinutes: fouling level 1 lifts the flue gas
// above the default pack's 200 Cel warning within 5 simulated minutes even
// at night-time load, so an injected fault shows in a demo.
func TestBoilerFoulingShowsWithinMinutes(t *testing.T) {
	start := time.Date(2025, 6, 21, 3, 0, 0, 0, time.UTC) // low load
	m, err := New("boiler", Options{ID: "b", Seed: 1, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	now := start
	flue := slices.Index(m.Signals(), "flue_gas_temp")
	for range 30 * 60 {
		now = now.Add(time.Second)
		m.Step(now, time.Second)
	}
	if v := m.Values()[flue]; v > 180 {
		t.Fatalf("clean boiler flue %v Cel", v)
	}
	if err := m.Degrade("fouling", 1); err != nil {
		t.Fatal(err)
	}
	for range 5 * 60 {
		now = now.Add(time.Second)
		m.Step(now, time.Second)
	}
	if v := m.Values()[flue]; v <= 205 {
		t.Errorf("fouled boiler flue %v Cel after 5 min, want > 205", v)
	}
}

// TestCompressorSetpoint: a lower unload setpoint moves the pressure band
// down within minutes and shows at once; out-of-range values and other
// signals are refused.
func TestCompressorSetpoint(t *testing.T) {
	m := newModel(t, "air_compressor", nil)
	st := m.(Setter)
	p, sp := idx(m, "discharge_pressure"), idx(m, "unload_pressure_setpoint")
	maxOver := func(d time.Duration, from time.Time) float64 {
		hi := 0.0
		run(m, from, d, 2*time.Second, func(_ time.Time, v []float64) { hi = math.Max(hi, v[p]) })
		return hi
	}
	before := maxOver(time.Hour, t0)
	if err := st.Set("unload_pressure_setpoint", 0.6); err != nil {
		t.Fatal(err)
	}
	if got := m.Values()[sp]; got != 0.6 {
		t.Errorf("setpoint reads %v at once, want 0.6", got)
	}
	maxOver(10*time.Minute, t0.Add(time.Hour)) // the receiver drains to the new band
	after := maxOver(time.Hour, t0.Add(time.Hour+10*time.Minute))
	if before < 0.74 || after > 0.6+0.02+0.01 {
		t.Errorf("discharge pressure peaks %v before, %v after setting 0.6 MPa", before, after)
	}
	if err := st.Set("unload_pressure_setpoint", 0.9); !errors.Is(err, ErrSetpointRange) {
		t.Errorf("0.9 MPa on a 0.75 MPa machine: %v", err)
	}
	if err := st.Set("discharge_pressure", 0.5); !errors.Is(err, ErrNotSettable) {
		t.Errorf("discharge_pressure: %v", err)
	}
}

// TestBoilerO2Setpoint: a higher O2 trim raises flue O2 and lowers CO
// within minutes; the efficiency cost shows as more fuel for the same
// steam.
func TestBoilerO2Setpoint(t *testing.T) {
	m := newModel(t, "boiler", nil)
	o2, co := idx(m, "flue_o2"), idx(m, "flue_co")
	mean := func(from time.Time, sig int) float64 {
		sum, n := 0.0, 0
		run(m, from, 30*time.Minute, 2*time.Second, func(_ time.Time, v []float64) { sum += v[sig]; n++ })
		return sum / float64(n)
	}
	run(m, t0, time.Hour, 2*time.Second, nil)
	o2Before := mean(t0.Add(time.Hour), o2)
	if err := m.(Setter).Set("o2_setpoint", 5); err != nil {
		t.Fatal(err)
	}
	run(m, t0.Add(90*time.Minute), 10*time.Minute, 2*time.Second, nil)
	o2After := mean(t0.Add(100*time.Minute), o2)
	if o2After < o2Before+1.5 {
		t.Errorf("flue O2 %v before, %v after raising the trim from 3 to 5 %%", o2Before, o2After)
	}
	if c := m.Values()[co]; c > 40 {
		t.Errorf("CO %v ppm at 5 %% O2", c)
	}
	if err := m.(Setter).Set("o2_setpoint", 9); !errors.Is(err, ErrSetpointRange) {
		t.Errorf("9 %%: %v", err)
	}
}

// TestMotorSpeedReference: a lower speed reference lowers the frequency
// at once and the power by about the cube of the speed.
func TestMotorSpeedReference(t *testing.T) {
	m := newModel(t, "motor", nil)
	pw, fq := idx(m, "power"), idx(m, "frequency")
	run(m, t0, time.Hour, 2*time.Second, nil)
	before := m.Values()[pw]
	if err := m.(Setter).Set("speed_reference", 80); err != nil {
		t.Fatal(err)
	}
	run(m, t0.Add(time.Hour), 2*time.Minute, 2*time.Second, nil)
	after := m.Values()
	if math.Abs(after[fq]-40) > 0.1 {
		t.Errorf("frequency %v Hz at 80 %%", after[fq])
	}
	if r := after[pw] / before; r < 0.35 || r > 0.7 {
		t.Errorf("power %v -> %v kW (x%.2f) at 80 %% speed, want about 0.8^3", before, after[pw], r)
	}
	if err := m.(Setter).Set("speed_reference", 120); !errors.Is(err, ErrSetpointRange) {
		t.Errorf("120 %%: %v", err)
	}
}

// TestCNCHealthyRaisesNoAlarm: a healthy machine runs a whole shift day
// without an alarm; random alarms come only with the "alarms" fault.
func TestCNCHealthyRaisesNoAlarm(t *testing.T) {
	day := 24 * time.Hour
	m := newModel(t, "cnc_machine", nil)
	st, code := idx(m, "program_state"), idx(m, "alarm_code")
	run(m, t0, day, time.Second, func(now time.Time, v []float64) {
		if v[st] == cncAlarm || v[code] != 0 {
			t.Fatalf("healthy machine in alarm at %s: state %v code %v", now.Format("15:04"), v[st], v[code])
		}
	})
	f := newModel(t, "cnc_machine", nil)
	if err := f.Degrade("alarms", 4); err != nil {
		t.Fatal(err)
	}
	alarms := 0
	run(f, t0, day, time.Second, func(_ time.Time, v []float64) {
		if v[st] == cncAlarm && v[code] >= 1000 {
			alarms++
		}
	})
	if alarms == 0 {
		t.Error("alarms fault at 4 per running hour raised no alarm in a day")
	}
}

// TestMotorStartsWarm: a motor simulated from a working morning starts at
// its steady-state temperatures, so the bearing temperature moves by less
// than the EWMA rule's band (+-4 K) over its first two hours.
func TestMotorStartsWarm(t *testing.T) {
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	m, err := New("motor", Options{ID: "motor-1", Seed: 7, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	b := idx(m, "bearing_temp")
	lo, hi := math.Inf(1), math.Inf(-1)
	run(m, start, 2*time.Hour, time.Second, func(_ time.Time, v []float64) {
		lo, hi = min(lo, v[b]), max(hi, v[b])
	})
	if hi-lo > 3 {
		t.Errorf("bearing temperature ranged %.1f-%.1f °C in the first two hours: the motor started cold", lo, hi)
	}
}
