package ingest

import "testing"

// BenchmarkDedup is the hot path: one gateway's seqs in order with a
// redelivery now and then, and a second lane (historical replay) behind.
func BenchmarkDedup(b *testing.B) {
	for _, lanes := range []int{1, 2} {
		b.Run(map[int]string{1: "live", 2: "live+historical"}[lanes], func(b *testing.B) {
			d := NewDedup(16384)
			live, hist := uint64(1_000_000), uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				d.Seen("gw-1", live)
				live++
				if lanes == 2 {
					d.Seen("gw-1", hist)
					hist++
				}
			}
		})
	}
}
