package kpi

import (
	"fmt"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkTrackerProcess integrates one batch per op, round robin over a
// fleet of motors whose batches carry 12 signals, 4 of them the class's
// KPI inputs (the motors of BenchmarkIngest): with 10,000 assets the
// per-asset state is far out of the cache, as in the collector.
func BenchmarkTrackerProcess(b *testing.B) {
	signals := []string{"power", "current_a", "current_b", "current_c", "voltage", "speed",
		"torque", "temp_winding", "temp_bearing_de", "temp_bearing_nde", "vibration_de", "vibration_nde"}
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("assets=%d", n), func(b *testing.B) {
			tr := New(Config{Window: 15 * time.Minute})
			batches := make([]telemetry.Batch, n)
			for i := range batches {
				bt := &batches[i]
				bt.Asset = telemetry.Asset{ID: fmt.Sprintf("m-%05d", i), Class: "motor", Path: []string{"acme", "site1"}}
				for j, s := range signals {
					bt.Readings = append(bt.Readings, telemetry.Reading{Signal: s, Value: float64(10 + j), Quality: telemetry.QualityGood})
				}
				tr.Birth(&telemetry.Birth{Asset: bt.Asset.ToJSON(), Nameplate: map[string]float64{"rated_power": 75}})
			}
			b.ReportAllocs()
			ts, i := t0, 0
			for b.Loop() {
				bt := &batches[i]
				bt.TSGW = ts
				tr.Process(bt, nil, nil)
				if i++; i == n {
					i, ts = 0, ts+1000
				}
			}
		})
	}
}
