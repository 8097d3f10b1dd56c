package kpi

import (
	"math"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/collector/alert"
)

// An Ultramax bulk carrier: 63 500 DWT, main engine SMCR 8 600 kW at
// 117 /min with a shop-test SFOC of 167 g/kWh (ISO LCV 42.7 MJ/kg).
var ultramax = map[string]float64{"rated_power": 8600, "rated_speed": 117, "rated_sfoc": 167, "capacity": 63500, "ship_type": 1}

// TestShipFormulas checks the formulas against values computed by hand
// from the IMO documents.
func TestShipFormulas(t *testing.T) {
	// SFOC: 1 000 kg/h at 6 000 kW = 166.667 g/kWh; on HFO (LCV 40.2
	// MJ/kg) that is 166.667 x 40.2 / 42.7 = 156.909 g/kWh at ISO LCV.
	near(t, "SFOC", SFOC(1000, 6000), 166.6667, 1e-4)
	near(t, "SFOC at ISO LCV", SFOCAtISO(SFOC(1000, 6000), 40.2), 156.9087, 1e-4)
	// CO2 = FC x C_F: 10 t HFO x 3.114 = 31.14 t (MEPC.308(73) 2.2.1 C_F).
	near(t, "CO2 HFO", CO2(10, 3.114), 31.14, 1e-12)
	// EEOI, MEPC.1/Circ.684 section 3 (one voyage): 31.14 t CO2 carrying
	// 25 000 t over 300 nm: 31.14e6 g / 7.5e6 t nm = 4.152 g/(t nm).
	near(t, "EEOI", EEOI(31.14, 25000*300), 4.152, 1e-12)
	// Attained CII, MEPC.352(78) 2.1: M / (DWT x D_t): 20 000 t CO2 over
	// 60 000 nm for 63 500 DWT: 2e10 / 3.81e9 = 5.2493 g/(t nm).
	near(t, "attained CII", AttainedCII(20000, 63500, 60000), 5.249344, 1e-6)
	// Required CII, MEPC.353(78) Table 1 (bulk carrier a = 4745, c = 0.622)
	// with Z = 11 % for 2026 (MEPC.338(76)): 0.89 x 4745 x 63500^-0.622 =
	// 4.34811 g/(t nm).
	req, b, ok := RequiredCII(ShipBulkCarrier, 63500, 2026)
	if !ok {
		t.Fatal("bulk carrier required CII not ok")
	}
	near(t, "required CII 2026", req, 4.348114, 1e-5)
	// 279 000 DWT and above uses 279 000 as capacity: 0.89 x 4745 x 279000^-0.622 = 1.73165
	req2, _, _ := RequiredCII(ShipBulkCarrier, 400000, 2026)
	near(t, "required CII capped", req2, 1.731651, 1e-5)
	// container ship a = 1984, c = 0.489: 0.89 x 1984 x 150000^-0.489 = 5.19784
	req3, _, _ := RequiredCII(ShipContainer, 150000, 2026)
	near(t, "required CII container", req3, 5.197842, 1e-5)
	// rating boundaries of bulk carriers, MEPC.354(78) Table 1: 0.86 0.94 1.06 1.18
	for _, tc := range []struct {
		ratio float64
		want  string
	}{{0.80, "A"}, {0.90, "B"}, {1.00, "C"}, {1.10, "D"}, {1.20, "E"}} {
		if got := CIIRating(tc.ratio*req, req, b); got != tc.want {
			t.Errorf("rating at %v x required = %s, want %s", tc.ratio, got, tc.want)
		}
	}
	if _, _, ok := RequiredCII(9, 63500, 2026); ok {
		t.Error("unknown ship type gave a required CII")
	}
	if _, _, ok := RequiredCII(ShipBulkCarrier, 63500, 2019); ok {
		t.Error("a year before 2023 gave a required CII")
	}
}

// TestShipAtSea runs the Ultramax at sea for six 15 min windows: main
// engine 1 000 kg/h HFO at 6 000 kW, auxiliaries 150 kg/h MDO, 14 kn, 60 000
// t of cargo.
func TestShipAtSea(t *testing.T) {
	f := newFeeder("ship", "mv-1", ultramax)
	f.run(6*900+1, func(int) []any {
		return []any{"me_fuel_flow", 1000.0, "shaft_power", 6000.0, "ae_fuel_flow", 150.0, "boiler_fuel_flow", 0.0,
			"me_fuel_type", 3.0, "ae_fuel_type", 5.0, "boiler_fuel_type", 5.0, "sog", 14.0, "cargo", 60000.0}
	})
	if len(f.res) != 6 {
		t.Fatalf("%d windows, want 6", len(f.res))
	}
	w := f.res[1]
	sfoc := kpiOf(t, w, "sfoc")
	// 166.667 g/kWh measured; reference 167 x 42.7 / 40.2 = 177.386 on the
	// HFO actually burnt; limit at load x = 6000/8600 = 0.69767: 1.05 plus
	// the part-load allowance 0.2 (x - 0.8)^2 = 0.0020941, so 167 x
	// 1.0520941 x 42.7 / 40.2 = 186.626
	near(t, "sfoc", sfoc.Value, 166.667, 1e-3)
	near(t, "sfoc ref", *sfoc.Ref, 177.3856, 1e-3)
	near(t, "sfoc limit", *sfoc.Limit, 186.6263, 1e-3)
	if sfoc.Status != StatusOK {
		t.Errorf("sfoc %+v", sfoc)
	}
	// fuel per nm: (1 000 + 150) kg/h / 14 kn = 82.143 kg/nm
	near(t, "fuel per nm", kpiOf(t, w, "fuel_per_nm").Value, 82.1429, 1e-3)
	// CO2 per window: (1 000 x 3.114 + 150 x 3.206) kg/h = 3 594.9 kg/h
	// over the 899 s integrated in a window (the first batch of a window
	// opens it): 3 594.9 x 899 / 3600 / 1000 = 0.897725 t
	near(t, "co2", kpiOf(t, w, "co2").Value, 0.897725, 1e-5)
	// the leg has run since the first data: 2 x 899 s at 14 kn = 6.99 nm,
	// short of the 20 nm from which the leg's CII is judged
	near(t, "leg distance", kpiOf(t, w, "leg_distance").Value, 2*899*14/3600.0, 1e-4)
	if v := kpiOf(t, w, "cii"); v.Status != StatusNA {
		t.Errorf("cii after 7 nm = %+v, want n/a", v)
	}
	// EEOI, MEPC.1/Circ.684: 3 594.9 kg/h CO2 / (60 000 t x 14 kn) =
	// 4.27964 g/(t nm), whatever the leg's length
	near(t, "eeoi", kpiOf(t, w, "eeoi").Value, 4.279643, 1e-5)
	last := f.res[5]
	near(t, "leg distance after 6 windows", kpiOf(t, last, "leg_distance").Value, 6*899*14/3600.0, 1e-4)
	// attained CII of the leg: 3 594.9e3 g/h / (63 500 t x 14 kn) = 4.04376
	// g/(t nm); required for 2023 (the test clock's year, Z = 5 %):
	// 0.95 x 4745 x 63500^-0.622 = 4.64125, upper boundary 1.06 x that =
	// 4.91972; 4.04376 / 4.64125 = 0.871: rating B
	cii := kpiOf(t, last, "cii")
	near(t, "cii", cii.Value, 4.043757, 1e-5)
	near(t, "cii required", *cii.Ref, 4.641246, 1e-5)
	near(t, "cii limit", *cii.Limit, 4.919720, 1e-5)
	if cii.Status != StatusOK || len(f.alerts) != 0 {
		t.Errorf("cii %+v, alerts %+v", cii, f.alerts)
	}
}

// TestShipLegAndAlerts: a stay at berth ends the leg at the next departure;
// a ballast leg has no EEOI; a fuel of unknown type leaves CO2 unjudged;
// an SFOC far above the shop test raises a warning.
func TestShipLegAndAlerts(t *testing.T) {
	f := newFeeder("ship", "mv-2", ultramax)
	port := func(int) []any {
		return []any{"me_fuel_flow", 0.0, "shaft_power", 0.0, "ae_fuel_flow", 200.0, "boiler_fuel_flow", 100.0,
			"me_fuel_type", 3.0, "ae_fuel_type", 5.0, "boiler_fuel_type", 5.0, "sog", 0.0, "cargo", 0.0}
	}
	sea := func(meFuel float64) func(int) []any {
		return func(int) []any {
			return []any{"me_fuel_flow", meFuel, "shaft_power", 6000.0, "ae_fuel_flow", 150.0, "boiler_fuel_flow", 0.0,
				"me_fuel_type", 3.0, "ae_fuel_type", 5.0, "boiler_fuel_type", 5.0, "sog", 12.0, "cargo", 0.0}
		}
	}
	f.run(1900, port) // 1 900 s at berth: longer than the 1 800 s stay
	portWin := f.res[1]
	// in port: no SFOC (engine stopped), no fuel per mile, CO2 of
	// auxiliaries and boiler: 300 kg/h MDO x 3.206 x 899 s = 0.240183 t
	for _, n := range []string{"sfoc", "fuel_per_nm", "eeoi", "cii"} {
		if v := kpiOf(t, portWin, n); v.Status != StatusNA {
			t.Errorf("%s at berth = %+v, want n/a", n, v)
		}
	}
	near(t, "co2 at berth", kpiOf(t, portWin, "co2").Value, 300*3.206*899/3600/1000, 1e-6)
	// departure at 12 kn in ballast, with the main engine burning 1 300
	// kg/h at 6 000 kW: 216.667 g/kWh, above the limit of 186.626
	n0 := len(f.res)
	f.run(2*900, sea(1300))
	w := f.res[n0+1]
	if v := kpiOf(t, w, "sfoc"); v.Status != StatusHigh || !strings.Contains(v.Message, "216.7") && !strings.Contains(v.Message, "217") {
		t.Errorf("sfoc %+v", v)
	}
	if len(f.alerts) != 1 || f.alerts[0].Rule != "kpi_sfoc" || f.alerts[0].Severity != alert.Warn {
		t.Fatalf("alerts %+v", f.alerts)
	}
	// the new leg started at departure: the 7 s of the first window's
	// end at sea plus two windows of 899 s, not the berth's zero miles
	// before it; its distance is all at 12 kn
	legNM := kpiOf(t, w, "leg_distance").Value
	if legNM < 899*12/3600.0 || legNM > (2*899+100)*12/3600.0 {
		t.Errorf("leg distance %v nm", legNM)
	}
	if v := kpiOf(t, w, "eeoi"); v.Status != StatusNA {
		t.Errorf("eeoi in ballast = %+v, want n/a", v)
	}
	// a fuel code that is not a ship fuel (1 = natural gas for boilers)
	f2 := newFeeder("ship", "mv-3", ultramax)
	f2.run(1900, func(int) []any {
		return []any{"me_fuel_flow", 1000.0, "shaft_power", 6000.0, "me_fuel_type", 1.0, "sog", 14.0, "cargo", 1000.0}
	})
	if v := kpiOf(t, f2.res[1], "co2"); v.Status != StatusNA {
		t.Errorf("co2 with an unknown fuel = %+v, want n/a", v)
	}
	if v := kpiOf(t, f2.res[1], "eeoi"); v.Status != StatusNA || math.IsNaN(v.Value) {
		t.Errorf("eeoi with an unknown fuel = %+v, want n/a", v)
	}
}
