package kpi

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

func near(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %v, want %v (tol %v)", name, got, want, tol)
	}
}

func TestIECoefficientsMatchTable(t *testing.T) {
	// IEC 60034-30-1 4-pole 50 Hz values quoted in DOMAIN.md
	for _, c := range []struct{ kw, ie3, ie4 float64 }{{11, 91.4, 93.3}, {37, 93.9, 95.2}, {75, 95.0, 96.0}, {160, 95.8, 96.6}, {315, 96.0, 96.7}} {
		e3, ok3 := IEMinEfficiency(3, c.kw)
		e4, ok4 := IEMinEfficiency(4, c.kw)
		if !ok3 || !ok4 || e3 != c.ie3 || e4 != c.ie4 {
			t.Errorf("%v kW: IE3 %v IE4 %v, want %v %v", c.kw, e3, e4, c.ie3, c.ie4)
		}
	}
	if _, ok := IEMinEfficiency(3, 0.5); ok {
		t.Error("0.5 kW is outside the formula")
	}
	for _, c := range []struct {
		eta, kw float64
		want    int
	}{{93.0, 37, 2}, {94.0, 37, 3}, {95.2, 37, 4}} {
		if got, _ := IEClass(c.eta, c.kw); got != c.want {
			t.Errorf("IEClass(%v, %v) = %v, want %v", c.eta, c.kw, got, c.want)
		}
	}
}

func TestFormulas(t *testing.T) {
	near(t, "Siegert gas 140/20 Cel O2 3", StackLoss(140, 20, 3, 0.66, 0.009), 120*(0.66/18+0.009), 1e-12)
	near(t, "Siegert value", StackLoss(140, 20, 3, 0.66, 0.009), 5.48, 1e-9)
	near(t, "excess air O2 3", ExcessAir(3), 21.0/18, 1e-12)
	// 15 t/h steam at 194 Cel from 105 Cel feedwater, 1150 m3/h gas at 35.8 MJ/m3:
	// 15000 x (2861.84 - 439.95) / (1150 x 35800) = 0.88240
	near(t, "direct efficiency", DirectEfficiency(15, SteamEnthalpy(194), WaterEnthalpy(105), 1150, 35.8), 0.882400, 1e-5)
	near(t, "CO utilisation 23/21", COUtilisation(23, 21), 21.0/44, 1e-12)
	near(t, "BSFC 160 kg/h at 750 kW", BSFC(160, 750), 213.333, 1e-3)
	near(t, "ISA density", AirDensity(101.325, 15), 1.2250, 1e-4)
	near(t, "v_n at 0.9 rho0", NormalisedWind(10, 0.9*Rho0), 10*math.Cbrt(0.9), 1e-12)
	near(t, "curve mid", ReferencePower(8, 2000, 3, 12, 25), 2000*(512-27)/(1728-27.0), 1e-9)
	near(t, "curve rated", ReferencePower(15, 2000, 3, 12, 25), 2000, 0)
	near(t, "curve cut-out", ReferencePower(25, 2000, 3, 12, 25), 0, 0)
	near(t, "PV expected", ExpectedPVPower(6, 800, 45, -0.0035), 4.464, 1e-12)
}

type feeder struct {
	tr     *Tracker
	res    []Result
	alerts []alert.Alert
	class  string
	asset  string
	ts     int64
}

const t0 = int64(1_700_000_100_000) // not window aligned

func (f *feeder) run(seconds int, kv func(s int) []any) {
	for s := range seconds {
		b := &telemetry.Batch{Gateway: "gw", Seq: uint64(f.ts), Asset: telemetry.Asset{ID: f.asset, Class: f.class, Path: []string{"acme", "site1"}}, TSGW: f.ts}
		vals := kv(s)
		for i := 0; i < len(vals); i += 2 {
			b.Readings = append(b.Readings, telemetry.Reading{Signal: vals[i].(string), Value: vals[i+1].(float64), TS: f.ts})
		}
		f.res, f.alerts = f.tr.Process(b, f.res, f.alerts)
		f.ts += 1000
	}
}

func newFeeder(class, asset string, np map[string]float64) *feeder {
	f := &feeder{tr: New(Config{Window: 15 * time.Minute}), class: class, asset: asset, ts: t0}
	f.tr.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: asset, Class: class, Path: []string{"acme", "site1"}}, Nameplate: np})
	return f
}

func kpiOf(t *testing.T, r Result, name string) Value {
	t.Helper()
	for _, v := range r.KPIs {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no KPI %s in %+v", name, r)
	return Value{}
}

func TestCompressorSpecificPowerAlert(t *testing.T) {
	f := newFeeder("air_compressor", "ac-3", map[string]float64{"rated_specific_power": 6.2})
	// 3 of 4 seconds loaded at 78 kW / 10 m3/min, 1 unloaded at 30 kW / 0:
	// loaded SP = 78 / 10 = 7.8 (the rated value's basis), system SP =
	// (3x78 + 30) / (3x10) = 8.8; loaded ratio 0.75
	f.run(3600, func(s int) []any {
		if s%4 == 3 {
			return []any{"input_power", 30.0, "free_air_delivery", 0.0, "load_state", 1.0}
		}
		return []any{"input_power", 78.0, "free_air_delivery", 10.0, "load_state", 2.0}
	})
	if len(f.res) < 3 {
		t.Fatalf("want >= 3 windows, got %d", len(f.res))
	}
	r := f.res[1] // a full window
	if r.End-r.Start != 900000 || r.Start%900000 != 0 || math.Abs(r.Coverage-1) > 0.01 {
		t.Fatalf("window %+v", r)
	}
	sp := kpiOf(t, r, "specific_power")
	near(t, "specific power", sp.Value, 7.8, 0.01)
	near(t, "system specific power", kpiOf(t, r, "system_specific_power").Value, 8.8, 0.01)
	if sp.Status != StatusHigh || *sp.Limit != 6.2*1.15 {
		t.Fatalf("%+v", sp)
	}
	near(t, "loaded ratio", kpiOf(t, r, "loaded_ratio").Value, 0.75, 0.01)
	if len(f.alerts) != 1 || f.alerts[0].State != alert.Raised || f.alerts[0].Rule != "kpi_specific_power" {
		t.Fatalf("alerts %+v", f.alerts)
	}
	if want := "air_compressor ac-3 needs 7.8 kW per m3/min, 26 % above its rated 6.2"; f.alerts[0].Message != want {
		t.Fatalf("message %q, want %q", f.alerts[0].Message, want)
	}
	// repaired: 62 kW per 10 m3/min, always loaded -> cleared after the next full window
	f.alerts = nil
	f.run(1800, func(int) []any { return []any{"input_power", 62.0, "free_air_delivery", 10.0, "load_state", 2.0} })
	if len(f.alerts) != 1 || f.alerts[0].State != alert.Cleared {
		t.Fatalf("want clear, got %+v", f.alerts)
	}
}

func TestMotorKPIs(t *testing.T) {
	f := newFeeder("motor", "m-1", map[string]float64{"rated_power": 37, "rated_efficiency": 93.0, "poles": 4})
	// P_in 30 kW, eta 0.93 -> load factor 30 x 0.93 / 37 = 0.75405; currents 60/60/66: mean 62, maxdev 4 -> 0.0645
	f.run(1900, func(int) []any {
		return []any{"power", 30.0, "current_a", 60.0, "current_b", 60.0, "current_c", 66.0}
	})
	r := f.res[1]
	near(t, "load factor", kpiOf(t, r, "load_factor").Value, 30*0.93/37, 1e-5)
	near(t, "unbalance", kpiOf(t, r, "current_unbalance").Value, 4.0/62, 1e-5)
	ie := kpiOf(t, r, "ie_class")
	if ie.Value != 2 || ie.Status != StatusLow || !strings.Contains(ie.Message, "below the IE3 minimum 93.9 % for 37 kW") {
		t.Fatalf("%+v", ie)
	}
}

func TestBoilerWindKPIs(t *testing.T) {
	f := newFeeder("boiler", "b-1", map[string]float64{"fuel_ncv": 35.8, "fuel_type": 1}) // 1: natural gas (catalog fuels)
	f.run(1900, func(int) []any {
		return []any{"steam_flow", 15.0, "steam_temp", 194.0, "feedwater_temp", 105.0, "fuel_flow", 1150.0,
			"flue_gas_temp", 200.0, "flue_o2", 6.0, "ambient_temp", 20.0}
	})
	r := f.res[1]
	near(t, "direct", kpiOf(t, r, "efficiency_direct").Value, 0.8824, 1e-4)
	sl := kpiOf(t, r, "stack_loss") // 180 x (0.66/15 + 0.009) = 9.54
	near(t, "stack loss", sl.Value, 9.54, 1e-9)
	if sl.Status != StatusHigh || kpiOf(t, r, "excess_air").Status != StatusHigh { // 21/15 = 1.4
		t.Fatalf("%+v", r.KPIs)
	}

	w := newFeeder("wind_turbine", "wt-1", map[string]float64{"rated_power": 2000, "cut_in_speed": 3, "rated_wind_speed": 12, "cut_out_speed": 25})
	exp := ReferencePower(NormalisedWind(8, AirDensity(101.325, 15)), 2000, 3, 12, 25)
	w.run(1900, func(int) []any {
		return []any{"wind_speed", 8.0, "power", 0.9 * exp, "ambient_temp", 15.0, "air_pressure", 101.325}
	})
	pci := kpiOf(t, w.res[1], "power_curve_index")
	near(t, "pci", pci.Value, 0.9, 1e-6)
	if pci.Status != StatusLow {
		t.Fatalf("%+v", pci)
	}
}

func TestPVDieselBFCNCEngineering(t *testing.T) {
	pv := newFeeder("pv_string", "pv-1", map[string]float64{"rated_power": 6, "gamma": -0.35})
	pv.run(1900, func(int) []any { return []any{"ac_power", 4.0, "irradiance_poa", 800.0, "module_temp", 45.0} })
	near(t, "PR", kpiOf(t, pv.res[1], "performance_ratio").Value, 4/4.8, 1e-5)
	near(t, "PR temp", kpiOf(t, pv.res[1], "performance_ratio_temp").Value, 4/4.464, 1e-5)

	de := newFeeder("diesel_engine", "de-1", map[string]float64{"rated_power": 1000, "rated_speed": 1500})
	de.run(1900, func(int) []any { return []any{"fuel_rate", 160.0, "power", 750.0} })
	if v := kpiOf(t, de.res[1], "bsfc"); math.Abs(v.Value-213.333) > 1e-3 || v.Status != StatusOK {
		t.Fatalf("%+v", v)
	}

	bf := newFeeder("blast_furnace", "bf-1", nil)
	bf.run(1900, func(int) []any {
		return []any{"coke_rate", 350.0, "nut_coke_rate", 30.0, "pci_rate", 140.0, "hot_metal_rate", 380.0, "top_gas_co", 23.0, "top_gas_co2", 21.0}
	})
	near(t, "fuel rate", kpiOf(t, bf.res[1], "fuel_rate").Value, 520, 1e-9)
	near(t, "eta CO", kpiOf(t, bf.res[1], "co_utilisation").Value, 21.0/44, 1e-5)

	cnc := newFeeder("cnc_machine", "cnc-1", map[string]float64{"ideal_cycle_time": 60})
	// running 3 s of 4 with spindle turning 2 of those; one part per 90 s
	cnc.run(1900, func(s int) []any {
		st, sp := 2.0, 8000.0
		if s%4 == 3 {
			st = 1
		}
		if s%4 == 2 {
			sp = 0
		}
		return []any{"program_state", st, "spindle_speed", sp, "part_count", float64(s / 90)}
	})
	u := kpiOf(t, cnc.res[1], "spindle_utilisation")
	near(t, "utilisation", u.Value, 0.5, 0.01)
	// 9 parts counted between the first and the last held sample of the window: 0.75 x 60 x 9 / 675
	near(t, "oee", kpiOf(t, cnc.res[1], "oee").Value, 0.6, 0.005)

	em := newFeeder("engineering_machine", "ex-1", nil)
	// engine hours +1 per 3600 s, idle +0.45 of that, fuel 20 L per engine hour
	em.run(1900, func(s int) []any {
		h := float64(s) / 3600
		return []any{"engine_hours", 1000 + h, "idle_hours", 300 + 0.45*h, "fuel_used", 5000 + 20*h}
	})
	ir := kpiOf(t, em.res[1], "idle_ratio")
	near(t, "idle ratio", ir.Value, 0.45, 1e-6)
	near(t, "fuel per hour", kpiOf(t, em.res[1], "fuel_per_hour").Value, 20, 1e-6)
	if ir.Status != StatusHigh {
		t.Fatalf("%+v", ir)
	}
}

func TestLowCoverageIsNotJudged(t *testing.T) {
	f := newFeeder("air_compressor", "ac-1", map[string]float64{"rated_specific_power": 6.2})
	// one batch every 2 minutes: the 60 s gap cap leaves coverage at 50 %
	f.tr.cfg.MinCoverage = 0.6
	for i := range 40 {
		f.run(1, func(int) []any { return []any{"input_power", 90.0, "free_air_delivery", 10.0, "load_state", 2.0} })
		f.ts += 119000
		_ = i
	}
	if len(f.alerts) != 0 {
		t.Fatalf("judged a sparse window: %+v", f.alerts)
	}
	if len(f.res) == 0 || kpiOf(t, f.res[1], "specific_power").Status != StatusNA {
		t.Fatalf("%+v", f.res)
	}
}

// TestCompressorAtPartLoadIsNotAFault: a healthy load/unload compressor half
// unloaded (62 kW / 10 m3/min loaded, 25 % of that unloaded) meets its rated
// 6.2 kW/(m3/min) while loaded; the part-load cost shows in
// system_specific_power (7.75) and loaded_ratio, never as a warning.
func TestCompressorAtPartLoadIsNotAFault(t *testing.T) {
	f := newFeeder("air_compressor", "ac-1", map[string]float64{"rated_specific_power": 6.2})
	f.run(3600, func(s int) []any {
		if s%2 == 1 {
			return []any{"input_power", 15.5, "free_air_delivery", 0.0, "load_state", 1.0}
		}
		return []any{"input_power", 62.0, "free_air_delivery", 10.0, "load_state", 2.0}
	})
	r := f.res[1]
	sp := kpiOf(t, r, "specific_power")
	near(t, "specific power", sp.Value, 6.2, 0.01)
	near(t, "system specific power", kpiOf(t, r, "system_specific_power").Value, 7.75, 0.01)
	if sp.Status != StatusOK || len(f.alerts) != 0 {
		t.Fatalf("specific power %+v, alerts %+v", sp, f.alerts)
	}
}

// TestClassInputsDistinct: classDef.input finds a class's inputs by a
// scan that returns the first of equal names, as the map per asset it
// replaced returned the last: the same only while no class lists a name
// twice.
func TestClassInputsDistinct(t *testing.T) {
	for name, def := range classes {
		for i, s := range def.signals {
			if j, ok := def.input(s); !ok || j != i {
				t.Errorf("class %s: input %q at %d, found at %d (%v)", name, s, i, j, ok)
			}
		}
		if _, ok := def.input("no such signal"); ok {
			t.Errorf("class %s: an unknown signal found", name)
		}
	}
}

// TestHandleFollowsReplacedEntry: ProcessAt through one Handle gives what
// Process gives while the asset changes class (its entry replaced), goes
// through a class without KPIs, and has its entry replaced behind the
// handle by a birth of another class; the handle never feeds an entry the
// tracker no longer holds.
func TestHandleFollowsReplacedEntry(t *testing.T) {
	steps := []struct {
		class string
		birth string // the class of a birth first (Tracker.Birth, no handle); "": none
	}{
		{class: "motor"}, {class: "air_compressor"}, {class: "no_such_class"}, {class: "no_such_class"},
		{class: "air_compressor"}, {class: "air_compressor", birth: "air_compressor"}, {class: "motor", birth: "motor"},
		{class: "motor", birth: "air_compressor"}, {class: "air_compressor"}, {class: "motor"},
	}
	plain, handled := New(Config{Window: time.Minute}), New(Config{Window: time.Minute})
	var h Handle
	var wantRes, gotRes []Result
	var wantAl, gotAl []alert.Alert
	ts := t0
	for i, st := range steps {
		if st.birth != "" {
			for _, tr := range []*Tracker{plain, handled} {
				tr.Birth(&telemetry.Birth{Asset: telemetry.AssetJSON{ID: "a-1", Class: st.birth, Path: []string{"acme", "site1"}},
					Nameplate: map[string]float64{"rated_power": 37, "rated_efficiency": 93}})
			}
		}
		for range 90 {
			b := &telemetry.Batch{Gateway: "gw", Asset: telemetry.Asset{ID: "a-1", Class: st.class, Path: []string{"acme", "site1"}}, TSGW: ts,
				Readings: []telemetry.Reading{{Signal: "power", Value: 30, TS: ts}, {Signal: "input_power", Value: 78, TS: ts},
					{Signal: "free_air_delivery", Value: 10, TS: ts}, {Signal: "load_state", Value: 2, TS: ts}}}
			wantRes, wantAl = plain.Process(b, wantRes, wantAl)
			gotRes, gotAl = handled.ProcessAt(&h, b, gotRes, gotAl)
			ts += 1000
		}
		want, wok := plain.Snapshot("site1", "a-1")
		got, gok := handled.Snapshot("site1", "a-1")
		if !reflect.DeepEqual(want, got) || wok != gok {
			t.Fatalf("step %d (%s): through the handle %+v %v, want %+v %v", i, st.class, got, gok, want, wok)
		}
		if h.a != nil && h.a != handled.assets[[2]string{"site1", "a-1"}] {
			t.Fatalf("step %d (%s): the handle holds an entry the tracker does not", i, st.class)
		}
	}
	if !reflect.DeepEqual(wantRes, gotRes) || !reflect.DeepEqual(wantAl, gotAl) {
		t.Fatalf("results through the handle differ:\n%+v\n%+v\nwant\n%+v\n%+v", gotRes, gotAl, wantRes, wantAl)
	}
	if len(wantRes) == 0 {
		t.Fatal("no window finished: the test checks nothing")
	}
}

// An entry replaced by RestoreAsset (same class) leaves a Handle to the
// old one stale: the next ProcessAt through it uses the restored entry.
func TestHandleFollowsRestoredEntry(t *testing.T) {
	tr := New(Config{Window: time.Minute})
	var h Handle
	batch := func(ts int64) *telemetry.Batch {
		return &telemetry.Batch{Gateway: "gw", Asset: telemetry.Asset{ID: "a-1", Class: "motor", Path: []string{"acme", "site1"}}, TSGW: ts,
			Readings: []telemetry.Reading{{Signal: "power", Value: 30, TS: ts}, {Signal: "input_power", Value: 78, TS: ts}}}
	}
	tr.ProcessAt(&h, batch(t0), nil, nil)
	st, ok := tr.Snapshot("site1", "a-1")
	if !ok {
		t.Fatal("no snapshot of the asset")
	}
	tr.RestoreAsset(&st)
	tr.ProcessAt(&h, batch(t0+1000), nil, nil)
	if h.a != tr.assets[[2]string{"site1", "a-1"}] {
		t.Fatal("the handle still holds the entry RestoreAsset replaced")
	}
}
