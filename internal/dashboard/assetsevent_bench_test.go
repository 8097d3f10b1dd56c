package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkAssetsEvents is one tick of the assets events that follow a
// stream's first, for streams=N open streams: a store of 10,000 assets
// (4 signals each) of which 2,000 changed since the tick before, then
// every stream writes its event of the changes since its version (the
// streams connected together, so all at one version). ns/op and allocs
// are the tick's, storing the 2,000 batches included; bytes/stream is
// one stream's event. Before the events were shared (changeChain), each
// stream encoded its own: N encodings a tick; now one serves them all.
func BenchmarkAssetsEvents(b *testing.B) {
	const assets, changed = 10_000, 2_000
	for _, streams := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			live := NewLive(nil)
			src := &fleet{}
			sigs := []string{"power", "current", "voltage", "winding_temp"}
			for i := range assets {
				av := rules.AssetView{Site: "s1", ID: fmt.Sprintf("m-%05d", i), Class: "motor", Running: true, LastTS: 1,
					Path: []string{"acme", "s1", "line", "_", "_"}}
				for _, s := range sigs {
					av.Signals = append(av.Signals, rules.SignalView{Signal: s, Value: 12.5, Valid: true, Unit: "kW", Quality: "good", TS: 1})
				}
				src.assets = append(src.assets, av)
			}
			s := New(src, live, Options{Tick: time.Hour}) // the ticks here are faster than real ones
			batch := func(i int, ts int64) {
				live.ObserveBatch(&telemetry.Batch{Gateway: "gw-1", Seq: uint64(ts), TSGW: ts,
					Asset:    telemetry.Asset{ID: fmt.Sprintf("m-%05d", i), Class: "motor", Path: []string{"acme", "s1", "line", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "power", Value: 12.5, Unit: "kW", TS: ts}}})
			}
			for i := range assets {
				batch(i, 1)
			}
			vs := make([]uint64, streams)
			cur := live.Version()
			for i := range vs {
				vs[i] = cur
			}
			outs := make([]*sseWriter, streams)
			for i := range outs {
				outs[i] = &sseWriter{stats: s.opts.Streams}
			}
			next, ts, sent, ticks := 0, int64(1), 0, 0
			b.ReportAllocs()
			for b.Loop() {
				ts++
				for range changed {
					batch(next, ts)
					next = (next + 7) % assets // 7 is prime to 10,000
				}
				sent += tickStreams(outs, vs, s.writeChanges)
				ticks++
			}
			b.ReportMetric(float64(sent)/float64(ticks), "bytes/stream")
		})
	}
}

// BenchmarkGatewayDeltaEvents is one tick of the gateways.delta events
// for streams=N delta streams at one version: 10,000 gateways, each
// sending a batch every tick (1 s of the store's clock), so a delta
// carries the fifth due for its refresh (~2,000 gateways, ~350 KB).
// ns/op and allocs are the tick's, storing the batches included. Before
// the deltas were shared, each stream built and encoded its own.
func BenchmarkGatewayDeltaEvents(b *testing.B) {
	const gateways = 10_000
	for _, streams := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			var clock int64 = 1_796_047_200_000
			live := NewLive(func() time.Time { return time.UnixMilli(clock) })
			s := New(&fleet{}, live, Options{Tick: time.Hour}) // the ticks here are faster than real ones
			seq := uint64(0)
			publish := func() {
				for i := range gateways {
					seq++
					live.ObserveBatch(&telemetry.Batch{Gateway: gwName(i), Seq: seq, TSGW: clock,
						Asset:    telemetry.Asset{ID: "m-" + gwName(i), Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}},
						Readings: []telemetry.Reading{{Signal: "power", Value: 1, Unit: "kW", TS: clock}}})
				}
			}
			publish()
			_, _, cur := live.GatewaySnapshot()
			vs := make([]uint64, streams)
			outs := make([]*sseWriter, streams)
			for i := range outs {
				vs[i], outs[i] = cur, &sseWriter{stats: s.opts.Streams}
			}
			sent, ticks := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				clock += 1000
				publish()
				sent += tickStreams(outs, vs, s.writeGatewayDelta)
				ticks++
			}
			b.ReportMetric(float64(sent)/float64(ticks), "bytes/stream")
		})
	}
}

// tickStreams runs one tick's write for every stream at its version
// (vs, updated) and returns the bytes the first one queued.
func tickStreams(outs []*sseWriter, vs []uint64, write func(*sseWriter, uint64) uint64) int {
	sent := 0
	for i, out := range outs {
		vs[i] = write(out, vs[i])
		if i == 0 {
			sent = out.buf.Len()
			for _, p := range out.pending {
				sent += len(p)
			}
		}
		clear(out.pending)
		out.pending = out.pending[:0]
		out.buf.Reset()
	}
	return sent
}
