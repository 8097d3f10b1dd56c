package collector

import (
	"testing"
	"time"
)

// TestCountersSurviveShardRestart: the counters summed over the shards
// (readings, evaluations, ...) keep the counts of a shard dropped (its
// worker stopped) or replaced (state read again): with several partitions
// one restarting made the sum go back, which Prometheus reads as a reset of
// the whole counter (review11 F2).
func TestCountersSurviveShardRestart(t *testing.T) {
	c := newCollector(t, Defaults())
	t0 := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC).UnixMilli()
	var cy cycle
	feed := func(sh *shard, from, to int) {
		for i := from; i <= to; i++ {
			c.processPayload(sh, shipSubj+"data", shipLegBatch(i, t0), true, time.Now(), true, 0, "", &cy)
		}
	}
	sh := c.shard(0)
	feed(sh, 1, 5)
	before := c.counts().r.Readings
	if before == 0 {
		t.Fatal("no readings counted")
	}
	c.dropShard(sh)
	c.dropShard(sh) // idempotent: counted once
	if got := c.counts().r.Readings; got != before {
		t.Fatalf("readings after the shard was dropped: %d, want %d", got, before)
	}
	feed(sh, 6, 7) // a late cycle of the dropped shard: not counted again
	next := c.shard(0)
	feed(next, 8, 9)
	if got := c.counts().r.Readings; got <= before {
		t.Fatalf("readings after a new shard evaluated: %d, want above %d", got, before)
	}
}
