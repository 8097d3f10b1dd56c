package collector

import (
	"context"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// One bogus but in-range seq far ahead of a gateway's real ones must not
// silence the asset: docs/collector.md's TestDedupJumpDoesNotPoison
// promise, end to end through Handle (ingest.Dedup and the engine's
// redelivery check together). A redelivery of the newest batch is still
// a duplicate.
func TestHandleSeqJumpDoesNotPoisonAsset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seqs  []uint64
		bogus int // index of the bogus seq
	}{
		{"2^50 between", []uint64{300, 1 << 50, 301, 302, 303}, 1},
		{"2^53-1 first", []uint64{1<<53 - 1, 200, 201}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Rules.Files = nil
			c := newCollector(t, cfg)
			ctx := context.Background()
			ts := int64(1_763_812_345_000)
			batch := func(seq uint64) []byte {
				b := &telemetry.Batch{Gateway: "gw-atk", Seq: seq, TSGW: ts,
					Asset:    telemetry.Asset{ID: "ra-3", Class: "air_compressor", Path: []string{"acme", "revatk", "_", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
				return b.AppendJSON(nil)
			}
			var last []byte
			for _, s := range tc.seqs {
				ts += 1000
				last = batch(s)
				if err := c.Handle(ctx, "smelter.v1.revatk.air_compressor.ra-3.data", last); err != nil {
					t.Fatal(err)
				}
			}
			if got := counterValue(t, c.m.duplicates); got != 0 {
				t.Errorf("duplicates = %v, want 0: the real seqs after the jump were dropped", got)
			}
			sh := c.shard(0)
			sh.mu.Lock()
			st, ok := sh.engine.Snapshot("revatk", "ra-3")
			sh.mu.Unlock()
			if !ok || st.Batches != uint64(len(tc.seqs)) || st.Seq != tc.seqs[len(tc.seqs)-1] {
				t.Fatalf("asset state: batches %d seq %d (tracked %v), want %d batches, seq %d", st.Batches, st.Seq, ok, len(tc.seqs), tc.seqs[len(tc.seqs)-1])
			}
			if err := c.Handle(ctx, "smelter.v1.revatk.air_compressor.ra-3.data", last); err != nil { // redelivered
				t.Fatal(err)
			}
			if got := counterValue(t, c.m.duplicates); got != 1 {
				t.Errorf("duplicates = %v after a redelivery, want 1", got)
			}
		})
	}
}
