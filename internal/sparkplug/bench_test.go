package sparkplug

import (
	"fmt"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// benchBatch is a 20-reading batch like a compressor's poll cycle.
func benchBatch() *telemetry.Batch {
	b := &telemetry.Batch{Gateway: "gw-jinan-01", Seq: 18231, TSGW: 1763812345123,
		Asset: telemetry.Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "jinan", "utilities", "compressors", "_"}}}
	for i := range 20 {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("signal_%02d", i), Value: 1183.5 + float64(i), Unit: "Cel",
			TS: 1763812345101, Src: fmt.Sprintf("modbus:3:hr:%d", i*2)})
	}
	return b
}

// BenchmarkEncodePerReading compares the cost of encoding one 20-reading
// batch as Smelter JSON (telemetry.Batch.AppendJSON) and as a Sparkplug B
// DDATA (Node.Translate: JSON decode of the spooled batch, alias lookup,
// protobuf encode). ns/op and B/op are per batch; divide by 20 for a
// reading (docs/benchmarks.md).
func BenchmarkEncodePerReading(b *testing.B) {
	batch := benchBatch()
	b.Run("json", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		b.ReportAllocs()
		for b.Loop() {
			buf = batch.AppendJSON(buf[:0])
		}
		b.ReportMetric(float64(len(buf))/20, "wire-bytes/reading")
	})
	// the part of sparkplug_ddata that reads the spooled JSON batch
	b.Run("json_decode", func(b *testing.B) {
		data := batch.AppendJSON(nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := telemetry.DecodeBatch(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sparkplug_ddata", func(b *testing.B) {
		n, _ := NewNode("plant", "gw-jinan-01")
		if _, err := n.Birth(0, 1); err != nil {
			b.Fatal(err)
		}
		env := telemetry.Envelope{Subject: telemetry.AssetSubject(batch.Asset, telemetry.KindData), Data: batch.AppendJSON(nil)}
		if _, err := n.Translate(&env, 1); err != nil { // DBIRTH + first DDATA
			b.Fatal(err)
		}
		var size int
		b.ReportAllocs()
		for b.Loop() {
			out, err := n.Translate(&env, 2)
			if err != nil || len(out) != 1 {
				b.Fatal(err, len(out))
			}
			size = len(out[0].Payload)
		}
		b.ReportMetric(float64(size)/20, "wire-bytes/reading")
	})
}
