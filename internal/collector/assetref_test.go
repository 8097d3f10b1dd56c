package collector

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// refBatch is a batch of asset id of class on gw-1: a motor's or a
// compressor's KPI inputs, so that both the rules and the KPIs take it.
func refBatch(id, class string, seq uint64, ts int64) []byte {
	b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: class, Path: []string{"acme", "site1", "_", "_", "_"}}}
	switch class {
	case "motor":
		b.Readings = []telemetry.Reading{{Signal: "power", Value: 30, Unit: "kW", TS: ts}, {Signal: "current_a", Value: 60, Unit: "A", TS: ts}}
	default:
		b.Readings = []telemetry.Reading{{Signal: "input_power", Value: 78, Unit: "kW", TS: ts}, {Signal: "free_air_delivery", Value: 10, TS: ts},
			{Signal: "load_state", Value: 2, TS: ts}}
	}
	return b.AppendJSON(nil)
}

// feedRef evaluates one refBatch on sh.
func feedRef(c *Collector, sh *shard, id, class string, seq uint64, ts int64) {
	var cy cycle
	c.process(sh, telemetry.Subject("site1", class, id, telemetry.KindData), refBatch(id, class, seq, ts), time.Now(), &cy)
}

// dirtyCount is how often the asset (site1, id) is listed for the next
// checkpoint.
func dirtyCount(sh *shard, id string) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	for _, r := range sh.dirty {
		if r.key == [2]string{"site1", id} {
			n++
		}
	}
	return n
}

// checkAsset fails unless the engine and the KPI tracker both hold asset
// (site1, id) of class with its newest batch at ts: the batch went to the
// entries the shard holds now, not to ones a stale handle still points at.
func checkAsset(t *testing.T, sh *shard, id, class string, ts int64) {
	t.Helper()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	v, ok := sh.engine.Asset("site1", id)
	if !ok || v.Class != class || v.LastTS != ts {
		t.Fatalf("engine: %s: class %q last_ts %d (tracked %v), want %q %d", id, v.Class, v.LastTS, ok, class, ts)
	}
	k, ok := sh.kpis.Snapshot("site1", id)
	if !ok || k.Class != class || k.LastTS != ts {
		t.Fatalf("kpi: %s: class %q ts %d (tracked %v), want %q %d", id, k.Class, k.LastTS, ok, class, ts)
	}
}

// TestAssetRefStaleHandles: the handles a shard keeps per asset (assetRef)
// follow every way an asset's state is replaced: a batch of another class
// (the engine and the KPI tracker start the asset over), a restored record
// (both replaced from the record), and the partition given away and taken
// back (a new shard; the dashboard's entry stays). Each time the next
// batches reach the state the shard holds now, the asset is listed once
// for the checkpoint, and the dashboard's history of the asset continues.
func TestAssetRefStaleHandles(t *testing.T) {
	c := processCollector(t)
	sh := c.shard(0)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seq := uint64(0)
	next := func(class string) int64 {
		seq++
		ts += 1000
		feedRef(c, sh, "a-1", class, seq, ts)
		return ts
	}
	// step evaluates the asset's next batch and checks where it went
	step := func(class string) {
		t.Helper()
		checkAsset(t, sh, "a-1", class, next(class))
	}
	for _, class := range []string{"motor", "motor", "motor",
		"air_compressor", "air_compressor", // another class: the batch that changes it, one through the handles found again
		"motor"} { // and back: a fresh motor state, not the first one
		step(class)
	}
	if n := dirtyCount(sh, "a-1"); n != 1 {
		t.Fatalf("asset listed %d times for the checkpoint, want once", n)
	}
	recs := records(t, sh, false) // clears the dirty list
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	next("motor")
	if n := dirtyCount(sh, "a-1"); n != 1 {
		t.Fatalf("after a checkpoint: asset listed %d times, want once", n)
	}

	// a record restored over the asset (a standby following the bucket):
	// its state is the record's, and the next batch goes there
	rec := recs[[2]string{"site1", "a-1"}]
	sh.mu.Lock()
	if err := sh.restore(rec, 1, 0); err != nil {
		sh.mu.Unlock()
		t.Fatal(err)
	}
	sh.mu.Unlock()
	step("motor")

	// the partition given away and taken back: a new shard, no refs
	before := ts - 2000
	c.dropShard(sh)
	sh = c.shard(0)
	step("motor")
	step("motor")
	if n := dirtyCount(sh, "a-1"); n != 1 {
		t.Fatalf("new shard: asset listed %d times, want once", n)
	}
	pts, _, _, ok := c.live.History("site1", "a-1", []string{"power"}, before)
	if !ok || len(pts["power"]) < 3 {
		t.Fatalf("dashboard history since before the hand-over: %v %v, want the points from both shards", pts, ok)
	}
}

// TestAssetRefNotForRejected: an asset refused at max_assets leaves no
// ref in the shard (the refs stay bounded by the assets tracked).
func TestAssetRefNotForRejected(t *testing.T) {
	c := processCollector(t)
	c.cfg.MaxAssets = 1
	sh := c.shard(0)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	feedRef(c, sh, "a-1", "motor", 1, ts)
	feedRef(c, sh, "a-2", "motor", 2, ts+1)
	feedRef(c, sh, "a-1", "motor", 3, ts+2)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.refs) != 1 || sh.refs[[2]string{"site1", "a-1"}] == nil {
		t.Fatalf("refs %v, want a-1's only", sh.refs)
	}
	if sh.engine.Has("site1", "a-2") || len(sh.dirty) != 1 {
		t.Fatalf("a-2 tracked %v, %d dirty", sh.engine.Has("site1", "a-2"), len(sh.dirty))
	}
}
