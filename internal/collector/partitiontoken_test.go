package collector

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// A publisher that names the partition itself (a 7-token subject, stored as
// sent because the transform only rewrites 6-token subjects) must not give
// the asset an owner in another partition: those messages are refused and
// counted with reason "partition"; the 6-token publish, partitioned by the
// server, is evaluated, which also proves partitionOf matches the server.
func TestPartitionTokenOfPublisherRefused(t *testing.T) {
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	const parts = 4
	cfg := Defaults()
	cfg.NATS.URL, cfg.HTTP.Listen, cfg.DataDir = ns.URL(), "", t.TempDir()
	cfg.Cluster.Partitions = parts
	r := startCfg(t, cfg)

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	t0 := time.Now().UnixMilli() - 60_000
	batch := func(seq uint64) []byte {
		b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: t0 + int64(seq)*1000,
			Asset:    telemetry.Asset{ID: "ac-5", Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
			Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80, Unit: "Cel"}}}
		return b.AppendJSON(nil)
	}
	subj := telemetry.Subject("s1", "air_compressor", "ac-5", telemetry.KindData)
	if _, err := js.Publish(ctx, subj, batch(1)); err != nil {
		t.Fatal(err)
	}
	own := partitionOf("s1", "ac-5", parts)
	for p := range parts {
		if _, err := js.Publish(ctx, subj+"."+strconv.Itoa(p), batch(uint64(2+p))); err != nil {
			t.Fatal(err)
		}
	}
	ingested := func() float64 { return counterValue(t, r.c.m.ingested.WithLabelValues("data")) }
	refused := func() float64 { return counterValue(t, r.c.m.malformed.WithLabelValues("partition")) }
	wait.For(t, 10*time.Second, "every message handled", func() bool { return ingested()+refused() >= parts+1 })
	if got := refused(); got != parts-1 {
		t.Errorf("malformed{reason=partition} = %v, want %d (every 7-token subject but partition %d's)", got, parts-1, own)
	}
	if got := ingested(); got != 2 {
		t.Errorf("ingested data = %v, want 2 (the 6-token publish and the one naming partition %d)", got, own)
	}
	owners := 0
	r.c.mu.Lock()
	for _, sh := range r.c.shards {
		sh.mu.Lock()
		if sh.engine.Has("s1", "ac-5") {
			owners++
		}
		sh.mu.Unlock()
	}
	r.c.mu.Unlock()
	if owners != 1 {
		t.Errorf("asset tracked by %d partitions, want 1", owners)
	}
}
