package forward

import (
	"testing"

	"github.com/smelterio/smelter/internal/spool"
)

// BenchmarkBuild: the sender's per-Next work on the live path, 64 spooled
// data batches of 100 readings (about 10 KB each) turned into envelopes
// (no limit to fit, nothing historical).
//
//	go test -run '^$' -bench Build -benchmem ./internal/forward
func BenchmarkBuild(b *testing.B) {
	data := batch(100).AppendJSON(nil)
	recs := make([]spool.Record, 64)
	items := make([]item, len(recs))
	for i := range recs {
		recs[i] = spool.Record{Seq: uint64(i + 1), Subject: dataSubj, Data: data}
		items[i] = item{idx: i}
	}
	s := newSender(New(limitOnly(0), nil, nil, Options{Gateway: gw}))
	b.ReportAllocs()
	for b.Loop() {
		s.build(recs, items)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
