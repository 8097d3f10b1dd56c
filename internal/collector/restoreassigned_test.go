package collector

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestRestartedGroupShowsStateWithoutData: every replica of a group of two
// stops after its partitions' state (assets, an active discharge_temp
// alarm on each) was checkpointed, and all start again while no data
// arrives. Each replica restores the state of the partitions assigned to it
// at once, so the API shows the assets and active alerts again without
// waiting for a partition's first message (before: nothing until then).
func TestRestartedGroupShowsStateWithoutData(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test")
	}
	ns, js := embeddedJS(t)
	group := func() []*running {
		return []*running{pausedReplica(t, ns.URL(), "r1", 2, 64, nil, nil), pausedReplica(t, ns.URL(), "r2", 2, 64, nil, nil)}
	}
	// what the group shows, over its replicas
	shown := func(reps []*running) (assets, active []string) {
		for _, r := range reps {
			for _, a := range r.c.Assets() {
				assets = append(assets, a.Site+"."+a.ID)
			}
			for _, a := range r.c.Alerts(true) {
				active = append(active, a.Key)
			}
		}
		slices.Sort(assets)
		slices.Sort(active)
		return slices.Compact(assets), slices.Compact(active)
	}
	reps := group()
	ids := twoPartitionAssets(4)
	// 30 batches at 125 Cel, 60 s apart in data time (no wall-clock silence
	// within the test): the alarm trips after its 15 s on delay
	t0 := time.Now().UnixMilli() - 31*60_000
	seq := uint64(0)
	for i := range 30 {
		for _, id := range ids {
			seq++
			ts := t0 + int64(i)*60_000
			b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
				Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 125, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
					{Signal: "discharge_pressure", Value: 0.7, Unit: "MPa", TS: ts}}}
			if _, err := js.Publish(context.Background(), telemetry.Subject("s1", "air_compressor", id, telemetry.KindData), b.AppendJSON(nil),
				jetstream.WithMsgID("gw-1-"+strconv.FormatUint(seq, 10))); err != nil {
				t.Fatal(err)
			}
		}
	}
	kv, err := js.KeyValue(context.Background(), "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	var assets, active []string // as checkpointed
	wait.For(t, 30*time.Second, "the alarms raised and checkpointed, every message acknowledged", func() bool {
		assets, active = assets[:0], active[:0]
		for _, id := range ids {
			e, err := kv.Get(context.Background(), stateKey(partitionOf("s1", id, 2), "s1", id))
			if err != nil {
				return false
			}
			rec, err := decodeRecord(e.Value())
			if err != nil || rec.Rules.Batches != 30 {
				return false
			}
			assets = append(assets, "s1."+id)
			for _, a := range rec.Alerts {
				active = append(active, a.Key)
			}
			if !slices.Contains(active, "s1."+id+".discharge_temp_high.discharge_temp") {
				return false
			}
		}
		slices.Sort(active)
		// every message of the stream (the alert messages too: they are
		// stored in the partitions) acknowledged: after the restart no
		// message comes
		for p := range 2 {
			cons, err := js.Consumer(context.Background(), "SMELTER", "smelter-collector-p"+strconv.Itoa(p))
			if err != nil {
				return false
			}
			info, err := cons.Info(context.Background())
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	})
	// a partition assigned to a replica after it was evaluated elsewhere
	// shows the state its previous owner checkpointed meanwhile (here:
	// the first replica up took both partitions and evaluated them while
	// the second one joined and restored partition state that was still
	// empty)
	var a, al []string
	wait.For(t, 10*time.Second, "the checkpointed assets and active alerts shown", func() bool {
		a, al = shown(reps)
		return fmt.Sprint(a) == fmt.Sprint(assets) && fmt.Sprint(al) == fmt.Sprint(active)
	})
	for _, r := range reps {
		r.stop()
	}

	reps = group() // no data from now on
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("shown: assets %v, active alerts %v\ncheckpointed: assets %v, active alerts %v", a, al, assets, active)
		}
	})
	wait.For(t, 15*time.Second, "the checkpointed assets and active alerts shown again", func() bool {
		a, al = shown(reps)
		return fmt.Sprint(a) == fmt.Sprint(assets) && fmt.Sprint(al) == fmt.Sprint(active)
	})
}
