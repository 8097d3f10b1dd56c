package rules

import (
	"fmt"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkBirthFleet is Birth of assets not seen before (the first-touch
// work: the asset's state, a state per signal, the rules selected for each)
// with the default packs, over every catalog class in turn, as when a
// collector starts and 10,000 gateways' assets announce themselves.
// Reports CPU ns per birth and per signal.
func BenchmarkBirthFleet(b *testing.B) {
	cat := catalog.Default()
	var births []*telemetry.Birth
	sigs := 0
	for _, class := range cat.ClassNames() {
		cl, _ := cat.Class(class)
		bi := &telemetry.Birth{Gateway: "gw", TSGW: t0, Asset: telemetry.AssetJSON{Class: class, Path: []string{"bench", "plant", "area", "line", "_"}}}
		if len(cl.Nameplate) > 0 {
			bi.Nameplate = map[string]float64{}
			for i, r := range cl.Nameplate {
				bi.Nameplate[r] = float64(10 + i)
			}
		}
		for _, name := range cl.SignalNames() {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: name, Unit: cl.Signals[name].Unit, IntervalMS: 15_000})
		}
		births = append(births, bi)
		sigs += len(bi.Signals)
	}
	h := newHarness(b, true, "")
	var out []alert.Alert
	b.ReportAllocs()
	cpu0 := cpuTime()
	i := 0
	for b.Loop() {
		if i%10_000 == 0 { // a fresh engine now and then: its maps stay the size of a fleet
			b.StopTimer()
			h = newHarness(b, true, "")
			b.StartTimer()
		}
		bi := births[i%len(births)]
		bi.Asset.ID = fmt.Sprintf("a-%07d", i)
		out = h.e.Birth(bi, 0, out[:0])
		i++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/birth")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)*float64(len(births))/float64(sigs), "cpu-ns/signal")
}
