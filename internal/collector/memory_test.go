package collector

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Anyone who may publish on the telemetry subjects can invent asset ids:
// 200,000 distinct ones must leave the collector at its max_assets, with
// the rest counted as rejected, and its heap bounded by what the tracked
// assets need (an upper bound, not a timing).
func TestAssetCardinalityBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 200,000 messages")
	}
	const total, limit = 200_000, 20_000
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := Defaults()
	cfg.NATS.URL = ns.URL()
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	cfg.MaxAssets = limit
	// a rejected message delivered again after ack_wait (5 s by default,
	// passed on a loaded machine under -race) would be counted again: the
	// count below is of distinct messages. Not much longer than a minute: a
	// pull lost under load (its messages dropped by the client) is
	// redelivered only after ack_wait, and the worker waits for it
	cfg.Cluster.AckWait = Duration(time.Minute)
	before := heapInUse()
	r := startCfg(t, cfg)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	ts := time.Now().UnixMilli()
	for i := range total {
		id := fmt.Sprintf("spoof-%06d", i)
		b := &telemetry.Batch{Gateway: "gw-x", Seq: uint64(i + 1), TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "current_a", Value: 100, Unit: "A", TS: ts}, {Signal: "winding_temp", Value: 80, Unit: "Cel", TS: ts}}}
		if _, err := js.PublishAsync(telemetry.Subject("s1", "motor", id, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
		if i%2048 == 2047 || i == total-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publish acks")
			}
		}
	}
	wait.For(t, 5*time.Minute, "every message consumed", func() bool {
		return counter(r.c.m.rejected)+counterVec(r.c.m.ingested, "data") >= total
	})
	tracked := r.c.tracked.Load()
	if tracked != limit || len(r.c.Assets()) != limit {
		t.Fatalf("tracked %d assets (%d in the views), limit %d", tracked, len(r.c.Assets()), limit)
	}
	if rej := counter(r.c.m.rejected); rej != total-limit {
		t.Fatalf("rejected %v, want %d", rej, total-limit)
	}
	perAsset := float64(int64(heapInUse())-int64(before)) / limit
	t.Logf("heap per tracked asset: %.0f bytes (rules, KPIs, dashboard store, state revisions)", perAsset)
	if perAsset > 64<<10 {
		t.Fatalf("heap per tracked asset %.0f bytes, budget 64 KiB", perAsset)
	}
}
