package demo

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/dashboard"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/fleet"
)

// TestFaultFreeHourAtSpeed60 runs the demo as `smelter-demo -speed 60
// -scenario ""` does (default -start, the demo's own poll interval and KPI
// windows, Modbus and OPC UA devices): one simulated hour takes a minute.
// A working morning raises no alert at all, keeps the machines busy, and
// every class gets KPI values.
func TestFaultFreeHourAtSpeed60(t *testing.T) {
	if testing.Short() {
		t.Skip("a simulated hour takes about a minute")
	}
	start, err := fleet.ParseStart(DefaultStart, time.Now(), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("../..")
	d := New(Options{FleetPath: filepath.Join(root, "configs/sim-fleet.yaml"), DataDir: t.TempDir(), Seed: -1,
		Speed: 60, Start: start})
	startRun(t, d)
	col := d.Collector()
	elapsed := func() time.Duration { return d.Fleet().Now().Sub(start) }

	// what a user sees on a working morning
	busy := map[string]bool{}
	check := func(id, signal string, ok func(float64) bool) {
		for _, a := range col.Assets() {
			if a.ID != id {
				continue
			}
			for _, s := range a.Signals {
				if s.Signal == signal && s.Valid && ok(s.Value) {
					busy[id+"."+signal] = true
				}
			}
		}
	}
	kpiClasses := map[string]bool{}
	wait.For(t, 8*time.Minute, "two simulated hours", func() bool {
		check("dg-1", "power", func(v float64) bool { return v > 200 })
		check("cnc-1", "spindle_speed", func(v float64) bool { return v > 1000 })
		check("ex-1", "engine_speed", func(v float64) bool { return v > 1500 })
		check("ac-1", "load_state", func(v float64) bool { return v == 2 })
		check("ac-2", "load_state", func(v float64) bool { return v == 2 })
		check("pv-1", "irradiance_poa", func(v float64) bool { return v > 150 })
		check("pv-1", "ac_power", func(v float64) bool { return v > 1 })
		for _, a := range col.Assets() {
			if r, ok := col.KPIs(a.Site, a.ID); ok {
				for _, k := range r.KPIs {
					if k.Status != "n/a" {
						kpiClasses[a.Class] = true
					}
				}
			}
		}
		if got := col.Alerts(false); len(got) > 0 {
			t.Fatalf("fault-free run raised alerts after %v simulated:\n%s", elapsed(), describe(alertsByAsset(col)))
		}
		// the excavator's 1 h window (10:00-11:00) closes with the first
		// batch after it; a user watches the first two plant hours
		return elapsed() >= 2*time.Hour
	})
	for _, want := range []string{"dg-1.power", "cnc-1.spindle_speed", "ex-1.engine_speed", "ac-1.load_state",
		"ac-2.load_state", "pv-1.irradiance_poa", "pv-1.ac_power"} {
		if !busy[want] {
			t.Errorf("%s never showed a working plant in the first simulated hour from %s", want, start.Format("15:04"))
		}
	}
	var missing []string
	for _, c := range catalog.Default().ClassNames() {
		if c != "generic" && !kpiClasses[c] {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no KPI value within the first two simulated hours for: %s", strings.Join(missing, ", "))
	}
	if got := col.Alerts(false); len(got) > 0 {
		t.Errorf("fault-free run raised alerts:\n%s", describe(alertsByAsset(col)))
	}
	// every asset right on the dashboard at this speed: ages on the plant
	// clock, never negative, nobody silent or stale
	resp, err := http.Get(d.URLs().Dashboard + "api/v1/assets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Assets []dashboard.AssetOut `json:"assets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if len(r.Assets) != len(d.Fleet().Devices()) {
		t.Errorf("dashboard lists %d assets, fleet has %d", len(r.Assets), len(d.Fleet().Devices()))
	}
	for _, a := range r.Assets {
		if a.Status != dashboard.StatusOK || a.Silent || a.AgeMS < 0 || a.AgeMS > time.Minute.Milliseconds() || a.ClockRate < 30 {
			t.Errorf("%s: status %s silent %v age %d ms clock rate %v", a.ID, a.Status, a.Silent, a.AgeMS, a.ClockRate)
		}
		for _, sg := range a.Signals {
			if sg.AgeMS < 0 || sg.TS > a.DataNow {
				t.Errorf("%s.%s: ts %d after the data clock %d (age %d)", a.ID, sg.Signal, sg.TS, a.DataNow, sg.AgeMS)
			}
		}
	}
}
