package kpi

import (
	"fmt"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkTrackerBirth is Birth of assets not seen before, every catalog
// class in turn, each birth listing all its class's signals (the
// collector's first touch of a fleet): about 1.5 µs, a small part of a
// birth's cost besides the rules engine's (rules.BenchmarkBirthFleet).
func BenchmarkTrackerBirth(b *testing.B) {
	cat := catalog.Default()
	var births []*telemetry.Birth
	for _, class := range cat.ClassNames() {
		cl, _ := cat.Class(class)
		bi := &telemetry.Birth{Gateway: "gw", TSGW: t0, Asset: telemetry.AssetJSON{Class: class, Path: []string{"acme", "site1"}}}
		if len(cl.Nameplate) > 0 {
			bi.Nameplate = map[string]float64{}
			for i, r := range cl.Nameplate {
				bi.Nameplate[r] = float64(10 + i)
			}
		}
		for _, name := range cl.SignalNames() {
			s := cl.Signals[name]
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: name, Unit: s.Unit, Min: s.Min, Max: s.Max, IntervalMS: 15_000})
		}
		births = append(births, bi)
	}
	tr := New(Config{Window: 15 * time.Minute, Catalog: cat})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%10_000 == 0 {
			tr = New(Config{Window: 15 * time.Minute, Catalog: cat})
		}
		bi := births[i%len(births)]
		bi.Asset.ID = fmt.Sprintf("a-%07d", i)
		tr.Birth(bi)
		i++
	}
}
