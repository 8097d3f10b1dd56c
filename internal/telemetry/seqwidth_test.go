package telemetry

import (
	"fmt"
	"testing"
)

// BenchmarkSeqWidth: what a seq of 16 digits (a spool created after the
// seq floor, Unix microseconds: spool.SeqFloor) costs a small batch over
// one of 5 digits, encoded by the gateway and decoded by the collector,
// and in its Nats-Msg-Id. docs/benchmarks.md.
func BenchmarkSeqWidth(b *testing.B) {
	for _, seq := range []uint64{18231, 1796087622892624} {
		bt := Batch{Gateway: "gw-jinan-01", Seq: seq, TSGW: 1763812345123,
			Asset: Asset{ID: "ac-1", Class: "air_compressor", Path: []string{"acme", "jinan", "utilities", "_", "_"}},
			Readings: []Reading{
				{Signal: "discharge_pressure", Value: 0.7, Unit: "MPa", TS: 1763812345101, Src: "modbus:1:hr:0"},
				{Signal: "discharge_temp", Value: 81.5, Unit: "Cel", TS: 1763812345101, Src: "modbus:1:hr:1"},
				{Signal: "input_power", Value: 61.2, Unit: "kW", TS: 1763812345101, Src: "modbus:1:hr:2"},
			}}
		data := bt.AppendJSON(nil)
		b.Run(fmt.Sprintf("encode/digits=%d", len(fmt.Sprint(seq))), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				buf = bt.AppendJSON(buf[:0])
			}
			b.ReportMetric(float64(len(buf)), "bytes/batch")
		})
		b.Run(fmt.Sprintf("decode/digits=%d", len(fmt.Sprint(seq))), func(b *testing.B) {
			b.ReportAllocs()
			var into Batch
			for b.Loop() {
				if err := DecodeBatchInto(&into, data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("msgid/digits=%d", len(fmt.Sprint(seq))), func(b *testing.B) {
			b.ReportAllocs()
			var id string
			for b.Loop() {
				id = bt.MsgID()
			}
			b.ReportMetric(float64(len(id)), "bytes/id")
		})
	}
}
