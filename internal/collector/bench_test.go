package collector

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// benchPayloads builds encoded batches for assets of several classes:
// motors (12 signals), diesel engines (14) and PV strings (7) are padded
// with extra generic-looking signals to the wanted batch size.
func benchPayloads(assets, readings, batches int) [][]byte {
	classes := []struct {
		class string
		sigs  []string
		mean  []float64
	}{
		{"motor", []string{"voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "power_factor", "power", "frequency", "winding_temp", "bearing_temp", "vibration"},
			[]float64{400, 400, 400, 110, 110, 110, 0.86, 65, 50, 95, 60, 2}},
		{"diesel_engine", []string{"speed", "load", "fuel_rate", "lube_oil_pressure", "coolant_temp", "exhaust_temp_cyl_1", "exhaust_temp_cyl_2", "exhaust_temp_cyl_3",
			"exhaust_temp_cyl_4", "exhaust_temp_cyl_5", "exhaust_temp_cyl_6", "boost_pressure", "power", "run_hours"},
			[]float64{1500, 75, 160, 420, 82, 410, 405, 415, 400, 412, 408, 180, 750, 1200}},
		{"air_compressor", []string{"discharge_pressure", "discharge_temp", "input_power", "free_air_delivery", "load_state", "dew_point"},
			[]float64{0.75, 82, 70, 11.5, 2, 3}},
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var out [][]byte
	seq := uint64(0)
	for bi := range batches {
		for a := range assets {
			c := classes[a%len(classes)]
			ts := int64(1_763_812_345_000) + int64(bi)*1000
			b := &telemetry.Batch{Gateway: fmt.Sprintf("gw-%02d", a%4), Asset: telemetry.Asset{ID: fmt.Sprintf("%s-%d", c.class, a), Class: c.class,
				Path: []string{"acme", "plant", "area", "line", "_"}}, TSGW: ts}
			seq++
			b.Seq = seq
			for i := range readings {
				k := i % len(c.sigs)
				name := c.sigs[k]
				if i >= len(c.sigs) { // a bigger asset: more sensors of the same kinds
					name = fmt.Sprintf("%s_%d", c.sigs[k], i/len(c.sigs))
				}
				b.Readings = append(b.Readings, telemetry.Reading{Signal: name, Value: c.mean[k] * (1 + rng.NormFloat64()*0.005), Unit: "", TS: ts,
					Src: fmt.Sprintf("modbus:1:hr:%d", 40001+2*i)})
			}
			out = append(out, b.AppendJSON(nil))
		}
	}
	return out
}

// BenchmarkPipeline measures decode + dedup + rule evaluation with the
// default packs on one goroutine, reporting readings/s and allocs/reading.
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{20, 50, 100} {
		b.Run(fmt.Sprintf("readings=%d", n), func(b *testing.B) {
			cat := catalog.Default()
			d, err := rules.DefaultPacks(cat)
			if err != nil {
				b.Fatal(err)
			}
			eng := rules.New(rules.Merge(d...), cat, rules.Options{Now: func() int64 { return 0 }})
			dd := ingest.NewDedup(16384)
			payloads := benchPayloads(30, n, 200)
			var out []alert.Alert
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				bt, err := telemetry.DecodeBatch(payloads[i%len(payloads)])
				if err != nil {
					b.Fatal(err)
				}
				i++
				if dup, _ := dd.Seen(bt.Gateway, bt.Seq+uint64(i/len(payloads))*1e6); dup {
					b.Fatal("dup")
				}
				if i%len(payloads) == 0 { // replay the data set later in time
					eng = rules.New(rules.Merge(d...), cat, rules.Options{Now: func() int64 { return 0 }})
				}
				out = eng.Process(bt, out[:0])
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
