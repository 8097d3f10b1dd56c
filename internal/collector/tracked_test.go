package collector

import (
	"context"
	"testing"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A shard dropped twice (its commit failed, then its worker ended) must not
// count its assets off twice: the max_assets count and the
// assets_tracked gauge stay equal to what the shards hold.
func TestDropShardTwiceKeepsAssetCount(t *testing.T) {
	cfg := Defaults()
	cfg.Rules.Files = nil
	c := newCollector(t, cfg)
	ctx := context.Background()
	for i, id := range []string{"ac-1", "ac-2", "ac-3"} {
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: 1_763_812_345_000,
			Asset:    telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "site1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
		if err := c.Handle(ctx, "smelter.v1.site1.air_compressor."+id+".data", b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.tracked.Load(); got != 3 {
		t.Fatalf("tracked = %d, want 3", got)
	}
	sh := c.shard(0)
	c.dropShard(sh)
	c.dropShard(sh)
	if got, derived := c.tracked.Load(), c.trackedAssets(); got != 0 || derived != 0 {
		t.Fatalf("after dropping the shard twice: tracked %d, gauge %d, want 0 and 0", got, derived)
	}
}
