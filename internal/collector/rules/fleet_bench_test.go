package rules

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkProcessFleet is Process over a fleet of motors (12 signals, the
// default motor pack) evaluated round robin, one batch per asset per
// round, 15 s apart: with 10,000 assets the engine's state is far larger
// than the caches, as in the collector. Reports wall and CPU ns per
// reading (CPU time is steadier on a shared machine).
// motorFleet births assets motors (12 signals, the default motor pack)
// on a fresh engine and returns it with one batch per asset and observe,
// which evaluates the next batch of asset k (15 s after its last).
func motorFleet(b *testing.B, assets int) (h *harness, bs []*telemetry.Batch, observe func(k int, x *telemetry.Batch)) {
	sigs := []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "power_factor", "power", "frequency",
		"winding_temp", "bearing_temp", "vibration"}
	mean := []float64{400, 400, 400, 110, 110, 110, 0.86, 65, 50, 95, 60, 2}
	cl, _ := catalog.Default().Class("motor")
	h = newHarness(b, true, "")
	bs = make([]*telemetry.Batch, assets)
	for i := range bs {
		as := telemetry.Asset{ID: fmt.Sprintf("motor-%05d", i), Class: "motor", Path: []string{"bench", "plant", "area", "line", "_"}}
		bi := &telemetry.Birth{Gateway: "gw", Asset: as.ToJSON(), Nameplate: map[string]float64{"rated_power": 75, "rated_voltage": 400, "rated_current": 130}}
		x := &telemetry.Batch{Gateway: "gw", Asset: as, TSGW: t0}
		for j, s := range sigs {
			bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: s, Unit: cl.Signals[s].Unit, IntervalMS: 15_000})
			x.Readings = append(x.Readings, telemetry.Reading{Signal: s, Value: mean[j], Unit: cl.Signals[s].Unit, TS: t0})
		}
		h.e.Birth(bi, 0, nil)
		bs[i] = x
	}
	var out []alert.Alert
	observe = func(k int, x *telemetry.Batch) {
		x.Seq++
		x.TSGW += 15_000
		for j := range x.Readings {
			x.Readings[j].TS = x.TSGW
			x.Readings[j].Value = mean[j] * (1 + float64((k+j)%7-3)*0.001)
		}
		out = h.e.Process(x, 0, out[:0])
	}
	return h, bs, observe
}

// BenchmarkProcessFleet is Process over a fleet of motors (12 signals, the
// default motor pack) evaluated round robin, one batch per asset per
// round, 15 s apart: with 10,000 assets the engine's state is far larger
// than the caches, as in the collector. Reports wall and CPU ns per
// reading (CPU time is steadier on a shared machine).
func BenchmarkProcessFleet(b *testing.B) {
	for _, assets := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("assets=%d", assets), func(b *testing.B) {
			_, bs, observe := motorFleet(b, assets)
			for k, x := range bs { // every asset warm
				observe(k, x)
			}
			i := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				observe(i, bs[i%len(bs)])
				i++
			}
			n := len(bs[0].Readings)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*n), "cpu-ns/reading")
		})
	}
}

// BenchmarkAppendBinaryFleet is the rule state's part of a checkpoint
// record (AppendBinary) over the fleet of BenchmarkProcessFleet, warm
// (every asset evaluated 20 times), one asset after the other as a
// checkpoint writes them: with 10,000 assets each one is cold in memory.
// Reports CPU ns per record.
func BenchmarkAppendBinaryFleet(b *testing.B) {
	for _, assets := range []int{100, 10_000} {
		h, bs, observe := motorFleet(b, assets)
		for k := range 20 {
			for _, x := range bs {
				observe(k, x)
			}
		}
		for _, x := range bs { // the birth part encoded and kept
			h.e.AppendBinary(nil, x.Asset.Site(), x.Asset.ID)
		}
		b.Run(fmt.Sprintf("assets=%d", assets), func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			i := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				x := bs[i%len(bs)]
				buf, _ = h.e.AppendBinary(buf[:0], x.Asset.Site(), x.Asset.ID)
				i++
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/record")
		})
	}
}

// cpuTime is the process's user and system CPU time in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
