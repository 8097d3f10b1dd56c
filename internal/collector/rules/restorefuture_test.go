package rules

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
)

// TestRestoreBoundsFutureTimes (review4 F6): a record whose newest batch's
// or birth's or death's ts_gw lies beyond now + Options.MaxFuture (written
// by a release that did not clamp births and deaths) is restored with now
// in their place; within the bound, or without one (MaxFuture 0: a plant
// clock run ahead, as smelter-demo's), the newest batch's stays, and the
// birth's or death's, an ordering key, is bounded by now (review5 F13: a
// record of an earlier release holds it as dated).
func TestRestoreBoundsFutureTimes(t *testing.T) {
	const now = int64(1_800_000_000_000)
	year2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	ahead := now + 4*60_000
	for _, c := range []struct {
		name               string
		max                time.Duration
		last, life         int64
		wantLast, wantLife int64
	}{
		{"beyond the bound", 5 * time.Minute, year2100, year2100, now, now},
		{"death beyond, batch within", 5 * time.Minute, ahead, year2100, ahead, now},
		{"within the bound", 5 * time.Minute, ahead, ahead, ahead, now},
		{"no bound", 0, year2100, year2100, year2100, now},
	} {
		t.Run(c.name, func(t *testing.T) {
			set, err := Load(catalog.Default(), true)
			if err != nil {
				t.Fatal(err)
			}
			e := New(set, catalog.Default(), Options{Now: func() int64 { return now }, MaxFuture: c.max})
			e.RestoreAssetAt(&AssetState{Site: "site1", ID: "ac-1", Class: "air_compressor", LastTSGW: c.last, LifeTSGW: c.life,
				Batches: 1, Dead: "no reply", Gateway: "gw-1", Seq: 7}, now-1000)
			st, _ := e.Snapshot("site1", "ac-1")
			if st.LastTSGW != c.wantLast || st.LifeTSGW != c.wantLife {
				t.Errorf("restored ts_gw %d, life %d; want %d, %d", st.LastTSGW, st.LifeTSGW, c.wantLast, c.wantLife)
			}
		})
	}
}
