package collector

import (
	"reflect"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// A birth redelivered after a restart, with the batches after it that the
// checkpoint already holds, leaves the restored state as the collector
// that was not restarted has it: the batches are skipped as duplicates and
// the birth, the one in force, is not applied again (applied, its signal
// list dropped the held fuel types, which it does not list, and the next
// batch integrated fuel of unknown type into the ship's leg). The KPI
// inputs of the restored asset keep the birth's range (sog up to 12.6 kn:
// some batches' sog is above it), which the KPI checkpoint does not hold.
// In both record forms.
func TestRedeliveredBirthLeavesRestoredStateAlone(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		t.Run(map[bool]string{false: "binary", true: "json"}[asJSON], func(t *testing.T) { redeliveredBirth(t, asJSON) })
	}
}

func redeliveredBirth(t *testing.T, asJSON bool) {
	t0 := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC).UnixMilli()
	hi := 12.6
	birth := mustJSON(t, &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-1", Seq: 0, TSGW: t0,
		Asset: telemetry.AssetJSON{ID: "ship-1", Class: "ship", Path: []string{"acme", "site1", "_", "_", "_"}},
		Signals: []telemetry.SignalInfo{{Signal: "sog", Unit: "[kn_i]", Max: &hi, IntervalMS: 30_000}, {Signal: "me_fuel_flow", Unit: "kg/h", IntervalMS: 30_000},
			{Signal: "shaft_power", Unit: "kW", IntervalMS: 30_000}, {Signal: "cargo", Unit: "t", IntervalMS: 30_000}},
		Nameplate: map[string]float64{"rated_power": 8600, "rated_sfoc": 167, "capacity": 63500, "ship_type": 1}})
	c := newCollector(t, Defaults())
	var cy cycle
	feed := func(sh *shard, from, to int) {
		for i := from; i <= to; i++ {
			c.processPayload(sh, shipSubj+"data", shipLegBatch(i, t0), true, time.Now(), true, 0, "", &cy)
		}
	}
	kpiState := func(sh *shard) any {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		st, ok := sh.kpis.Snapshot("site1", "ship-1")
		if !ok {
			t.Fatal("ship-1 has no KPI state")
		}
		return st
	}
	const killAt, n = 40, 80
	// the collector that runs through
	through := c.newShard(0)
	c.processPayload(through, shipSubj+"birth", birth, true, time.Now(), true, 0, "", &cy)
	feed(through, 1, n)
	// the one killed after the checkpoint of batch killAt, before the ack
	killed := c.newShard(0)
	c.processPayload(killed, shipSubj+"birth", birth, true, time.Now(), true, 0, "", &cy)
	feed(killed, 1, killAt)
	killed.mu.Lock()
	w, err := killed.snapshot(nil, 0, asJSON, nil)
	killed.mu.Unlock()
	if err != nil || len(w) != 1 {
		t.Fatalf("checkpoint: %d records, %v", len(w), err)
	}
	// its successor: the record, then every message since the ack floor
	next := c.newShard(0)
	next.mu.Lock()
	err = next.restore(w[0].data, 1, 0)
	next.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	c.processPayload(next, shipSubj+"birth", birth, true, time.Now(), true, 0, "", &cy)
	feed(next, 1, n)
	if got, want := kpiState(next), kpiState(through); !reflect.DeepEqual(got, want) {
		t.Fatalf("KPI state after the restart and the redelivery\n%+v\nwithout the restart\n%+v", got, want)
	}
}
