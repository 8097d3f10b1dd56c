package collector

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// BenchmarkReadBack is one restore's read-back of a partition's alert
// events (reconcile) with 5,000 events of 1,000 assets in its window, none
// of them lacking from the state (a raise and a clear each): the consumer
// made, every event fetched and decoded.
func BenchmarkReadBack(b *testing.B) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Shutdown()
	cfg := Defaults()
	c := benchCollector(b, cfg)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, _, err := c.ensureStream(ctx, js, true); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for i := range 5000 {
		asset := "ac-" + strconv.Itoa(i%1000)
		a := alert.Alert{Schema: alert.Schema, Key: alert.MakeKey("site1", asset, "stale", ""), Site: "site1", Class: "air_compressor", Asset: asset,
			Rule: "stale", Kind: "stale", Severity: alert.Warn, RaisedAt: now + int64(i), UpdatedAt: now + int64(i), Group: cfg.Group, State: alert.Raised,
			Message: "air_compressor " + asset + " sent nothing for 3.2 s (3 x its 1 s interval)", Values: map[string]float64{"age_ms": 3200, "counted_ms": 3200}}
		if i%2 == 1 {
			a.State, a.ClearedAt = alert.Cleared, now+int64(i)
		}
		a.ID = alert.MakeID(a.Key, a.RaisedAt)
		data, _ := json.Marshal(a)
		if _, err := js.PublishAsync(telemetry.Subject(a.Site, a.Class, a.Asset, telemetry.KindAlert), data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	io := &natsIO{nc: nc, js: js}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.reconcile(ctx, io, c.newShard(0), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
